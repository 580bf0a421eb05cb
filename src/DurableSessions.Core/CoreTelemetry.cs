using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using DurableSessions.Live;

namespace DurableSessions;

/// <summary>
/// The metrics and traces of the store-independent core: meter and activity source <c>DurableSessions.Core</c>.
/// </summary>
/// <remarks>
/// Counted where every store's committed changes meet: the fan-out. A change committed on another node is counted by
/// that node.
/// </remarks>
public static class CoreTelemetry
{
    /// <summary>The name of the meter and of the activity source.</summary>
    public const string Name = "DurableSessions.Core";

    private static readonly ConditionalWeakTable<StreamFanout, object?> Fanouts = [];

    internal static readonly ActivitySource Source = new(Name, typeof(CoreTelemetry).Assembly.GetName().Version?.ToString());

    internal static readonly Meter Meter = new(Name, typeof(CoreTelemetry).Assembly.GetName().Version?.ToString());

    internal static readonly Counter<long> Appends = Meter.CreateCounter<long>(
        "durable_sessions.appends", "{append}", "Committed appends (and creates with initial data).");

    internal static readonly Counter<long> AppendBytes = Meter.CreateCounter<long>(
        "durable_sessions.append.size", "By", "Bytes of committed appends.");

    internal static readonly Counter<long> ReadersCutOff = Meter.CreateCounter<long>(
        "durable_sessions.live.readers_cut_off", "{reader}", "Live readers cut off because their queue was full; each resumes from its own offset.");

    static CoreTelemetry()
    {
        Meter.CreateObservableGauge("durable_sessions.fanout.queue_depth", () => Sum(s => s.Reader.Count), "{change}", "Changes queued for live readers, not yet written to them.");
        Meter.CreateObservableGauge("durable_sessions.fanout.queued_bytes", () => Sum(s => s.QueuedBytes), "By", "Bytes queued for live readers, not yet written to them.");
        Meter.CreateObservableGauge("durable_sessions.fanout.readers", () => Sum(_ => 1), "{reader}", "Live readers registered with the fan-out.");
    }

    internal static void Register(StreamFanout fanout) => Fanouts.AddOrUpdate(fanout, null);

    private static long Sum(Func<LiveSubscription, long> measure)
    {
        long total = 0;
        foreach (var (fanout, _) in Fanouts)
        {
            total += fanout.Sum(measure);
        }

        return total;
    }
}
