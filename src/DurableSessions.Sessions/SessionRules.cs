using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace DurableSessions.Sessions;

/// <summary>Why a session operation was refused: a stable code (see <see cref="SessionRejection"/>'s constants) and a message.</summary>
/// <param name="Code">The stable code, e.g. <see cref="RunActive"/>.</param>
/// <param name="Message">What was wrong, for people.</param>
public sealed record SessionRejection(string Code, string Message)
{
    /// <summary>A run is active and the session's policy is <see cref="NewMessagePolicy.Reject"/>.</summary>
    public const string RunActive = "RUN_ACTIVE";

    /// <summary>The run was cancelled (or paused, or interrupted): nothing more is accepted for it.</summary>
    public const string RunCancelled = "RUN_CANCELLED";

    /// <summary>No run with that id.</summary>
    public const string RunNotFound = "RUN_NOT_FOUND";

    /// <summary>The run has already ended.</summary>
    public const string RunNotActive = "RUN_NOT_ACTIVE";

    /// <summary>Another human holds the session.</summary>
    public const string LeaseHeld = "LEASE_HELD";

    /// <summary>Only the holder can hand the session back.</summary>
    public const string NotHolder = "NOT_HOLDER";

    /// <summary>The message does not meet the event rules.</summary>
    public const string InvalidMessage = "INVALID_MESSAGE";

    /// <summary>The message a run would answer is not in the session.</summary>
    public const string MessageNotFound = "MESSAGE_NOT_FOUND";

    /// <summary>A message posted with an id the session already holds for another participant's message.</summary>
    public const string MessageIdTaken = "MESSAGE_ID_TAKEN";

    /// <summary>A cancel, steer or regenerate sent with an id the session already holds for another control.</summary>
    public const string ControlIdTaken = "CONTROL_ID_TAKEN";

    /// <summary>A regenerate names a message that is not an agent's reply.</summary>
    public const string NotAReply = "NOT_A_REPLY";

    /// <summary>A regenerate names a reply to a message that is not the session's latest user message.</summary>
    public const string NotLatestReply = "NOT_LATEST_REPLY";

    /// <summary>An edit names a message that is not the editor's own user message.</summary>
    public const string NotEditable = "NOT_EDITABLE";

    /// <summary>An edit names a message with another participant's message after it, which the edit would take out.</summary>
    public const string NotLatestMessage = "NOT_LATEST_MESSAGE";

    /// <summary>
    /// A run start for a message its agent already answers (a run of its still started) or has answered (its latest run
    /// finished, with no request to write the reply again): one agent writes one answer per message.
    /// </summary>
    public const string AlreadyAnswered = "ALREADY_ANSWERED";
}

/// <summary>What a session operation decided: the events to append (in order, in one append), or a rejection.</summary>
public sealed class SessionDecision
{
    private SessionDecision(string? id, IReadOnlyList<SessionEvent> events, SessionRejection? rejection)
    {
        Id = id;
        Events = events;
        Rejection = rejection;
    }

    /// <summary>The id of what the operation made: the message, the control, the run, or the lease holder.</summary>
    public string? Id { get; }

    /// <summary>The events to append; empty when nothing needs writing (or the operation was rejected).</summary>
    public IReadOnlyList<SessionEvent> Events { get; }

    /// <summary>Why the operation was refused, or null.</summary>
    public SessionRejection? Rejection { get; }

    /// <summary>Whether the operation was refused.</summary>
    [MemberNotNullWhen(true, nameof(Rejection))]
    [MemberNotNullWhen(false, nameof(Id))]
    public bool IsRejected => Rejection is not null;

    /// <summary>An accepted operation.</summary>
    public static SessionDecision Accept(string id, IReadOnlyList<SessionEvent> events) => new(id, events, null);

    /// <summary>A refused operation.</summary>
    public static SessionDecision Reject(string code, string message) => new(null, [], new SessionRejection(code, message));
}

/// <summary>A participant posting a message.</summary>
/// <param name="Author">Who posts it.</param>
/// <param name="Parts">Its content.</param>
/// <param name="Role">Its role; <see cref="MessageRole.Assistant"/> for a human answering in an agent's place.</param>
public sealed record PostMessageRequest(string Author, IReadOnlyList<MessagePart> Parts, MessageRole Role)
{
    /// <summary>A user's text message.</summary>
    public PostMessageRequest(string author, string text)
        : this(author, [new TextPart(text)], MessageRole.User)
    {
    }

    /// <summary>
    /// The message's id, chosen by the poster so that posting it again (a retry after a lost answer) is not a second
    /// message; null for an id the session picks.
    /// </summary>
    public string? Id { get; init; }

    /// <summary>
    /// Whether the poster may stop runs (the control capability). Under the <see cref="NewMessagePolicy.Interrupt"/>
    /// policy a user message stops the runs still going, so one posted while a run is active by a poster who may not
    /// is refused, as a regenerate or edit that would stop one is. True by default (a server without access control).
    /// </summary>
    public bool MayStop { get; init; } = true;
}

