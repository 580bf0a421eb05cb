using System.Net;
using System.Net.Sockets;

namespace DurableSessions.AspNetCore.Outbound;

/// <summary>
/// Decides which IP addresses the server's own outbound requests (webhooks, notifications) may connect to: public
/// unicast only, never private, loopback, link-local or special-purpose ranges, whichever way they are written (IPv4,
/// IPv6, IPv4-mapped or -compatible, NAT64, 6to4).
/// </summary>
internal static class OutboundAddressPolicy
{
    /// <summary>Returns why <paramref name="address"/> may not be connected to, or null when it may.</summary>
    /// <param name="address">The address to check.</param>
    /// <param name="allowLoopback">Whether loopback addresses (127.0.0.0/8, ::1) are allowed (local development).</param>
    public static string? Check(IPAddress address, bool allowLoopback)
    {
        var reason = Classify(address);
        return reason is null || (allowLoopback && reason == Loopback) ? null : reason;
    }

    /// <summary>Whether <paramref name="address"/> is a public unicast address.</summary>
    public static bool IsPublic(IPAddress address) => Classify(address) is null;

    private const string Loopback = "a loopback address";

    /// <summary>The blocked range <paramref name="address"/> falls in, or null for a public unicast address.</summary>
    private static string? Classify(IPAddress address)
    {
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            Span<byte> v4 = stackalloc byte[4];
            address.TryWriteBytes(v4, out _);
            return ClassifyV4(v4);
        }

        if (address.AddressFamily != AddressFamily.InterNetworkV6)
        {
            return "not an IP address";
        }

        Span<byte> b = stackalloc byte[16];
        address.TryWriteBytes(b, out _);
        if (b[..15].IndexOfAnyExcept((byte)0) < 0)
        {
            return b[15] switch
            {
                0 => "the unspecified address",
                1 => Loopback,
                _ => ClassifyEmbedded(b[12..]),
            };
        }

        // Forms that carry an IPv4 address, which is what the connection really reaches: IPv4-compatible ::/96,
        // IPv4-mapped ::ffff:0:0/96, IPv4-translated ::ffff:0:0:0/96, NAT64 64:ff9b::/96 and 6to4 2002::/16.
        if (b[..10].IndexOfAnyExcept((byte)0) < 0 && ((b[10] == 0 && b[11] == 0) || (b[10] == 0xff && b[11] == 0xff)))
        {
            return ClassifyEmbedded(b[12..]);
        }

        if (b[..8].IndexOfAnyExcept((byte)0) < 0 && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0)
        {
            return ClassifyEmbedded(b[12..]);
        }

        if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b)
        {
            if (b[4..12].IndexOfAnyExcept((byte)0) < 0)
            {
                return ClassifyEmbedded(b[12..]);
            }

            return "a local-use NAT64 address (64:ff9b:1::/48)";
        }

        if (b[0] == 0x20 && b[1] == 0x02)
        {
            return ClassifyEmbedded(b[2..6]);
        }

        if ((b[0] & 0xe0) != 0x20)
        {
            // Outside global unicast 2000::/3: ULA fc00::/7, link-local fe80::/10, site-local fec0::/10, multicast
            // ff00::/8, discard 100::/64 and the rest of the reserved space.
            return b[0] switch
            {
                0xfc or 0xfd => "a unique local address (fc00::/7)",
                0xfe when (b[1] & 0xc0) == 0x80 => "a link-local address (fe80::/10)",
                0xff => "a multicast address",
                _ => "a reserved IPv6 address",
            };
        }

        if (b[0] == 0x20 && b[1] == 0x01 && b[2] < 0x02)
        {
            // 2001::/23 holds Teredo (2001::/32), benchmarking, ORCHID and other protocol assignments.
            return "a special-purpose address (2001::/23, Teredo included)";
        }

        if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
        {
            return "a documentation address (2001:db8::/32)";
        }

        if (b[0] == 0x3f && b[1] == 0xff && (b[2] & 0xf0) == 0)
        {
            return "a documentation address (3fff::/20)";
        }

        return null;
    }

    private static string? ClassifyEmbedded(ReadOnlySpan<byte> v4)
    {
        var reason = ClassifyV4(v4);
        return reason is null or Loopback ? reason : reason + " (embedded in IPv6)";
    }

    private static string? ClassifyV4(ReadOnlySpan<byte> b) => (b[0], b[1], b[2]) switch
    {
        (0, _, _) => "a 'this network' address (0.0.0.0/8)",
        (10, _, _) => "a private address (10.0.0.0/8)",
        (100, >= 64 and <= 127, _) => "a shared (CGNAT) address (100.64.0.0/10)",
        (127, _, _) => Loopback,
        (169, 254, _) => "a link-local address (169.254.0.0/16)",
        (172, >= 16 and <= 31, _) => "a private address (172.16.0.0/12)",
        (192, 0, 0) => "an IETF protocol address (192.0.0.0/24)",
        (192, 0, 2) or (198, 51, 100) or (203, 0, 113) => "a documentation address",
        (192, 88, 99) => "a 6to4 relay address (192.88.99.0/24)",
        (192, 168, _) => "a private address (192.168.0.0/16)",
        (198, 18 or 19, _) => "a benchmarking address (198.18.0.0/15)",
        ( >= 224 and <= 239, _, _) => "a multicast address",
        ( >= 240, _, _) => "a reserved or broadcast address (240.0.0.0/4)",
        _ => null,
    };
}
