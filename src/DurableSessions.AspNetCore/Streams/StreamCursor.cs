using System.Globalization;

namespace DurableSessions.AspNetCore.Streams;

/// <summary>
/// Generates the <c>Stream-Cursor</c> of live responses (protocol §10.1): the number of 20-second intervals since
/// 2024-10-09T00:00:00Z, pushed strictly past any cursor the client echoes so CDN cache keys always advance.
/// </summary>
internal static class StreamCursor
{
    private static readonly DateTimeOffset Epoch = new(2024, 10, 9, 0, 0, 0, TimeSpan.Zero);
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(20);

    // A cursor this server gave is at most its jitter (an hour) ahead of the clock each time it is echoed and pushed on:
    // one further ahead than a year was not given by it, and is not pushed past (where it would overflow).
    private const long MaxAhead = 365L * 24 * 60 * 3;

    public static string Next(DateTimeOffset now, string? clientCursor)
    {
        var current = (long)((now - Epoch) / Interval);
        if (long.TryParse(clientCursor, NumberStyles.None, CultureInfo.InvariantCulture, out var echoed) && echoed >= current && echoed - current <= MaxAhead)
        {
            // Jitter of 1-3600 seconds, in whole intervals, so many clients do not converge on one key.
            var jitterSeconds = Random.Shared.Next(1, 3601);
            current = echoed + Math.Max(1, (long)Math.Ceiling(jitterSeconds / Interval.TotalSeconds));
        }

        return current.ToString(CultureInfo.InvariantCulture);
    }
}
