using System.Net;
using System.Net.Sockets;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// A loopback TCP proxy that cuts each connection after a random number of response bytes (so cuts land mid-event,
/// mid-header and mid-snapshot), until it has made <c>maxCuts</c> cuts; after that it passes traffic through.
/// </summary>
public sealed class ChaosProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly Uri _target;
    private readonly Random _random;
    private readonly int _maxCuts;
    private readonly int _maxBytesBeforeCut;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private CancellationTokenSource _freeze = new();
    private int _cuts;
    private long _bytesDown;
    private int _connections;
    private int _upgradesSwallowed;

    public ChaosProxy(Uri target, int maxCuts, int seed, int maxBytesBeforeCut = 4000)
    {
        _target = target;
        _maxCuts = maxCuts;
        _random = new Random(seed);
        _maxBytesBeforeCut = maxBytesBeforeCut;
        _listener.Start();
        _accepting = Task.Run(AcceptAsync);
    }

    public Uri Address => new($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}");

    public int Cuts => Math.Min(_maxCuts, Volatile.Read(ref _cuts));

    /// <summary>Response bytes passed to clients.</summary>
    public long BytesDown => Interlocked.Read(ref _bytesDown);

    /// <summary>Connections accepted so far.</summary>
    public int Connections => Volatile.Read(ref _connections);

    /// <summary>
    /// Whether a connection that opens with a WebSocket upgrade is held open and never answered (a proxy that passes
    /// plain requests and swallows upgrades); other connections pass as before.
    /// </summary>
    public bool SwallowUpgrades { get; set; }

    /// <summary>WebSocket upgrades held unanswered so far.</summary>
    public int UpgradesSwallowed => Volatile.Read(ref _upgradesSwallowed);

    private async Task AcceptAsync()
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                Interlocked.Increment(ref _connections);
                _ = Task.Run(() => ServeAsync(client));
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (SocketException)
        {
        }
    }

    /// <summary>
    /// Stops forwarding on the connections open now, both ways, and keeps them open: a network that drops everything
    /// and sends no reset. Connections made later pass as before.
    /// </summary>
    public void Freeze() => Interlocked.Exchange(ref _freeze, new CancellationTokenSource()).Cancel();

    private async Task ServeAsync(TcpClient client)
    {
        var frozen = Volatile.Read(ref _freeze).Token;
        using (client)
        using (var server = new TcpClient())
        using (var copying = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token, frozen))
        {
            try
            {
                await server.ConnectAsync(IPAddress.Loopback, _target.Port, _stop.Token);
                int budget;
                lock (_random)
                {
                    budget = Cuts < _maxCuts ? _random.Next(1, _maxBytesBeforeCut) : int.MaxValue;
                }

                var upstream = SwallowUpgrades
                    ? CopyUntilUpgradeAsync(client.GetStream(), server.GetStream(), copying.Token)
                    : client.GetStream().CopyToAsync(server.GetStream(), copying.Token);
                var downstream = CopyWithBudgetAsync(server.GetStream(), client.GetStream(), budget, copying.Token);
                await Task.WhenAny(upstream, downstream);
                if (frozen.IsCancellationRequested)
                {
                    await Task.Delay(Timeout.Infinite, _stop.Token);
                }
            }
            catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
            {
            }

            // Abortive close: the peer sees a reset, as with a dropped network.
            client.Client.LingerState = new LingerOption(true, 0);
        }
    }

    /// <summary>
    /// Forwards requests until one asks for a WebSocket upgrade (on a new connection, or on one that carried plain
    /// requests before); from there on nothing more is forwarded, and the connection is held until the client closes it.
    /// </summary>
    private async Task CopyUntilUpgradeAsync(Stream from, Stream to, CancellationToken cancellationToken)
    {
        var buffer = new byte[8192];
        while (true)
        {
            var read = await from.ReadAsync(buffer, cancellationToken);
            if (read == 0)
            {
                return;
            }

            if (System.Text.Encoding.ASCII.GetString(buffer, 0, read).Contains("upgrade: websocket", StringComparison.OrdinalIgnoreCase))
            {
                Interlocked.Increment(ref _upgradesSwallowed);
                while (await from.ReadAsync(buffer, cancellationToken) > 0)
                {
                }

                return;
            }

            await to.WriteAsync(buffer.AsMemory(0, read), cancellationToken);
        }
    }

    private async Task CopyWithBudgetAsync(Stream from, Stream to, int budget, CancellationToken cancellationToken)
    {
        var buffer = new byte[8192];
        while (true)
        {
            var read = await from.ReadAsync(buffer, cancellationToken);
            if (read == 0)
            {
                return;
            }

            if (read >= budget && budget != int.MaxValue)
            {
                if (Interlocked.Increment(ref _cuts) <= _maxCuts)
                {
                    Interlocked.Add(ref _bytesDown, budget);
                    await to.WriteAsync(buffer.AsMemory(0, budget), cancellationToken);
                    return;
                }

                budget = int.MaxValue;
            }

            // Counted before forwarding, so a client that has the bytes always sees them counted.
            Interlocked.Add(ref _bytesDown, read);
            await to.WriteAsync(buffer.AsMemory(0, read), cancellationToken);
            if (budget != int.MaxValue)
            {
                budget -= read;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        try
        {
            await _accepting;
        }
        catch (OperationCanceledException)
        {
        }

        _stop.Dispose();
    }
}
