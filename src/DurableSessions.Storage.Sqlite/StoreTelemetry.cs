using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;

namespace DurableSessions.Storage.Sqlite;

/// <summary>Metrics and traces of the SQLite store: meter and activity source <c>DurableSessions.Storage.Sqlite</c>.</summary>
internal static class StoreTelemetry
{
    public const string Name = "DurableSessions.Storage.Sqlite";

    public static readonly ActivitySource Source = new(Name, typeof(StoreTelemetry).Assembly.GetName().Version?.ToString());

    private static readonly Meter Meter = new(Name, typeof(StoreTelemetry).Assembly.GetName().Version?.ToString());

    public static readonly Counter<long> Commits = Meter.CreateCounter<long>("durable_sessions.sqlite.commits", "{commit}", "Group commits (transactions).");

    public static readonly Histogram<int> GroupSize = Meter.CreateHistogram<int>("durable_sessions.sqlite.group_size", "{request}", "Write requests per group commit.");

    public static readonly Histogram<double> CommitDuration = Meter.CreateHistogram<double>(
        "durable_sessions.sqlite.commit.duration", "s", "From the start of a group commit until it is durable (flushed, with Durability=Fsync) and acknowledged.",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5] });

    private static readonly ConditionalWeakTable<SqliteStreamStore, object?> Stores = [];

    static StoreTelemetry()
    {
        Meter.CreateObservableGauge("durable_sessions.sqlite.producers.cached", () =>
        {
            long total = 0;
            foreach (var (store, _) in Stores)
            {
                total += store.CachedProducerCount;
            }

            return total;
        }, "{producer}", "Producers whose state the SQLite writer holds in memory (those used within about a minute plus the expiry sweep interval).");
    }

    /// <summary>Adds a store to the gauges (held weakly).</summary>
    public static void Register(SqliteStreamStore store) => Stores.AddOrUpdate(store, null);
}
