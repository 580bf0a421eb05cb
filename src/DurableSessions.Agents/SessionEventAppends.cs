using System.Text.Json.Nodes;
using DurableSessions.Client;
using DurableSessions.Sessions;

namespace DurableSessions.Agents;

/// <summary>Appends typed session events through a producer.</summary>
internal static class SessionEventAppends
{
    /// <summary>Appends <paramref name="events"/> in order, in one append.</summary>
    public static Task<string> AppendAsync(this StreamProducer producer, IEnumerable<SessionEvent> events, CancellationToken cancellationToken)
        => producer.AppendAsync(new JsonArray([.. events.Select(e => (JsonNode)e.ToJson())]), cancellationToken);
}
