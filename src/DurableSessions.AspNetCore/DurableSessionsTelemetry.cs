using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using System.Text.Json.Nodes;
using DurableSessions.Sessions;

namespace DurableSessions.AspNetCore;

/// <summary>
/// The names of everything DurableSessions measures and traces, for <c>AddMeter</c> and <c>AddSource</c>: one meter and
/// one activity source per assembly, named after it.
/// </summary>
public static class DurableSessionsTelemetry
{
    /// <summary>The meter and activity source of the HTTP layer and the session services.</summary>
    public const string AspNetCore = "DurableSessions.AspNetCore";

    /// <summary>Every meter and activity source name of the server's assemblies.</summary>
    public static IReadOnlyList<string> Names { get; } =
        [CoreTelemetry.Name, AspNetCore, "DurableSessions.Storage.Sqlite", "DurableSessions.Storage.Redis", "DurableSessions.Agents"];
}

/// <summary>Instruments of <c>DurableSessions.AspNetCore</c>.</summary>
internal static class Telemetry
{
    private static readonly ConditionalWeakTable<Func<long>, object?> ActiveSessionCounts = [];

    public static readonly ActivitySource Source = new(DurableSessionsTelemetry.AspNetCore, typeof(Telemetry).Assembly.GetName().Version?.ToString());

    private static readonly Meter Meter = new(DurableSessionsTelemetry.AspNetCore, typeof(Telemetry).Assembly.GetName().Version?.ToString());

    public static readonly UpDownCounter<long> LiveReaders = Meter.CreateUpDownCounter<long>(
        "durable_sessions.live.readers", "{reader}", "Live readers being served, by transport (sse, long-poll, ai-sdk).");

    public static readonly Counter<long> StoreUnavailable = Meter.CreateCounter<long>(
        "durable_sessions.store.unavailable", "{request}", "Requests answered 503 because the store could not be reached or could not commit.");

    public static readonly Counter<long> RunsStarted = Meter.CreateCounter<long>("durable_sessions.runs.started", "{run}", "Agent runs started in sessions.");

    public static readonly Counter<long> RunsEnded = Meter.CreateCounter<long>("durable_sessions.runs.ended", "{run}", "Agent runs ended, by status (finished, failed, cancelled, interrupted).");

    public static readonly UpDownCounter<long> ActiveRuns = Meter.CreateUpDownCounter<long>(
        "durable_sessions.runs.active", "{run}", "Runs started and not yet ended, as seen by this node since it started.");

    public static readonly Histogram<double> RunDuration = Meter.CreateHistogram<double>(
        "durable_sessions.run.duration", "s", "From a run's start to its end.", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800] });

    public static readonly Counter<long> Deltas = Meter.CreateCounter<long>("durable_sessions.session.deltas", "{delta}", "Streamed text deltas committed to sessions.");

    public static readonly Counter<long> DeltaCharacters = Meter.CreateCounter<long>("durable_sessions.session.delta_characters", "{character}", "Characters of streamed text committed to sessions.");

    public static readonly Counter<long> Cancels = Meter.CreateCounter<long>("durable_sessions.cancels", "{cancel}", "Runs cancelled through the sessions API (acknowledged with a fence).");

    public static readonly Counter<long> NotificationsSent = Meter.CreateCounter<long>("durable_sessions.notifications.sent", "{notification}", "Notifications a receiver accepted.");

    public static readonly Histogram<double> ThreadPoolDelay = Meter.CreateHistogram<double>(
        "durable_sessions.thread_pool.queue_delay", "s",
        "How long a work item queued to the thread pool waited before it ran (probed at most ten times a second): every request, acknowledgement and delivery waits so at each step.",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5] });

    public static readonly Counter<long> NotificationsFailed = Meter.CreateCounter<long>("durable_sessions.notifications.failed", "{notification}", "Notifications given up on after every attempt.");

    static Telemetry()
    {
        Meter.CreateObservableGauge("durable_sessions.sessions.active", () =>
        {
            long total = 0;
            foreach (var (count, _) in ActiveSessionCounts)
            {
                total += count();
            }

            return total;
        }, "{session}", "Sessions held in memory (used recently); an idle stored session is not held.");
    }

    /// <summary>Adds a source of the active-sessions gauge (one per session service; held weakly).</summary>
    public static void ObserveActiveSessions(Func<long> count) => ActiveSessionCounts.AddOrUpdate(count, null);

    /// <summary>Counts a live reader for the duration of the returned scope.</summary>
    public static ReaderScope Reader(string transport) => new(transport);

    /// <summary>Measures the run and delta events of a committed session append.</summary>
    public static void SessionEventsCommitted(IEnumerable<JsonNode?> events, Func<string, ActivityContext> messageTrace)
    {
        foreach (var node in events)
        {
            var type = SessionJson.Text(node, "type");
            if (type == SessionEventTypes.Delta)
            {
                Deltas.Add(1);
                DeltaCharacters.Add(SessionJson.Text(node?["value"], "text")?.Length ?? 0);
            }
            else if (type == SessionEventTypes.Run && node?["value"] is JsonObject run)
            {
                var status = SessionJson.Text(run, "status");
                var operation = SessionJson.Text(node["headers"], "operation");
                if (status == "started" && operation == "insert")
                {
                    RunsStarted.Add(1);
                    ActiveRuns.Add(1);
                }
                else if (status is "finished" or "failed" or "cancelled" or "interrupted")
                {
                    RunEnded(run, SessionJson.EntityId(node), status, messageTrace);
                }
            }
        }
    }

    /// <summary>Measures the deltas of a committed append of plain delta inserts.</summary>
    internal static void DeltasCommitted(IReadOnlyList<DeltaChange> deltas)
    {
        Deltas.Add(deltas.Count);
        if (DeltaCharacters.Enabled)
        {
            foreach (var delta in deltas)
            {
                DeltaCharacters.Add(delta.Text.Length);
            }
        }
    }

    private static void RunEnded(JsonObject run, string? runId, string status, Func<string, ActivityContext> messageTrace)
    {
        var tag = new KeyValuePair<string, object?>("status", status);
        RunsEnded.Add(1, tag);
        ActiveRuns.Add(-1);
        if (!DateTimeOffset.TryParse(SessionJson.Text(run, "startedAt"), System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.AssumeUniversal, out var started))
        {
            return;
        }

        var ended = DateTimeOffset.TryParse(SessionJson.Text(run, "endedAt"), System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.AssumeUniversal, out var end) ? end : DateTimeOffset.UtcNow;
        RunDuration.Record(Math.Max(0, (ended - started).TotalSeconds), tag);

        // The run as a span under the request that posted its message: one trace from the question to the answer's end.
        var parent = SessionJson.Text(run, "trigger") is { } trigger ? messageTrace(trigger) : default;
        if (parent != default && Source.StartActivity("durable_sessions.run", ActivityKind.Internal, parent, startTime: started) is { } activity)
        {
            activity.SetTag("durable_sessions.run_id", runId);
            activity.SetTag("durable_sessions.agent", SessionJson.Text(run, "agent"));
            activity.SetTag("durable_sessions.run_status", status);
            activity.SetEndTime(ended.UtcDateTime);
            activity.Dispose();
        }
    }

    /// <summary>A counted live reader.</summary>
    public readonly struct ReaderScope : IDisposable
    {
        private readonly KeyValuePair<string, object?> _transport;

        public ReaderScope(string transport)
        {
            _transport = new("transport", transport);
            LiveReaders.Add(1, _transport);
        }

        public void Dispose() => LiveReaders.Add(-1, _transport);
    }
}
