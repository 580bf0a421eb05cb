namespace DurableSessions;

/// <summary>
/// An immutable snapshot of a stream's metadata.
/// </summary>
/// <remarks>Snapshots are safe to share across threads; a store publishes a new one after each committed change.</remarks>
public sealed record StreamInfo
{
    /// <summary>The store-assigned identifier of this incarnation of the stream; never reused.</summary>
    public required long Id { get; init; }

    /// <summary>The stream's path relative to the stream root, e.g. <c>chats/42</c>.</summary>
    public required string Path { get; init; }

    /// <summary>The content type set at creation.</summary>
    public required string ContentType { get; init; }

    /// <summary>The position after the last unit (byte or JSON message) of the stream.</summary>
    public required long TailPosition { get; init; }

    /// <summary>
    /// The first position the stream still holds: data before it was removed by retention
    /// (<see cref="StreamStore.TrimAsync"/>), and a read from before it is answered as gone. 0 for a stream never trimmed.
    /// </summary>
    public long RetainedFrom { get; init; }

    /// <summary>Whether the stream has been closed (no further appends).</summary>
    public bool Closed { get; init; }

    /// <summary>The sliding time-to-live, if any.</summary>
    public long? TtlSeconds { get; init; }

    /// <summary>The absolute expiry time, if any.</summary>
    public DateTimeOffset? ExpiresAt { get; init; }

    /// <summary>When the stream was created.</summary>
    public DateTimeOffset CreatedAt { get; init; }

    /// <summary>The last read or write that reset the sliding TTL.</summary>
    public DateTimeOffset LastAccessAt { get; init; }

    /// <summary>The stream this one was forked from, if any.</summary>
    public long? ForkSourceId { get; init; }

    /// <summary>The path of the stream this one was forked from, as given at creation.</summary>
    public string? ForkSourcePath { get; init; }

    /// <summary>The position at which this fork diverges from its source; positions below it are the source's.</summary>
    public long ForkPosition { get; init; }

    /// <summary>The anchor offset given at fork creation (for idempotent re-creation checks).</summary>
    public long ForkOffset { get; init; }

    /// <summary>The sub-offset given at fork creation.</summary>
    public long ForkSubOffset { get; init; }

    /// <summary>Whether the stream was deleted while forks still reference it.</summary>
    public bool SoftDeleted { get; init; }

    /// <summary>The number of live forks whose source is this stream.</summary>
    public int ForkCount { get; init; }

    /// <summary>Who created the stream (the access token's subject), when known; counted by per-owner stream limits.</summary>
    public string? Owner { get; init; }

    /// <summary>The last <c>Stream-Seq</c> accepted, if any.</summary>
    public string? LastStreamSeq { get; init; }

    /// <summary>The producer request that closed the stream, if it was closed by an idempotent producer.</summary>
    public ProducerStamp? ClosedBy { get; init; }

    /// <summary>Whether the content type selects JSON mode.</summary>
    public bool IsJson => StreamContentType.IsJson(ContentType);

    /// <summary>Whether the stream has expired at <paramref name="now"/>.</summary>
    public bool IsExpiredAt(DateTimeOffset now)
    {
        if (ExpiresAt is { } expiresAt && now >= expiresAt)
        {
            return true;
        }

        return TtlSeconds is { } ttl && TtlElapsed(LastAccessAt, ttl, now);
    }

    /// <summary>
    /// Whether <paramref name="ttlSeconds"/> have passed since <paramref name="lastAccess"/> at <paramref name="now"/>.
    /// Never overflows, whatever the TTL: the elapsed time is compared, not a computed expiry instant.
    /// </summary>
    public static bool TtlElapsed(DateTimeOffset lastAccess, long ttlSeconds, DateTimeOffset now)
        => now >= lastAccess && (now - lastAccess).Ticks / TimeSpan.TicksPerSecond >= ttlSeconds;
}

/// <summary>Identifies one request of an idempotent producer.</summary>
/// <param name="ProducerId">The client-chosen producer id.</param>
/// <param name="Epoch">The producer's epoch.</param>
/// <param name="Seq">The request's sequence number within the epoch.</param>
public readonly record struct ProducerStamp(string ProducerId, long Epoch, long Seq);

/// <summary>A stream's view of one idempotent producer.</summary>
/// <param name="Epoch">The highest epoch seen.</param>
/// <param name="LastSeq">The highest sequence accepted in that epoch.</param>
public readonly record struct ProducerState(long Epoch, long LastSeq);
