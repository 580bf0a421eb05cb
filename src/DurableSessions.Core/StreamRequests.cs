namespace DurableSessions;

/// <summary>Data to append, already validated and framed for the stream's content type.</summary>
/// <remarks>
/// For JSON streams <see cref="Data"/> holds the messages separated by commas (no enclosing brackets) and
/// <see cref="Units"/> the message count; for other streams the raw bytes and their length.
/// </remarks>
/// <param name="Data">The framed bytes.</param>
/// <param name="Units">How many positions the data occupies.</param>
public readonly record struct StreamPayload(ReadOnlyMemory<byte> Data, long Units)
{
    /// <summary>An empty payload.</summary>
    public static StreamPayload Empty => default;

    /// <summary>Whether the payload holds no units.</summary>
    public bool IsEmpty => Units == 0;
}

/// <summary>A request to create a stream (or a fork of one).</summary>
public sealed record CreateStreamRequest
{
    /// <summary>The stream path.</summary>
    public required string Path { get; init; }

    /// <summary>The content type; <see langword="null"/> for a fork means "inherit the source's".</summary>
    public string? ContentType { get; init; }

    /// <summary>The sliding TTL, if requested.</summary>
    public long? TtlSeconds { get; init; }

    /// <summary>The absolute expiry, if requested.</summary>
    public DateTimeOffset? ExpiresAt { get; init; }

    /// <summary>Whether to create the stream closed.</summary>
    public bool Closed { get; init; }

    /// <summary>Initial content.</summary>
    public StreamPayload InitialData { get; init; }

    /// <summary>The source path when creating a fork.</summary>
    public string? ForkedFrom { get; init; }

    /// <summary>The fork anchor offset; <see langword="null"/> means the source's tail.</summary>
    public long? ForkOffset { get; init; }

    /// <summary>
    /// The most streams the store may hold for this create to succeed; <see langword="null"/> for no limit. A create
    /// that would pass it answers <see cref="CreateStreamStatus.LimitReached"/>; an existing stream still answers as
    /// usual.
    /// </summary>
    public long? MaxStreams { get; init; }

    /// <summary>Who creates the stream (the access token's subject), recorded as <see cref="StreamInfo.Owner"/>.</summary>
    public string? Owner { get; init; }

    /// <summary>
    /// The most streams <see cref="Owner"/> may hold for this create to succeed; <see langword="null"/> for no limit. A
    /// create that would pass it answers <see cref="CreateStreamStatus.OwnerLimitReached"/>.
    /// </summary>
    public long? MaxStreamsPerOwner { get; init; }

    /// <summary>Units past the anchor to inherit.</summary>
    public long ForkSubOffset { get; init; }

    /// <summary>
    /// For a fork: the most forks its chain may hold, this one included (a fork of a stream that is no fork is 1 deep);
    /// <see langword="null"/> for no limit. Each level of a chain is a segment every read from its start goes through,
    /// so a deeper fork answers <see cref="CreateStreamStatus.ForkTooDeep"/>.
    /// </summary>
    public int? MaxForkDepth { get; init; }
}

/// <summary>The outcome of a create request.</summary>
public enum CreateStreamStatus
{
    /// <summary>A new stream was created.</summary>
    Created,

    /// <summary>A stream with the same configuration already existed.</summary>
    AlreadyExists,

    /// <summary>A stream exists at the path with a different configuration (or the path is held by a soft-deleted stream).</summary>
    Conflict,

    /// <summary>The fork source does not exist.</summary>
    SourceNotFound,

    /// <summary>The fork source is soft-deleted.</summary>
    SourceGone,

    /// <summary>The fork's content type differs from the source's.</summary>
    ContentTypeMismatch,

    /// <summary>The fork offset is beyond the source's tail.</summary>
    InvalidForkOffset,

    /// <summary>The store already holds <see cref="CreateStreamRequest.MaxStreams"/> streams.</summary>
    LimitReached,

