namespace DurableSessions.AspNetCore.Streams;

/// <summary>Header names of the Durable Streams protocol (from <see cref="StreamHeaders"/>) and the server's CORS lists.</summary>
internal static class ProtocolHeaders
{
    public const string NextOffset = StreamHeaders.NextOffset;
    public const string UpToDate = StreamHeaders.UpToDate;
    public const string Cursor = StreamHeaders.Cursor;
    public const string Closed = StreamHeaders.Closed;
    public const string Ttl = StreamHeaders.Ttl;
    public const string ExpiresAt = StreamHeaders.ExpiresAt;
    public const string Seq = StreamHeaders.Seq;
    public const string ForkedFrom = StreamHeaders.ForkedFrom;
    public const string ForkOffset = StreamHeaders.ForkOffset;
    public const string ForkSubOffset = StreamHeaders.ForkSubOffset;
    public const string ProducerId = StreamHeaders.ProducerId;
    public const string ProducerEpoch = StreamHeaders.ProducerEpoch;
    public const string ProducerSeq = StreamHeaders.ProducerSeq;
    public const string ProducerExpectedSeq = StreamHeaders.ProducerExpectedSeq;
    public const string ProducerReceivedSeq = StreamHeaders.ProducerReceivedSeq;
    public const string SseDataEncoding = StreamHeaders.SseDataEncoding;

    public const string ExposedHeaders =
        "Stream-Next-Offset, Stream-Up-To-Date, Stream-Cursor, Stream-Closed, Stream-TTL, Stream-Expires-At, ETag, Location, " +
        "Content-Type, Producer-Epoch, Producer-Seq, Producer-Expected-Seq, Producer-Received-Seq, stream-sse-data-encoding";

    public const string AllowedHeaders =
        "Content-Type, Authorization, If-None-Match, Stream-Seq, Stream-TTL, Stream-Expires-At, Stream-Closed, Stream-Forked-From, " +
        "Stream-Fork-Offset, Stream-Fork-Sub-Offset, Producer-Id, Producer-Epoch, Producer-Seq, Last-Event-ID, Cache-Control";
}
