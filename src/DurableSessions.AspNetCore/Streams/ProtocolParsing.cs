using System.Globalization;

namespace DurableSessions.AspNetCore.Streams;

/// <summary>Strict parsers for protocol header and query values.</summary>
internal static class ProtocolParsing
{
    /// <summary>The largest integer JavaScript clients can represent exactly (2^53 - 1).</summary>
    public const long MaxSafeInteger = 9_007_199_254_740_991;

    /// <summary>The longest producer id an append may carry, over every transport (HTTP, WebSocket, in process).</summary>
    public const int MaxProducerIdLength = 256;

    private static readonly string[] Rfc3339Formats =
    [
        "yyyy-MM-dd'T'HH:mm:ssK",
        "yyyy-MM-dd'T'HH:mm:ss.FFFFFFFK",
        "yyyy-MM-dd't'HH:mm:ssK",
        "yyyy-MM-dd't'HH:mm:ss.FFFFFFFK",
    ];

    /// <summary>Parses a non-negative decimal integer without sign, leading zeros, spaces or exponent.</summary>
    public static bool TryParseCanonicalInteger(string? value, long max, out long result)
    {
        result = 0;
        if (string.IsNullOrEmpty(value) || value.Length > 19 || (value.Length > 1 && value[0] == '0'))
        {
            return false;
        }

        foreach (var c in value)
        {
            if (c is < '0' or > '9')
            {
                return false;
            }
        }

        return long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out result) && result <= max;
    }

    /// <summary>Parses a producer epoch or sequence: digits only, at most 2^53 - 1.</summary>
    public static bool TryParseProducerInteger(string? value, out long result)
    {
        result = 0;
        if (string.IsNullOrEmpty(value) || value.Length > 16)
        {
            return false;
        }

        foreach (var c in value)
        {
            if (c is < '0' or > '9')
            {
                return false;
            }
        }

        return long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out result) && result <= MaxSafeInteger;
    }

    /// <summary>Parses an RFC 3339 timestamp (with <c>Z</c> or a numeric offset).</summary>
    public static bool TryParseRfc3339(string? value, out DateTimeOffset result)
        => DateTimeOffset.TryParseExact(value, Rfc3339Formats, CultureInfo.InvariantCulture, DateTimeStyles.None, out result);

    /// <summary>Formats an instant as RFC 3339 in UTC with milliseconds, never rounding up.</summary>
    public static string FormatRfc3339(DateTimeOffset value)
        => value.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);

    /// <summary>Whether a presence header (<c>Stream-Closed</c>) is set: only the value <c>true</c>, any case, counts.</summary>
    public static bool IsTrue(string? value) => string.Equals(value, "true", StringComparison.OrdinalIgnoreCase);
}
