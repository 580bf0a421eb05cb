using System.Diagnostics;
using System.Net;
using System.Text;
using DurableSessions.Agents;
using DurableSessions.AspNetCore;
using DurableSessions.Client;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// Traces and metrics through OpenTelemetry's in-memory exporters, and the server's health and Prometheus endpoints.
/// Meters and activity sources are process-wide, so each assertion picks this test's trace or waits for a counter to move.
/// The tests run alone: an up-down counter such as the live reader gauge sums what every in-process server adds from the
/// moment this test's meter provider attaches, so a test beside it closing readers it opened earlier could hold the sum
/// below this test's one reader.
/// </summary>
[Collection(ProcessWideTelemetry.Name)]
public sealed class TelemetryTests : IAsyncLifetime
{
    private readonly List<Activity> _spans = [];
    private readonly List<Metric> _metrics = [];
    private InProcessServer _server = null!;

    public async ValueTask InitializeAsync()
    {
        _server = await InProcessServer.StartAsync(services: services => services.AddOpenTelemetry()
            .WithTracing(tracing => tracing.AddSource([.. DurableSessionsTelemetry.Names]).AddAspNetCoreInstrumentation().AddInMemoryExporter(_spans))
            .WithMetrics(metrics => metrics.AddMeter([.. DurableSessionsTelemetry.Names]).AddInMemoryExporter(_metrics)));
    }

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    [Fact]
    public async Task An_append_is_one_trace_from_the_http_request_through_the_commit_to_the_fanout_and_the_counters_move()
    {
        var before = Sum("durable_sessions.appends");
        var client = _server.Client;
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/traced", new StringContent("[]", Encoding.UTF8, "application/json"))).StatusCode);
        using var sse = await client.GetAsync("/v1/stream/traced?offset=now&live=sse", HttpCompletionOption.ResponseHeadersRead);
        var events = new StreamReader(await sse.Content.ReadAsStreamAsync());
        while (await events.ReadLineAsync() is { } line && !line.StartsWith("event: control", StringComparison.Ordinal))
        {
        }

        Assert.Equal(HttpStatusCode.NoContent, (await client.PostAsync("/v1/stream/traced", new StringContent("{\"n\":1}", Encoding.UTF8, "application/json"))).StatusCode);
        while (await events.ReadLineAsync() is { } line && !line.Contains("\"n\":1", StringComparison.Ordinal))
        {
        }

        var append = await Span(s => s.OperationName == "durable_sessions.append" && (string?)s.GetTagItem("durable_sessions.stream") == "traced" && (int?)s.GetTagItem("http.response.status_code") == 204);
        var commit = await Span(s => s.OperationName == "durable_sessions.sqlite.commit" && s.ParentSpanId == append.SpanId);
        var fanout = await Span(s => s.OperationName == "durable_sessions.fanout" && s.ParentSpanId == append.SpanId);
        var http = await Span(s => s.SpanId == append.ParentSpanId);

        Assert.Equal(ActivityKind.Server, http.Kind);
        Assert.Equal(append.TraceId, commit.TraceId);
        Assert.Equal(append.TraceId, fanout.TraceId);
        Assert.Equal(1, fanout.GetTagItem("durable_sessions.readers"));
        Assert.True(commit.Duration > TimeSpan.Zero);
        Assert.True(commit.StartTimeUtc >= append.StartTimeUtc && commit.StartTimeUtc + commit.Duration <= append.StartTimeUtc + append.Duration);

        await Until(() => Sum("durable_sessions.appends") >= before + 1, "the appends counter");
        await Until(() => Count("durable_sessions.sqlite.commit.duration") > 0, "the commit latency histogram");
        await Until(() => Sum("durable_sessions.live.readers", ("transport", "sse")) >= 1, "the live SSE reader gauge");
    }

