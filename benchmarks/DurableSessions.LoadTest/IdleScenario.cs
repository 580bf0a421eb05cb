using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Net.WebSockets;
using System.Text;

namespace DurableSessions.LoadTest;

/// <summary>
/// Idle live subscribers: <c>--readers</c> connections each following one stream that nothing writes to, over SSE or
/// the WebSocket (<c>--transport</c>); reports the server's resident memory per connection (<c>--server-pid</c>).
/// </summary>
/// <remarks>
/// Two figures: all the memory the server grew by, divided by the connections; and the growth from a third of the
/// connections to all of them, divided by the connections added. The first includes what the process takes once
/// whatever the count (the garbage collector's allocation budget being touched, thread pool growth); the second is
/// the cost of one more connection, the figure that scales to a bigger box.
/// </remarks>
internal static class IdleScenario
{
    public static async Task<ScenarioResult> RunAsync(LoadOptions options)
    {
        if (options.ServerPid is not { } pid)
        {
            throw new InvalidOperationException("the idle scenario needs --server-pid to read the server's memory");
        }

        var baseAddress = new Uri(options.Url);
        var path = $"idle/{Guid.NewGuid():N}";
        using (var client = Http.Create(options.Url, 4))
        {
            await Http.CreateStreamsAsync(client, ["/v1/stream/" + path]);
        }

        var before = Resident(pid);
        var stopwatch = Stopwatch.StartNew();
        var sockets = new List<IDisposable>(options.Readers);
        var websocket = options.Transport == "websocket";
        var request = Encoding.ASCII.GetBytes($"GET /v1/stream/{path}?offset=now&live=sse HTTP/1.1\r\nHost: {baseAddress.Authority}\r\n\r\n");
        var subscribe = Encoding.UTF8.GetBytes($"{{\"op\":\"subscribe\",\"sub\":\"s\",\"path\":\"{path}\",\"offset\":\"now\"}}");
        var buffer = new byte[4096];
        var target = new UriBuilder(baseAddress) { Scheme = "ws", Path = "/v1/ws" }.Uri;
        var third = options.Readers / 3;
        var atThird = 0L;
        for (var i = 0; i < options.Readers; i++)
        {
            if (i == third && third > 0)
            {
                await Task.Delay(TimeSpan.FromSeconds(options.DurationSeconds));
                atThird = Resident(pid);
            }

            if (websocket)
            {
                var socket = new ClientWebSocket();
                socket.Options.AddSubProtocol("durable-streams.v1");
                await socket.ConnectAsync(target, CancellationToken.None);
                await socket.SendAsync(subscribe, WebSocketMessageType.Text, endOfMessage: true, CancellationToken.None);

                // hello, then up-to-date: the subscription is live.
                await socket.ReceiveAsync(buffer, CancellationToken.None);
                await socket.ReceiveAsync(buffer, CancellationToken.None);
                sockets.Add(socket);
            }
            else
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(baseAddress.Host, baseAddress.Port);
                await socket.SendAsync(request);
                var read = await socket.ReceiveAsync(buffer);
                if (read == 0 || !Encoding.ASCII.GetString(buffer, 0, read).StartsWith("HTTP/1.1 200", StringComparison.Ordinal))
                {
                    throw new InvalidOperationException($"reader {i} was not served: {Encoding.ASCII.GetString(buffer, 0, Math.Max(0, read))}");
                }

                sockets.Add(socket);
            }
        }

        var connectSeconds = stopwatch.Elapsed.TotalSeconds - (third > 0 ? options.DurationSeconds : 0);

        // Let the server settle (its allocations of the connect burst collected) before reading its memory.
        await Task.Delay(TimeSpan.FromSeconds(options.DurationSeconds));
        var after = Resident(pid);
        foreach (var socket in sockets)
        {
            socket.Dispose();
        }

        var perConnection = (after - before) / (double)options.Readers;
        var marginal = third > 0 ? (after - atThird) / (double)(options.Readers - third) : double.NaN;
        var name = string.Create(CultureInfo.InvariantCulture, $"idle {(websocket ? "WebSocket" : "SSE")} subscribers x {options.Readers}");
        var summary = string.Create(CultureInfo.InvariantCulture, $"server RSS {before / 1048576.0:F0} MB -> {after / 1048576.0:F0} MB, {perConnection / 1024:F1} KB per connection; {third:N0} -> {options.Readers:N0} connections: {atThird / 1048576.0:F0} -> {after / 1048576.0:F0} MB, {marginal / 1024:F1} KB per added connection; connected in {connectSeconds:F1} s");
        return new ScenarioResult(name, summary, options.Readers, 0);
    }

    private static long Resident(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line[6..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
            }
        }

        throw new InvalidOperationException("no VmRSS");
    }
}
