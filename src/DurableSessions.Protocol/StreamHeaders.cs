namespace DurableSessions;

/// <summary>The HTTP header names of the Durable Streams protocol, shared by the server and the clients.</summary>
public static class StreamHeaders
{
    /// <summary>The offset to read from next (responses to reads and appends).</summary>
    public const string NextOffset = "Stream-Next-Offset";

    /// <summary><c>true</c> when a read reached the stream's tail.</summary>
    public const string UpToDate = "Stream-Up-To-Date";

    /// <summary>The cursor a live read echoes, so caches tell live reads apart.</summary>
    public const string Cursor = "Stream-Cursor";

    /// <summary><c>true</c> on a closed stream, or on an append that closes it.</summary>
    public const string Closed = "Stream-Closed";

    /// <summary>A stream's time to live in seconds.</summary>
    public const string Ttl = "Stream-TTL";

    /// <summary>A stream's absolute expiry.</summary>
    public const string ExpiresAt = "Stream-Expires-At";

    /// <summary>The writer's own sequence for an append, checked to increase.</summary>
    public const string Seq = "Stream-Seq";

    /// <summary>The stream a new stream forks.</summary>
    public const string ForkedFrom = "Stream-Forked-From";

    /// <summary>The offset a fork starts at.</summary>
    public const string ForkOffset = "Stream-Fork-Offset";

    /// <summary>A position inside a message a fork starts at.</summary>
    public const string ForkSubOffset = "Stream-Fork-Sub-Offset";

    /// <summary>An idempotent producer's id.</summary>
    public const string ProducerId = "Producer-Id";

    /// <summary>An idempotent producer's epoch.</summary>
    public const string ProducerEpoch = "Producer-Epoch";

    /// <summary>An idempotent producer's sequence number.</summary>
    public const string ProducerSeq = "Producer-Seq";

    /// <summary>The sequence the server expected (on a gap).</summary>
    public const string ProducerExpectedSeq = "Producer-Expected-Seq";

    /// <summary>The sequence the server received (on a gap).</summary>
    public const string ProducerReceivedSeq = "Producer-Received-Seq";

    /// <summary>How SSE data of a binary stream is encoded (<c>base64</c>).</summary>
    public const string SseDataEncoding = "stream-sse-data-encoding";
}
