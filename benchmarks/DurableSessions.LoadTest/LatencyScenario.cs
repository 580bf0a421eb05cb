using System.Buffers.Text;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Net.Sockets;
using System.Net.WebSockets;

namespace DurableSessions.LoadTest;

/// <summary>
/// Append-to-delivery latency: many streams, each tailed by several readers (SSE, or one WebSocket each with
/// <c>--transport websocket</c>); writers append events stamped with the send time and readers record how long each
/// took to arrive.
/// </summary>
internal static class LatencyScenario
{
    public static async Task<ScenarioResult> RunAsync(LoadOptions options)
    {
        var run = Guid.NewGuid().ToString("N")[..8];
        var paths = Enumerable.Range(0, options.Streams).Select(i => $"/v1/stream/latency/{run}/s{i}").ToList();
        var readerCount = options.Streams * options.Readers;
        using var writerClient = Http.Create(options.Url, options.Connections);
        var readAddress = new Uri(options.ReadUrl ?? options.Url);
        var websocket = options.Transport == "websocket";
        await Http.CreateStreamsAsync(writerClient, paths);

        var latencies = new ConcurrentBag<double[]>();
        var writeLatencies = new ConcurrentBag<double>();
        long delivered = 0;
        long readerErrors = 0;
        var connected = new CountdownEvent(readerCount);
        using var stop = new CancellationTokenSource();
        var measuring = 0;
        var measureFrom = long.MaxValue;
        var readers = new List<Task>(readerCount);
        foreach (var path in paths)
        {
            for (var r = 0; r < options.Readers; r++)
            {
                readers.Add(Task.Run(() => ReadAsync(path)));
            }
        }

        if (!connected.Wait(TimeSpan.FromSeconds(60)))
        {
            throw new TimeoutException($"only {readerCount - connected.CurrentCount} of {readerCount} SSE readers connected");
        }

        // Paced writers: every stream gets --rate appends per second, spread evenly over time and over writers.
        // A two-second warm-up (not measured) lets both sides finish JIT tiering first.
        long appended = 0;
        long writeErrors = 0;
        var writerCount = Math.Min(options.Connections, paths.Count);
        var interval = TimeSpan.FromSeconds(1 / options.Rate);
        var baseAddress = new Uri(options.Url);
        var writerConnections = await Task.WhenAll(Enumerable.Range(0, writerCount).Select(_ => RawHttpConnection.ConnectAsync(baseAddress)));
        await RunWritersAsync(TimeSpan.FromSeconds(2), measure: false);
        Volatile.Write(ref measureFrom, Stopwatch.GetTimestamp());
        Volatile.Write(ref measuring, 1);
        await RunWritersAsync(TimeSpan.FromSeconds(options.DurationSeconds), measure: true);
        foreach (var connection in writerConnections)
        {
            connection.Dispose();
        }

        // Let in-flight deliveries land, then stop the readers.
        var expected = Interlocked.Read(ref appended) * options.Readers;
        var settle = Stopwatch.StartNew();
        while (Interlocked.Read(ref delivered) < expected && settle.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(50);
        }

        await stop.CancelAsync();
        await Task.WhenAll(readers).WaitAsync(TimeSpan.FromSeconds(30)).ContinueWith(_ => { }, TaskScheduler.Default);

        var all = latencies.SelectMany(l => l).Order().ToArray();
        var writes = writeLatencies.Order().ToArray();
        double Percentile(double p) => At(all, p);
        static double At(double[] sorted, double p) => sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];
        var name = string.Create(CultureInfo.InvariantCulture, $"append->{(websocket ? "WebSocket" : "SSE")} latency, {options.Streams} streams x {options.Readers} readers, {options.Rate}/s per stream");
        var summary = string.Create(CultureInfo.InvariantCulture,
            $"p50 {Percentile(0.50):F2} ms, p99 {Percentile(0.99):F2} ms, max {Percentile(1):F2} ms (append acknowledged: p50 {At(writes, 0.5):F2} ms, p99 {At(writes, 0.99):F2} ms); {appended} appends, {all.Length}/{expected} deliveries, {writeErrors + readerErrors} errors");
        return new ScenarioResult(name, summary, appended, writeErrors + readerErrors + Math.Max(0, expected - all.Length));

