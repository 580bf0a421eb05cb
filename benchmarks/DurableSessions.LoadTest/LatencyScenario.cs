using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace DurableSessions.LoadTest;

/// <summary>
/// Append-to-delivery latency: many streams, each tailed by several SSE readers; writers append events stamped with
/// the send time and readers record how long each took to arrive.
/// </summary>
internal static class LatencyScenario
{
    public static async Task<ScenarioResult> RunAsync(LoadOptions options)
    {
        var run = Guid.NewGuid().ToString("N")[..8];
        var paths = Enumerable.Range(0, options.Streams).Select(i => $"/v1/stream/latency/{run}/s{i}").ToList();
        var readerCount = options.Streams * options.Readers;
        using var writerClient = Http.Create(options.Url, options.Connections);
        using var readerClient = Http.Create(options.ReadUrl ?? options.Url, readerCount + 16);
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
        var name = string.Create(CultureInfo.InvariantCulture, $"append->SSE latency, {options.Streams} streams x {options.Readers} readers, {options.Rate}/s per stream");
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
                using var response = await readerClient.GetAsync($"{path}?offset=now&live=sse", HttpCompletionOption.ResponseHeadersRead, stop.Token);
                await foreach (var (eventType, data) in SseEvents.ReadAsync(await response.Content.ReadAsStreamAsync(stop.Token), stop.Token))
                {
                    if (eventType == "data")
                    {
                        var now = Stopwatch.GetTimestamp();
                        using var json = JsonDocument.Parse(data);
                        foreach (var item in json.RootElement.EnumerateArray())
                        {
                            var sent = item.GetProperty("t").GetInt64();
                            if (Volatile.Read(ref measuring) == 1 && sent >= Volatile.Read(ref measureFrom))
                            {
                                mine.Add(Stopwatch.GetElapsedTime(sent, now).TotalMilliseconds);
                                Interlocked.Increment(ref delivered);
                            }
                        }
                    }
                    else if (eventType == "control" && !signalled)
                    {
                        signalled = true;
                        connected.Signal();
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
            catch (Exception ex) when (ex is HttpRequestException or IOException)
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
    }
}