    /// <summary>The creator already holds <see cref="CreateStreamRequest.MaxStreamsPerOwner"/> streams.</summary>
    OwnerLimitReached,

    /// <summary>The fork point lies before the source's <see cref="StreamInfo.RetainedFrom"/>: that data is gone.</summary>
    ForkOffsetGone,

    /// <summary>The fork would pass <see cref="CreateStreamRequest.MaxForkDepth"/>: its source is a fork that deep already.</summary>
    ForkTooDeep,
}

/// <summary>The result of <see cref="StreamStore.CreateAsync"/>.</summary>
/// <param name="Status">What happened.</param>
/// <param name="Stream">The stream as it now is, when it exists.</param>
public readonly record struct CreateStreamResult(CreateStreamStatus Status, StreamInfo? Stream);

/// <summary>A request to append to (and/or close) a stream.</summary>
public sealed record AppendRequest
{
    /// <summary>The stream path.</summary>
    public required string Path { get; init; }

    /// <summary>The request's content type, checked against the stream's when data is present.</summary>
    public string? ContentType { get; init; }

    /// <summary>The data to append; empty only for a close-only request.</summary>
    /// <remarks>
    /// The store may read it until the append completes (a store that writes at group commit reads it then), also after
    /// a caller that cancelled stopped waiting: its memory must not be reused before that.
    /// </remarks>
    public StreamPayload Data { get; init; }

    /// <summary>Whether to close the stream after appending.</summary>
    public bool Close { get; init; }

    /// <summary>The writer's <c>Stream-Seq</c>, if given.</summary>
    public string? StreamSeq { get; init; }

    /// <summary>The idempotent producer stamp, if given.</summary>
    public ProducerStamp? Producer { get; init; }

    /// <summary>
    /// Append only if the stream's tail is still this position (an optimistic check: the caller decided on the stream
    /// as it was there). Used by the session services so that their checks hold across server nodes.
    /// </summary>
    public long? ExpectedTail { get; init; }

    /// <summary>
    /// Append only if the stream at the path is still this one (its <see cref="StreamInfo.Id"/>), not another stream
    /// created there since; otherwise <see cref="AppendStatus.TailMoved"/>, and nothing is written. Lets a caller that
    /// decided on a stream it read earlier append without looking it up again.
    /// </summary>
    public long? ExpectedStreamId { get; init; }

    /// <summary>
    /// Whether the append only carries progress that a later append of the same producer restates in full (a session's
    /// reply deltas). Stored like any other append; live readers that asked not to be sent their own producer's
    /// progress skip it (<see cref="Live.LiveAppend.IsProgress"/>).
    /// </summary>
    public bool Progress { get; init; }

    /// <summary>
    /// What the writer learned of <see cref="Data"/> while checking it (the events it parsed, say), handed unchanged to
    /// this node's observers of the change as <see cref="Live.LiveAppend.Annotation"/>, so they need not work it out
    /// again. It describes exactly this request's data: a copy of the request with other data must set it again (or to
    /// null). Never stored, and not sent to other nodes.
    /// </summary>
    public object? Annotation { get; init; }
}

/// <summary>The outcome of an append request.</summary>
public enum AppendStatus
{
    /// <summary>Data was appended and/or the stream was closed.</summary>
    Appended,

    /// <summary>A producer retry of a request already applied; nothing changed.</summary>
    Duplicate,

    /// <summary>A close-only request on a stream that was already closed.</summary>
    AlreadyClosed,

    /// <summary>The stream does not exist (or has expired).</summary>
    NotFound,

    /// <summary>The stream is soft-deleted.</summary>
    Gone,

    /// <summary>The stream is closed; the append was rejected.</summary>
    StreamClosed,

    /// <summary>The content type differs from the stream's.</summary>
    ContentTypeMismatch,

    /// <summary>The <c>Stream-Seq</c> did not increase.</summary>
    SequenceConflict,

    /// <summary>The producer epoch is older than the stream's record of it.</summary>
    StaleEpoch,

    /// <summary>A new epoch must start at sequence 0.</summary>
    InvalidEpochSeq,

