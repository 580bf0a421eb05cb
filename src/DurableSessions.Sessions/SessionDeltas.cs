using System.Buffers;
using System.Text.Json;

namespace DurableSessions.Sessions;

/// <summary>
/// A <c>delta</c> event as the session rules need it, read straight from an append's bytes: the message it streams into,
/// the text, and the part.
/// </summary>
/// <param name="MessageId">The message the text is appended to.</param>
/// <param name="Text">The text.</param>
/// <param name="Part">The index of the message part (0 when the event names none).</param>
/// <param name="PartType">The type of a new part, if the event names one.</param>
/// <param name="RunId">The run the delta belongs to, if the event names it.</param>
internal readonly record struct DeltaChange(string MessageId, string Text, int Part, string? PartType, string? RunId);

/// <summary>
/// Reads an append made only of plain delta inserts (what an agent streams: nearly every append to a session) without
/// building JSON nodes. Anything else, or anything unusual in a delta (an unknown or repeated field, a field of another
/// kind, an escaped property name, a number that is not a plain integer), is left to the general path, which parses the
/// events into nodes and judges them by <see cref="SessionEventRules"/>: this reader only recognizes events that path
/// would accept as they are, so both reach the same decision.
/// </summary>
internal static class SessionDeltas
{
    private static readonly JsonReaderOptions ReaderOptions = new() { MaxDepth = JsonMessageLimits.MaxDepth + 1 };

    /// <summary>
    /// Reads framed JSON stream data (messages separated by commas, as stored) when every message is a plain
    /// <c>delta</c> insert. Returns false, with nothing read, otherwise.
    /// </summary>
    public static bool TryRead(ReadOnlySpan<byte> framedMessages, out List<DeltaChange> deltas)
    {
        // An agent's write is one delta per part it streams into: nearly always one.
        deltas = new List<DeltaChange>(1);
        if (framedMessages.IsEmpty)
        {
            return false;
        }

        var length = framedMessages.Length + 2;
        var rented = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            rented[0] = (byte)'[';
            framedMessages.CopyTo(rented.AsSpan(1));
            rented[length - 1] = (byte)']';
            var reader = new Utf8JsonReader(rented.AsSpan(0, length), ReaderOptions);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartArray)
            {
                return false;
            }

            while (reader.Read())
            {
                if (reader.TokenType == JsonTokenType.EndArray)
                {
                    return deltas.Count > 0 && !reader.Read();
                }

                if (!TryReadDelta(ref reader, out var delta))
                {
                    return false;
                }

                deltas.Add(delta);
            }

            return false;
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException)
        {
            // Not JSON this reader takes, or a string that does not decode: the general path judges it.
            return false;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private static bool TryReadDelta(ref Utf8JsonReader reader, out DeltaChange delta)
    {
        delta = default;
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            return false;
        }

        bool type = false, key = false, headers = false, value = false;
        string? messageId = null, text = null, partType = null, runId = null;
        var part = 0;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueIsEscaped)
            {
                return false;
            }

            if (reader.ValueTextEquals("type"u8))
            {
                if (type || !reader.Read() || reader.TokenType != JsonTokenType.String || !reader.ValueTextEquals("delta"u8))
                {
                    return false;
                }

                type = true;
            }
            else if (reader.ValueTextEquals("key"u8))
            {
                if (key || !reader.Read() || reader.TokenType != JsonTokenType.String || reader.GetString() is not { Length: > 0 and <= SessionEventRules.MaxKeyLength })
                {
                    return false;
                }

                key = true;
            }
            else if (reader.ValueTextEquals("headers"u8))
            {
                if (headers || !reader.Read() || !TryReadHeaders(ref reader))
                {
                    return false;
                }

                headers = true;
            }
            else if (reader.ValueTextEquals("value"u8))
            {
                if (value || !reader.Read() || !TryReadValue(ref reader, out messageId, out text, out part, out partType, out runId))
                {
                    return false;
                }

                value = true;
            }
            else
            {
                return false;
            }
        }

        if (reader.TokenType != JsonTokenType.EndObject || !(type && key && headers && value))
        {
            return false;
        }

        delta = new DeltaChange(messageId!, text!, part, partType, runId);
        return true;
    }

    // Exactly { "operation": "insert" } with an optional string timestamp.
    private static bool TryReadHeaders(ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            return false;
        }

        bool operation = false, timestamp = false;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueIsEscaped)
            {
                return false;
            }

            if (reader.ValueTextEquals("operation"u8))
            {
                if (operation || !reader.Read() || reader.TokenType != JsonTokenType.String || !reader.ValueTextEquals("insert"u8))
                {
                    return false;
                }

                operation = true;
            }
            else if (reader.ValueTextEquals("timestamp"u8))
            {
                if (timestamp || !reader.Read() || reader.TokenType != JsonTokenType.String)
                {
                    return false;
                }

                timestamp = true;
            }
            else
            {
                return false;
            }
        }

        return reader.TokenType == JsonTokenType.EndObject && operation;
    }

    // messageId and text (strings, required), part (a plain integer from 0 to 10000), partType, at and runId (strings).
    private static bool TryReadValue(ref Utf8JsonReader reader, out string? messageId, out string? text, out int part, out string? partType, out string? runId)
    {
        messageId = text = partType = runId = null;
        part = 0;
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            return false;
        }

        bool hasPart = false, at = false;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueIsEscaped)
            {
                return false;
            }

            if (reader.ValueTextEquals("part"u8))
            {
                if (hasPart || !reader.Read() || reader.TokenType != JsonTokenType.Number || !IsPlainInteger(reader.ValueSpan)
                    || !reader.TryGetInt32(out part) || part is < 0 or > 10_000)
                {
                    return false;
                }

                hasPart = true;
                continue;
            }

            ref var field = ref messageId;
            if (reader.ValueTextEquals("text"u8))
            {
                field = ref text;
            }
            else if (reader.ValueTextEquals("partType"u8))
            {
                field = ref partType;
            }
            else if (reader.ValueTextEquals("runId"u8))
            {
                field = ref runId;
            }
            else if (reader.ValueTextEquals("at"u8))
            {
                if (at || !reader.Read() || reader.TokenType != JsonTokenType.String)
                {
                    return false;
                }

                at = true;
                continue;
            }
            else if (!reader.ValueTextEquals("messageId"u8))
            {
                return false;
            }

            if (field is not null || !reader.Read() || reader.TokenType != JsonTokenType.String)
            {
                return false;
            }

            field = reader.GetString();
        }

        return reader.TokenType == JsonTokenType.EndObject && messageId is not null && text is not null;
    }

    private static bool IsPlainInteger(ReadOnlySpan<byte> number)
    {
        foreach (var b in number)
        {
            if (b is < (byte)'0' or > (byte)'9')
            {
                return false;
            }
        }

        return true;
    }
}
