using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace DurableSessions.LoadTest;

/// <summary>Append throughput: one event per request, or batches of events per request, over many streams.</summary>
internal static class AppendScenario
{
    public static async Task<ScenarioResult> RunAsync(LoadOptions options)
    {
        var batched = options.Scenario == "batch";
        var run = Guid.NewGuid().ToString("N")[..8];
        var paths = Enumerable.Range(0, options.Streams).Select(i => $"/v1/stream/bench/{run}/s{i}").ToList();
        using var client = Http.Create(options.Url, options.Connections);
        await Http.CreateStreamsAsync(client, paths);

        var perRequest = batched ? options.Batch : 1;
        var baseAddress = new Uri(options.Url);
        var body = Encoding.UTF8.GetBytes(BuildBody(perRequest, options.EventBytes));
        var requests = paths.Select(p => RawHttpConnection.BuildPost(baseAddress, p, body)).ToArray();
        var connections = await Task.WhenAll(Enumerable.Range(0, options.Connections).Select(_ => RawHttpConnection.ConnectAsync(baseAddress)));
        long events = 0;
        long completed = 0;
        long errors = 0;
        var errorStatuses = new System.Collections.Concurrent.ConcurrentDictionary<int, int>();
        var latencies = new List<double>[options.Connections];

        // Warm up connections and the server's JIT for two seconds before measuring.
        await Drive(TimeSpan.FromSeconds(2), count: false);
        var stopwatch = Stopwatch.StartNew();
        await Drive(TimeSpan.FromSeconds(options.DurationSeconds), count: true);
        var seconds = stopwatch.Elapsed.TotalSeconds;

        var name = string.Create(CultureInfo.InvariantCulture, $"{(batched ? $"batched x{perRequest}" : "one per request")}, {options.Streams} streams, {options.EventBytes} B events, {options.Connections} connections");
        var all = latencies.Where(l => l is not null).SelectMany(l => l).Order().ToArray();
        double At(double p) => all.Length == 0 ? double.NaN : all[Math.Min(all.Length - 1, (int)Math.Ceiling(p * all.Length) - 1)];
        var summary = string.Create(CultureInfo.InvariantCulture, $"{events / seconds:N0} appends/s ({completed / seconds:N0} requests/s, {errors} errors{(errorStatuses.IsEmpty ? string.Empty : ": " + string.Join(", ", errorStatuses.OrderBy(e => e.Key).Select(e => $"{e.Value} x {e.Key}")))}); ack p50 {At(0.5):F2} ms, p99 {At(0.99):F2} ms, max {At(1):F2} ms");
        foreach (var connection in connections)
        {
            connection.Dispose();
        }

        return new ScenarioResult(name, summary, completed, errors);

        async Task Drive(TimeSpan duration, bool count)
        {
            var deadline = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
            var workers = Enumerable.Range(0, options.Connections).Select(w => Task.Run(async () =>
            {
                var next = w;
                var connection = connections[w];
                var mine = count ? latencies[w] = new List<double>(1 << 16) : null;
                while (Stopwatch.GetTimestamp() < deadline)
                {
                    var request = requests[next % requests.Length];
                    next += options.Connections;
                    var sent = Stopwatch.GetTimestamp();
                    var status = await connection.SendAsync(request);
                    if (status is < 200 or > 299)
                    {
                        Interlocked.Increment(ref errors);
                        errorStatuses.AddOrUpdate(status, 1, (_, n) => n + 1);
                        continue;
                    }

                    if (count)
                    {
                        Interlocked.Increment(ref completed);
                        Interlocked.Add(ref events, perRequest);
                        mine!.Add(Stopwatch.GetElapsedTime(sent).TotalMilliseconds);
                    }
                }
            }));
            await Task.WhenAll(workers);
        }
    }

    private static string BuildBody(int count, int eventBytes)
    {
        if (count == 1)
        {
            return Http.Event(0, 0, eventBytes);
        }

        var builder = new StringBuilder("[");
        for (var i = 0; i < count; i++)
        {
            if (i > 0)
            {
                builder.Append(',');
            }

            builder.Append(Http.Event(i, 0, eventBytes));
        }

        return builder.Append(']').ToString();
    }
}
