using System.Net;
using System.Net.Sockets;
using DurableSessions.AspNetCore.Outbound;

namespace DurableSessions.AspNetCore.Subscriptions;

/// <summary>Rejects webhook targets that could be used for server-side request forgery (protocol §12.8).</summary>
internal static class WebhookUrlPolicy
{
    /// <summary>Why a URL is rejected when it names localhost and the development exception is off.</summary>
    public const string LocalhostDisabled = "Webhooks to localhost are disabled on this server (Subscriptions:AllowLocalhostWebhooks turns them on, for development).";

    /// <summary>Returns why the URL is rejected, or null when it is acceptable.</summary>
    public static string? Check(string? url, bool allowLocalhostHttp)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https") || !string.IsNullOrEmpty(uri.UserInfo))
        {
            return "webhook.url must be an absolute http(s) URL without credentials.";
        }

        var localDev = IsLocalDevelopmentHost(uri.Host);
        if (localDev)
        {
            return allowLocalhostHttp ? null : LocalhostDisabled;
        }

        if (uri.Scheme != "https")
        {
            return "webhook.url must use https.";
        }

        if (IPAddress.TryParse(uri.Host.Trim('[', ']'), out var address) && !IsPublic(address))
        {
            return "webhook.url must not target a private, loopback, link-local or metadata address.";
        }

        var name = uri.Host.TrimEnd('.');
        if (name.EndsWith(".internal", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".local", StringComparison.OrdinalIgnoreCase)
            || name.EndsWith(".localhost", StringComparison.OrdinalIgnoreCase))
        {
            return "webhook.url must not target an internal host name.";
        }

        return null;
    }

    /// <summary>The development exception: <c>localhost</c> and <c>127.0.0.x</c> (a trailing dot is the same name).</summary>
    internal static bool IsLocalDevelopmentHost(string host)
    {
        host = host.TrimEnd('.');
        if (string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        return IPAddress.TryParse(host, out var address) && address.AddressFamily == AddressFamily.InterNetwork
            && address.GetAddressBytes() is [127, 0, 0, _];
    }

    /// <summary>A quick check of an IP literal; the check that holds is at connect time (<see cref="OutboundHandler"/>).</summary>
    internal static bool IsPublic(IPAddress address) => OutboundAddressPolicy.IsPublic(address);
}
