using System.Text.Json.Nodes;

namespace DurableSessions.FunctionalTests;

/// <summary>Request bodies of the agent turns API (<c>/v1/agents/{agent}/…</c>) built from a granted claim.</summary>
internal static class AgentTurnBodies
{
    /// <summary>The body of an ack (or a release) of <paramref name="claim"/>, with a stream offset acked if given.</summary>
    public static string Ack(JsonObject claim, bool done, string? offset = null)
    {
        var body = new JsonObject
        {
            ["stream"] = (string?)claim["stream"],
            ["token"] = (string?)claim["token"],
            ["wake_id"] = (string?)claim["wake_id"],
            ["generation"] = (long)claim["generation"]!,
            ["done"] = done,
        };
        if (offset is not null)
        {
            body["acks"] = new JsonArray(new JsonObject { ["stream"] = (string?)claim["stream"], ["offset"] = offset });
        }

        return body.ToJsonString();
    }
}
