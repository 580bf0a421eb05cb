using System.Net;
using System.Net.Sockets;

namespace DurableSessions.Testing;

/// <summary>
/// Free loopback ports for the servers the tests start, taken below the kernel's ephemeral range (32768–60999 on
/// Linux). A port from that range can be given to any outgoing connection while a server restarts on it (a kill -9
/// and start again on the same port and data), and the server then cannot bind it again; ports below it are handed
/// out only by an explicit bind.
/// </summary>
public static class LoopbackPorts
{
    private const int First = 20_000;
    private const int End = 32_768;

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
                    throw new InvalidOperationException($"No free loopback port in {First}–{End - 1}.");
                }

                var listener = new TcpListener(IPAddress.Loopback, Random.Shared.Next(First, End));
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
}
