namespace DurableSessions;

/// <summary>
/// The rules of a create request, shared by every store: what the new stream's settings are (a fork inherits from its
/// source) and when a request for an existing stream is an idempotent repeat.
/// </summary>
public static class CreateRules
{
    /// <summary>
    /// The longest TTL a stream may have: 100 years, in seconds. Longer ones are refused when the request arrives, so no
    /// expiry computation can ever leave the range of a date.
    /// </summary>
    public const long MaxTtlSeconds = 3_155_760_000;

    /// <summary>
    /// Whether a fork of <paramref name="source"/> would pass <see cref="CreateStreamRequest.MaxForkDepth"/>, judged by
    /// walking the source's own chain with <paramref name="sourceOf"/> (a stream's fork source, or null once the chain
    /// ends or a source is gone), at most that many steps.
    /// </summary>
    public static bool TooDeep(CreateStreamRequest request, StreamInfo source, Func<StreamInfo, StreamInfo?> sourceOf)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(sourceOf);
        if (request.MaxForkDepth is not { } limit)
        {
            return false;
        }

        // The new fork is one level; each fork above it in the chain is one more.
        var depth = 1;
        for (var level = source; level?.ForkSourceId is not null; level = sourceOf(level))
        {
            if (++depth > limit)
            {
                return true;
            }
        }

        return depth > limit;
    }

    /// <summary>
    /// Decides the new stream's settings. <paramref name="source"/> is the live fork source (the store has already
    /// answered a missing or soft-deleted one), or null for a plain stream.
    /// </summary>
    public static CreatePlan Plan(CreateStreamRequest request, StreamInfo? source)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (source is null)
        {
            return new CreatePlan(null, request.ContentType ?? StreamContentType.Default, request.TtlSeconds, request.ExpiresAt, 0, 0);
        }

        if (request.ContentType is { } requested && !StreamContentType.Matches(requested, source.ContentType))
        {
            return CreatePlan.Rejected(CreateStreamStatus.ContentTypeMismatch);
        }

        var forkOffset = request.ForkOffset ?? source.TailPosition;
        var forkPosition = forkOffset + request.ForkSubOffset;
        if (forkOffset > source.TailPosition || forkPosition > source.TailPosition || (request.ForkSubOffset > 0 && request.ForkOffset is null))
        {
            return CreatePlan.Rejected(CreateStreamStatus.InvalidForkOffset);
        }

        if (forkPosition < source.RetainedFrom)
        {
            return CreatePlan.Rejected(CreateStreamStatus.ForkOffsetGone);
        }

        // A fork without its own expiry inherits the source's.
        var inherit = request.TtlSeconds is null && request.ExpiresAt is null;
        return new CreatePlan(null, source.ContentType, inherit ? source.TtlSeconds : request.TtlSeconds, inherit ? source.ExpiresAt : request.ExpiresAt, forkOffset, forkPosition);
    }

    /// <summary>Whether <paramref name="request"/> asks for exactly the stream <paramref name="existing"/> already is.</summary>
    public static bool SameConfiguration(StreamInfo existing, CreateStreamRequest request)
    {
        ArgumentNullException.ThrowIfNull(existing);
        ArgumentNullException.ThrowIfNull(request);
        if (existing.SoftDeleted || existing.Closed != request.Closed)
        {
            return false;
        }

        if (request.ForkedFrom is null)
        {
            return existing.ForkSourcePath is null
                && StreamContentType.Matches(request.ContentType ?? StreamContentType.Default, existing.ContentType)
                && existing.TtlSeconds == request.TtlSeconds
                && SameInstant(existing.ExpiresAt, request.ExpiresAt);
        }

        if (!string.Equals(existing.ForkSourcePath, request.ForkedFrom, StringComparison.Ordinal)
            || (request.ContentType is { } type && !StreamContentType.Matches(type, existing.ContentType))
            || existing.ForkSubOffset != request.ForkSubOffset
            || (request.ForkOffset is { } offset && offset != existing.ForkOffset))
        {
            return false;
        }

        // A fork without its own expiry inherited the source's; only an explicit request can differ.
        return (request.TtlSeconds is null && request.ExpiresAt is null)
            || (existing.TtlSeconds == request.TtlSeconds && SameInstant(existing.ExpiresAt, request.ExpiresAt));
    }

    private static bool SameInstant(DateTimeOffset? a, DateTimeOffset? b)
        => a?.ToUnixTimeMilliseconds() == b?.ToUnixTimeMilliseconds();
}

/// <summary>The outcome of <see cref="CreateRules.Plan"/>.</summary>
/// <param name="Rejection">Why the request is refused, or null.</param>
/// <param name="ContentType">The new stream's content type.</param>
/// <param name="TtlSeconds">Its sliding TTL.</param>
/// <param name="ExpiresAt">Its absolute expiry.</param>
/// <param name="ForkOffset">The fork anchor offset (0 for a plain stream).</param>
/// <param name="ForkPosition">Where the fork's own data starts (0 for a plain stream).</param>
public readonly record struct CreatePlan(CreateStreamStatus? Rejection, string ContentType, long? TtlSeconds, DateTimeOffset? ExpiresAt, long ForkOffset, long ForkPosition)
{
    internal static CreatePlan Rejected(CreateStreamStatus status) => new(status, string.Empty, null, null, 0, 0);
}
