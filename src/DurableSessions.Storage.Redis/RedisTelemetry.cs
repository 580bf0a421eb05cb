using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace DurableSessions.Storage.Redis;

/// <summary>Metrics and traces of the Redis store: meter and activity source <c>DurableSessions.Storage.Redis</c>.</summary>
internal static class RedisTelemetry
{
    public const string Name = "DurableSessions.Storage.Redis";

    public static readonly ActivitySource Source = new(Name, typeof(RedisTelemetry).Assembly.GetName().Version?.ToString());

    private static readonly Meter Meter = new(Name, typeof(RedisTelemetry).Assembly.GetName().Version?.ToString());

    public static readonly Histogram<double> CommitDuration = Meter.CreateHistogram<double>(
        "durable_sessions.redis.commit.duration", "s", "One append's commit: the atomic append script on Redis, from send to reply.",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5] });
}
