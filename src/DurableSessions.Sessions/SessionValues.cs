using System.Text.Json;
using System.Text.Json.Serialization;

namespace DurableSessions.Sessions;

/// <summary>
/// A value from an open set of strings (a status, a role, a policy): the wire value, compared ordinally, with the
/// well-known values as static members of the implementing type.
/// </summary>
/// <typeparam name="TSelf">The implementing value type.</typeparam>
public interface IStringValue<TSelf>
    where TSelf : struct, IStringValue<TSelf>
{
    /// <summary>The value as written on the wire.</summary>
    string Value { get; }

    /// <summary>Wraps a wire value; values other than the well-known ones are kept as they are.</summary>
    static abstract TSelf Create(string value);
}

/// <summary>Reads and writes an <see cref="IStringValue{TSelf}"/> as a JSON string.</summary>
/// <typeparam name="T">The value type.</typeparam>
public sealed class StringValueConverter<T> : JsonConverter<T>
    where T : struct, IStringValue<T>
{
    /// <inheritdoc/>
    public override T Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        => reader.TokenType == JsonTokenType.String
            ? T.Create(reader.GetString()!)
            : throw new JsonException($"A {typeof(T).Name} must be a JSON string.");

    /// <inheritdoc/>
    public override void Write(Utf8JsonWriter writer, T value, JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.WriteStringValue(value.Value);
    }
}

/// <summary>The operation of a State Protocol change message (<c>headers.operation</c>). A string-valued enumeration: values other than the well-known ones are kept as read.</summary>
/// <param name="Value">The value as written on the wire.</param>
[JsonConverter(typeof(StringValueConverter<ChangeOperation>))]
public readonly record struct ChangeOperation(string Value) : IStringValue<ChangeOperation>
{
    /// <summary><c>insert</c>: The entity is new.</summary>
    public static ChangeOperation Insert { get; } = new("insert");

    /// <summary><c>update</c>: The entity's value is replaced.</summary>
    public static ChangeOperation Update { get; } = new("update");

    /// <summary><c>delete</c>: The entity is removed.</summary>
    public static ChangeOperation Delete { get; } = new("delete");

    /// <inheritdoc/>
    static ChangeOperation IStringValue<ChangeOperation>.Create(string value) => new(value);

    /// <inheritdoc/>
    public override string ToString() => Value ?? string.Empty;
}

/// <summary>Who a message is from. A string-valued enumeration: values other than the well-known ones are kept as read.</summary>
/// <param name="Value">The value as written on the wire.</param>
[JsonConverter(typeof(StringValueConverter<MessageRole>))]
public readonly record struct MessageRole(string Value) : IStringValue<MessageRole>
{
    /// <summary><c>user</c>: A participant's message.</summary>
    public static MessageRole User { get; } = new("user");

    /// <summary><c>assistant</c>: An agent's reply (or a human's, answering in its place).</summary>
    public static MessageRole Assistant { get; } = new("assistant");

    /// <summary><c>tool</c>: A tool's output.</summary>
    public static MessageRole Tool { get; } = new("tool");

    /// <summary><c>system</c>: An instruction to the agents.</summary>
    public static MessageRole System { get; } = new("system");

    /// <inheritdoc/>
    static MessageRole IStringValue<MessageRole>.Create(string value) => new(value);

    /// <inheritdoc/>
    public override string ToString() => Value ?? string.Empty;
}

