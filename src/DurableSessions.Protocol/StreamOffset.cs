using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace DurableSessions;

/// <summary>
/// Formats and parses stream offsets.
/// </summary>
/// <remarks>
/// An offset is a position in a stream's unit space (bytes for byte streams, messages for JSON streams), written as a
/// 32-digit decimal in two groups of 16 (<c>0000000000000000_0000000000000042</c>) so that lexicographic order equals
/// numeric order. Clients treat offsets as opaque; the sentinels <c>-1</c> (start) and <c>now</c> (tail) are never minted.
/// </remarks>
public static class StreamOffset
{
    /// <summary>The number of characters of every minted offset.</summary>
    public const int Width = 33;

    /// <summary>The sentinel for the beginning of a stream.</summary>
    public const string Beginning = "-1";

    /// <summary>The sentinel for the current tail of a stream.</summary>
    public const string Now = "now";

    private const long GroupModulus = 10_000_000_000_000_000;

    /// <summary>Formats a position as an offset token.</summary>
    public static string Format(long position)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(position);
        return string.Create(Width, position, static (span, p) => TryFormat(p, span, out _));
    }

    /// <summary>Formats a position into a caller-provided buffer of at least <see cref="Width"/> characters.</summary>
    public static bool TryFormat(long position, Span<char> destination, out int written)
    {
        written = 0;
        if (destination.Length < Width || position < 0)
        {
            return false;
        }

        (position / GroupModulus).TryFormat(destination, out _, "D16", CultureInfo.InvariantCulture);
        destination[16] = '_';
        (position % GroupModulus).TryFormat(destination[17..], out _, "D16", CultureInfo.InvariantCulture);
        written = Width;
        return true;
    }

    /// <summary>Parses an offset token of the form minted by <see cref="Format"/>.</summary>
    /// <returns><see langword="false"/> when the token is not a well-formed offset or does not fit a position.</returns>
    public static bool TryParse([NotNullWhen(true)] string? token, out long position)
    {
        position = 0;
        if (token is null || token.Length != Width || token[16] != '_')
        {
            return false;
        }

        for (var i = 0; i < Width; i++)
        {
            if (i != 16 && token[i] is < '0' or > '9')
            {
                return false;
            }
        }

        var high = long.Parse(token.AsSpan(0, 16), NumberStyles.None, CultureInfo.InvariantCulture);
        var low = long.Parse(token.AsSpan(17, 16), NumberStyles.None, CultureInfo.InvariantCulture);
        if (high > (long.MaxValue - low) / GroupModulus)
        {
            return false;
        }

        position = (high * GroupModulus) + low;
        return true;
    }
}
