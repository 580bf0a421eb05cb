namespace DurableSessions.AspNetCore.Subscriptions;

/// <summary>
/// Glob matching over stream paths, shared by access grants and subscriptions: <c>*</c> matches any run of characters
/// within one segment, <c>**</c> any number of whole segments (zero or more).
/// </summary>
/// <remarks>
/// Matching is a dynamic program over (pattern segment, path segment) pairs: its cost is at most the product of the
/// two segment counts times one segment comparison, whatever the pattern, so no pattern can make it backtrack
/// exponentially (<c>**/**/**/**/**/z</c> against a 400-segment path is 2,400 steps, not billions).
/// </remarks>
internal static class PathGlob
{
    private const string AnySegments = "**";

    /// <summary>Whether <paramref name="path"/> matches <paramref name="pattern"/>.</summary>
    public static bool IsMatch(string pattern, string path)
        => Match(pattern.Split('/'), path.Split('/'), covers: false);

    /// <summary>
    /// Whether every path that matches <paramref name="inner"/> also matches <paramref name="outer"/>. Conservative: it
    /// may answer false for a pattern that is in fact covered (for example when both put a <c>*</c> inside a segment
    /// in different places), never true for one that is not. For a plain path it answers exactly <see cref="IsMatch"/>.
    /// </summary>
    public static bool Covers(string outer, string inner)
        => Match(outer.Split('/'), inner.Split('/'), covers: true);

    private static bool Match(string[] pattern, string[] target, bool covers)
    {
        // reach[j]: the pattern segments seen so far match exactly the first j target segments.
        var reach = new bool[target.Length + 1];
        reach[0] = true;
        foreach (var segment in pattern)
        {
            if (segment == AnySegments)
            {
                // Zero or more segments of any kind (in cover mode a "**" absorbs the inner pattern's "*" and "**" too):
                // every position at or after a reachable one becomes reachable.
                var reachable = false;
                for (var j = 0; j < reach.Length; j++)
                {
                    reachable |= reach[j];
                    reach[j] = reachable;
                }

                continue;
            }

            var any = false;
            for (var j = target.Length; j > 0; j--)
            {
                reach[j] = reach[j - 1] && (covers ? SegmentCovers(segment, target[j - 1]) : SegmentMatches(segment, target[j - 1]));
                any |= reach[j];
            }

            reach[0] = false;
            if (!any)
            {
                return false;
            }
        }

        return reach[target.Length];
    }

    /// <summary>Whether every segment matching the inner segment pattern also matches the outer one.</summary>
    private static bool SegmentCovers(string outer, string inner)
    {
        if (inner == AnySegments)
        {
            // Only an outer "**" spans a variable number of segments.
            return false;
        }

        if (inner.Contains('*', StringComparison.Ordinal))
        {
            return outer == "*" || string.Equals(outer, inner, StringComparison.Ordinal);
        }

        return SegmentMatches(outer, inner);
    }

    private static bool SegmentMatches(string pattern, string segment)
    {
        if (pattern == "*")
        {
            return true;
        }

        if (!pattern.Contains('*', StringComparison.Ordinal))
        {
            return string.Equals(pattern, segment, StringComparison.Ordinal);
        }

        // A '*' inside a segment matches any run of characters within that segment. Taking each literal part at its
        // leftmost position is enough (and linear per part): a later position only leaves less room for the rest.
        var parts = pattern.Split('*');
        if (!segment.StartsWith(parts[0], StringComparison.Ordinal) || !segment.EndsWith(parts[^1], StringComparison.Ordinal))
        {
            return false;
        }

        var at = parts[0].Length;
        for (var i = 1; i < parts.Length - 1; i++)
        {
            var found = segment.IndexOf(parts[i], at, StringComparison.Ordinal);
            if (found < 0)
            {
                return false;
            }

            at = found + parts[i].Length;
        }

        return at <= segment.Length - parts[^1].Length;
    }
}