/// <summary>Where a message is in its life. A string-valued enumeration: values other than the well-known ones are kept as read.</summary>
/// <param name="Value">The value as written on the wire.</param>
[JsonConverter(typeof(StringValueConverter<MessageStatus>))]
public readonly record struct MessageStatus(string Value) : IStringValue<MessageStatus>
{
    /// <summary><c>streaming</c>: A reply still being written.</summary>
    public static MessageStatus Streaming { get; } = new("streaming");

    /// <summary><c>complete</c>: Written in full.</summary>
    public static MessageStatus Complete { get; } = new("complete");

    /// <summary><c>cancelled</c>: Cut off by a cancel; keeps what was streamed.</summary>
    public static MessageStatus Cancelled { get; } = new("cancelled");

    /// <summary><c>failed</c>: The agent failed while writing it.</summary>
    public static MessageStatus Failed { get; } = new("failed");

    /// <summary><c>interrupted</c>: The agent writing it crashed.</summary>
    public static MessageStatus Interrupted { get; } = new("interrupted");

    /// <summary><c>paused</c>: Stopped by a handoff under the <c>pause</c> policy; answered again after hand-back.</summary>
    public static MessageStatus Paused { get; } = new("paused");

    /// <inheritdoc/>
    static MessageStatus IStringValue<MessageStatus>.Create(string value) => new(value);

    /// <inheritdoc/>
    public override string ToString() => Value ?? string.Empty;
}

/// <summary>Where an agent run is in its life. A string-valued enumeration: values other than the well-known ones are kept as read.</summary>
/// <param name="Value">The value as written on the wire.</param>
[JsonConverter(typeof(StringValueConverter<RunStatus>))]
public readonly record struct RunStatus(string Value) : IStringValue<RunStatus>
{
    /// <summary><c>started</c>: Running.</summary>
    public static RunStatus Started { get; } = new("started");

    /// <summary><c>finished</c>: Ended with a reply.</summary>
    public static RunStatus Finished { get; } = new("finished");

    /// <summary><c>cancelled</c>: Cancelled and fenced.</summary>
    public static RunStatus Cancelled { get; } = new("cancelled");

    /// <summary><c>failed</c>: Ended by an error.</summary>
    public static RunStatus Failed { get; } = new("failed");

    /// <summary><c>interrupted</c>: The agent crashed; marked when it (or another instance with its id) joins again.</summary>
    public static RunStatus Interrupted { get; } = new("interrupted");

    /// <summary><c>paused</c>: Stopped by a handoff under the <c>pause</c> policy.</summary>
    public static RunStatus Paused { get; } = new("paused");

    /// <inheritdoc/>
    static RunStatus IStringValue<RunStatus>.Create(string value) => new(value);

    /// <inheritdoc/>
    public override string ToString() => Value ?? string.Empty;
}

/// <summary>What a new user message does while a run is active. A string-valued enumeration: values other than the well-known ones are kept as read.</summary>
/// <param name="Value">The value as written on the wire.</param>
[JsonConverter(typeof(StringValueConverter<NewMessagePolicy>))]
public readonly record struct NewMessagePolicy(string Value) : IStringValue<NewMessagePolicy>
{
    /// <summary><c>queue</c>: The agent answers it after the current run.</summary>
    public static NewMessagePolicy Queue { get; } = new("queue");

    /// <summary><c>interrupt</c>: The active run is cancelled first, in the same append.</summary>
    public static NewMessagePolicy Interrupt { get; } = new("interrupt");

    /// <summary><c>reject</c>: The message is refused (<c>RUN_ACTIVE</c>).</summary>
    public static NewMessagePolicy Reject { get; } = new("reject");

    /// <inheritdoc/>
    static NewMessagePolicy IStringValue<NewMessagePolicy>.Create(string value) => new(value);

    /// <inheritdoc/>
    public override string ToString() => Value ?? string.Empty;
}

/// <summary>What a human taking over does to the active run. A string-valued enumeration: values other than the well-known ones are kept as read.</summary>
/// <param name="Value">The value as written on the wire.</param>
[JsonConverter(typeof(StringValueConverter<HandoffPolicy>))]
public readonly record struct HandoffPolicy(string Value) : IStringValue<HandoffPolicy>
{
    /// <summary><c>cancel</c>: The run is cancelled, like any cancel.</summary>
    public static HandoffPolicy Cancel { get; } = new("cancel");

    /// <summary><c>pause</c>: The run is paused; the agent answers its message again after hand-back.</summary>
    public static HandoffPolicy Pause { get; } = new("pause");

    /// <inheritdoc/>
    static HandoffPolicy IStringValue<HandoffPolicy>.Create(string value) => new(value);

    /// <inheritdoc/>
    public override string ToString() => Value ?? string.Empty;
}

