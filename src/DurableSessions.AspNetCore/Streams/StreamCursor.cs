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

    // The most a cursor is pushed past an echoed one (an hour, in intervals): an echoed cursor closer than that to the
    // largest number it can be would overflow, and was not given by this server.
    private const long MaxJitter = 180;

    public static string Next(DateTimeOffset now, string? clientCursor)
    {
        var current = (long)((now - Epoch) / Interval);
        if (long.TryParse(clientCursor, NumberStyles.None, CultureInfo.InvariantCulture, out var echoed) && echoed >= current && echoed <= long.MaxValue - MaxJitter)
        {
            // Jitter of 1-3600 seconds, in whole intervals, so many clients do not converge on one key.
            var jitterSeconds = Random.Shared.Next(1, 3601);
            current = echoed + Math.Max(1, (long)Math.Ceiling(jitterSeconds / Interval.TotalSeconds));
        }

        return current.ToString(CultureInfo.InvariantCulture);
    }
}
