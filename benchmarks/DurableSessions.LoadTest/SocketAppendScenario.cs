using System.Buffers.Text;
using System.Diagnostics;
using System.Globalization;
using System.Net.WebSockets;
using System.Text;

namespace DurableSessions.LoadTest;

/// <summary>
/// Append throughput over the WebSocket transport: single-event appends pipelined on each connection (up to
/// <c>--pipeline</c> in flight), spread over many streams, each acknowledged once it is durable.
/// </summary>
internal static class SocketAppendScenario
{
    public static async Task<ScenarioResult> RunAsync(LoadOptions options)
    {
        var run = Guid.NewGuid().ToString("N")[..8];
        var paths = Enumerable.Range(0, options.Streams).Select(i => $"bench/{run}/ws{i}").ToList();
        using (var client = Http.Create(options.Url, options.Connections))
        {
            await Http.CreateStreamsAsync(client, paths.Select(p => "/v1/stream/" + p).ToList());
        }

        var eventJson = Http.Event(0, 0, options.EventBytes);
        var target = new UriBuilder(options.Url) { Scheme = "ws", Path = "/v1/ws" }.Uri;
        var sockets = await Task.WhenAll(Enumerable.Range(0, options.Connections).Select(async _ =>
        {
            var socket = new ClientWebSocket();
            socket.Options.AddSubProtocol("durable-streams.v1");
            await socket.ConnectAsync(target, CancellationToken.None);
            return socket;
        }));

        long acked = 0;
        long errors = 0;
        var latencies = new List<double>[options.Connections];
        var measuring = 0;
        var stop = 0;
        var workers = Enumerable.Range(0, options.Connections).Select(c => Task.Run(() => DriveAsync(c))).ToArray();
        await Task.Delay(TimeSpan.FromSeconds(2));
        Volatile.Write(ref measuring, 1);
        var stopwatch = Stopwatch.StartNew();
        await Task.Delay(TimeSpan.FromSeconds(options.DurationSeconds));
        var measured = Interlocked.Read(ref acked);
        var seconds = stopwatch.Elapsed.TotalSeconds;
        Volatile.Write(ref measuring, 0);
        Volatile.Write(ref stop, 1);
        await Task.WhenAll(workers);
        foreach (var socket in sockets)
        {
            socket.Abort();
            socket.Dispose();
        }

        var all = latencies.Where(l => l is not null).SelectMany(l => l).Order().ToArray();
        double At(double p) => all.Length == 0 ? double.NaN : all[Math.Min(all.Length - 1, (int)(p * all.Length))];
        var name = string.Create(CultureInfo.InvariantCulture, $"WebSocket appends, pipelined x{options.Pipeline}, {options.Streams} streams, {options.EventBytes} B events, {options.Connections} connections");
        var summary = string.Create(CultureInfo.InvariantCulture, $"{measured / seconds:N0} appends/s acknowledged; ack p50 {At(0.5):F2} ms, p99 {At(0.99):F2} ms, max {At(1):F2} ms; {errors} errors");
        return new ScenarioResult(name, summary, measured, errors);

        async Task DriveAsync(int index)
        {
            var socket = sockets[index];
            var mine = latencies[index] = new List<double>(1 << 16);
            var sentAt = new long[options.Pipeline];
            var slots = new SemaphoreSlim(options.Pipeline, options.Pipeline);
            var free = new System.Collections.Concurrent.ConcurrentQueue<int>(Enumerable.Range(0, options.Pipeline));
            var receiving = Task.Run(async () =>
            {
                var buffer = new byte[64 * 1024];
                var idPrefix = "\"id\":\""u8.ToArray();
                try
                {
                    while (true)
                    {
                        var result = await socket.ReceiveAsync(buffer, CancellationToken.None);
                        if (result.MessageType == WebSocketMessageType.Close)
                        {
                            return;
                        }

                        var message = buffer.AsSpan(0, result.Count);
                        var ack = message.StartsWith("{\"type\":\"ack\""u8);
                        if (!ack && !message.StartsWith("{\"type\":\"error\""u8))
                        {
                            continue;
                        }

                        var at = message.IndexOf(idPrefix);
                        Utf8Parser.TryParse(message[(at + idPrefix.Length)..], out int slot, out _);
                        if (!ack)
                        {
                            Interlocked.Increment(ref errors);
                        }
                        else if (Volatile.Read(ref measuring) == 1)
                        {
                            Interlocked.Increment(ref acked);
                            mine.Add(Stopwatch.GetElapsedTime(sentAt[slot]).TotalMilliseconds);
                        }

                        free.Enqueue(slot);
                        slots.Release();
                    }
                }
                catch (Exception ex) when (ex is WebSocketException or ObjectDisposedException)
                {
                }
            });

            var next = index;
            while (Volatile.Read(ref stop) == 0)
            {
                // Acknowledgements of different streams come in any order: a slot is reused only once its own came.
                await slots.WaitAsync();
                free.TryDequeue(out var slot);
                var path = paths[next % paths.Count];
                next += options.Connections;
                var message = Encoding.UTF8.GetBytes($"{{\"op\":\"append\",\"id\":\"{slot}\",\"path\":\"{path}\",\"data\":{eventJson}}}");
                sentAt[slot] = Stopwatch.GetTimestamp();
                try
                {
                    await socket.SendAsync(message, WebSocketMessageType.Text, endOfMessage: true, CancellationToken.None);
                }
                catch (WebSocketException)
                {
                    break;
                }
            }

            await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, CancellationToken.None).ContinueWith(_ => { });
            await Task.WhenAny(receiving, Task.Delay(5000));
        }
    }
}