    /// <summary>The producer sequence skipped ahead.</summary>
    ProducerSeqGap,

    /// <summary>The stream's tail moved past <see cref="AppendRequest.ExpectedTail"/>; nothing was written.</summary>
    TailMoved,
}

/// <summary>The result of <see cref="StreamStore.AppendAsync"/>.</summary>
public readonly record struct AppendResult
{
    /// <summary>What happened.</summary>
    public required AppendStatus Status { get; init; }

    /// <summary>The stream's tail after the request (or at rejection).</summary>
    public long TailPosition { get; init; }

    /// <summary>Whether the stream is closed after the request.</summary>
    public bool Closed { get; init; }

    /// <summary>The producer's current epoch (echoed on success, the stream's on a stale epoch).</summary>
    public long ProducerEpoch { get; init; }

    /// <summary>The highest accepted producer sequence on success, or the expected one on a gap.</summary>
    public long ProducerSeq { get; init; }
}

/// <summary>The outcome of a delete request.</summary>
public enum DeleteStreamStatus
{
    /// <summary>The stream was removed (or soft-deleted because forks reference it).</summary>
    Deleted,

    /// <summary>No stream at that path.</summary>
    NotFound,

    /// <summary>The stream was already soft-deleted.</summary>
    Gone,
}

/// <summary>A contiguous run of stream data.</summary>
/// <param name="Start">The position of the first unit.</param>
/// <param name="End">The position after the last unit.</param>
/// <param name="Data">Framed bytes (see <see cref="StreamPayload"/>).</param>
public readonly record struct StreamChunk(long Start, long End, ReadOnlyMemory<byte> Data);

/// <summary>The result of a range read.</summary>
/// <param name="Chunks">The data, in order, covering [from, <paramref name="NextPosition"/>).</param>
/// <param name="NextPosition">Where the next read starts.</param>
/// <param name="TotalBytes">The sum of the chunks' lengths.</param>
public sealed record ReadResult(IReadOnlyList<StreamChunk> Chunks, long NextPosition, long TotalBytes)
{
    /// <summary>
    /// Set when the read started before the stream's <see cref="StreamInfo.RetainedFrom"/>: nothing was read, and the
    /// stream's data now starts at this position.
    /// </summary>
    public long? GoneBefore { get; init; }

    /// <summary>The answer to a read from before <paramref name="retainedFrom"/>.</summary>
    public static ReadResult BeforeRetention(long from, long retainedFrom) => new([], from, 0) { GoneBefore = retainedFrom };
}

/// <summary>The outcome of <see cref="StreamStore.TrimAsync"/>.</summary>
public enum TrimStatus
{
    /// <summary>The stream's <see cref="StreamInfo.RetainedFrom"/> is now the result's position (it may not have moved).</summary>
    Trimmed,

    /// <summary>No stream at that path (or it expired).</summary>
    NotFound,

    /// <summary>The stream is soft-deleted.</summary>
    Gone,

    /// <summary>Forks read this stream's data below their fork points, so nothing was removed.</summary>
    HasForks,
}

/// <summary>The result of <see cref="StreamStore.TrimAsync"/>.</summary>
/// <param name="Status">What happened.</param>
/// <param name="RetainedFrom">The stream's first retained position after the request.</param>
public readonly record struct TrimResult(TrimStatus Status, long RetainedFrom);

/// <summary>Whether a path names a live stream, a soft-deleted one, or nothing.</summary>
public enum StreamLookupStatus
{
    /// <summary>The stream exists.</summary>
    Found,

    /// <summary>No stream (or it expired).</summary>
    NotFound,

    /// <summary>The stream was deleted but forks still read from it.</summary>
    Gone,
}

/// <summary>The result of looking a stream up.</summary>
/// <param name="Status">Whether it exists.</param>
/// <param name="Stream">Its metadata when found or gone.</param>
public readonly record struct StreamLookup(StreamLookupStatus Status, StreamInfo? Stream);
