using System.Diagnostics.Metrics;

namespace DurableSessions.Storage.Sqlite;

/// <summary>Metrics of the SQLite store (meter <c>DurableSessions.Storage.Sqlite</c>).</summary>
internal static class StoreMetrics
{
    private static readonly Meter Meter = new("DurableSessions.Storage.Sqlite");

    public static readonly Counter<long> Commits = Meter.CreateCounter<long>("durable_sessions.sqlite.commits", description: "Group commits (transactions).");

    public static readonly Histogram<int> GroupSize = Meter.CreateHistogram<int>("durable_sessions.sqlite.group_size", description: "Write requests per group commit.");
}
