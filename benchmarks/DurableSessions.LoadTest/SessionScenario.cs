using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace DurableSessions.LoadTest;

/// <summary>
/// Many sessions answered by the server's demo agent, each watched by several SSE clients: measures token-to-client
/// latency (from when the agent produced a batch's first token, carried in the delta's <c>at</c>, to when a client
/// parsed it) and the server's CPU. The clients read raw sockets (<see cref="RawSseReader"/>), so that on a small
/// machine the load tool takes as little as it can of the CPU the server needs.
/// </summary>
internal static class SessionScenario
{
    public static async Task<ScenarioResult> RunAsync(LoadOptions options)
    {
        var run = Guid.NewGuid().ToString("N")[..8];
        var ids = Enumerable.Range(0, options.Streams).Select(i => $"bench-{run}-{i}").ToList();
        using var http = Http.Create(options.Url, options.Connections);
        var baseAddress = new Uri(options.Url);
        await Parallel.ForEachAsync(ids, new ParallelOptions { MaxDegreeOfParallelism = 32 }, async (id, ct) =>
        {
            using var response = await http.PutAsync($"/v1/sessions/{id}", Http.Json("{}"), ct);
            response.EnsureSuccessStatusCode();
        });

        var latencies = new ConcurrentBag<double[]>();
        var timeline = new ConcurrentBag<(long[] At, double[] Ms)>();
        long deltas = 0;
        long runsFinished = 0;
        var connected = new CountdownEvent(ids.Count * options.Readers);
        using var stop = new CancellationTokenSource();
        var measureFrom = DateTimeOffset.MaxValue;
        var tasks = ids.SelectMany(id => Enumerable.Range(0, options.Readers).Select(r => Task.Run(() => FollowAsync(id, r == 0)))).ToList();
        if (!connected.Wait(TimeSpan.FromSeconds(120)))
        {
            throw new TimeoutException("SSE readers did not connect");
        }

        // Without a warm-up the window starts before the questions are asked: a server slow to take them in has less of it
        // left to answer, and the first questions of every session at once (and the server's first run of its code) are
        // measured too. With one, the questions run for the warm-up first, as the other scenarios' writers do.
        var cpuBefore = ServerCpu(options.ServerPid);
        var wall = Stopwatch.StartNew();
        if (options.WarmupSeconds == 0)
        {
            measureFrom = DateTimeOffset.UtcNow;
        }

        // Every session asks a question; the first reader of each session asks the next one when a reply finishes.
        await Parallel.ForEachAsync(ids, new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (id, ct) => await AskAsync(id));
        if (options.WarmupSeconds > 0)
        {
            await Task.Delay(TimeSpan.FromSeconds(options.WarmupSeconds));
            cpuBefore = ServerCpu(options.ServerPid);
            wall.Restart();
            Interlocked.Exchange(ref runsFinished, 0);
            measureFrom = DateTimeOffset.UtcNow;
        }

        await Task.Delay(TimeSpan.FromSeconds(options.DurationSeconds));
        var cpuAfter = ServerCpu(options.ServerPid);
        var seconds = wall.Elapsed.TotalSeconds;
        await stop.CancelAsync();
        await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(30)).ContinueWith(_ => { }, TaskScheduler.Default);

        var all = latencies.SelectMany(l => l).Order().ToArray();
        if (options.Timeline is { } path)
        {
            await File.WriteAllLinesAsync(path, timeline.SelectMany(t => t.At.Zip(t.Ms, (at, ms) => string.Create(CultureInfo.InvariantCulture, $"{at} {ms:F2}"))));
        }