/// <summary>
/// The session operations as pure functions of the session's state: each returns the events to append, or why the
/// operation is refused. The caller appends the events atomically, on the state it decided on.
/// </summary>
/// <remarks>Stateless and thread-safe; the state passed in is only read.</remarks>
public static class SessionRules
{
    /// <summary>
    /// Posts a message. While a run is active, a user's message meets the session's <see cref="NewMessagePolicy"/>:
    /// queued, interrupting the run (cancelled in the same append) or rejected (<see cref="SessionRejection.RunActive"/>).
    /// While a human holds the session, a user's message is routed to them.
    /// </summary>
    public static SessionDecision PostMessage(SessionState state, PostMessageRequest request, SessionEvents events)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(events);
        // A message the poster names, already in the session, is answered as it was when first posted: it is not stored,
        // answered or met by the new-message policy a second time. The same id with other content than the message
        // holds now is another message.
        if (request.Id is { } given && state.GetMessage(given) is { } existing)
        {
            return existing.Author == request.Author && existing.Role == request.Role && existing.RunId is null
                && SameParts(existing.Parts ?? [], request.Parts)
                ? SessionDecision.Accept(given, [])
                : SessionDecision.Reject(SessionRejection.MessageIdTaken, $"Message {given} in this session is another message.");
        }

        if (request.Id is { } removed && state.IsMessageRemoved(removed))
        {
            // A retry of a post whose message an edit of an earlier one took out since: asking it again would answer it again.
            return SessionDecision.Reject(SessionRejection.MessageIdTaken, $"Message {removed} was taken out of this session by an edit of an earlier message; send it under a new id to ask it again.");
        }

        var appended = new List<SessionEvent>();
        var isUser = request.Role == MessageRole.User;
        if (isUser && state.ActiveRun is { } active)
        {
            var policy = state.Session?.NewMessagePolicy ?? NewMessagePolicy.Queue;
            if (policy == NewMessagePolicy.Reject)
            {
                return SessionDecision.Reject(SessionRejection.RunActive, $"Run {active.Id} is still running; this session rejects new messages until it ends.");
            }

            if (policy == NewMessagePolicy.Interrupt)
            {
                if (!request.MayStop)
                {
                    return SessionDecision.Reject(SessionRejection.RunActive, $"Run {active.Id} is still running, and this session's messages interrupt it, which needs the control capability; send it once the run ends.");
                }

                foreach (var run in state.StartedRuns)
                {
                    appended.AddRange(Stop(state, run, request.Author, "interrupted by a new message", pause: false, events, out _));
                }
            }
        }

        // While a human holds the session, new user messages are theirs to answer, not the agents'.
        var routedTo = isUser && state.HumanHolder is { } human && human != request.Author ? human : null;
        var message = events.PostedMessage(request.Author, request.Parts, request.Role, routedTo, request.Id);

        // The parts come from the poster: held to the rules every reader relies on.
        if (SessionEventRules.Validate(message.ToJson(), strict: true) is { } problem)
        {
            return SessionDecision.Reject(SessionRejection.InvalidMessage, "Invalid message: " + problem);
        }

