namespace DurableSessions.AspNetCore.Streams;

/// <summary>Validation of stream paths (relative to the stream root <c>/v1/stream/</c>).</summary>
internal static class StreamPaths
{
    public const string Root = "/v1/stream";

    /// <summary>The first segment reserved for control APIs (protocol §6).</summary>
    public const string Reserved = "__ds";

    /// <summary>Whether <paramref name="path"/> is under the reserved prefix of the control APIs, which are not streams.</summary>
    public static bool IsReserved(string path) => path == Reserved || path.StartsWith(Reserved + "/", StringComparison.Ordinal);

    /// <summary>Returns why <paramref name="path"/> is not an acceptable stream path, or null when it is.</summary>
    public static string? Validate(string path, int maxLength)
    {
        if (path.Length == 0)
        {
            return "The stream path is empty.";
        }

        if (path.Length > maxLength)
        {
            return $"The stream path is longer than {maxLength} characters.";
        }

        // Segments as ranges of the path, not strings: every append's path is checked.
        foreach (var range in path.AsSpan().Split('/'))
        {
            var segment = path.AsSpan(range);
            if (segment.IsEmpty)
            {
                return "The stream path has an empty segment.";
            }

            if (segment is "." or "..")
            {
                return "The stream path may not contain . or .. segments.";
            }
        }

        foreach (var c in path)
        {
            if (char.IsControl(c))
            {
                return "The stream path contains a control character.";
            }
        }

        return null;
    }

    /// <summary>
    /// Turns a <c>Stream-Forked-From</c> value (a URL path, or a path relative to the stream root) into a stream path.
    /// A whole URL is taken only when it names this server (<paramref name="host"/>, the request's host name): forks are made
    /// from streams of the same server (protocol §4.2), and one naming another server is refused rather than read as a
    /// local path.
    /// </summary>
    public static string? FromForkHeader(string value, string host)
    {
        var path = value;
        if (Uri.TryCreate(value, UriKind.Absolute, out var absolute) && absolute.Scheme is "http" or "https")
        {
            // By host name alone: a default port is left out of one and written in the other, and a proxy in front
            // may move the port.
            if (!string.Equals(absolute.IdnHost, host, StringComparison.OrdinalIgnoreCase)
                && !string.Equals(absolute.Host, host, StringComparison.OrdinalIgnoreCase))
            {
                return null;
            }

            path = absolute.AbsolutePath;
        }

        if (path.StartsWith(Root + "/", StringComparison.Ordinal))
        {
            path = path[(Root.Length + 1)..];
        }
        else if (path.StartsWith('/'))
        {
            return null;
        }

        try
        {
            return Uri.UnescapeDataString(path);
        }
        catch (UriFormatException)
        {
            return null;
        }
    }
}
