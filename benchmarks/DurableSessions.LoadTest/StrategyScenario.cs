using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;

namespace DurableSessions.LoadTest;

/// <summary>
/// The strategy execution app at size (start it with <c>--Demo:Size=large</c>: 500 units, 5,000 people, 2,000
/// objectives, 10,000 measures, 360,000 actuals). Measures the company roll-up served from the cache and computed afresh
/// after a change, a 100,000-row CSV import, and how long a new actual takes to reach an open dashboard (the audit
/// stream's event, then the dashboard's read).
/// </summary>
internal static class StrategyScenario
{
    public static async Task<ScenarioResult> RunAsync(LoadOptions options)
    {
        using var http = new HttpClient { BaseAddress = new Uri(options.Url), Timeout = TimeSpan.FromMinutes(5) };

        // The large organisation's admin, with the demo password.
        using (var signIn = await http.PostAsJsonAsync(new Uri("/api/sign-in", UriKind.Relative), new { email = "person1@large.example", password = "demo" }))
        {
            signIn.EnsureSuccessStatusCode();
            http.DefaultRequestHeaders.Authorization = new("Bearer", JsonNode.Parse(await signIn.Content.ReadAsStringAsync())!["token"]!.GetValue<string>());
        }

        var measures = (await http.GetStringAsync(new Uri("/api/export/measures.csv", UriKind.Relative))).Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1)
            .Select(line => int.Parse(line.Split(',')[0], CultureInfo.InvariantCulture)).ToList();
        var year = DateTime.UtcNow.Year;
        var lastMonth = DateTime.UtcNow.AddMonths(-1).ToString("yyyy-MM", CultureInfo.InvariantCulture);

        // The company roll-up: warm, from the cache, and afresh after each change (a one-row import, which computes nothing).
        await http.GetStringAsync(new Uri("/api/units", UriKind.Relative));
        var cached = new List<double>();
        for (var i = 0; i < 50; i++)
        {
            cached.Add(await Timed(() => http.GetStringAsync(new Uri("/api/units", UriKind.Relative))));
        }

        var fresh = new List<double>();
        for (var i = 0; i < 20; i++)
        {
            using var change = await http.PostAsync(new Uri("/api/actuals/import", UriKind.Relative), new StringContent($"measure_id,month,value\n{measures[i]},{lastMonth},{100 + i}\n", Encoding.UTF8, "text/csv"));
            change.EnsureSuccessStatusCode();
            fresh.Add(await Timed(() => http.GetStringAsync(new Uri("/api/units", UriKind.Relative))));
        }

        // A 100,000-row import: ten months of every measure.
        var csv = new StringBuilder("measure_id,month,value\n");
        var random = new Random(7);
        var rows = 0;
        for (var month = 1; month <= 12 && rows < 100_000; month++)
        {
            foreach (var id in measures)
            {
                if (rows == 100_000)
                {
                    break;
                }

                csv.Append(CultureInfo.InvariantCulture, $"{id},{year}-{month:00},{Math.Round(90 + (random.NextDouble() * 20), 2)}\n");
                rows++;
            }
        }

        var importWatch = Stopwatch.StartNew();
        using var import = await http.PostAsync(new Uri("/api/actuals/import", UriKind.Relative), new StringContent(csv.ToString(), Encoding.UTF8, "text/csv"));
        var importSeconds = importWatch.Elapsed.TotalSeconds;
        var imported = import.IsSuccessStatusCode ? JsonNode.Parse(await import.Content.ReadAsStringAsync())!["recorded"]!.GetValue<int>() : 0;

        // A new actual reaching an open dashboard: the dashboard follows the audit stream and reads the roll-up on each event.
        var live = new List<double>();
        for (var trial = 0; trial < 10; trial++)
        {
            using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            using var sse = await http.GetAsync(new Uri("/v1/stream/strategy/audit?offset=now&live=sse", UriKind.Relative), HttpCompletionOption.ResponseHeadersRead, cancel.Token);
            await using var body = await sse.Content.ReadAsStreamAsync(cancel.Token);
            var events = SseEvents.ReadAsync(body, cancel.Token).GetAsyncEnumerator(cancel.Token);
            while (await events.MoveNextAsync() && events.Current.Type != "control")
            {
            }

            var measure = measures[trial * 97 % measures.Count];
            var started = Stopwatch.GetTimestamp();
            using var recorded = await http.PostAsJsonAsync(new Uri($"/api/measures/{measure}/actuals", UriKind.Relative), new { month = lastMonth, value = 50 + trial }, cancel.Token);
            recorded.EnsureSuccessStatusCode();
            while (await events.MoveNextAsync() && !(events.Current.Type == "data" && events.Current.Data.Contains($"measure/{measure}", StringComparison.Ordinal)))
            {
            }

            await http.GetStringAsync(new Uri("/api/units", UriKind.Relative), cancel.Token);
            live.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
            await events.DisposeAsync();
        }