        appended.Add(message);
        return SessionDecision.Accept(message.Key, appended);
    }

    /// <summary>
    /// Cancels an active run: a fenced control, the partial reply and the run marked cancelled. Once appended, the
    /// control's offset is the fence (see <see cref="CheckFence"/>). The decision's id is the control's:
    /// <paramref name="controlId"/> when the caller names it, which makes a repeated cancel (a retry) accepted with nothing
    /// appended, even though the run has ended since.
    /// </summary>
    public static SessionDecision Cancel(SessionState state, string runId, string by, SessionEvents events, string? controlId = null)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(events);
        if (Repeated(state, controlId, ControlAction.Cancel, runId, by) is { } repeated)
        {
            return repeated;
        }

        if (state.GetRun(runId) is not { } run)
        {
            return SessionDecision.Reject(SessionRejection.RunNotFound, "No run with this id in the session.");
        }

        if (run.Status != RunStatus.Started)
        {
            return SessionDecision.Reject(SessionRejection.RunNotActive, $"The run is already {run.Status}.");
        }

        var stop = Stop(state, run, by, reason: null, pause: false, events, controlId, out var id);
        return SessionDecision.Accept(id, stop);
    }

    /// <summary>
    /// Steers a running run with a new instruction. The decision's id is the control's: <paramref name="controlId"/>
    /// when the caller names it, which makes a repeated steer (a retry) accepted with nothing appended.
    /// </summary>
    public static SessionDecision Steer(SessionState state, string runId, string by, string text, SessionEvents events, string? controlId = null)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(events);
        if (Repeated(state, controlId, ControlAction.Steer, runId, by) is { } repeated)
        {
            return repeated;
        }

        var steered = state.GetRun(runId);
        if (steered is null)
        {
            return SessionDecision.Reject(SessionRejection.RunNotFound, "No run with this id in the session.");
        }

        if (steered.Status != RunStatus.Started)
        {
            return SessionDecision.Reject(SessionRejection.RunNotActive, "Only a running run can be steered.");
        }

        var steer = events.Steer(runId, by, text, controlId);
        return SessionDecision.Accept(steer.Key, [steer]);
    }

    /// <summary>
    /// Asks for the reply <paramref name="replyId"/> to be written again: the agent that wrote it answers its message anew,
    /// in the same message, which starts again from empty. Only that agent's latest reply to the session's latest user
    /// message can be, since an answer is written from the conversation before it; a reply still being written is
    /// cancelled (and fenced) in the same append, when <paramref name="mayStop"/>. The decision's id is the regenerate
    /// control's: <paramref name="controlId"/> when the caller names it, which makes a repeated request (a retry)
    /// accepted with nothing appended. Without one, a request for a reply already waiting to be written again is
    /// accepted with that request's id, with nothing appended.
    /// </summary>
    /// <param name="state">The session's state.</param>
    /// <param name="replyId">
    /// The reply, or the user message it answers (which stands for its latest reply); null for the session's latest user
    /// message.
    /// </param>
    /// <param name="by">Who asks.</param>
    /// <param name="events">The event factory.</param>
    /// <param name="controlId">The control's id, chosen by the caller; null for a new one.</param>
    /// <param name="mayStop">
    /// Whether the caller may stop a run (cancelling needs the <c>control</c> capability): without it, a reply still
    /// being written is refused (<see cref="SessionRejection.RunActive"/>).
    /// </param>
    public static SessionDecision Regenerate(SessionState state, string? replyId, string by, SessionEvents events, string? controlId = null, bool mayStop = true)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(events);
        if (controlId is not null && state.Controls.FirstOrDefault(c => c.Id == controlId) is { } existing)
        {
            // The run a retry names may have been succeeded since: the control is the same request if it came from the
            // same participant for a run that wrote (or writes) the same reply.
            var asked = state.GetRun(existing.RunId ?? string.Empty);
            return existing.Action == ControlAction.Regenerate && existing.By == by
                && (replyId is null || asked?.MessageId == replyId || asked?.Trigger == replyId)
                ? SessionDecision.Accept(controlId, [])
                : SessionDecision.Reject(SessionRejection.ControlIdTaken, $"Control {controlId} in this session is another control.");
        }

        var latest = state.Messages.LastOrDefault(m => m.Role == MessageRole.User);
        var reply = replyId is null ? latest : state.GetMessage(replyId);
        if (reply is null)
        {
            return replyId is null
                ? SessionDecision.Reject(SessionRejection.NotAReply, "The session has no message to answer again.")
                : SessionDecision.Reject(SessionRejection.MessageNotFound, $"No message {replyId} in the session.");
        }

        if (reply.Role == MessageRole.User)
        {
            // A user message stands for its latest reply.
            var asked = reply.Id;
            var answering = state.Runs.LastOrDefault(r => r.Trigger == asked && r.MessageId is not null);
            reply = answering is null ? null : state.GetMessage(answering.MessageId!);
            if (reply is null)
            {
                return SessionDecision.Reject(SessionRejection.NotAReply, $"Message {asked} has no reply to write again.");
            }
        }

        if (reply.Role != MessageRole.Assistant || reply.RunId is not { } runId || state.GetRun(runId) is not { Trigger: { } trigger } run)
        {
            return SessionDecision.Reject(SessionRejection.NotAReply, $"Message {reply.Id} is not an agent's reply.");
        }

        if (state.HumanHolder is { } human)
        {
            return SessionDecision.Reject(SessionRejection.LeaseHeld, $"{human} holds this session; agents answer again after it is handed back.");
        }

        if (latest?.Id != trigger)
        {
            return SessionDecision.Reject(SessionRejection.NotLatestReply, $"Message {reply.Id} answers an earlier message; only the reply to the latest one can be written again.");
        }

        // The agent answers its message again from its latest run: an earlier reply (one paused by a handoff, say, and
        // answered again since in a message of its own) is not what it would write again.
        if (state.Runs.LastOrDefault(r => r.Agent == run.Agent && r.Trigger == trigger && r.Id is not null)?.Id != runId)
        {
            return SessionDecision.Reject(SessionRejection.NotLatestReply, $"Message {reply.Id} is not {run.Agent}'s latest reply to message {trigger}.");
        }

        // Asked already, and no run has taken it up yet: the same request, unless the caller names its own (which is then
        // stored, so that a retry of it after the new run starts is known as the request it repeats).
        if (controlId is null && state.Controls.LastOrDefault(c => c.Action == ControlAction.Regenerate && c.RunId == runId) is { Id: { } pending })
        {
            return SessionDecision.Accept(pending, []);
        }

        var appended = new List<SessionEvent>();
        if (run.Status == RunStatus.Started)
        {
            if (!mayStop)
            {
                return SessionDecision.Reject(SessionRejection.RunActive, $"Run {runId} is still writing this reply, and stopping it needs the control capability; ask again once it ends.");
            }

            appended.AddRange(Stop(state, run, by, "the reply is being written again", pause: false, events, out _));
        }

        var control = events.RegenerateControl(runId, by, controlId);
        appended.Add(control);
        return SessionDecision.Accept(control.Key, appended);
    }

    /// <summary>
    /// Edits a user message: its content is replaced (and <c>editedAt</c> set), and every agent's latest reply to it is
    /// asked to be written again (see <see cref="Regenerate"/>), in the same append, so each agent answers the edited
    /// message anew in place of what it said. An earlier message takes what came after it out of the conversation: a
    /// delete of each of the author's later questions and of the agents' replies to them (replies still being written to
    /// them are stopped first), since those were asked and written from the text it replaces; the conversation then
    /// continues from the edited message, as a chat's edit of an earlier message does. Replies to the edited message and
    /// to earlier ones stay, except an agent's earlier reply to the edited message that it has answered again since in a
    /// message of its own (such as one paused by a handoff and answered anew after the hand-back): that one answers the
    /// replaced text too, and goes. Only the author's own message can be edited, not one routed to a human, and not one with
    /// another participant's message after it. The same edit of an edited message again (a retry) is accepted with
    /// nothing appended, unless the author has asked something since (then it is an edit like any other).
    /// </summary>
    /// <param name="state">The session's state.</param>
    /// <param name="messageId">The message.</param>
    /// <param name="author">Who edits it: its author.</param>
    /// <param name="parts">Its new content.</param>
    /// <param name="events">The event factory.</param>
    /// <param name="mayStop">Whether the caller may stop a reply still being written (see <see cref="Regenerate"/>).</param>
    public static SessionDecision EditMessage(SessionState state, string messageId, string author, IReadOnlyList<MessagePart> parts, SessionEvents events, bool mayStop = true)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(parts);
        ArgumentNullException.ThrowIfNull(events);
        if (state.GetMessage(messageId) is not { } message)
        {
            return SessionDecision.Reject(SessionRejection.MessageNotFound, $"No message {messageId} in the session.");
        }

        if (message.Role != MessageRole.User || message.Author != author)
        {
            return SessionDecision.Reject(SessionRejection.NotEditable, $"Message {messageId} is not {author}'s own message.");
        }

        // The same edit again (a retry after a lost answer): its replies were asked for already. Once the author has asked
        // something after it, the same text is a new edit (a chat's edit that takes those later turns out), not a retry.
        var later = state.Messages.SkipWhile(m => m.Id != messageId).Skip(1).ToList();
        if (message.EditedAt is not null && SameParts(message.Parts ?? [], parts)
            && !later.Any(m => m.Role == MessageRole.User && m.Author == author))
        {
            return SessionDecision.Accept(messageId, []);
        }

        if (message.RoutedTo is { } routedTo)
        {
            // Agents leave a message routed to a human alone: edited, it would be answered by nobody.
            return SessionDecision.Reject(SessionRejection.NotEditable, $"Message {messageId} was routed to {routedTo}, who answers it; send a new message instead.");
        }

        // The author's later questions leave the conversation with the agents' replies to them: they were asked and answered
        // from the text being replaced. Replies to the edited message (written again) and to earlier ones (a reply can be
        // stored after a question queued behind its own) stay.
        var questions = later.Where(m => m.Role == MessageRole.User && m.Id is not null).Select(m => m.Id!).ToHashSet(StringComparer.Ordinal);
        var after = new List<SessionMessage>();
        foreach (var m in later)
        {
            var answers = m.Role == MessageRole.User ? null : m.RunId is { } replyRun ? state.GetRun(replyRun)?.Trigger : null;
            if (answers is not null && !questions.Contains(answers) && state.GetMessage(answers) is not null
                && !(answers == messageId && IsAnsweredAgainSince(state, m)))
            {
                // A reply to the edited message or to an earlier one stays (a reply to a question taken out before goes).
                continue;
            }

            if (answers is null && m.Author != author)
            {
                // Another participant's message (their question, a human's answer, one no known run wrote) is theirs to keep.
                return SessionDecision.Reject(SessionRejection.NotLatestMessage, $"Message {messageId} has {m.Author}'s message {m.Id} after it; only a message with nobody else's after it can be edited.");
            }

            after.Add(m);
        }

        if (state.HumanHolder is { } human)
        {
            return SessionDecision.Reject(SessionRejection.LeaseHeld, $"{human} holds this session; edit the message after it is handed back.");
        }

        var edited = events.MessageEdited(message, parts);
        if (SessionEventRules.Validate(edited.ToJson(), strict: true) is { } problem)
        {
            return SessionDecision.Reject(SessionRejection.InvalidMessage, "Invalid message: " + problem);
        }

        var removed = after.Where(m => m.Id is not null).Select(m => m.Id!).ToHashSet(StringComparer.Ordinal);
        var appended = new List<SessionEvent>();
        foreach (var run in state.Runs.Where(r => r.Status == RunStatus.Started && AnswersWhatGoes(state, r, questions, removed)))
        {
            // A reply still being written to a question that is taken out is stopped, and fenced, before its message goes:
            // so is one whose question an earlier edit took out (its agent had not seen it go), which would otherwise
            // write the deleted reply back and, still started, hold the session's active run.
            if (!mayStop)
            {
                return SessionDecision.Reject(SessionRejection.RunActive, $"Run {run.Id} is still answering a later message (or one an earlier edit took out), and stopping it needs the control capability; edit once the reply ends.");
            }

            appended.AddRange(Stop(state, run, author, "an earlier message was edited", pause: false, events, out _));
        }

        appended.AddRange(after.Where(m => m.Id is not null).Select(m => events.MessageRemoved(m.Id!)));
        appended.Add(edited);

        // Every agent that answered it answers the new text again, each in its own latest reply.
        foreach (var agent in state.Runs.Where(r => r.Trigger == messageId && r.Agent is not null).Select(r => r.Agent!).Distinct(StringComparer.Ordinal))
        {
            var run = state.Runs.Last(r => r.Trigger == messageId && r.Agent == agent);
            if (run.Id is not { } runId || run.MessageId is null || IsAskedToWriteAgain(state, runId))
            {
                // No reply to write again, or already asked for.
                continue;
            }

            if (run.Status == RunStatus.Started)
            {
                if (!mayStop)
                {
                    return SessionDecision.Reject(SessionRejection.RunActive, $"Run {runId} is still answering this message, and stopping it needs the control capability; edit it once the reply ends.");
                }

                appended.AddRange(Stop(state, run, author, "the message was edited", pause: false, events, out _));
            }

            appended.Add(events.RegenerateControl(runId, author));
        }

        return SessionDecision.Accept(messageId, appended);
    }

    /// <summary>
    /// Whether the agent that wrote <paramref name="reply"/> has answered its question again since, in a message of its
    /// own (a reply paused by a handoff is followed by a new one after the hand-back): the reply is then an earlier answer,
    /// not the one an edit of the question asks to be written again.
    /// </summary>
    private static bool IsAnsweredAgainSince(SessionState state, SessionMessage reply)
    {
        if (reply.RunId is not { } runId || state.GetRun(runId) is not { Trigger: { } trigger, Agent: { } agent } run)
        {
            return false;
        }

        // The newer run must have a reply of its own, which the edit asks to be written again (recreated if it is gone).
        var latest = state.Runs.Last(r => r.Trigger == trigger && r.Agent == agent);
        return latest.Id != run.Id && latest.MessageId is { } answer && answer != reply.Id;
    }

    /// <summary>
    /// Whether <paramref name="run"/> answers something an edit takes out: it answers one of the <paramref name="questions"/>
    /// the edit takes out or a question an earlier edit took out, or it writes a reply among the <paramref name="removed"/>
    /// messages.
    /// </summary>
    private static bool AnswersWhatGoes(SessionState state, SessionRun run, HashSet<string> questions, HashSet<string> removed)
        => (run.Trigger is { } trigger && (questions.Contains(trigger) || state.IsMessageRemoved(trigger)))
           || (run.MessageId is { } reply && removed.Contains(reply));

    /// <summary>
    /// Whether a session read as a whole, not change by change (a fork's copy of its source), holds something its agents
    /// must answer: a run still started (a fork's copy of a run going on in its source is cut there), or a user message not
    /// routed to a human that an agent of the session has not answered, judged as that agent does (a run paused,
    /// interrupted or asked to write its reply again does not answer; a session no agent has answered in waits for any
    /// question). Nothing while a human holds the session: its hand-back asks.
    /// </summary>
    public static bool AwaitsAgents(SessionState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (state.HumanHolder is not null)
        {
            return false;
        }

        if (state.ActiveRun is not null)
        {
            return true;
        }

        var writtenAgain = state.Controls.Where(c => c.Action == ControlAction.Regenerate && c.RunId is not null).Select(c => c.RunId!).ToHashSet(StringComparer.Ordinal);
        var answeredBy = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        foreach (var run in state.Runs)
        {
            if (run.Agent is not { } agent || run.Trigger is not { } trigger || run.Id is not { } id)
            {
                continue;
            }

            if (!answeredBy.TryGetValue(agent, out var answered))
            {
                answeredBy[agent] = answered = new HashSet<string>(StringComparer.Ordinal);
            }

            if (run.Status != RunStatus.Paused && run.Status != RunStatus.Interrupted && !writtenAgain.Contains(id))
            {
                answered.Add(trigger);
            }
        }

        var questions = state.Messages.Where(m => m.Role == MessageRole.User && m.RoutedTo is null && m.Id is not null).Select(m => m.Id!).ToList();
        return answeredBy.Count == 0
            ? questions.Count > 0
            : answeredBy.Values.Any(answered => questions.Exists(q => !answered.Contains(q)));
    }

    /// <summary>Whether a regenerate control asks for the reply run <paramref name="runId"/> wrote to be written again.</summary>
    public static bool IsAskedToWriteAgain(SessionState state, string? runId)
    {
        ArgumentNullException.ThrowIfNull(state);
        return runId is not null && state.Controls.Any(c => c.Action == ControlAction.Regenerate && c.RunId == runId);
    }

    private static bool SameParts(IReadOnlyList<MessagePart> stored, IReadOnlyList<MessagePart> given)
        => stored.Count == given.Count && stored.Zip(given).All(pair => JsonElement.DeepEquals(
            JsonSerializer.SerializeToElement(pair.First, SessionJsonContext.Default.MessagePart),
            JsonSerializer.SerializeToElement(pair.Second, SessionJsonContext.Default.MessagePart)));

    /// <summary>
    /// A control the caller names that the session already holds: the same request sent again (accepted, nothing to
    /// append, whatever the run's state is now), or another control's id (refused). Null when it is new.
    /// </summary>
    private static SessionDecision? Repeated(SessionState state, string? controlId, ControlAction action, string runId, string by)
    {
        if (controlId is null || state.Controls.FirstOrDefault(c => c.Id == controlId) is not { } existing)
        {
            return null;
        }

        return existing.Action == action && existing.RunId == runId && existing.By == by
            ? SessionDecision.Accept(controlId, [])
            : SessionDecision.Reject(SessionRejection.ControlIdTaken, $"Control {controlId} in this session is another control.");
    }

    /// <summary>
    /// A human takes the session's control lease. Every run still going is stopped per the session's
    /// <see cref="HandoffPolicy"/> (cancelled, or paused to be answered again after hand-back), fenced either way. Taking
    /// what one already holds writes nothing; a second human is refused (<see cref="SessionRejection.LeaseHeld"/>).
    /// </summary>
    public static SessionDecision TakeControl(SessionState state, string human, SessionEvents events)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(events);
        var holder = state.HumanHolder;
        if (holder == human)
        {
            return SessionDecision.Accept(human, []);
        }

        if (holder is not null)
        {
            return SessionDecision.Reject(SessionRejection.LeaseHeld, $"{holder} already holds this session.");
        }

        var appended = new List<SessionEvent> { events.Handoff(human) };
        var pause = state.Session?.HandoffPolicy == HandoffPolicy.Pause;
        foreach (var run in state.StartedRuns)
        {
            appended.AddRange(Stop(state, run, human, "a human took over", pause, events, out _));
        }

        return SessionDecision.Accept(human, appended);
    }

    /// <summary>Hands control back to the agents; only the holder can (<see cref="SessionRejection.NotHolder"/>).</summary>
    public static SessionDecision ReturnControl(SessionState state, string human, SessionEvents events)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(events);
        return state.HumanHolder != human
            ? SessionDecision.Reject(SessionRejection.NotHolder, "Only the participant holding the session can hand it back.")
            : SessionDecision.Accept(human, [events.Handoff(null)]);
    }

    /// <summary>
    /// An agent starts a run answering <paramref name="triggerMessageId"/>: the run <see cref="RunStatus.Started"/> and
    /// its reply, empty and <see cref="MessageStatus.Streaming"/>. Refused while a human holds the session. The
    /// decision's id is the run's; the reply's id is the run's <see cref="SessionRun.MessageId"/>.
    /// </summary>
    public static SessionDecision StartRun(SessionState state, string agent, string triggerMessageId, SessionEvents events)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(events);
        if (state.GetMessage(triggerMessageId) is null)
        {
            return SessionDecision.Reject(SessionRejection.MessageNotFound, $"No message {triggerMessageId} in the session.");
        }

        if (state.HumanHolder is { } human)
        {
            return SessionDecision.Reject(SessionRejection.LeaseHeld, $"{human} holds this session; agents leave it alone.");
        }

        if (Answering(state, agent, triggerMessageId, static _ => null) is { } answering)
        {
            return SessionDecision.Reject(SessionRejection.AlreadyAnswered, AlreadyAnsweredText(agent, triggerMessageId, answering));
        }

        var run = events.RunStarted(events.NewId("r"), agent, events.NewId("m"), triggerMessageId);
        var started = (SessionRun)run.Value!;
        var reply = events.Reply(ChangeOperation.Insert, started.MessageId!, agent, run.Key, [new TextPart()], MessageStatus.Streaming, started.StartedAt!);
        return SessionDecision.Accept(run.Key, [run, reply]);
    }

    /// <summary>
    /// An agent ends its run: <see cref="RunStatus.Finished"/> with the reply complete, or <see cref="RunStatus.Failed"/>
    /// with the reply failed. Refused for a run that was cancelled, paused or interrupted
    /// (<see cref="SessionRejection.RunCancelled"/>, the fence) or has already ended.
    /// </summary>
    /// <param name="state">The session's state.</param>
    /// <param name="runId">The run.</param>
    /// <param name="status"><see cref="RunStatus.Finished"/> or <see cref="RunStatus.Failed"/>.</param>
    /// <param name="parts">The reply's final content; null keeps what the session holds.</param>
    /// <param name="events">The event factory.</param>
    /// <param name="finishReason">The model's finish reason.</param>
    /// <param name="error">Why the run failed.</param>
    public static SessionDecision EndRun(SessionState state, string runId, RunStatus status, IReadOnlyList<MessagePart>? parts, SessionEvents events, string? finishReason = null, string? error = null)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(events);
        if (status != RunStatus.Finished && status != RunStatus.Failed)
        {
            throw new ArgumentOutOfRangeException(nameof(status), status, "A run ends finished or failed; cancels and pauses go through Cancel and TakeControl.");
        }

        if (state.GetRun(runId) is not { } run)
        {
            return SessionDecision.Reject(SessionRejection.RunNotFound, "No run with this id in the session.");
        }

        if (IsFenced(run.Status?.Value))
        {
            return SessionDecision.Reject(SessionRejection.RunCancelled, $"Run {runId} was cancelled; nothing more is accepted for it.");
        }

        if (run.Status != RunStatus.Started)
        {
            return SessionDecision.Reject(SessionRejection.RunNotActive, $"The run is already {run.Status}.");
        }

        var appended = new List<SessionEvent>();
        if (run.MessageId is { } messageId && state.GetMessage(messageId) is { } reply)
        {
            var ended = reply with { Parts = parts ?? reply.Parts, Error = error };
            appended.Add(events.MessageStatusChanged(ended, status == RunStatus.Finished ? MessageStatus.Complete : MessageStatus.Failed));
        }

        appended.Add(events.RunEnded(run, status, finishReason, error));
        return SessionDecision.Accept(runId, appended);
    }

    /// <summary>
    /// The fence: refuses an append that adds content to a run that was cancelled, paused or interrupted (a
    /// <c>delta</c> for its message, a <c>message</c> or <c>run</c> change for it). Null when the append may proceed.
    /// </summary>
    public static SessionEventRejection? CheckFence(SessionState state, IEnumerable<JsonNode?> changes)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(changes);
        var batch = changes as IReadOnlyList<JsonNode?> ?? changes.ToList();
        foreach (var change in batch)
        {
            var value = change?["value"] as JsonObject;
            var refused = SessionJson.Text(change, "type") switch
            {
                SessionEventTypes.Run => CheckRunFence(state, SessionJson.Text(change, "key")) ?? CheckRunStart(state, change, value, batch),
                SessionEventTypes.Message => CheckMessageFence(state, change, value, batch),
                SessionEventTypes.Delta => CheckDeltaFence(state, SessionJson.Text(value, "messageId") ?? string.Empty, SessionJson.Text(value, "runId")),
                _ => null,
            };
            if (refused is not null)
            {
                return refused;
            }
        }

        return null;
    }

    /// <summary>The fence for a batch of plain delta inserts (<see cref="SessionDeltas"/>): the decision of <see cref="CheckFence(SessionState, IEnumerable{JsonNode?})"/> for them.</summary>
    internal static SessionEventRejection? CheckDeltasFence(SessionState state, IReadOnlyList<DeltaChange> deltas)
    {
        for (var i = 0; i < deltas.Count; i++)
        {
            if (CheckDeltaFence(state, deltas[i].MessageId, deltas[i].RunId) is { } refused)
            {
                return refused;
            }
        }

        return null;
    }

    /// <summary>
    /// A message change belongs to the run it names, else to the run the stored message names: a change that leaves
    /// <c>runId</c> out (an update replaces the whole value) must not rewrite a cancelled reply. A change that moves a
    /// fenced reply to another run is a new run writing it again (a regenerate): that run starts in the same append or
    /// has started already.
    /// </summary>
    private static SessionEventRejection? CheckMessageFence(SessionState state, JsonNode? change, JsonObject? value, IReadOnlyList<JsonNode?> batch)
    {
        var named = SessionJson.Text(value, "runId");
        if (SessionJson.Text(change?["headers"], "operation") == "delete" || SessionJson.Text(change, "key") is not { } key
            || !state.TryPeekText(SessionEventTypes.Message, key, "runId", out var owner) || owner is null || owner == named)
        {
            return CheckRunFence(state, named);
        }

        // Moved to another run: one that starts in this append, or a run the session holds as started (an agent that
        // writes the run's start and the reply's reset in two appends). A run it does not hold is no run.
        if (named is null || !(StartsIn(batch, named) || (state.TryPeekText(SessionEventTypes.Run, named, "status", out var status) && status == "started")))
        {
            return CheckRunFence(state, owner) ?? CheckRunFence(state, named);
        }

        return CheckRunFence(state, named);
    }

    /// <summary>
    /// A new run's start: its agent answers a message with one run at a time, and once. A worker that read the session
    /// before another took its turn over (paused past its lease) would otherwise start a second answer beside the one
    /// the takeover writes. A run that takes over a cut one ends it, as interrupted, earlier in the same append; a reply
    /// asked to be written again (a regenerate, an edit) may be.
    /// </summary>
    private static SessionEventRejection? CheckRunStart(SessionState state, JsonNode? change, JsonObject? value, IReadOnlyList<JsonNode?> batch)
    {
        if (SessionJson.Text(value, "status") != "started" || SessionJson.Text(change?["headers"], "operation") is not ("insert" or "update")
            || SessionJson.Text(change, "key") is not { } key || SessionJson.Text(value, "agent") is not { } agent
            || SessionJson.Text(value, "trigger") is not { } trigger || state.TryPeekText(SessionEventTypes.Run, key, "status", out _))
        {
            return null;
        }

        // What the changes before this one in the append make of a run: a takeover's supersede, or a second start.
        string? Earlier(string runId)
        {
            string? status = null;
            foreach (var earlier in batch)
            {
                if (ReferenceEquals(earlier, change))
                {
                    break;
                }

                if (SessionJson.Text(earlier, "type") == SessionEventTypes.Run && SessionJson.Text(earlier, "key") == runId)
                {
                    status = SessionJson.Text(earlier?["value"], "status") ?? status;
                }
            }

            return status;
        }

        foreach (var earlier in batch)
        {
            if (ReferenceEquals(earlier, change))
            {
                break;
            }

            if (SessionJson.Text(earlier, "type") == SessionEventTypes.Run && SessionJson.Text(earlier, "key") is { } other && other != key
                && SessionJson.Text(earlier?["value"], "status") == "started" && SessionJson.Text(earlier?["value"], "agent") == agent
                && SessionJson.Text(earlier?["value"], "trigger") == trigger)
            {
                return new SessionEventRejection(409, SessionRejection.AlreadyAnswered, AlreadyAnsweredText(agent, trigger, other));
            }
        }

        return Answering(state, agent, trigger, Earlier) is { } answering
            ? new SessionEventRejection(409, SessionRejection.AlreadyAnswered, AlreadyAnsweredText(agent, trigger, answering))
            : null;
    }

    /// <summary>
    /// The run by which <paramref name="agent"/> answers <paramref name="trigger"/> already: one of its runs still
    /// started, or its latest run finished with no request to write that reply again. Null when a new run may start.
    /// </summary>
    private static string? Answering(SessionState state, string agent, string trigger, Func<string, string?> overlay)
    {
        string? latest = null, latestStatus = null;
        foreach (var run in state.Runs)
        {
            if (run.Agent != agent || run.Trigger != trigger || run.Id is not { } id)
            {
                continue;
            }

            var status = overlay(id) ?? run.Status?.Value;
            if (status == "started")
            {
                return id;
            }

            (latest, latestStatus) = (id, status);
        }

        return latestStatus == "finished" && !IsAskedToWriteAgain(state, latest) ? latest : null;
    }

    private static string AlreadyAnsweredText(string agent, string trigger, string runId)
        => $"{agent} already answers message {trigger} (run {runId}); a new run answers it only after that run is taken over (ended in the same append) or its reply is asked to be written again.";

    private static bool StartsIn(IReadOnlyList<JsonNode?> batch, string runId)
    {
        for (var i = 0; i < batch.Count; i++)
        {
            if (SessionJson.Text(batch[i], "type") == SessionEventTypes.Run && SessionJson.Text(batch[i], "key") == runId
                && SessionJson.Text(batch[i]?["value"], "status") == "started")
            {
                return true;
            }
        }

        return false;
    }

    // A delta belongs to the run it names, else to its message's run.
    private static SessionEventRejection? CheckDeltaFence(SessionState state, string messageId, string? namedRunId)
    {
        state.TryPeekText(SessionEventTypes.Message, messageId, "runId", out var owner);

        // A delta that names its run adds nothing to a message another run has taken over (after a crash cut it).
        if (namedRunId is not null && owner is not null && owner != namedRunId)
        {
            return new SessionEventRejection(409, SessionRejection.RunCancelled, $"Run {namedRunId} no longer writes this message; run {owner} answers it now.");
        }

        return CheckRunFence(state, namedRunId ?? owner);
    }

    private static SessionEventRejection? CheckRunFence(SessionState state, string? runId)
        => runId is not null && state.TryPeekText(SessionEventTypes.Run, runId, "status", out var status) && IsFenced(status)
            ? new SessionEventRejection(409, SessionRejection.RunCancelled, $"Run {runId} was cancelled; nothing more is accepted for it.")
            : null;

    internal static bool IsFenced(string? status) => status is "cancelled" or "interrupted" or "paused";

    /// <summary>
    /// The events that stop a run: a fenced control, the partial reply and the run marked cancelled (or paused, for a
    /// handoff that lets the agent answer again after hand-back).
    /// </summary>
    private static List<SessionEvent> Stop(SessionState state, SessionRun run, string by, string? reason, bool pause, SessionEvents events, out string controlId)
        => Stop(state, run, by, reason, pause, events, given: null, out controlId);

    private static List<SessionEvent> Stop(SessionState state, SessionRun run, string by, string? reason, bool pause, SessionEvents events, string? given, out string controlId)
    {
        var runId = run.Id ?? string.Empty;
        var control = events.StopControl(runId, by, reason, pause ? ControlAction.Pause : ControlAction.Cancel, given);
        controlId = control.Key;
        var stop = new List<SessionEvent> { control };

        // The partial reply keeps what was streamed so far, rolled up.
        if (run.MessageId is { } messageId && state.GetMessage(messageId) is { } message)
        {
            stop.Add(events.MessageStatusChanged(message, pause ? MessageStatus.Paused : MessageStatus.Cancelled));
        }

        stop.Add(events.RunEnded(run, pause ? RunStatus.Paused : RunStatus.Cancelled, cancelledBy: by));
        return stop;
    }
}
