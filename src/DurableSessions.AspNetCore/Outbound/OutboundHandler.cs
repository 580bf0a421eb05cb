using System.Net;
using System.Net.Sockets;
using DurableSessions.AspNetCore.Subscriptions;

namespace DurableSessions.AspNetCore.Outbound;

/// <summary>
/// Creates the primary handler of the server's own outbound requests (subscription webhooks, run notifications), which go
/// to URLs that API callers chose and so must not reach the server's own network.
/// </summary>
/// <remarks>
/// The URL check when a webhook or <c>notifyUrl</c> is registered only looks at the text; what holds is the check here,
/// at connect time: the host is resolved once, every resolved address must be public (see
/// <see cref="OutboundAddressPolicy"/>), and the socket connects to the address that was checked, so a name that
/// resolves differently a moment later (DNS rebinding) changes nothing. Redirects are not followed (a 3xx answer is a
/// failed delivery) and no proxy is used, since either would connect somewhere that was never checked.
/// </remarks>
internal static class OutboundHandler
{
    /// <summary>The most connections open at once to one receiver (host and port).</summary>
    public const int MaxConnectionsPerTarget = 8;

    /// <summary>Creates a handler.</summary>
    /// <param name="allowLocalhost">
    /// Whether the development exception applies: a URL whose host is <c>localhost</c> or <c>127.0.0.x</c> may connect to
    /// loopback addresses. Private and special-purpose ranges stay blocked either way.
    /// </param>
    public static SocketsHttpHandler Create(bool allowLocalhost) => new()
    {
        AllowAutoRedirect = false,
        UseProxy = false,
        UseCookies = false,
        PooledConnectionLifetime = TimeSpan.FromMinutes(2),

        // Receivers are chosen by clients: none may hold more than a few of the server's descriptors at once.
        MaxConnectionsPerServer = MaxConnectionsPerTarget,
        ConnectCallback = (context, cancellationToken) => ConnectAsync(context.DnsEndPoint, allowLocalhost, cancellationToken),
    };

    /// <summary>Resolves <paramref name="endpoint"/> once, checks every address, and connects to a checked one.</summary>
    internal static async ValueTask<Stream> ConnectAsync(DnsEndPoint endpoint, bool allowLocalhost, CancellationToken cancellationToken)
    {
        var host = endpoint.Host;
        var allowLoopback = allowLocalhost && WebhookUrlPolicy.IsLocalDevelopmentHost(host);
        var addresses = IPAddress.TryParse(host.Trim('[', ']'), out var literal)
            ? [literal]
            : await Dns.GetHostAddressesAsync(host, cancellationToken).ConfigureAwait(false);
        if (addresses.Length == 0)
        {
            throw new HttpRequestException($"Outbound request refused: {host} did not resolve to any address.");
        }

        // Every address, not just the first: a name with one public and one private address must not be usable to
        // reach the private one by making the public one fail.
        foreach (var address in addresses)
        {
            if (OutboundAddressPolicy.Check(address, allowLoopback) is { } reason)
            {
                throw new HttpRequestException($"Outbound request refused: {host} resolves to {address}, {reason}.");
            }
        }

        Exception? last = null;
        foreach (var address in addresses)
        {
            var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(new IPEndPoint(address, endpoint.Port), cancellationToken).ConfigureAwait(false);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch (SocketException ex)
            {
                socket.Dispose();
                last = ex;
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }

        throw new HttpRequestException($"Outbound request to {host} could not connect.", last);
    }
}
