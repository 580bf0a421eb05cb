using DurableSessions.Client;
using DurableSessions.Sessions;

namespace DurableSessions.Agents;

/// <summary>Appends typed session events through a producer.</summary>
internal static class SessionEventAppends
{
    /// <summary>
    /// Appends <paramref name="events"/> in order, in one append: a JSON array with each event written straight from its
    /// typed value (no nodes built and serialized again).
    /// </summary>
    public static Task<string> AppendAsync(this StreamProducer producer, IEnumerable<SessionEvent> events, CancellationToken cancellationToken)
        => producer.AppendJsonAsync(
            DurableJson.Write(events, static (writer, events) =>
            {
                writer.WriteStartArray();
                foreach (var change in events)
                {
                    change.WriteTo(writer);
                }

                writer.WriteEndArray();
            }),
            cancellationToken);
}
