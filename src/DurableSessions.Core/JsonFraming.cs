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
    /// <inheritdoc cref="JsonMessageLimits.MaxDepth"/>
    public const int MaxDepth = JsonMessageLimits.MaxDepth;

    // Framing reads one level above a message (the body's array); data stored before MaxDepth existed was framed with
    // 512, and still has to parse.
    private static readonly JsonReaderOptions ReaderOptions = new() { MaxDepth = 512 };
    private static readonly JsonDocumentOptions ParseOptions = new() { MaxDepth = 513, AllowDuplicateProperties = false };

    /// <summary>Frames a request body: a top-level array is flattened one level; anything else is one message.</summary>
    /// <param name="body">The raw request body.</param>
    /// <param name="allowEmptyArray">Whether <c>[]</c> is accepted (PUT) or rejected (POST).</param>
    /// <param name="payload">The framed messages.</param>
    /// <param name="error">Why the body was rejected.</param>
    /// <remarks>
    /// A body is refused unless it is valid UTF-8, every string in it decodes (no lone surrogate escapes such as
    /// <c>\ud800</c>), and no message nests deeper than <see cref="MaxDepth"/>: whatever is stored must be readable by
    /// every reader.
    /// </remarks>
    public static bool TryFrame(ReadOnlyMemory<byte> body, bool allowEmptyArray, out StreamPayload payload, out string? error)
    {
        payload = default;
        error = null;
        var span = body.Span;
        if (!System.Text.Unicode.Utf8.IsValid(span))
        {
            error = "Body is not valid JSON: it is not valid UTF-8.";
            return false;
        }

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
                if (!JsonMessageLimits.TrySkipMessage(ref reader, out error))
                {
                    return false;
                }

                var end = (int)reader.BytesConsumed;
                if (reader.Read())
                {
                    error = "Body is not valid JSON: unexpected content after the value.";
                    return false;
                }

                payload = new StreamPayload(body[start..end], 1);
                return true;
            }

            // Where each message lies is noted, then the messages are copied once into an array of exactly their length:
            // a store binds a whole array as it is, and would copy a slice of a larger one again.
            var ranges = new List<Range>();
            var length = 0;
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                var start = (int)reader.TokenStartIndex;
                if (!JsonMessageLimits.TrySkipMessage(ref reader, out error))
                {
                    return false;
                }

                var end = (int)reader.BytesConsumed;
                length += (ranges.Count > 0 ? 1 : 0) + end - start;
                ranges.Add(start..end);
            }

            if (reader.Read())
            {
                error = "Body is not valid JSON: unexpected content after the array.";
                return false;
            }

            if (ranges.Count == 0 && !allowEmptyArray)
            {
                error = "An empty JSON array appends nothing; send at least one message.";
                return false;
            }

            // Never the body itself: callers may hand in a buffer they reuse once the append returns.
            payload = new StreamPayload(Join(span, ranges, length), ranges.Count);
            return true;
        }
        catch (JsonException ex)
        {
            error = "Body is not valid JSON: " + JsonMessageLimits.FirstSentence(ex.Message);
            return false;
        }
    }

    /// <summary>The messages at <paramref name="ranges"/> of <paramref name="body"/>, joined by commas into an array of <paramref name="length"/> bytes.</summary>
    private static byte[] Join(ReadOnlySpan<byte> body, List<Range> ranges, int length)
    {
        var joined = new byte[length];
        var at = 0;
        foreach (var range in ranges)
        {
            if (at > 0)
            {
                joined[at++] = (byte)',';
            }

            var message = body[range];
            message.CopyTo(joined.AsSpan(at));
            at += message.Length;
        }

        return joined;
    }

    /// <inheritdoc cref="JsonMessageLimits.TryValidate(ReadOnlySpan{byte}, out string?)"/>
    /// <remarks>For request bodies of the JSON APIs.</remarks>
    public static bool TryValidate(ReadOnlySpan<byte> json, out string? error) => JsonMessageLimits.TryValidate(json, out error);

    /// <summary>Parses framed JSON data (messages separated by commas) into its messages.</summary>
    /// <exception cref="JsonException">
    /// The data is not framed JSON, or an object in it names a property twice (refused here, where a caller expects it,
    /// rather than when the property is first read).
    /// </exception>
    public static System.Text.Json.Nodes.JsonArray ParseMessages(ReadOnlySpan<byte> framed)
        => framed.IsEmpty ? [] : (System.Text.Json.Nodes.JsonArray)System.Text.Json.Nodes.JsonNode.Parse(Wrap(framed), nodeOptions: null, ParseOptions)!;

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
}
