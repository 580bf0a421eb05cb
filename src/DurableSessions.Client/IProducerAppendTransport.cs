namespace DurableSessions.Client;

/// <summary>
/// Carries the appends of idempotent producers (<see cref="StreamProducer"/>) in some other way than an HTTP request
/// each. Set one in <see cref="DurableSessionsClientOptions.AppendTransport"/>: a server's own process, for example, hands
/// its hosted agent's appends straight to its append path. A transport that cannot carry an append answers null, and the
/// producer sends the same append, with the same sequence number, over HTTP: the store keeps it exactly once either way.
/// </summary>
public interface IProducerAppendTransport
{
    /// <summary>Appends a JSON array of messages as producer <paramref name="producerId"/>.</summary>
    /// <param name="path">The stream's path.</param>
    /// <param name="messagesJson">The UTF-8 text of a JSON array of messages, as an HTTP append's body.</param>
    /// <param name="producerId">The producer id.</param>
    /// <param name="epoch">The producer epoch.</param>
    /// <param name="seq">The producer sequence number of this append.</param>
    /// <param name="cancellationToken">Cancels the append; the producer may send it again with the same sequence number.</param>
    /// <returns>The stream's offset after the append, or null when this transport cannot carry it now.</returns>
    /// <exception cref="DurableSessionsException">The server refused the append.</exception>
    Task<string?> AppendAsync(string path, ReadOnlyMemory<byte> messagesJson, string producerId, long epoch, long seq, CancellationToken cancellationToken);
}
