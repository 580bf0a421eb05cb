using System.Buffers;
using System.Text.Json;

namespace DurableSessions;

/// <summary>
/// Validates JSON bodies and frames them as stored messages (JSON mode, protocol §9.1).
/// </summary>
/// <remarks>
/// Stored JSON data is the messages' exact bytes joined by commas, so a read answers <c>[</c> + chunks joined by
/// commas + <c>]</c> without re-encoding anything.
/// </remarks>
public static class JsonFraming
{
    private static readonly JsonReaderOptions ReaderOptions = new() { MaxDepth = 512 };

    /// <summary>Frames a request body: a top-level array is flattened one level; anything else is one message.</summary>
    /// <param name="body">The raw request body.</param>
    /// <param name="allowEmptyArray">Whether <c>[]</c> is accepted (PUT) or rejected (POST).</param>
    /// <param name="payload">The framed messages.</param>
    /// <param name="error">Why the body was rejected.</param>
    public static bool TryFrame(ReadOnlyMemory<byte> body, bool allowEmptyArray, out StreamPayload payload, out string? error)
    {
        payload = default;
        error = null;
        var span = body.Span;
        try
        {
            var reader = new Utf8JsonReader(span, ReaderOptions);
            if (!reader.Read())
            {
                error = "Body is not valid JSON: it is empty.";
                return false;
            }

            if (reader.TokenType != JsonTokenType.StartArray)
            {
                var start = (int)reader.TokenStartIndex;
                reader.Skip();
                var end = (int)reader.BytesConsumed;
                if (reader.Read())
                {
                    error = "Body is not valid JSON: unexpected content after the value.";
                    return false;
                }

                payload = new StreamPayload(body[start..end], 1);
                return true;
            }

            var output = new ArrayBufferWriter<byte>(Math.Max(16, span.Length));
            long count = 0;
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                var start = (int)reader.TokenStartIndex;
                reader.Skip();
                var end = (int)reader.BytesConsumed;
                if (count > 0)
                {
                    output.Write(","u8);
                }

                output.Write(span[start..end]);
                count++;
            }

            if (reader.Read())
            {
                error = "Body is not valid JSON: unexpected content after the array.";
                return false;
            }

            if (count == 0 && !allowEmptyArray)
            {
                error = "An empty JSON array appends nothing; send at least one message.";
                return false;
            }

            payload = new StreamPayload(output.WrittenMemory, count);
            return true;
        }
        catch (JsonException ex)
        {
            error = "Body is not valid JSON: " + FirstSentence(ex.Message);
            return false;
        }
    }

    /// <summary>Parses framed JSON data (messages separated by commas) into its messages.</summary>
    /// <exception cref="JsonException">The data is not framed JSON.</exception>
    public static System.Text.Json.Nodes.JsonArray ParseMessages(ReadOnlySpan<byte> framed)
        => framed.IsEmpty ? [] : (System.Text.Json.Nodes.JsonArray)System.Text.Json.Nodes.JsonNode.Parse(Wrap(framed))!;

    /// <summary>Returns the messages <c>[skip, skip + take)</c> of framed JSON data.</summary>
    public static ReadOnlyMemory<byte> Slice(ReadOnlyMemory<byte> data, long skip, long take)
    {
        var wrapped = Wrap(data.Span);

        var reader = new Utf8JsonReader(wrapped, ReaderOptions);
        reader.Read();
        var output = new ArrayBufferWriter<byte>(data.Length);
        long index = 0;
        long written = 0;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray && written < take)
        {
            var start = (int)reader.TokenStartIndex;
            reader.Skip();
            var end = (int)reader.BytesConsumed;
            if (index++ < skip)
            {
                continue;
            }

            if (written++ > 0)
            {
                output.Write(","u8);
            }

            output.Write(wrapped.AsSpan(start, end - start));
        }

        return output.WrittenMemory;
    }

    /// <summary>Framed messages as one JSON array: <c>[</c> + data + <c>]</c>.</summary>
    private static byte[] Wrap(ReadOnlySpan<byte> framed)
    {
        var wrapped = new byte[framed.Length + 2];
        wrapped[0] = (byte)'[';
        framed.CopyTo(wrapped.AsSpan(1));
        wrapped[^1] = (byte)']';
        return wrapped;
    }

    private static string FirstSentence(string message)
    {
        var dot = message.IndexOf(". ", StringComparison.Ordinal);
        return dot > 0 ? message[..(dot + 1)] : message;
    }
}
