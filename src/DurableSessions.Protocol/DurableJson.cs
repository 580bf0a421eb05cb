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
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var writer = new Utf8JsonWriter(buffer, WriterOptions))
        {
            if (node is null)
            {
                writer.WriteNullValue();
            }
            else
            {
                node.WriteTo(writer);
            }
        }

        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>The node as a JSON string.</summary>
    public static string ToJsonString(JsonNode? node) => node?.ToJsonString(SerializerOptions) ?? "null";

    private static JsonSerializerOptions CreateSerializerOptions()
    {
        var options = new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        options.MakeReadOnly(populateMissingResolver: true);
        return options;
    }
}
