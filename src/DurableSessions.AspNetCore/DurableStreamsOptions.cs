namespace DurableSessions.AspNetCore;

/// <summary>Settings of the Durable Streams endpoints. Bound from the <c>DurableStreams</c> configuration section.</summary>
public sealed class DurableStreamsOptions
{
    /// <summary>How long a long-poll read waits for new data before answering 204. Default 30 seconds.</summary>
    public TimeSpan LongPollTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// The most streams (sessions included) the server holds; a create past it answers <c>403 STREAM_LIMIT_REACHED</c>.
    /// Default 0: no limit. Exact on SQLite; on Redis, creates racing on several nodes may pass it by as many as race.
    /// </summary>
    public long MaxStreams { get; set; }

    /// <summary>
    /// With access control on, the most streams (sessions included) one token subject may have created; a create past it
    /// answers <c>403 STREAM_LIMIT_REACHED</c>. Default 0: no limit. Exact on SQLite; on Redis, creates racing on
    /// several nodes may pass it by as many as race.
    /// </summary>
    public long MaxStreamsPerToken { get; set; }

    /// <summary>
    /// The most forks a chain of forks may hold (a fork of a stream that is no fork is 1 deep): each level is a segment
    /// that every read from the chain's start goes through. A deeper fork answers <c>403 FORK_TOO_DEEP</c>, as other limits do. Default 32.
    /// </summary>
    public int MaxForkDepth { get; set; } = 32;

    /// <summary>The largest request body accepted by an append or create, in bytes. Default 16 MiB.</summary>
    public long MaxAppendBytes { get; set; } = 16 * 1024 * 1024;

    /// <summary>
    /// The most bytes of append and create bodies larger than 64 KiB held at once, while they are read and until they
    /// are committed. Past it such a request is answered <c>503</c> with <c>Retry-After</c>, so many large appends in
    /// parallel cannot delay everybody else's; smaller appends are always admitted. Raised to
    /// <see cref="MaxAppendBytes"/> if lower. Default 64 MiB.
    /// </summary>
    public long MaxAppendBytesInFlight { get; set; } = 64 * 1024 * 1024;

    /// <summary>
    /// The largest JSON request body of the sessions API, the AI SDK chat endpoint and the subscription control APIs,
    /// in bytes (subscription control requests are also capped at 256 KiB). Bodies are counted while they are read,
    /// chunked or not, before access control; past it the answer is 413. Default 1 MiB.
    /// </summary>
    public long MaxJsonBodyBytes { get; set; } = 1024 * 1024;

    /// <summary>
    /// The most appended bytes one live reader (SSE, long-poll) may have queued but not yet written. A reader that
    /// does not keep up is cut off and resumes from its offset with a new request. Default 4 MiB.
    /// </summary>
    public long MaxReaderQueueBytes { get; set; } = Live.StreamFanout.DefaultQueueBytes;

    /// <summary>The longest stream path accepted, in characters. Default 1024.</summary>
    public int MaxPathLength { get; set; } = 1024;

    /// <summary>The most data returned by one catch-up response or one SSE data event, in bytes. Default 1 MiB.</summary>
    public int MaxReadBytes { get; set; } = 1024 * 1024;

    /// <summary>How long an SSE connection lives before the server closes it so clients reconnect (protocol §10.2). Default 60 seconds.</summary>
    public TimeSpan SseConnectionLifetime { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>How often an idle SSE connection gets a keep-alive comment. Default 15 seconds.</summary>
    public TimeSpan SseKeepAliveInterval { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>The <c>Cache-Control</c> of catch-up responses that carry data. Default <c>public, max-age=60, stale-while-revalidate=300</c>.</summary>
    public string CacheControl { get; set; } = "public, max-age=60, stale-while-revalidate=300";

    /// <summary>The value of <c>Access-Control-Allow-Origin</c>. Default <c>*</c>.</summary>
    public string AllowedOrigin { get; set; } = "*";

    /// <summary>Validates the settings; called at start-up.</summary>
    public IEnumerable<string> Validate()
    {
        if (LongPollTimeout <= TimeSpan.Zero)
        {
            yield return "LongPollTimeout must be positive.";
        }

        if (SseKeepAliveInterval <= TimeSpan.Zero || SseKeepAliveInterval > TimeSpan.FromDays(1))
        {
            yield return "SseKeepAliveInterval must be positive and at most one day.";
        }

        if (MaxStreams < 0 || MaxStreamsPerToken < 0)
        {
            yield return "MaxStreams and MaxStreamsPerToken must be 0 (no limit) or more.";
        }

        if (MaxForkDepth is < 1 or > 1000)
        {
            yield return "MaxForkDepth must be between 1 and 1000.";
        }

        if (MaxAppendBytes < 1)
        {
            yield return "MaxAppendBytes must be at least 1.";
        }

        if (MaxAppendBytesInFlight < 1)
        {
            yield return "MaxAppendBytesInFlight must be at least 1.";
        }

        if (MaxJsonBodyBytes < 1024)
        {
            yield return "MaxJsonBodyBytes must be at least 1024.";
        }

        if (MaxReaderQueueBytes < 1024)
        {
            yield return "MaxReaderQueueBytes must be at least 1024.";
        }

        if (MaxPathLength is < 1 or > 8192)
        {
            yield return "MaxPathLength must be between 1 and 8192.";
        }

        if (MaxReadBytes < 1024)
        {
            yield return "MaxReadBytes must be at least 1024.";
        }
    }
}