        async Task RunWritersAsync(TimeSpan duration, bool measure)
        {
        // Each writer has a thread of its own and blocks on its socket: its acknowledgement is timed from the send to
        // the response's last byte, not also waiting behind the readers' work in this process's thread pool.
        var writers = Enumerable.Range(0, writerCount).Select(w => Task.Factory.StartNew(() =>
        {
            var connection = writerConnections[w];
            var mine = paths.Where((_, i) => i % writerCount == w).ToList();
            var start = Stopwatch.GetTimestamp();
            var end = start + (long)(duration.TotalSeconds * Stopwatch.Frequency);
            long seq = 0;
            var slot = 0;
            while (true)
            {
                for (var i = 0; i < mine.Count; i++)
                {
                    // Arrivals are spread evenly over each interval across all writers (not in bursts):
                    // writer w's i-th stream is due at k*interval + (i*writers + w) * interval/(streams).
                    var phase = ((double)(i * writerCount) + w) / paths.Count;
                    var due = start + (long)((slot + phase) * interval.TotalSeconds * Stopwatch.Frequency);
                    if (due > end)
                    {
                        return;
                    }

                    var wait = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), due);
                    if (wait > TimeSpan.Zero)
                    {
                        Thread.Sleep(wait);
                    }

                    try
                    {
                        var sentAt = Stopwatch.GetTimestamp();
                        var request = RawHttpConnection.BuildPost(baseAddress, mine[i], Encoding.UTF8.GetBytes(Http.Event(seq++, sentAt, options.EventBytes)));
                        var status = connection.Send(request);
                        if (status is >= 200 and < 300)
                        {
                            if (measure)
                            {
                                writeLatencies.Add(Stopwatch.GetElapsedTime(sentAt).TotalMilliseconds);
                                Interlocked.Increment(ref appended);
                            }
                        }
                        else
                        {
                            Interlocked.Increment(ref writeErrors);
                        }
                    }
                    catch (IOException)
                    {
                        Interlocked.Increment(ref writeErrors);
                        return;
                    }
                }

                slot++;
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default)).ToList();
        await Task.WhenAll(writers);
        }

        async Task ReadAsync(string path)
        {
            var mine = new List<double>();
            var signalled = false;
            try
            {
                if (websocket)
                {
                    await ReadSocketAsync(path, mine, () => signalled = true);
                }
                else
                {
                    using var reader = await RawSseReader.ConnectAsync(readAddress, $"{path}?offset=now&live=sse", stop.Token);
                    await reader.RunAsync((type, data) =>
                    {
                        if (type.SequenceEqual("data"u8))
                        {
                            Record(data, mine);
                        }
                        else if (type.SequenceEqual("control"u8) && !signalled)
                        {
                            signalled = true;
                            connected.Signal();
                        }
                    }, stop.Token);
                }
            }
            catch (OperationCanceledException)
            {
            }
            catch (Exception ex) when (ex is SocketException or IOException or WebSocketException)
            {
                Interlocked.Increment(ref readerErrors);
            }
            finally
            {
                if (!signalled)
                {
                    connected.Signal();
                }

                latencies.Add([.. mine]);
            }
        }

        // One WebSocket per reader, subscribed from the tail: `data` messages carry the events, the first
        // `up-to-date` says the subscription is live.
        async Task ReadSocketAsync(string path, List<double> mine, Action live)
        {
            using var socket = new ClientWebSocket();
            socket.Options.AddSubProtocol("durable-streams.v1");
            await socket.ConnectAsync(new UriBuilder(readAddress) { Scheme = "ws", Path = "/v1/ws" }.Uri, stop.Token);
            var subscribe = Encoding.UTF8.GetBytes($"{{\"op\":\"subscribe\",\"sub\":\"s\",\"path\":\"{path["/v1/stream/".Length..]}\",\"offset\":\"now\"}}");
            await socket.SendAsync(subscribe, WebSocketMessageType.Text, endOfMessage: true, stop.Token);
            var buffer = new byte[8 * 1024];
            var length = 0;
            var signalled = false;
            while (true)
            {
                if (length == buffer.Length)
                {
                    Array.Resize(ref buffer, buffer.Length * 2);
                }

                var result = await socket.ReceiveAsync(buffer.AsMemory(length), stop.Token);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    return;
                }

                length += result.Count;
                if (!result.EndOfMessage)
                {
                    continue;
                }

                var message = buffer.AsSpan(0, length);
                length = 0;
                if (message.StartsWith("{\"type\":\"data\""u8))
                {
                    Record(message, mine);
                }
                else if (message.StartsWith("{\"type\":\"up-to-date\""u8) && !signalled)
                {
                    signalled = true;
                    live();
                    connected.Signal();
                }
                else if (message.StartsWith("{\"type\":\"error\""u8) || message.StartsWith("{\"type\":\"fell-behind\""u8))
                {
                    throw new IOException($"subscription ended: {Encoding.UTF8.GetString(message)}");
                }
            }
        }

        // Each event carries its send time as "t": read straight from the bytes, no JSON document.
        void Record(ReadOnlySpan<byte> data, List<double> mine)
        {
            var now = Stopwatch.GetTimestamp();
            var measuringNow = Volatile.Read(ref measuring) == 1;
            var from = Volatile.Read(ref measureFrom);
            while (data.IndexOf("\"t\":"u8) is var at and >= 0)
            {
                data = data[(at + 4)..];
                if (!Utf8Parser.TryParse(data, out long sent, out var used))
                {
                    throw new InvalidDataException("An event's \"t\" is not a number.");
                }

                data = data[used..];
                if (measuringNow && sent >= from)
                {
                    mine.Add(Stopwatch.GetElapsedTime(sent, now).TotalMilliseconds);
                    Interlocked.Increment(ref delivered);
                }
            }
        }
    }
}
