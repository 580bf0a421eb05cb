using System.Text.Json;

namespace DurableSessions;

/// <summary>Limits every message of a JSON stream is held to, by the server that stores it and the readers that parse it.</summary>
public static class JsonMessageLimits
{
    /// <summary>
    /// The deepest nesting of objects and arrays a message may have: 32. Deeper bodies are refused, so every stored
    /// message, and every read response that wraps messages in an array, parses with the default settings of
    /// <c>System.Text.Json</c> (64) and in browsers.
    /// </summary>
    public const int MaxDepth = 32;

    // Deeper than any message may nest, so that the check below, not the reader, decides what is too deep and says so.
    private static readonly JsonReaderOptions ReaderOptions = new() { MaxDepth = 512 };

    /// <summary>
    /// Checks that <paramref name="json"/> is one JSON value that every reader can decode: valid UTF-8, no lone
    /// surrogate escapes, nesting no deeper than <see cref="MaxDepth"/>.
    /// </summary>
    /// <param name="json">The JSON text.</param>
    /// <param name="error">Why it is refused, as a sentence for a problem response; null when it is not.</param>
    /// <returns>Whether it holds.</returns>
    /// <remarks>One pass over the text, allocating nothing but the strings that contain escapes.</remarks>
    public static bool TryValidate(ReadOnlySpan<byte> json, out string? error)
    {
        if (!System.Text.Unicode.Utf8.IsValid(json))
        {
            error = "Body is not valid JSON: it is not valid UTF-8.";
            return false;
        }

        try
        {
            var reader = new Utf8JsonReader(json, ReaderOptions);
            if (!reader.Read())
            {
                error = "Body is not valid JSON: it is empty.";
                return false;
            }

            if (!TrySkipMessage(ref reader, out error))
            {
                return false;
            }

            if (reader.Read())
            {
                error = "Body is not valid JSON: unexpected content after the value.";
                return false;
            }

            return true;
        }
        catch (JsonException ex)
        {
            error = "Body is not valid JSON: " + FirstSentence(ex.Message);
            return false;
        }
    }

    /// <summary>
    /// Moves past the message whose first token <paramref name="reader"/> is on, checking its depth and that its escaped
    /// strings decode. Leaves the reader on the message's last token.
    /// </summary>
    /// <param name="reader">A reader on a message's first token.</param>
    /// <param name="error">Why the message is refused, or null.</param>
    /// <returns>Whether the message holds.</returns>
    /// <exception cref="JsonException">The text is not JSON.</exception>
    public static bool TrySkipMessage(ref Utf8JsonReader reader, out string? error)
    {
        var baseDepth = reader.CurrentDepth;
        while (true)
        {
            switch (reader.TokenType)
            {
                case JsonTokenType.StartObject or JsonTokenType.StartArray when reader.CurrentDepth - baseDepth >= MaxDepth:
                    error = $"Body is not valid JSON: a message nests deeper than {MaxDepth} levels.";
                    return false;
                case JsonTokenType.String or JsonTokenType.PropertyName when reader.ValueIsEscaped && !Decodes(ref reader):
                    error = "Body is not valid JSON: a string contains an escape that is not valid UTF-16 (a lone surrogate).";
                    return false;
            }

            if (reader.CurrentDepth == baseDepth && reader.TokenType is not (JsonTokenType.StartObject or JsonTokenType.StartArray))
            {
                error = null;
                return true;
            }

            if (!reader.Read())
            {
                error = "Body is not valid JSON: it ends inside a value.";
                return false;
            }
        }
    }

    /// <summary>The first sentence of a parser's message, for a problem response.</summary>
    internal static string FirstSentence(string message)
    {
        var dot = message.IndexOf(". ", StringComparison.Ordinal);
        return dot > 0 ? message[..(dot + 1)] : message;
    }

    private static bool Decodes(ref Utf8JsonReader reader)
    {
        try
        {
            _ = reader.GetString();
            return true;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }
}
