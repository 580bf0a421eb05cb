using System.Text.Json;
using System.Text.Json.Serialization;

namespace DurableSessions.Sessions;

/// <summary>
/// The value of a session event (the <c>value</c> of a State Protocol change message). Fields are camelCase on the
/// wire; a null field is not written.
/// </summary>
/// <remarks>Fields this version does not know are kept in <see cref="AdditionalProperties"/> and written back, so an
/// entity read, changed and written again loses nothing. Immutable, so safe to share between threads.</remarks>
public abstract record SessionEntity
{
    /// <summary>Fields of the stored value that this type does not name, kept as read.</summary>
    [JsonExtensionData]
    public IDictionary<string, JsonElement>? AdditionalProperties { get; set; }
}

/// <summary>The session itself (type <c>session</c>, key <c>session</c>): title and policies, written at creation.</summary>
public sealed record SessionInfo : SessionEntity
{
    /// <summary>The session id.</summary>
    public string? Id { get; init; }

    /// <summary>The title, written even when there is none.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public string? Title { get; init; }

    /// <summary>What a new user message does while a run is active.</summary>
    public NewMessagePolicy? NewMessagePolicy { get; init; }

    /// <summary>What a human taking over does to the active run.</summary>
    public HandoffPolicy? HandoffPolicy { get; init; }

    /// <summary>Where run notifications go, written even when there is none.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public string? NotifyUrl { get; init; }

    /// <summary>When the session was created (ISO 8601, UTC, milliseconds).</summary>
    public string? CreatedAt { get; init; }
}

/// <summary>A message (type <c>message</c>, keyed by its id): a user's, an agent's reply, a tool's, a system instruction.</summary>
public sealed record SessionMessage : SessionEntity
{
    /// <summary>The message id (its key).</summary>
    public string? Id { get; init; }

    /// <summary>Who the message is from.</summary>
    public MessageRole? Role { get; init; }

    /// <summary>The participant who wrote it.</summary>
    public string? Author { get; init; }

    /// <summary>For a reply, the run writing it.</summary>
    public string? RunId { get; init; }

    /// <summary>The content, in order.</summary>
    public IReadOnlyList<MessagePart>? Parts { get; init; }

    /// <summary>Where the message is in its life.</summary>
    public MessageStatus? Status { get; init; }

    /// <summary>When the message was created.</summary>
    public string? CreatedAt { get; init; }

    /// <summary>When its author last edited it, if ever.</summary>
    public string? EditedAt { get; init; }

    /// <summary>The human holding the session when the message was posted: it is theirs to answer, not the agents'.</summary>
    public string? RoutedTo { get; init; }

    /// <summary>Why writing the reply failed.</summary>
    public string? Error { get; init; }

    /// <summary>The text of the message: its text parts, concatenated (reasoning, tools and data left out).</summary>
    [JsonIgnore]
    public string Text => Parts is null ? string.Empty : string.Concat(Parts.OfType<TextPart>().Select(p => p.Text));
}

/// <summary>
/// Text appended to one part of a streaming message (type <c>delta</c>, key <c>{messageId}:{seq}</c>). Rolled up into
/// the message by the materializer, never kept as an entity.
/// </summary>
public sealed record MessageDelta : SessionEntity
{
    /// <summary>The message streamed into.</summary>
    public string? MessageId { get; init; }

    /// <summary>The run writing it, when the delta names it (an agent's deltas do, so the fence holds them to their run).</summary>
    public string? RunId { get; init; }

    /// <summary>The index of the part appended to: an existing part, or the next one, which the delta starts.</summary>
    public int? Part { get; init; }

    /// <summary>The type of the part the delta starts (<c>text</c> when absent).</summary>
    public string? PartType { get; init; }

    /// <summary>The text appended.</summary>
    public string? Text { get; init; }

    /// <summary>When the batch's first token was produced.</summary>
    public string? At { get; init; }
}

/// <summary>An agent run (type <c>run</c>, keyed by its id): one reply to one message.</summary>
public sealed record SessionRun : SessionEntity
{
    /// <summary>The run id (its key).</summary>
    public string? Id { get; init; }

    /// <summary>The agent running it.</summary>
    public string? Agent { get; init; }

    /// <summary>The reply it writes.</summary>
    public string? MessageId { get; init; }

    /// <summary>The message it answers.</summary>
    public string? Trigger { get; init; }

    /// <summary>Where the run is in its life.</summary>
    public RunStatus? Status { get; init; }

    /// <summary>When it started.</summary>
    public string? StartedAt { get; init; }

    /// <summary>When it ended.</summary>
    public string? EndedAt { get; init; }

    /// <summary>The model's finish reason (Microsoft.Extensions.AI's values).</summary>
    public string? FinishReason { get; init; }

    /// <summary>Who cancelled (or paused) it.</summary>
    public string? CancelledBy { get; init; }

    /// <summary>Why it failed.</summary>
    public string? Error { get; init; }

    /// <summary>The run that answered this run's message again after it was cut.</summary>
    public string? SupersededBy { get; init; }
}

/// <summary>A control request (type <c>control</c>, keyed by its id): cancel, steer or pause a run.</summary>
public sealed record SessionControl : SessionEntity
{
    /// <summary>The control id (its key).</summary>
    public string? Id { get; init; }

    /// <summary>What is asked of the run.</summary>
    public ControlAction? Action { get; init; }

    /// <summary>The run it applies to.</summary>
    public string? RunId { get; init; }

    /// <summary>Who asked.</summary>
    public string? By { get; init; }

    /// <summary>A steer's instruction.</summary>
    public string? Text { get; init; }

    /// <summary>Why the run was stopped (a new message, a handoff).</summary>
    public string? Reason { get; init; }

    /// <summary>The state of the control.</summary>
    public ControlStatus? Status { get; init; }

    /// <summary>When it was recorded.</summary>
    public string? CreatedAt { get; init; }
}

/// <summary>A participant's presence (type <c>presence</c>, keyed by the participant id).</summary>
public sealed record SessionPresence : SessionEntity
{
    /// <summary>The participant id.</summary>
    public string? Id { get; init; }

    /// <summary>What kind of participant it is.</summary>
    public ParticipantKind? Kind { get; init; }

    /// <summary>A display name, written even when there is none.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public string? Name { get; init; }

    /// <summary>Whether it is present.</summary>
    public PresenceStatus? Status { get; init; }

    /// <summary>When it was last seen.</summary>
    public string? LastSeen { get; init; }
}

/// <summary>Who holds the session's control lease (type <c>handoff</c>, key <c>lease</c>).</summary>
public sealed record SessionHandoff : SessionEntity
{
    /// <summary>The human holding the session, or null when the agents do; written even when null.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public string? Holder { get; init; }

    /// <summary><see cref="ParticipantKind.Human"/> while a human holds the session, else <see cref="ParticipantKind.Agent"/>.</summary>
    public ParticipantKind? Kind { get; init; }

    /// <summary>Since when.</summary>
    public string? Since { get; init; }
}
