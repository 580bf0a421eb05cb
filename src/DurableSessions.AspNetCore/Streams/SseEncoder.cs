using System.Buffers;
using System.Text;

namespace DurableSessions.AspNetCore.Streams;

/// <summary>
/// Encodes Server-Sent Events for stream reads (protocol §5.8).
/// </summary>
/// <remarks>
/// Payload lines are split on CR, LF and CRLF so that stream data can never inject an event. JSON data is sent as one
/// complete array per event; text as UTF-8; anything else as padded base64. Each data event is always followed by a
/// control event, and the two are written together.
/// </remarks>
internal static class SseEncoder
{
    private static readonly byte[] DataEventHeader = "event: data\n"u8.ToArray();
    private static readonly byte[] ControlEventHeader = "event: control\ndata:"u8.ToArray();

    public static bool UsesBase64(string contentType) => !StreamContentType.IsTextForSse(contentType);

    /// <summary>
    /// Writes stored JSON chunks as one array. Stored JSON is the messages' bytes joined by commas, so the array is
    /// written without re-encoding them.
    /// </summary>
    public static void WriteJsonArray(IBufferWriter<byte> output, IReadOnlyList<ReadOnlyMemory<byte>> chunks)
    {
        // Indexed, not enumerated: an enumerator taken through the interface is an allocation per delivered change.
        output.Write("["u8);
        for (var i = 0; i < chunks.Count; i++)
        {
            if (i > 0)
            {
                output.Write(","u8);
            }

            output.Write(chunks[i].Span);
        }

        output.Write("]"u8);
    }

    /// <summary>Writes one data event holding <paramref name="chunks"/>.</summary>
    public static void WriteDataEvent(IBufferWriter<byte> output, string contentType, IReadOnlyList<ReadOnlyMemory<byte>> chunks)
    {
        output.Write(DataEventHeader);
        if (StreamContentType.IsJson(contentType))
        {
            var length = 2;
            var oneLine = true;
            for (var i = 0; i < chunks.Count; i++)
            {
                var chunk = chunks[i];
                length += chunk.Length + 1;
                oneLine &= !chunk.Span.ContainsAny((byte)'\r', (byte)'\n');
            }

            if (oneLine)
            {
                // The common case (compact JSON): one data line, written straight to the output with no copy between.
                output.Write("data:"u8);
                WriteJsonArray(output, chunks);
                output.Write("\n"u8);
            }
            else
            {
                var joined = new ArrayBufferWriter<byte>(length);
                WriteJsonArray(joined, chunks);
                WriteLines(output, joined.WrittenSpan);
            }
        }
        else if (StreamContentType.IsTextForSse(contentType))
        {
            if (chunks.Count == 1)
            {
                WriteLines(output, chunks[0].Span);
            }
            else
            {
                var joined = new ArrayBufferWriter<byte>();
                for (var i = 0; i < chunks.Count; i++)
                {
                    var chunk = chunks[i];
                    joined.Write(chunk.Span);
                }

                WriteLines(output, joined.WrittenSpan);
            }
        }
        else
        {
            var length = 0;
            for (var i = 0; i < chunks.Count; i++)
            {
                var chunk = chunks[i];
                length += chunk.Length;
            }

            var bytes = new byte[length];
            var at = 0;
            for (var i = 0; i < chunks.Count; i++)
            {
                var chunk = chunks[i];
                chunk.Span.CopyTo(bytes.AsSpan(at));
                at += chunk.Length;
            }

            output.Write("data:"u8);
            output.Write(Encoding.ASCII.GetBytes(Convert.ToBase64String(bytes)));
            output.Write("\n"u8);
        }

        output.Write("\n"u8);
    }

    /// <summary>Writes a control event. Fields that are false are omitted (clients stop at the text <c>streamClosed</c>).</summary>
    /// <remarks>
    /// Written straight into <paramref name="output"/>, with no string or array built: every live reader writes one for
    /// each change it is sent (the change's data frame is encoded once and shared).
    /// </remarks>
    public static void WriteControlEvent(IBufferWriter<byte> output, long nextPosition, string? cursor, bool upToDate, bool closed)
    {
        var withCursor = !closed && cursor is not null;
        var span = output.GetSpan(ControlEventMaxBytes + (withCursor ? Encoding.UTF8.GetMaxByteCount(cursor!.Length) : 0));
        var at = Put(span, 0, ControlEventHeader);
        at = Put(span, at, "{\"streamNextOffset\":\""u8);
        Span<char> offset = stackalloc char[StreamOffset.Width];
        StreamOffset.TryFormat(nextPosition, offset, out _);
        at += Encoding.ASCII.GetBytes(offset, span[at..]);
        at = Put(span, at, "\""u8);
        if (withCursor)
        {
            // The cursor is the server's own number (StreamCursor), never the client's text.
            at = Put(span, at, ",\"streamCursor\":\""u8);
            at += Encoding.UTF8.GetBytes(cursor, span[at..]);
            at = Put(span, at, "\""u8);
        }

        if (upToDate || closed)
        {
            at = Put(span, at, ",\"upToDate\":true"u8);
        }

        if (closed)
        {
            at = Put(span, at, ",\"streamClosed\":true"u8);
        }

        at = Put(span, at, "}\n\n"u8);
        output.Advance(at);
    }

    // The header, the offset and every optional field but the cursor.
    private const int ControlEventMaxBytes = 160;

    private static int Put(Span<byte> span, int at, ReadOnlySpan<byte> bytes)
    {
        bytes.CopyTo(span[at..]);
        return at + bytes.Length;
    }

    /// <summary>A comment line that keeps idle connections open through proxies.</summary>
    public static ReadOnlyMemory<byte> KeepAlive { get; } = ":\n\n"u8.ToArray();

    private static void WriteLines(IBufferWriter<byte> output, ReadOnlySpan<byte> payload)
    {
        while (true)
        {
            var index = payload.IndexOfAny((byte)'\r', (byte)'\n');
            output.Write("data:"u8);
            if (index < 0)
            {
                output.Write(payload);
                output.Write("\n"u8);
                return;
            }

            output.Write(payload[..index]);
            output.Write("\n"u8);
            var skip = payload[index] == '\r' && index + 1 < payload.Length && payload[index + 1] == '\n' ? 2 : 1;
            payload = payload[(index + skip)..];
        }
    }
}
