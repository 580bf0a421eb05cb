using System.Text.Json;
using System.Text.Json.Serialization;

namespace DurableSessions.Sessions;

/// <summary>The source-generated JSON metadata of the session entities: camelCase fields, nulls not written.</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    Converters = [typeof(MessagePartConverter), typeof(LenientStringConverter)])]
[JsonSerializable(typeof(SessionInfo))]
[JsonSerializable(typeof(SessionMessage))]
[JsonSerializable(typeof(MessageDelta))]
[JsonSerializable(typeof(SessionRun))]
[JsonSerializable(typeof(SessionControl))]
[JsonSerializable(typeof(SessionPresence))]
[JsonSerializable(typeof(SessionHandoff))]
[JsonSerializable(typeof(MessagePart))]
[JsonSerializable(typeof(TextPart))]
[JsonSerializable(typeof(ReasoningPart))]
[JsonSerializable(typeof(ToolCallPart))]
[JsonSerializable(typeof(ToolResultPart))]
[JsonSerializable(typeof(DataPart))]
[JsonSerializable(typeof(FilePart))]
[JsonSerializable(typeof(MessageStatus))]
[JsonSerializable(typeof(RunStatus))]
[JsonSerializable(typeof(MessageRole))]
[JsonSerializable(typeof(NewMessagePolicy))]
[JsonSerializable(typeof(HandoffPolicy))]
[JsonSerializable(typeof(ControlAction))]
[JsonSerializable(typeof(ControlStatus))]
[JsonSerializable(typeof(ParticipantKind))]
[JsonSerializable(typeof(PresenceStatus))]
[JsonSerializable(typeof(ChangeOperation))]
[JsonSerializable(typeof(System.Text.Json.Nodes.JsonObject))]
internal sealed partial class SessionJsonContext : JsonSerializerContext;

/// <summary>
/// Reads a string field that holds another kind of value as absent. Only some fields are held to being strings by
/// <see cref="SessionEventRules"/> (a title, a file's URL are not), and a reader of stored events must never fail on
/// them.
/// </summary>
internal sealed class LenientStringConverter : JsonConverter<string>
{
    public override string? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.String)
        {
            return reader.GetString();
        }

        reader.Skip();
        return null;
    }

    public override void Write(Utf8JsonWriter writer, string value, JsonSerializerOptions options) => writer.WriteStringValue(value);
}
