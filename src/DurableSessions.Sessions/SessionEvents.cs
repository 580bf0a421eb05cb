using System.Globalization;
using System.Security.Cryptography;

namespace DurableSessions.Sessions;

/// <summary>
/// Builds the session events the server and agents write, stamped with the time of the injected
/// <see cref="TimeProvider"/> (ISO 8601, UTC, milliseconds) and fresh ids.
/// </summary>
/// <remarks>Stateless apart from its clock and id source; thread-safe.</remarks>
public sealed class SessionEvents
{
    private readonly TimeProvider _time;
    private readonly Func<string, string> _newId;

    /// <summary>A factory on <paramref name="timeProvider"/>, with random ids (<c>{prefix}_{16 hex digits}</c>).</summary>
    public SessionEvents(TimeProvider timeProvider)
        : this(timeProvider, RandomId)
    {
    }

    /// <summary>A factory on <paramref name="timeProvider"/> whose ids come from <paramref name="newId"/> (given the prefix: <c>m</c>, <c>r</c>, <c>c</c>).</summary>
    public SessionEvents(TimeProvider timeProvider, Func<string, string> newId)
    {
        ArgumentNullException.ThrowIfNull(timeProvider);
        ArgumentNullException.ThrowIfNull(newId);
        _time = timeProvider;
        _newId = newId;
    }

    /// <summary>A factory on the system clock.</summary>
    public static SessionEvents System { get; } = new(TimeProvider.System);

    /// <summary>The current time as session events write it.</summary>
    public string Now() => Format(_time.GetUtcNow());

    /// <summary>A new id with <paramref name="prefix"/> (<c>m</c> messages, <c>r</c> runs, <c>c</c> controls).</summary>
    public string NewId(string prefix) => _newId(prefix);

