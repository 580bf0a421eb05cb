namespace DurableSessions;

/// <summary>When a create request for an existing stream is an idempotent repeat, shared by every store.</summary>
public static class CreateRules
{
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
