using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace DurableSessions.LoadTest;

/// <summary>
/// Stored sessions at product size. <c>seed</c> stores <c>--streams</c> sessions through the public API, each with one
/// answered question: <c>PUT /v1/sessions/{id}</c>, <c>POST …/messages</c>, then the answer appended to the session
/// stream as an agent writes it (a run of the demo agent, agent:demo, and its complete assistant message). Seed against a server with no agent
/// registered, so no turn waits. <c>ask</c> then posts <c>--questions</c> questions into random stored sessions, one at a
/// time, and measures how long the first reply delta takes to reach a client following the session.
/// </summary>
internal static class StoredSessionScenario
{
    public static async Task<ScenarioResult> SeedAsync(LoadOptions options)
    {
        using var http = Http.Create(options.Url, options.Connections);
        long errors = 0;
        var wall = Stopwatch.StartNew();
        await Parallel.ForEachAsync(Enumerable.Range(0, options.Streams), new ParallelOptions { MaxDegreeOfParallelism = options.Connections }, async (i, ct) =>
        {
            var id = Id(i);
            try
            {
                (await http.PutAsync($"/v1/sessions/{id}", Http.Json("{}"), ct)).EnsureSuccessStatusCode();
                using var posted = await http.PostAsync($"/v1/sessions/{id}/messages", Http.Json("{\"text\":\"What is a durable session?\"}"), ct);
                posted.EnsureSuccessStatusCode();
                var question = JsonDocument.Parse(await posted.Content.ReadAsStringAsync(ct)).RootElement.GetProperty("messageId").GetString();
                (await http.PostAsync($"/v1/stream/sessions/{id}", Http.Json(Answer(question!)), ct)).EnsureSuccessStatusCode();
            }
            catch (HttpRequestException)
            {
                Interlocked.Increment(ref errors);
            }
        });

        var name = string.Create(CultureInfo.InvariantCulture, $"seed {options.Streams:N0} answered sessions");
        return new ScenarioResult(name, string.Create(CultureInfo.InvariantCulture, $"{options.Streams / wall.Elapsed.TotalSeconds:N0} sessions/s, {errors} errors"), options.Streams, errors);
    }

    public static async Task<ScenarioResult> AskAsync(LoadOptions options)
    {
        using var http = Http.Create(options.Url, 64);
        var random = new Random(42);
        var latencies = new List<double>();
        long errors = 0;
        (string Id, double Ms) slowest = (string.Empty, 0);
        for (var q = 0; q < options.Questions; q++)
        {
            var id = Id(random.Next(options.Streams));
            using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            var firstDelta = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
            var following = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var follower = Task.Run(async () =>
            {
                try
                {
                    using var response = await http.GetAsync($"/v1/stream/sessions/{id}?offset=now&live=sse", HttpCompletionOption.ResponseHeadersRead, stop.Token);
                    await foreach (var (type, data) in SseEvents.ReadAsync(await response.Content.ReadAsStreamAsync(stop.Token), stop.Token))
                    {
                        following.TrySetResult();
                        if (type == "data" && data.Contains("\"type\":\"delta\"", StringComparison.Ordinal))
                        {
                            firstDelta.TrySetResult(Stopwatch.GetTimestamp());
                            return;
                        }
                    }
                }
                catch (Exception ex) when (ex is HttpRequestException or OperationCanceledException or IOException)
                {
                }

                firstDelta.TrySetResult(-1);
            });

            await following.Task.WaitAsync(TimeSpan.FromSeconds(30));
            var asked = Stopwatch.GetTimestamp();
            using (var posted = await http.PostAsync($"/v1/sessions/{id}/messages", Http.Json("{\"text\":\"And how does it survive a restart?\"}")))
            {
                posted.EnsureSuccessStatusCode();
            }

            var seen = await firstDelta.Task;
            await stop.CancelAsync();
            await follower;
            if (seen < 0)
            {
                errors++;
                continue;
            }

            var latency = Stopwatch.GetElapsedTime(asked, seen).TotalMilliseconds;
            latencies.Add(latency);
            if (latency > slowest.Ms)
            {
                slowest = (id, latency);
            }
        }

        var sorted = latencies.Order().ToArray();
        static double At(double[] s, double p) => s.Length == 0 ? double.NaN : s[Math.Min(s.Length - 1, (int)Math.Ceiling(p * s.Length) - 1)];
        var name = string.Create(CultureInfo.InvariantCulture, $"{options.Questions} questions into random sessions of {options.Streams:N0}");
        return new ScenarioResult(name, string.Create(CultureInfo.InvariantCulture,
            $"first reply delta p50 {At(sorted, 0.5):F0} ms, p90 {At(sorted, 0.9):F0} ms, p99 {At(sorted, 0.99):F0} ms, max {At(sorted, 1):F0} ms (session {slowest.Id}); {errors} unanswered"), latencies.Count, errors);
    }

    private static string Id(int i) => "stored-" + i.ToString(CultureInfo.InvariantCulture);

    /// <summary>The answer an agent would have written: a finished run and its complete reply, in one append.</summary>
    private static string Answer(string question)
    {
        var run = "r_" + question;
        var message = "m_" + question;
        var now = DateTimeOffset.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);
        var text = "A durable session keeps every token in an append-only log, so nothing is lost when a connection drops.";
        var builder = new StringBuilder();
        builder.Append(CultureInfo.InvariantCulture, $"[{{\"type\":\"run\",\"key\":\"{run}\",\"value\":{{\"id\":\"{run}\",\"agent\":\"agent:demo\",\"messageId\":\"{message}\",\"trigger\":\"{question}\",\"status\":\"finished\",\"startedAt\":\"{now}\",\"endedAt\":\"{now}\",\"finishReason\":\"stop\"}},\"headers\":{{\"operation\":\"insert\",\"timestamp\":\"{now}\"}}}},");
        builder.Append(CultureInfo.InvariantCulture, $"{{\"type\":\"message\",\"key\":\"{message}\",\"value\":{{\"id\":\"{message}\",\"role\":\"assistant\",\"author\":\"agent:demo\",\"runId\":\"{run}\",\"parts\":[{{\"type\":\"text\",\"text\":\"{text}\"}}],\"status\":\"complete\",\"createdAt\":\"{now}\"}},\"headers\":{{\"operation\":\"insert\",\"timestamp\":\"{now}\"}}}}]");
        return builder.ToString();
    }
}