        static double At(double[] sorted, double p) => sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];
        var cpu = cpuBefore is { } before && cpuAfter is { } after ? $", server CPU {(after - before) / seconds * 100:F0}% of one core" : string.Empty;
        var name = string.Create(CultureInfo.InvariantCulture, $"{ids.Count} sessions x {options.Readers} clients, demo agent");
        var summary = string.Create(CultureInfo.InvariantCulture,
            $"token->client p50 {At(all, 0.5):F1} ms, p99 {At(all, 0.99):F1} ms; {deltas / seconds:N0} delta events/s delivered, {runsFinished} replies finished ({runsFinished / seconds:N0}/s over {seconds:F1} s){cpu}");
        return new ScenarioResult(name, summary, deltas, 0);

        async Task AskAsync(string id)
        {
            try
            {
                using var response = await http.PostAsync($"/v1/sessions/{id}/messages", Http.Json("{\"text\":\"Tell me about durable sessions\"}"));
            }
            catch (HttpRequestException)
            {
            }
        }

        async Task FollowAsync(string id, bool asker)
        {
            var mine = new List<double>();
            var mineAt = options.Timeline is null ? null : new List<long>();
            var signalled = false;
            var offset = "now";
            try
            {
                // The server ends each SSE response after its connection lifetime (60 s by default); the follower resumes
                // from the last offset it was given, as every client does, so a long run keeps its whole load.
                var closed = false;
                while (!stop.IsCancellationRequested && !closed)
                {
                    var events = 0;
                    using var reader = await RawSseReader.ConnectAsync(baseAddress, $"/v1/stream/sessions/{id}?offset={Uri.EscapeDataString(offset)}&live=sse", stop.Token);
                    await reader.RunAsync((type, data) =>
                    {
                        events++;
                        if (type.SequenceEqual("control"u8))
                        {
                            offset = ReadControl(data, ref closed) ?? offset;
                            if (!signalled)
                            {
                                signalled = true;
                                connected.Signal();
                            }
                        }
                        else if (type.SequenceEqual("data"u8))
                        {
                            var now = DateTimeOffset.UtcNow;
                            using var json = JsonDocument.Parse(data.ToArray());
                            foreach (var e in json.RootElement.EnumerateArray())
                            {
                                var kind = e.GetProperty("type");
                                var value = e.GetProperty("value");
                                if (kind.ValueEquals("delta"u8) && value.TryGetProperty("at", out var at) && at.TryGetDateTimeOffset(out var produced))
                                {
                                    if (produced >= measureFrom)
                                    {
                                        mine.Add((now - produced).TotalMilliseconds);
                                        mineAt?.Add(produced.ToUnixTimeMilliseconds());
                                        Interlocked.Increment(ref deltas);
                                    }
                                }
                                else if (kind.ValueEquals("run"u8) && value.GetProperty("status").ValueEquals("finished"u8) && asker)
                                {
                                    Interlocked.Increment(ref runsFinished);
                                    _ = AskAsync(id);
                                }
                            }
                        }
                    }, stop.Token);
                    if (events == 0)
                    {
                        // Answered and ended with nothing in it: a server going away. Try again, but not in a hot loop.
                        await Task.Delay(TimeSpan.FromMilliseconds(200), stop.Token);
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
            catch (Exception ex) when (ex is System.Net.Sockets.SocketException or IOException)
            {
            }
            finally
            {
                if (!signalled)
                {
                    connected.Signal();
                }

                latencies.Add([.. mine]);
                if (mineAt is not null)
                {
                    timeline.Add(([.. mineAt], [.. mine]));
                }
            }
        }
    }

    /// <summary>
    /// A control event's <c>streamNextOffset</c>, and whether it says <c>streamClosed</c>, in one pass without a document
    /// (there is one control event per change).
    /// </summary>
    private static string? ReadControl(ReadOnlySpan<byte> control, ref bool closed)
    {
        string? next = null;
        var reader = new Utf8JsonReader(control);
        while (reader.Read())
        {
            if (reader.TokenType != JsonTokenType.PropertyName || reader.CurrentDepth != 1)
            {
                continue;
            }

            if (reader.ValueTextEquals("streamNextOffset"u8) && reader.Read() && reader.TokenType == JsonTokenType.String)
            {
                next = reader.GetString();
            }
            else if (reader.ValueTextEquals("streamClosed"u8) && reader.Read() && reader.TokenType == JsonTokenType.True)
            {
                closed = true;
            }
        }

        return next;
    }

    /// <summary>The server process's total CPU time in seconds, from /proc (Linux), or null.</summary>
    private static double? ServerCpu(int? pid)
    {
        if (pid is null || !File.Exists($"/proc/{pid}/stat"))
        {
            return null;
        }

        var fields = File.ReadAllText($"/proc/{pid}/stat").Split(')')[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        return ticks / 100.0;
    }
}