    [Fact]
    public async Task A_message_and_the_run_that_answers_it_are_one_trace_and_the_run_and_token_counters_move()
    {
        var (started, tokens) = (Sum("durable_sessions.runs.started"), Sum("durable_sessions.agent.tokens"));
        using var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = _server.BaseAddress, ParticipantId = "client:t" });
        var session = client.Session("traced-run");
        await session.CreateAsync();
        using var stop = new CancellationTokenSource();
        var agent = new SessionAgent(new DemoChatClient(tokensPerSecond: 400), client, new SessionAgentOptions { AgentId = "agent:demo" });
        var serving = Task.Run(() => agent.RunAsync("traced-run", stop.Token));
        try
        {
            await session.SendMessageAsync("Is this traced?");
            var post = await Span(s => s.Kind == ActivityKind.Server && (string?)s.GetTagItem("url.path") == "/v1/sessions/traced-run/messages");
            var run = await Span(s => s.OperationName == "durable_sessions.run" && s.TraceId == post.TraceId);

            Assert.Equal(post.SpanId, run.ParentSpanId);
            Assert.Equal("finished", run.GetTagItem("durable_sessions.run_status"));
            Assert.Equal("agent:demo", run.GetTagItem("durable_sessions.agent"));
            Assert.True(run.Duration > TimeSpan.Zero);
            await Until(() => Sum("durable_sessions.runs.started") >= started + 1, "the runs started counter");
            await Until(() => Count("durable_sessions.run.duration") > 0, "the run duration histogram");
            await Until(() => Sum("durable_sessions.agent.tokens") >= tokens + 5, "the agent's tokens counter");
            await Until(() => Sum("durable_sessions.session.deltas") > 0, "the deltas counter");
        }
        finally
        {
            await stop.CancelAsync();
            await serving.WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(_ => { }, TaskScheduler.Default);
        }
    }

    [Fact]
    public async Task The_server_answers_liveness_readiness_and_a_prometheus_scrape_when_enabled()
    {
        await using var server = await ServerProcess.StartAsync(null, "--Telemetry:Prometheus=true");
        using var client = new HttpClient { BaseAddress = server.BaseAddress };
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/health/live")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/health/ready")).StatusCode);
        Assert.Equal("ok", await client.GetStringAsync("/health"));
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/scraped", new StringContent("{\"a\":1}", Encoding.UTF8, "application/json"))).StatusCode);

        // The exporter caches a scrape briefly: wait until one includes the append.
        var text = string.Empty;
        await Until(async () => (text = await client.GetStringAsync("/metrics")).Contains("durable_sessions_appends_total", StringComparison.Ordinal)
            && text.Contains("durable_sessions_thread_pool_queue_delay_seconds_bucket", StringComparison.Ordinal), "the appends counter and the pool's probes in a scrape");
        Assert.Contains("# TYPE durable_sessions_sqlite_commit_duration_seconds histogram", text, StringComparison.Ordinal);

        // Durations in seconds are bucketed in milliseconds and below, not by the exporter's defaults (0, 5, 10, ... seconds).
        foreach (var histogram in new[] { "durable_sessions_sqlite_commit_duration_seconds_bucket", "durable_sessions_thread_pool_queue_delay_seconds_bucket" })
        {
            Assert.Contains(text.Split('\n'), line => line.StartsWith(histogram, StringComparison.Ordinal) && line.Contains("le=\"0.001\"", StringComparison.Ordinal));
        }

        Assert.Contains("kestrel_", text, StringComparison.Ordinal);

        await using var plain = await ServerProcess.StartAsync();
        using var plainClient = new HttpClient { BaseAddress = plain.BaseAddress };
        Assert.Equal(HttpStatusCode.NotFound, (await plainClient.GetAsync("/metrics")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await plainClient.GetAsync("/health/ready")).StatusCode);
    }

    private async Task<Activity> Span(Func<Activity, bool> match)
    {
        Activity? found = null;
        await Until(() =>
        {
            lock (_spans)
            {
                found = _spans.FirstOrDefault(match);
            }

            return found is not null;
        }, "a span");
        return found!;
    }

    private double Sum(string name, (string Key, string Value)? tag = null) => Points(name, tag).Sum(p =>
        p.Metric.MetricType switch
        {
            MetricType.LongSum or MetricType.LongSumNonMonotonic => p.Point.GetSumLong(),
            MetricType.LongGauge => p.Point.GetGaugeLastValueLong(),
            _ => p.Point.GetSumDouble(),
        });

    private long Count(string name) => Points(name, null).Sum(p => p.Point.GetHistogramCount());

    private List<(Metric Metric, MetricPoint Point)> Points(string name, (string Key, string Value)? tag)
    {
        _server.Services.GetRequiredService<MeterProvider>().ForceFlush();
        var points = new List<(Metric, MetricPoint)>();
        lock (_metrics)
        {
            foreach (var metric in _metrics.Where(m => m.Name == name))
            {
                foreach (ref readonly var point in metric.GetMetricPoints())
                {
                    var matches = tag is null;
                    foreach (var item in point.Tags)
                    {
                        matches |= tag is { } t && item.Key == t.Key && (item.Value as string) == t.Value;
                    }

                    if (matches)
                    {
                        points.Add((metric, point));
                    }
                }
            }

            _metrics.Clear();
        }

        return points;
    }

    private static async Task Until(Func<bool> condition, string what) => await Until(() => Task.FromResult(condition()), what);

    private static async Task Until(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}");
            await Task.Delay(20);
        }
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessWideTelemetry
{
    public const string Name = "Process-wide telemetry";
}
