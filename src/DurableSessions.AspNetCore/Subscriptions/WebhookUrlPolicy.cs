using System.Net;
using System.Net.Sockets;

namespace DurableSessions.AspNetCore.Subscriptions;

/// <summary>Rejects webhook targets that could be used for server-side request forgery (protocol §12.8).</summary>
internal static class WebhookUrlPolicy
{
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
            return allowLocalhostHttp ? null : "Webhooks to localhost are disabled on this server.";
        }

        if (uri.Scheme != "https")
        {
            return "webhook.url must use https.";
        }

        if (IPAddress.TryParse(uri.Host.Trim('[', ']'), out var address) && !IsPublic(address))
        {
            return "webhook.url must not target a private, loopback, link-local or metadata address.";
        }

        if (uri.Host.EndsWith(".internal", StringComparison.OrdinalIgnoreCase) || uri.Host.EndsWith(".local", StringComparison.OrdinalIgnoreCase))
        {
            return "webhook.url must not target an internal host name.";
        }

        return null;
    }

    /// <summary>The development exception: <c>localhost</c> and <c>127.0.0.x</c>.</summary>
    private static bool IsLocalDevelopmentHost(string host)
    {
        if (string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        return IPAddress.TryParse(host, out var address) && address.AddressFamily == AddressFamily.InterNetwork
            && address.GetAddressBytes() is [127, 0, 0, _];
    }

    internal static bool IsPublic(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        if (IPAddress.IsLoopback(address) || address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any))
        {
            return false;
        }

        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            var b = address.GetAddressBytes();
            return !(b[0] == 10
                || (b[0] == 172 && b[1] >= 16 && b[1] <= 31)
                || (b[0] == 192 && b[1] == 168)
                || (b[0] == 169 && b[1] == 254)
                || (b[0] == 100 && b[1] >= 64 && b[1] <= 127)
                || b[0] == 0
                || b[0] >= 224);
        }

        return !(address.IsIPv6LinkLocal || address.IsIPv6SiteLocal || address.IsIPv6UniqueLocal || address.IsIPv6Multicast);
    }
}
