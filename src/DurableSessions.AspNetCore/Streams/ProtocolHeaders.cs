namespace DurableSessions.AspNetCore.Streams;

/// <summary>Header names of the Durable Streams protocol.</summary>
internal static class ProtocolHeaders
{
    public const string NextOffset = "Stream-Next-Offset";
    public const string UpToDate = "Stream-Up-To-Date";
    public const string Cursor = "Stream-Cursor";
    public const string Closed = "Stream-Closed";
    public const string Ttl = "Stream-TTL";
    public const string ExpiresAt = "Stream-Expires-At";
    public const string Seq = "Stream-Seq";
    public const string ForkedFrom = "Stream-Forked-From";
    public const string ForkOffset = "Stream-Fork-Offset";
    public const string ForkSubOffset = "Stream-Fork-Sub-Offset";
    public const string ProducerId = "Producer-Id";
    public const string ProducerEpoch = "Producer-Epoch";
    public const string ProducerSeq = "Producer-Seq";
    public const string ProducerExpectedSeq = "Producer-Expected-Seq";
    public const string ProducerReceivedSeq = "Producer-Received-Seq";
    public const string SseDataEncoding = "stream-sse-data-encoding";

    public const string ExposedHeaders =
        "Stream-Next-Offset, Stream-Up-To-Date, Stream-Cursor, Stream-Closed, Stream-TTL, Stream-Expires-At, ETag, Location, " +
        "Content-Type, Producer-Epoch, Producer-Seq, Producer-Expected-Seq, Producer-Received-Seq, stream-sse-data-encoding";

    public const string AllowedHeaders =
        "Content-Type, Authorization, If-None-Match, Stream-Seq, Stream-TTL, Stream-Expires-At, Stream-Closed, Stream-Forked-From, " +
        "Stream-Fork-Offset, Stream-Fork-Sub-Offset, Producer-Id, Producer-Epoch, Producer-Seq, Last-Event-ID, Cache-Control";
}
