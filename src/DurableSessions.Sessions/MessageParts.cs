using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace DurableSessions.Sessions;

/// <summary>One part of a message's content, told apart by its <c>type</c> on the wire.</summary>
/// <remarks>A part of a type this version does not know (or that does not read as its type) is an
/// <see cref="OtherPart"/>, kept exactly as stored.</remarks>
public abstract record MessagePart
{
    private protected MessagePart()
    {
    }

    /// <summary>The part's type (<c>text</c>, <c>reasoning</c>, <c>tool-call</c>, ...).</summary>
    [JsonPropertyOrder(-1)]
    public abstract string Type { get; }

    /// <summary>Fields of the stored part that this type does not name, kept as read.</summary>
    [JsonExtensionData]
    public IDictionary<string, JsonElement>? AdditionalProperties { get; set; }

    /// <summary>
    /// Reads a part as the record of its <c>type</c>, or as an <see cref="OtherPart"/> kept exactly as given when the
    /// type is unknown or the record would not write it back unchanged. Never throws.
    /// </summary>
    public static MessagePart FromJson(JsonElement json)
    {
        var type = json.ValueKind == JsonValueKind.Object && json.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
        try
        {
            MessagePart? part = type switch
            {
                "text" => json.Deserialize(SessionJsonContext.Default.TextPart),
                "reasoning" => json.Deserialize(SessionJsonContext.Default.ReasoningPart),
                "tool-call" => json.Deserialize(SessionJsonContext.Default.ToolCallPart),
                "tool-result" => json.Deserialize(SessionJsonContext.Default.ToolResultPart),
                "data" => json.Deserialize(SessionJsonContext.Default.DataPart),
                "file" => json.Deserialize(SessionJsonContext.Default.FilePart),
                _ => null,
            };
            // Only a part its record writes back exactly is typed: one with a field of another kind (which a record
            // would read as absent) is kept as given, never altered.
            if (part is not null && JsonElement.DeepEquals(JsonSerializer.SerializeToElement(part, SessionJsonContext.Default.MessagePart), json))
            {
                return part;
            }
        }
        catch (JsonException)
        {
        }

        return new OtherPart(json);
    }

    /// <inheritdoc cref="FromJson(JsonElement)"/>
    public static MessagePart FromJson(JsonObject json)
    {
        ArgumentNullException.ThrowIfNull(json);
        return FromJson(JsonSerializer.SerializeToElement(json, SessionJsonContext.Default.JsonObject));
    }
}

/// <summary>Text (<c>type: text</c>).</summary>
/// <param name="Text">The text.</param>
public sealed record TextPart(string Text = "") : MessagePart
{
    /// <inheritdoc/>
    [JsonPropertyOrder(-1)]
    public override string Type => "text";
}

/// <summary>The model's reasoning (<c>type: reasoning</c>).</summary>
/// <param name="Text">The reasoning text.</param>
public sealed record ReasoningPart(string Text = "") : MessagePart
{
    /// <inheritdoc/>
    [JsonPropertyOrder(-1)]
    public override string Type => "reasoning";
}

/// <summary>A tool call (<c>type: tool-call</c>).</summary>
/// <param name="ToolCallId">The call's id, which its result names.</param>
/// <param name="Name">The tool.</param>
/// <param name="Input">The arguments.</param>
public sealed record ToolCallPart(string? ToolCallId, string? Name, JsonElement? Input) : MessagePart
{
    /// <inheritdoc/>
    [JsonPropertyOrder(-1)]
    public override string Type => "tool-call";
}

/// <summary>A tool's result (<c>type: tool-result</c>).</summary>
/// <param name="ToolCallId">The call it answers.</param>
/// <param name="Output">The result.</param>
public sealed record ToolResultPart(string? ToolCallId, JsonElement? Output) : MessagePart
{
    /// <inheritdoc/>
    [JsonPropertyOrder(-1)]
    public override string Type => "tool-result";
}

/// <summary>Structured data (<c>type: data</c>).</summary>
/// <param name="Data">The data.</param>
public sealed record DataPart(JsonElement? Data) : MessagePart
{
    /// <inheritdoc/>
    [JsonPropertyOrder(-1)]
    public override string Type => "data";
}

/// <summary>A file by reference (<c>type: file</c>).</summary>
/// <param name="Url">Where the file is.</param>
/// <param name="MediaType">Its media type.</param>
public sealed record FilePart(string? Url, string? MediaType) : MessagePart
{
    /// <inheritdoc/>
    [JsonPropertyOrder(-1)]
    public override string Type => "file";
}

/// <summary>A part of another type, or one that does not read as its type: kept exactly as stored.</summary>
public sealed record OtherPart : MessagePart
{
    private readonly string _type;

    /// <summary>Wraps a stored part.</summary>
    /// <param name="json">The part as stored: a JSON object with a string <c>type</c>.</param>
    public OtherPart(JsonElement json)
    {
        Json = json;
        _type = json.ValueKind == JsonValueKind.Object && json.TryGetProperty("type", out var type) && type.ValueKind == JsonValueKind.String
            ? type.GetString()!
            : string.Empty;
    }

    /// <inheritdoc/>
    public override string Type => _type;

    /// <summary>The part as stored.</summary>
    public JsonElement Json { get; }
}

/// <summary>Reads a part as the record of its <c>type</c> (or an <see cref="OtherPart"/>) and writes it back.</summary>
internal sealed class MessagePartConverter : JsonConverter<MessagePart>
{
    public override MessagePart Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        => MessagePart.FromJson(JsonElement.ParseValue(ref reader));

    public override void Write(Utf8JsonWriter writer, MessagePart value, JsonSerializerOptions options)
    {
        if (value is OtherPart other)
        {
            other.Json.WriteTo(writer);
            return;
        }

        // The records' own metadata: this converter is only for the abstract MessagePart, so this never comes back here.
        JsonSerializer.Serialize(writer, value, SessionJsonContext.Default.GetTypeInfo(value.GetType())
            ?? throw new NotSupportedException($"Unknown message part {value.GetType().Name}."));
    }
}
