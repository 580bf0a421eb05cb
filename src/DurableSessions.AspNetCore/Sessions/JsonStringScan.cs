using System.Text.Json;

namespace DurableSessions.AspNetCore.Sessions;

/// <summary>A cheap look at stored or appended JSON data before it is parsed.</summary>
internal static class JsonStringScan
{
    /// <summary>
    /// Whether any string in <paramref name="data"/> (JSON messages, joined by commas as stored) may read
    /// <paramref name="text"/> once unescaped. Without a <c>\u</c> escape it is one vectorized search for
    /// <paramref name="quoted"/>; with one (JSON writers escape an apostrophe as <c>\u0027</c> by default), the data's
    /// tokens are read, which allocates nothing. Data that does not read as JSON counts as a maybe.
    /// </summary>
    /// <param name="data">The data.</param>
    /// <param name="quoted">The text in quotes, as unescaped JSON holds it: <c>"run"</c>.</param>
    /// <param name="text">The text itself: <c>run</c>.</param>
    public static bool MayHoldString(ReadOnlySpan<byte> data, ReadOnlySpan<byte> quoted, ReadOnlySpan<byte> text)
    {
        // Only a \u escape can spell a letter otherwise: without one, a string reading the text is the quoted bytes, and
        // one vectorized search settles it (text escapes such as \n or \" included).
        if (data.IndexOf("\\u"u8) < 0)
        {
            return data.IndexOf(quoted) >= 0;
        }

        // Stored JSON data is messages joined by commas: each is read as a value of its own.
        var options = new JsonReaderOptions { MaxDepth = 512 };
        try
        {
            while (true)
            {
                var reader = new Utf8JsonReader(data, isFinalBlock: false, new JsonReaderState(options));
                while (true)
                {
                    if (!reader.Read())
                    {
                        return true;
                    }

                    if (reader.TokenType == JsonTokenType.String && reader.ValueTextEquals(text))
                    {
                        return true;
                    }

                    // The message ends with the token that brings the reader back to the top level.
                    if (reader.CurrentDepth == 0 && reader.TokenType is not (JsonTokenType.StartObject or JsonTokenType.StartArray))
                    {
                        break;
                    }
                }

                data = data[(int)reader.BytesConsumed..].TrimStart(" \t\r\n"u8);
                if (data.IsEmpty)
                {
                    return false;
                }

                if (data[0] != (byte)',')
                {
                    return true;
                }

                data = data[1..];
            }
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException)
        {
            // InvalidOperationException: an escape that decodes to no text (a lone surrogate), in data stored unframed.
            return true;
        }
    }
}