    /// <summary>Formats a time as session events write it (ISO 8601, UTC, milliseconds).</summary>
    public static string Format(DateTimeOffset time) => time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);

    /// <summary>The <c>session</c> entity a session starts with.</summary>
    public SessionEvent SessionCreated(string sessionId, string? title = null, NewMessagePolicy? newMessagePolicy = null, HandoffPolicy? handoffPolicy = null, string? notifyUrl = null)
        => Change(SessionEventTypes.Session, "session", ChangeOperation.Insert, new SessionInfo
        {
            Id = sessionId,
            Title = title,
            NewMessagePolicy = newMessagePolicy ?? NewMessagePolicy.Queue,
            HandoffPolicy = handoffPolicy ?? HandoffPolicy.Cancel,
            NotifyUrl = notifyUrl,
            CreatedAt = Now(),
        });

    /// <summary>A complete message posted by a participant (by default a user's), with the id given or a new one.</summary>
    /// <param name="author">Who posts it.</param>
    /// <param name="parts">Its content.</param>
    /// <param name="role">Its role; <see cref="MessageRole.User"/> when null.</param>
    /// <param name="routedTo">The human holding the session, who answers it instead of the agents.</param>
    /// <param name="id">The id its poster chose (see <see cref="PostMessageRequest.Id"/>); null for a new one.</param>
    public SessionEvent PostedMessage(string author, IReadOnlyList<MessagePart> parts, MessageRole? role = null, string? routedTo = null, string? id = null)
        => Message(ChangeOperation.Insert, id ?? NewId("m"), role ?? MessageRole.User, author, runId: null, parts, MessageStatus.Complete, Now(), routedTo, error: null);

    /// <summary>An agent's reply as it stands: inserted <see cref="MessageStatus.Streaming"/> when its run starts, updated as it grows and when it ends.</summary>
    public SessionEvent Reply(ChangeOperation operation, string messageId, string agent, string runId, IReadOnlyList<MessagePart> parts, MessageStatus status, string createdAt, string? error = null)
        => Message(operation, messageId, MessageRole.Assistant, agent, runId, parts, status, createdAt, routedTo: null, error);

    /// <summary>Text appended to part <paramref name="part"/> of a streaming message (the <paramref name="sequence"/>th delta of it).</summary>
    /// <param name="messageId">The message streamed into.</param>
    /// <param name="sequence">The delta's number within the message (its key is <c>{messageId}:{sequence}</c>).</param>
    /// <param name="part">The part appended to.</param>
    /// <param name="partType">The type of a part the delta starts.</param>
    /// <param name="text">The text.</param>
    /// <param name="at">When the batch's first token was produced.</param>
    public SessionEvent Delta(string messageId, long sequence, int part, string partType, string text, DateTimeOffset? at = null)
        => Delta(string.Create(CultureInfo.InvariantCulture, $"{messageId}:{sequence}"), messageId, runId: null, part, partType, text, at);

    /// <summary>
    /// Text run <paramref name="runId"/> appends to part <paramref name="part"/> of its reply (the
    /// <paramref name="sequence"/>th delta of the run). The delta names its run, so the fence refuses a cut run's late
    /// writes even in a message another run has taken over.
    /// </summary>
    /// <param name="messageId">The reply streamed into.</param>
    /// <param name="runId">The run writing it.</param>
    /// <param name="takenOver">
    /// Whether the run writes into a message an earlier run wrote (taken over from a cut run, or a reply written again
    /// on request): its keys are then
    /// <c>{messageId}:{runId}:{sequence}</c>, unique per run, instead of <c>{messageId}:{sequence}</c>.
    /// </param>
    /// <param name="sequence">The delta's number within the run.</param>
    /// <param name="part">The part appended to.</param>
    /// <param name="partType">The type of a part the delta starts.</param>
    /// <param name="text">The text.</param>
    /// <param name="at">When the batch's first token was produced.</param>
    public SessionEvent RunDelta(string messageId, string runId, bool takenOver, long sequence, int part, string partType, string text, DateTimeOffset? at = null)
    {
        var key = takenOver
            ? string.Create(CultureInfo.InvariantCulture, $"{messageId}:{runId}:{sequence}")
            : string.Create(CultureInfo.InvariantCulture, $"{messageId}:{sequence}");
        return Delta(key, messageId, runId, part, partType, text, at);
    }

    /// <summary>A run starting: <see cref="RunStatus.Started"/> now.</summary>
    public SessionEvent RunStarted(string runId, string agent, string messageId, string trigger)
        => Change(SessionEventTypes.Run, runId, ChangeOperation.Insert, new SessionRun
        {
            Id = runId,
            Agent = agent,
            MessageId = messageId,
            Trigger = trigger,
            Status = RunStatus.Started,
            StartedAt = Now(),
        });

    /// <summary>A run ending with <paramref name="status"/>, now.</summary>
    public SessionEvent RunEnded(SessionRun run, RunStatus status, string? finishReason = null, string? error = null, string? cancelledBy = null)
    {
        ArgumentNullException.ThrowIfNull(run);
        return Change(SessionEventTypes.Run, run.Id ?? string.Empty, ChangeOperation.Update, run with
        {
            Status = status,
            EndedAt = Now(),
            FinishReason = finishReason ?? run.FinishReason,
            Error = error ?? run.Error,
            CancelledBy = cancelledBy ?? run.CancelledBy,
        });
    }

    /// <summary>
    /// A run cut (by a crash or a lost lease) that run <paramref name="supersedingRunId"/> answers again:
    /// <see cref="RunStatus.Interrupted"/> now, naming its successor.
    /// </summary>
    public SessionEvent RunSuperseded(SessionRun run, string supersedingRunId)
    {
        ArgumentNullException.ThrowIfNull(run);
        return Change(SessionEventTypes.Run, run.Id ?? string.Empty, ChangeOperation.Update, run with
        {
            Status = RunStatus.Interrupted,
            EndedAt = Now(),
            SupersededBy = supersedingRunId,
        });
    }

    /// <summary>
    /// A run marked <paramref name="status"/>, keeping everything else: for a run found cut, whose end time is not
    /// known, marked <see cref="RunStatus.Interrupted"/>.
    /// </summary>
    public SessionEvent RunStatusChanged(SessionRun run, RunStatus status)
    {
        ArgumentNullException.ThrowIfNull(run);
        return Change(SessionEventTypes.Run, run.Id ?? string.Empty, ChangeOperation.Update, run with { Status = status });
    }

    /// <summary>A message (a partial reply) marked <paramref name="status"/>, keeping its content.</summary>
    public SessionEvent MessageStatusChanged(SessionMessage message, MessageStatus status)
    {
        ArgumentNullException.ThrowIfNull(message);
        return Change(SessionEventTypes.Message, message.Id ?? string.Empty, ChangeOperation.Update, message with { Status = status });
    }

    /// <summary>
    /// A fenced control stopping a run: <see cref="ControlAction.Cancel"/>, or <see cref="ControlAction.Pause"/> for a
    /// handoff. Its id is <paramref name="id"/>, or a new one.
    /// </summary>
    public SessionEvent StopControl(string runId, string by, string? reason = null, ControlAction? action = null, string? id = null)
        => Control(action ?? ControlAction.Cancel, runId, by, text: null, reason, ControlStatus.Fenced, id);

    /// <summary>A steer: a new instruction for a running run. Its id is <paramref name="id"/>, or a new one.</summary>
    public SessionEvent Steer(string runId, string by, string text, string? id = null)
        => Control(ControlAction.Steer, runId, by, text, reason: null, ControlStatus.Requested, id);

    /// <summary>A user's message with new content, edited by its author now.</summary>
    public SessionEvent MessageEdited(SessionMessage message, IReadOnlyList<MessagePart> parts)
    {
        ArgumentNullException.ThrowIfNull(message);
        return Change(SessionEventTypes.Message, message.Id ?? string.Empty, ChangeOperation.Update, message with { Parts = parts, EditedAt = Now() });
    }

    /// <summary>A message taken out of the conversation (a State Protocol delete): an edit of an earlier message removes what came after it.</summary>
    public SessionEvent MessageRemoved(string messageId)
    {
        ArgumentException.ThrowIfNullOrEmpty(messageId);
        return new(SessionEventTypes.Message, messageId, ChangeOperation.Delete, null, Now());
    }

    /// <summary>
    /// A request that the agent which wrote run <paramref name="runId"/>'s reply answer its message again, in place of that
    /// reply. Its id is <paramref name="id"/>, or a new one.
    /// </summary>
    public SessionEvent RegenerateControl(string runId, string by, string? id = null)
        => Control(ControlAction.Regenerate, runId, by, text: null, reason: null, ControlStatus.Requested, id);

    /// <summary>A participant joined (inserted) or left (updated).</summary>
    public SessionEvent Presence(string participantId, ParticipantKind kind, string? name, PresenceStatus status, DateTimeOffset lastSeen)
        => Change(SessionEventTypes.Presence, participantId, status == PresenceStatus.Joined ? ChangeOperation.Insert : ChangeOperation.Update, new SessionPresence
        {
            Id = participantId,
            Kind = kind,
            Name = name,
            Status = status,
            LastSeen = Format(lastSeen),
        });

    /// <summary>The control lease: held by the human <paramref name="holder"/>, or (null) back with the agents.</summary>
    public SessionEvent Handoff(string? holder)
        => Change(SessionEventTypes.Handoff, "lease", ChangeOperation.Update, new SessionHandoff
        {
            Holder = holder,
            Kind = holder is null ? ParticipantKind.Agent : ParticipantKind.Human,
            Since = Now(),
        });

    private SessionEvent Delta(string key, string messageId, string? runId, int part, string partType, string text, DateTimeOffset? at)
        => Change(SessionEventTypes.Delta, key, ChangeOperation.Insert, new MessageDelta
        {
            MessageId = messageId,
            RunId = runId,
            Part = part,
            PartType = partType,
            Text = text,
            At = at is { } time ? Format(time) : null,
        });

    private SessionEvent Message(ChangeOperation operation, string id, MessageRole role, string author, string? runId, IReadOnlyList<MessagePart> parts, MessageStatus status, string createdAt, string? routedTo, string? error)
        => Change(SessionEventTypes.Message, id, operation, new SessionMessage
        {
            Id = id,
            Role = role,
            Author = author,
            RunId = runId,
            Parts = parts,
            Status = status,
            CreatedAt = createdAt,
            RoutedTo = routedTo,
            Error = error,
        });

    private SessionEvent Control(ControlAction action, string runId, string by, string? text, string? reason, ControlStatus status, string? id)
    {
        id ??= NewId("c");
        return Change(SessionEventTypes.Control, id, ChangeOperation.Insert, new SessionControl
        {
            Id = id,
            Action = action,
            RunId = runId,
            By = by,
            Text = text,
            Reason = reason,
            Status = status,
            CreatedAt = Now(),
        });
    }

    private SessionEvent Change(string type, string key, ChangeOperation operation, SessionEntity value) => new(type, key, operation, value, Now());

    private static string RandomId(string prefix) => prefix + "_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
}
