using System.Net;
using System.Net.Sockets;

namespace DurableSessions.Testing;

/// <summary>
/// Free loopback ports for the servers the tests start, taken outside the kernel's ephemeral range (read from
/// <c>/proc/sys/net/ipv4/ip_local_port_range</c>; 32768–60999 by default). A port from that range can be given to any
/// outgoing connection while a server restarts on it (a kill -9 and start again on the same port and data), and the
/// server then cannot bind it again; ports outside it are handed out only by an explicit bind.
/// </summary>
public static class LoopbackPorts
{
    private static readonly (int First, int End) Range = ChooseRange();

    /// <summary>A port on 127.0.0.1 that nothing listens on now.</summary>
    public static int Free() => Free(1)[0];

    /// <summary>Distinct ports on 127.0.0.1 that nothing listens on now: their listeners are all open at once while they are chosen.</summary>
    public static int[] Free(int count)
    {
        var listeners = new List<TcpListener>();
        try
        {
            // Random starting points: test processes running side by side rarely pick the same port, and one that
            // is taken is skipped.
            for (var tries = 0; listeners.Count < count; tries++)
            {
                if (tries == 1_000)
                {
                    throw new InvalidOperationException($"No free loopback port in {Range.First}–{Range.End - 1}.");
                }

                var listener = new TcpListener(IPAddress.Loopback, Random.Shared.Next(Range.First, Range.End));
                try
                {
                    listener.Start();
                    listeners.Add(listener);
                }
                catch (SocketException)
                {
                    listener.Dispose();
                }
            }

            return [.. listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port)];
        }
        finally
        {
            listeners.ForEach(l => l.Stop());
        }
    }

    /// <summary>Up to 12,768 ports below the ephemeral range, or above it when there is no room below.</summary>
    private static (int First, int End) ChooseRange()
    {
        const int Wanted = 12_768;
        const int Lowest = 1_024;
        var (ephemeralFirst, ephemeralLast) = (32_768, 60_999);
        try
        {
            var parts = File.ReadAllText("/proc/sys/net/ipv4/ip_local_port_range").Split((char[])['\t', ' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 2 && int.TryParse(parts[0], out var first) && int.TryParse(parts[1], out var last) && first <= last)
            {
                (ephemeralFirst, ephemeralLast) = (first, last);
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        if (ephemeralFirst - Lowest >= 1_000)
        {
            return (Math.Max(Lowest, ephemeralFirst - Wanted), ephemeralFirst);
        }

        return 65_536 - (ephemeralLast + 1) >= 1_000 ? (ephemeralLast + 1, Math.Min(65_536, ephemeralLast + 1 + Wanted)) : (20_000, 32_768);
    }
}
