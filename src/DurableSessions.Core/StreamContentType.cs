namespace DurableSessions;

/// <summary>
/// Content-type rules shared by every store and endpoint.
/// </summary>
public static class StreamContentType
{
    /// <summary>The content type of a stream created without one.</summary>
    public const string Default = "application/octet-stream";

    /// <summary>The media type that turns on JSON mode (message boundaries, array flattening).</summary>
    public const string Json = "application/json";

    /// <summary>Returns the media type without parameters, lower-cased and trimmed.</summary>
    public static string MediaType(string contentType)
    {
        var semicolon = contentType.IndexOf(';', StringComparison.Ordinal);
        var media = (semicolon >= 0 ? contentType.AsSpan(0, semicolon) : contentType).Trim();

        // Checked on every append: a media type already in its plain form (the usual one) is returned as it is.
        if (media.Length == contentType.Length && System.Text.Ascii.IsValid(media) && !media.ContainsAnyInRange('A', 'Z'))
        {
            return contentType;
        }

        return media.ToString().ToLowerInvariant();
    }

    /// <summary>Whether two content types name the same media type (parameters and case ignored).</summary>
    public static bool Matches(string a, string b)
        => string.Equals(MediaType(a), MediaType(b), StringComparison.Ordinal);

    /// <summary>Whether the content type selects JSON mode.</summary>
    public static bool IsJson(string contentType)
        => string.Equals(MediaType(contentType), Json, StringComparison.Ordinal);

    /// <summary>Whether SSE can carry the stream's data as UTF-8 text (otherwise it is base64-encoded).</summary>
    public static bool IsTextForSse(string contentType)
    {
        var media = MediaType(contentType);
        return media.StartsWith("text/", StringComparison.Ordinal) || media == Json;
    }

    /// <summary>Whether the value is a syntactically valid <c>type/subtype</c> media type with optional parameters.</summary>
    public static bool IsValid(string? contentType)
    {
        if (string.IsNullOrWhiteSpace(contentType))
        {
            return false;
        }

        var media = MediaType(contentType);
        var slash = media.IndexOf('/', StringComparison.Ordinal);
        if (slash <= 0 || slash == media.Length - 1 || media.IndexOf('/', slash + 1) >= 0)
        {
            return false;
        }

        foreach (var c in media)
        {
            if (c <= ' ' || c >= 127 || c is '(' or ')' or '<' or '>' or '@' or ',' or ':' or '\\' or '"' or '[' or ']' or '?' or '=' or '{' or '}')
            {
                return false;
            }
        }

        return true;
    }
}