        var everyDashboard = await ManyDashboardsAsync(http, options.Dashboards, measures, lastMonth);
        cached.Sort();
        fresh.Sort();
        live.Sort();
        return new ScenarioResult(
            $"strategy app, {measures.Count:N0} measures",
            string.Create(CultureInfo.InvariantCulture,
                $"company roll-up cached p50 {At(cached, 0.5):F1} ms p99 {At(cached, 0.99):F1} ms, computed afresh p50 {At(fresh, 0.5):F0} ms p99 {At(fresh, 0.99):F0} ms; {imported:N0}-row CSV import {importSeconds:F2} s ({(int)import.StatusCode}); new actual -> dashboard p50 {At(live, 0.5):F0} ms max {live[^1]:F0} ms; {everyDashboard}"),
            cached.Count + fresh.Count + live.Count + 1,
            import.IsSuccessStatusCode ? 0 : 1);
    }

    /// <summary>
    /// <paramref name="count"/> open dashboards, each following the audit stream and reading the company roll-up on
    /// every change, as the page does. Five new actuals; for each, the time from the post until each dashboard has read
    /// the roll-up that holds it.
    /// </summary>
    private static async Task<string> ManyDashboardsAsync(HttpClient http, int count, List<int> measures, string lastMonth)
    {
        const int Trials = 5;
        var trialMeasures = Enumerable.Range(0, Trials).Select(t => measures[(t + 31) * 89 % measures.Count]).ToArray();
        var started = new long[Trials];
        var reached = Enumerable.Range(0, Trials).Select(_ => new System.Collections.Concurrent.ConcurrentBag<double>()).ToArray();
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        var ready = 0;
        async Task Dashboard()
        {
            using var sse = await http.GetAsync(new Uri("/v1/stream/strategy/audit?offset=now&live=sse", UriKind.Relative), HttpCompletionOption.ResponseHeadersRead, stop.Token);
            sse.EnsureSuccessStatusCode();
            await using var body = await sse.Content.ReadAsStreamAsync(stop.Token);
            var seen = 0;
            await foreach (var (type, data) in SseEvents.ReadAsync(body, stop.Token))
            {
                if (type == "control" && seen == 0)
                {
                    seen = -1;
                    Interlocked.Increment(ref ready);
                }

                var trial = Array.FindIndex(trialMeasures, m => data.Contains($"\"measure/{m}\"", StringComparison.Ordinal));
                if (type != "data" || trial < 0)
                {
                    continue;
                }

                await http.GetStringAsync(new Uri("/api/units", UriKind.Relative), stop.Token);
                reached[trial].Add(Stopwatch.GetElapsedTime(started[trial]).TotalMilliseconds);
                if (trial == Trials - 1)
                {
                    return;
                }
            }
        }

        var dashboards = Enumerable.Range(0, count).Select(_ => Task.Run(Dashboard)).ToList();
        while (Volatile.Read(ref ready) < count && !stop.IsCancellationRequested && !dashboards.Any(d => d.IsFaulted))
        {
            await Task.Delay(50, stop.Token);
        }

        for (var trial = 0; trial < Trials; trial++)
        {
            started[trial] = Stopwatch.GetTimestamp();
            using var recorded = await http.PostAsJsonAsync(new Uri($"/api/measures/{trialMeasures[trial]}/actuals", UriKind.Relative), new { month = lastMonth, value = 70 + trial }, stop.Token);
            recorded.EnsureSuccessStatusCode();
            while (reached[trial].Count < count && !stop.IsCancellationRequested && !dashboards.Any(d => d.IsFaulted))
            {
                await Task.Delay(20, stop.Token);
            }
        }

        await Task.WhenAll(dashboards);
        var all = reached.SelectMany(r => r).Order().ToList();
        return string.Create(CultureInfo.InvariantCulture,
            $"{count:N0} open dashboards: new actual -> each dashboard's roll-up p50 {At(all, 0.5):F0} ms p99 {At(all, 0.99):F0} ms max {all[^1]:F0} ms (last dashboard per actual: {string.Join(", ", reached.Select(r => r.Max().ToString("F0", CultureInfo.InvariantCulture)))} ms)");
    }

    private static async Task<double> Timed(Func<Task> action)
    {
        var started = Stopwatch.GetTimestamp();
        await action();
        return Stopwatch.GetElapsedTime(started).TotalMilliseconds;
    }

    private static double At(List<double> sorted, double p) => sorted[Math.Min(sorted.Count - 1, (int)Math.Ceiling(p * sorted.Count) - 1)];
}