/// <summary>What a control asks of a run. A string-valued enumeration: values other than the well-known ones are kept as read.</summary>
/// <param name="Value">The value as written on the wire.</param>
[JsonConverter(typeof(StringValueConverter<ControlAction>))]
public readonly record struct ControlAction(string Value) : IStringValue<ControlAction>
{
    /// <summary><c>cancel</c>: Stop the run.</summary>
    public static ControlAction Cancel { get; } = new("cancel");

    /// <summary><c>steer</c>: Continue the reply with a new instruction.</summary>
    public static ControlAction Steer { get; } = new("steer");

    /// <summary><c>pause</c>: Stop the run for a handoff; it is answered again after hand-back.</summary>
    public static ControlAction Pause { get; } = new("pause");

    /// <summary><c>regenerate</c>: Answer the run's message again, in place of the run's reply.</summary>
    public static ControlAction Regenerate { get; } = new("regenerate");

    /// <inheritdoc/>
    static ControlAction IStringValue<ControlAction>.Create(string value) => new(value);

    /// <inheritdoc/>
    public override string ToString() => Value ?? string.Empty;
}

/// <summary>The state of a control. A string-valued enumeration: values other than the well-known ones are kept as read.</summary>
/// <param name="Value">The value as written on the wire.</param>
[JsonConverter(typeof(StringValueConverter<ControlStatus>))]
public readonly record struct ControlStatus(string Value) : IStringValue<ControlStatus>
{
    /// <summary><c>requested</c>: Recorded; the agent acts on it.</summary>
    public static ControlStatus Requested { get; } = new("requested");

    /// <summary><c>fenced</c>: Recorded with a fence: nothing more is accepted for the run.</summary>
    public static ControlStatus Fenced { get; } = new("fenced");

    /// <inheritdoc/>
    static ControlStatus IStringValue<ControlStatus>.Create(string value) => new(value);

    /// <inheritdoc/>
    public override string ToString() => Value ?? string.Empty;
}

/// <summary>What kind of participant is present or holds the session. A string-valued enumeration: values other than the well-known ones are kept as read.</summary>
/// <param name="Value">The value as written on the wire.</param>
[JsonConverter(typeof(StringValueConverter<ParticipantKind>))]
public readonly record struct ParticipantKind(string Value) : IStringValue<ParticipantKind>
{
    /// <summary><c>client</c>: An application watching the session.</summary>
    public static ParticipantKind Client { get; } = new("client");

    /// <summary><c>agent</c>: An agent.</summary>
    public static ParticipantKind Agent { get; } = new("agent");

    /// <summary><c>human</c>: A human (for handoff, the one answering in the agents' place).</summary>
    public static ParticipantKind Human { get; } = new("human");

    /// <inheritdoc/>
    static ParticipantKind IStringValue<ParticipantKind>.Create(string value) => new(value);

    /// <inheritdoc/>
    public override string ToString() => Value ?? string.Empty;
}

/// <summary>Whether a participant is present. A string-valued enumeration: values other than the well-known ones are kept as read.</summary>
/// <param name="Value">The value as written on the wire.</param>
[JsonConverter(typeof(StringValueConverter<PresenceStatus>))]
public readonly record struct PresenceStatus(string Value) : IStringValue<PresenceStatus>
{
    /// <summary><c>joined</c>: Present.</summary>
    public static PresenceStatus Joined { get; } = new("joined");

    /// <summary><c>left</c>: Gone, or timed out.</summary>
    public static PresenceStatus Left { get; } = new("left");

    /// <inheritdoc/>
    static PresenceStatus IStringValue<PresenceStatus>.Create(string value) => new(value);

    /// <inheritdoc/>
    public override string ToString() => Value ?? string.Empty;
}
