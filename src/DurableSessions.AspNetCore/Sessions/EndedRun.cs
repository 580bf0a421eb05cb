using System.Text.Json.Nodes;
using DurableSessions.Sessions;

namespace DurableSessions.AspNetCore.Sessions;

/// <summary>
/// A run an append finishes or fails, as a run-finished notification names it. Its JSON values are kept as text, so one
/// instance may be read from any thread (the append path finds them, the notifier reads them later).
/// </summary>
internal sealed record EndedRun(string Id, string Status, string? AgentJson, string? MessageIdJson)
{
    /// <summary>The run's <c>agent</c> as stored (any JSON value), as a node of the caller's own.</summary>
    public JsonNode? Agent() => AgentJson is null ? null : JsonNode.Parse(AgentJson);

    /// <summary>The run's <c>messageId</c> as stored, as a node of the caller's own.</summary>
    public JsonNode? MessageId() => MessageIdJson is null ? null : JsonNode.Parse(MessageIdJson);

    /// <summary>The runs <paramref name="events"/> finish or fail, in order, each with its id (its key when its value leaves the id out).</summary>
    /// <remarks>Tolerant of anything stored: what is not such an event is skipped.</remarks>
    public static List<EndedRun> In(IEnumerable<JsonNode?> events)
    {
        List<EndedRun>? ended = null;
        foreach (var node in events)
        {
            if (node is JsonObject { } e && SessionJson.Text(e, "type") == SessionEventTypes.Run
                && e["value"] is JsonObject run && SessionJson.Text(run, "status") is "finished" or "failed"
                && SessionJson.EntityId(e) is { } id)
            {
                (ended ??= []).Add(new EndedRun(id, SessionJson.Text(run, "status")!, run["agent"]?.ToJsonString(), run["messageId"]?.ToJsonString()));
            }
        }

        return ended ?? [];
    }
}

/// <summary>
/// What the check of a session append parsed that this node's notifier needs (<see cref="AppendRequest.Annotation"/>):
/// the runs it ends, so the notifier does not parse the change again.
/// </summary>
internal sealed class SessionAppendAnnotation
{
    /// <summary>The annotation of an append that ends no run (plain reply deltas, say).</summary>
    public static readonly SessionAppendAnnotation NoneEnded = new([]);

    private SessionAppendAnnotation(List<EndedRun> endedRuns) => EndedRuns = endedRuns;

    /// <summary>The runs the append finishes or fails.</summary>
    public IReadOnlyList<EndedRun> EndedRuns { get; }

    /// <summary>The annotation of an append of <paramref name="events"/>.</summary>
    public static SessionAppendAnnotation Of(IEnumerable<JsonNode?> events)
        => EndedRun.In(events) is { Count: > 0 } ended ? new SessionAppendAnnotation(ended) : NoneEnded;
}
