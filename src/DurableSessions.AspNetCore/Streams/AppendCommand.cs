namespace DurableSessions.AspNetCore.Streams;

/// <summary>An append as a transport received it, before any check: the HTTP request's headers and body, or a WebSocket message.</summary>
/// <param name="Path">The stream's path.</param>
/// <param name="ContentType">The data's media type; null when there is no data.</param>
/// <param name="Data">The raw data (a JSON stream's body: one value, or an array of values).</param>
/// <param name="Close">Whether the append closes the stream.</param>
/// <param name="StreamSeq">The writer's <c>Stream-Seq</c>, if any.</param>
/// <param name="Producer">The idempotent producer's id, epoch and sequence number, if any.</param>
internal sealed record AppendCommand(string Path, string? ContentType, ReadOnlyMemory<byte> Data, bool Close, string? StreamSeq, ProducerStamp? Producer);

/// <summary>
/// How the protocol answers an append: the status (200/204 when stored), and for a refusal its code and message. The
/// store's result is kept for the headers or fields that go with it (the tail, the producer's epoch and sequence).
/// </summary>
internal readonly record struct AppendAnswer(int Status, AppendResult? Result = null, string? Code = null, string? Message = null)
{
    /// <summary>Whether the append was stored (or was already: a duplicate, a retried close).</summary>
    public bool Succeeded => Code is null;

    public static AppendAnswer Refused(int status, string code, string message, AppendResult? result = null) => new(status, result, code, message);
}
