using System.Buffers;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace DurableSessions;

/// <summary>
/// How DurableSessions writes JSON: quotes, apostrophes, <c>&lt;</c>, <c>&gt;</c>, <c>&amp;</c> and non-ASCII text as
/// themselves, not as <c>\u0022</c>-style escapes. Every body is served as <c>application/json</c> (or inside an SSE
/// <c>data:</c> line, where line breaks are still escaped), never inlined into HTML, so the escapes protect nothing and
/// only make the output hard to read. Characters outside the Basic Multilingual Plane (emoji) are still written as
/// escaped surrogate pairs: the encoder of <c>System.Text.Json</c> always escapes them.
/// </summary>
public static class DurableJson
{
    /// <summary>Writer options with the relaxed encoder.</summary>
    public static JsonWriterOptions WriterOptions { get; } = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Serializer options with the relaxed encoder (and otherwise the defaults).</summary>
    public static JsonSerializerOptions SerializerOptions { get; } = CreateSerializerOptions();

    /// <summary>The node as UTF-8 JSON.</summary>
    public static byte[] ToUtf8Bytes(JsonNode? node)
        => Write(node, static (writer, node) =>
        {
            if (node is null)
            {
                writer.WriteNullValue();
            }
            else
            {
                node.WriteTo(writer);
            }
        });

    /// <summary>
    /// What <paramref name="write"/> writes, as UTF-8 JSON in an array of its exact size. The writer (with
    /// <see cref="WriterOptions"/>) and its buffer are reused on each thread: a new writer asks its buffer for 4 KiB at
    /// its first write, which would cost that much per small message.
    /// </summary>
    public static byte[] Write<TState>(TState state, Action<Utf8JsonWriter, TState> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        if (t_writing)
        {
            // Called from inside another write on this thread: that one holds the thread's buffer.
            var own = new ArrayBufferWriter<byte>(256);
            using (var nested = new Utf8JsonWriter(own, WriterOptions))
            {
                write(nested, state);
            }

            return own.WrittenSpan.ToArray();
        }

        var buffer = t_buffer ??= new ArrayBufferWriter<byte>(4096);
        var writer = t_writer ??= new Utf8JsonWriter(buffer, WriterOptions);
        buffer.ResetWrittenCount();
        writer.Reset(buffer);
        t_writing = true;
        try
        {
            write(writer, state);
            writer.Flush();
            return buffer.WrittenSpan.ToArray();
        }
        finally
        {
            t_writing = false;

            // A rare large message does not keep its buffer for the thread's life.
            if (buffer.Capacity > 256 * 1024)
            {
                t_buffer = null;
                t_writer = null;
            }
        }
    }

    [ThreadStatic]
    private static ArrayBufferWriter<byte>? t_buffer;

    [ThreadStatic]
    private static Utf8JsonWriter? t_writer;

    [ThreadStatic]
    private static bool t_writing;

    /// <summary>The node as a JSON string.</summary>
    public static string ToJsonString(JsonNode? node) => node?.ToJsonString(SerializerOptions) ?? "null";

    private static JsonSerializerOptions CreateSerializerOptions()
    {
        var options = new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        options.MakeReadOnly(populateMissingResolver: true);
        return options;
    }
}
