using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace DurableSessions.Agents;

/// <summary>Metrics and traces of agents built on the SDK: meter and activity source <c>DurableSessions.Agents</c>.</summary>
public static class AgentTelemetry
{
    /// <summary>The name of the meter and of the activity source.</summary>
    public const string Name = "DurableSessions.Agents";

    internal static readonly ActivitySource Source = new(Name, typeof(AgentTelemetry).Assembly.GetName().Version?.ToString());

    private static readonly Meter Meter = new(Name, typeof(AgentTelemetry).Assembly.GetName().Version?.ToString());

    internal static readonly Counter<long> Tokens = Meter.CreateCounter<long>(
        "durable_sessions.agent.tokens", "{token}", "Streamed updates (tokens) the model produced and the agent wrote to sessions.");

    internal static readonly UpDownCounter<long> ActiveRuns = Meter.CreateUpDownCounter<long>("durable_sessions.agent.runs.active", "{run}", "Runs this agent process is answering now.");

    internal static readonly Histogram<double> RunDuration = Meter.CreateHistogram<double>(
        "durable_sessions.agent.run.duration", "s", "From a run's start to its end, in the agent.", advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800] });
}
