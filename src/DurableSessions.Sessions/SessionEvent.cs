using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization.Metadata;

namespace DurableSessions.Sessions;

/// <summary>
/// One session event: a State Protocol change message <c>{ type, key, value, headers: { operation, timestamp } }</c>
/// with a typed <see cref="Value"/>. <see cref="SessionEvents"/> builds the ones the server and agents write.
/// </summary>
/// <param name="Type">The entity type (<see cref="SessionEventTypes"/>).</param>
/// <param name="Key">The entity key.</param>
/// <param name="Operation">Insert, update or delete.</param>
/// <param name="Value">The entity's value; null for a delete.</param>
/// <param name="Timestamp">When the change was made (<c>headers.timestamp</c>).</param>
public sealed record SessionEvent(string Type, string Key, ChangeOperation Operation, SessionEntity? Value, string? Timestamp)
{
    /// <summary>The change message as written to the stream.</summary>
    public JsonObject ToJson()
    {
        var change = new JsonObject { ["type"] = Type, ["key"] = Key };
        if (Value is not null)
        {
            change["value"] = JsonSerializer.SerializeToNode(Value, Value.GetType(), SessionJsonContext.Default);
        }

        var headers = new JsonObject { ["operation"] = Operation.Value };
        if (Timestamp is not null)
        {
            headers["timestamp"] = Timestamp;
        }

        change["headers"] = headers;
        return change;
    }

    /// <summary>
    /// Writes the change message as <see cref="ToJson"/> builds it, straight into <paramref name="writer"/> (no
    /// intermediate nodes): for writers that serialize events as they append them.
    /// </summary>
    public void WriteTo(Utf8JsonWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.WriteStartObject();
        writer.WriteString("type"u8, Type);
        writer.WriteString("key"u8, Key);
        if (Value is not null)
        {
            writer.WritePropertyName("value"u8);
            JsonSerializer.Serialize(writer, Value, Value.GetType(), SessionJsonContext.Default);
        }

        writer.WriteStartObject("headers"u8);
        writer.WriteString("operation"u8, Operation.Value);
        if (Timestamp is not null)
        {
            writer.WriteString("timestamp"u8, Timestamp);
        }

        writer.WriteEndObject();
        writer.WriteEndObject();
    }

    /// <summary>
    /// Reads a change message of a known session type; null when it is not one (a control message, an unknown type, or
    /// anything that does not read). Never throws on what is stored.
    /// </summary>
    public static SessionEvent? FromJson(JsonNode? change)
    {
        if (!SessionEventRules.IsReadable(change))
        {
            return null;
        }

        var type = SessionJson.Text(change, "type")!;
        var operation = new ChangeOperation(SessionJson.Text(change!["headers"], "operation")!);
        var value = change["value"] as JsonObject;
        var entity = value is null ? null : ReadEntity(type, value);
        if (value is not null && entity is null)
        {
            return null;
        }

        return new SessionEvent(type, SessionJson.Text(change, "key")!, operation, entity, SessionJson.Text(change["headers"], "timestamp"));
    }

    /// <summary>Reads the value of an entity of <paramref name="type"/>; null for an unknown type or a value that does not read.</summary>
    internal static SessionEntity? ReadEntity(string type, JsonObject value) => type switch
    {
        SessionEventTypes.Session => Read(value, SessionJsonContext.Default.SessionInfo),
        SessionEventTypes.Message => Read(value, SessionJsonContext.Default.SessionMessage),
        SessionEventTypes.Delta => Read(value, SessionJsonContext.Default.MessageDelta),
        SessionEventTypes.Run => Read(value, SessionJsonContext.Default.SessionRun),
        SessionEventTypes.Control => Read(value, SessionJsonContext.Default.SessionControl),
        SessionEventTypes.Presence => Read(value, SessionJsonContext.Default.SessionPresence),
        SessionEventTypes.Handoff => Read(value, SessionJsonContext.Default.SessionHandoff),
        _ => null,
    };

    /// <summary>Reads a value as <typeparamref name="T"/>; null when it does not read.</summary>
    internal static T? Read<T>(JsonNode? value, JsonTypeInfo<T> info)
        where T : class
    {
        try
        {
            return value?.Deserialize(info);
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or FormatException or ArgumentException)
        {
            return null;
        }
    }

    /// <inheritdoc cref="Read{T}(JsonNode?, JsonTypeInfo{T})"/>
    internal static T? Read<T>(ReadOnlySpan<byte> json, JsonTypeInfo<T> info)
        where T : class
    {
        try
        {
            return JsonSerializer.Deserialize(json, info);
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or FormatException or ArgumentException)
        {
            return null;
        }
    }
}
