using System.Diagnostics;
using System.Text;
using System.Text.Json;
using DurableSessions.Client;
using DurableSessions.Sessions;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace DurableSessions.Agents;

/// <summary>Settings of a <see cref="SessionAgent"/>.</summary>
public sealed class SessionAgentOptions
{
    /// <summary>The agent's participant id, named by its runs. Default <c>agent:demo</c>.</summary>
    public string AgentId { get; set; } = "agent:demo";

    /// <summary>
    /// How long a reply's tokens after its first gather before they go out together as one event per part (the first
    /// token is written at once). A write goes out this long after the earlier of the previous write's acknowledgement
    /// and its own first token, and never before that acknowledgement: the tokens said during a slow write wait out the
    /// rest of their linger, not a whole one more. Default 30 ms. Zero writes every token as soon as the previous write
    /// is acknowledged: the lowest latency while the server has room, and the most writes. At most one second.
    /// </summary>
    public TimeSpan DeltaLinger
    {
        get;
        set => field = value >= TimeSpan.Zero && value <= TimeSpan.FromSeconds(1)
            ? value
            : throw new ArgumentOutOfRangeException(nameof(value), value, "DeltaLinger must be between zero and one second.");
    } = TimeSpan.FromMilliseconds(30);

    /// <summary>A system prompt put before the conversation, if any.</summary>
    public string? Instructions { get; set; }

    /// <summary>Options passed to the chat client on every call.</summary>
    public ChatOptions? ChatOptions { get; set; }

    /// <summary>Whether the agent shows in the session's presence (kind <c>agent</c>) while it serves it. Default true.</summary>
    public bool AnnouncePresence { get; set; } = true;

    /// <summary>The clock that stamps the events the agent writes and times its waits. Default <see cref="TimeProvider.System"/>.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;
}

/// <summary>
/// Serves an AI agent on a session: answers each user message with a run whose reply streams into the session as
/// batched deltas, using any <see cref="IChatClient"/>.
/// </summary>
/// <remarks>
/// <para>A cancel recorded in the session (from any surface) fires the <see cref="CancellationToken"/> passed to the
/// model; the server's fence already refuses anything more for the run. A steer restarts generation with the new
/// instruction, continuing the same reply. Runs this agent left <c>started</c> (a crash) are marked
/// <c>interrupted</c> when it joins again. Each run writes as its own idempotent producer, so several agents can write to
/// one session at once without an orchestrator.</para>
/// <para>Thread-safe; one <see cref="RunAsync"/> per session.</para>
/// </remarks>
public sealed partial class SessionAgent
{
    private readonly IChatClient _chat;
    private readonly DurableSessionsClient _client;
    private readonly SessionAgentOptions _options;
    private readonly SessionEvents _events;
    private readonly ILogger _logger;

    // How long a run's last events may take to show in the session after its writer returned.
    private static readonly TimeSpan RunEndGrace = TimeSpan.FromSeconds(5);

    // Sessions with a run in progress, for hosts that decide which sessions to keep serving.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, ActiveRun> _answering = new(StringComparer.Ordinal);

    /// <summary>Creates an agent.</summary>
    public SessionAgent(IChatClient chatClient, DurableSessionsClient client, SessionAgentOptions? options = null, ILogger<SessionAgent>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(chatClient);
        ArgumentNullException.ThrowIfNull(client);
        _chat = chatClient;
        _client = client;
        _options = options ?? new SessionAgentOptions();
        _events = new SessionEvents(_options.TimeProvider);
        _logger = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <summary>
    /// Whether the agent is answering in <paramref name="sessionId"/> now: a run it started there has not ended. A host
    /// that stops serving sessions to save resources keeps those. Thread-safe.
    /// </summary>
    public bool IsAnswering(string sessionId) => _answering.TryGetValue(sessionId, out var run) && !run.Completion.IsCompleted;

    /// <summary>
    /// Serves one session until <paramref name="cancellationToken"/> fires, holding a live connection to it all along.
    /// A process that serves many sessions uses <see cref="SessionAgentHost"/> instead, which holds nothing per idle session.
    /// </summary>
    public Task RunAsync(string sessionId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(sessionId);
        return ServeAsync(sessionId, untilAnswered: false, cancellationToken);
    }

    private async Task ServeAsync(string sessionId, bool untilAnswered, CancellationToken cancellationToken)
    {
        await ServeAsync(sessionId, untilAnswered, cancellationToken, TimeSpan.Zero).ConfigureAwait(false);
    }

    /// <summary>
    /// Serves one turn of a session: answers every user message waiting there (taking over runs of this agent that a
    /// crash cut), then returns. The agent is present in the session only meanwhile. <see cref="SessionAgentHost"/>
    /// calls it for each turn it claims; <paramref name="cancellationToken"/> fires when its lease is lost.
    /// </summary>
    /// <returns>The session's offset up to which every message is answered (null if the turn was cut short).</returns>
    public Task<string?> ServeTurnAsync(string sessionId, CancellationToken cancellationToken)
        => ServeTurnAsync(sessionId, TimeSpan.Zero, cancellationToken);

    /// <summary>
    /// Serves one turn of a session as <see cref="ServeTurnAsync(string, CancellationToken)"/>, and once everything is
    /// answered stays joined for up to <paramref name="followUpWait"/> more, answering a follow-up message in the same
    /// turn instead of a new one.
    /// </summary>
    /// <returns>The session's offset up to which every message is answered (null if the turn was cut short).</returns>
    public Task<string?> ServeTurnAsync(string sessionId, TimeSpan followUpWait, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(sessionId);
        ArgumentOutOfRangeException.ThrowIfLessThan(followUpWait, TimeSpan.Zero);
        return ServeAsync(sessionId, untilAnswered: true, cancellationToken, followUpWait);
    }

    private async Task<string?> ServeAsync(string sessionId, bool untilAnswered, CancellationToken cancellationToken, TimeSpan followUpWait = default)
    {
        string? answered = null;
        var idle = false;
        var session = _client.Session(sessionId);
        ActiveRun? active = null;
        var recovered = false;
        List<SessionRun> cut = [];
        var startedHere = new HashSet<string>(StringComparer.Ordinal);
        var seenControls = new HashSet<string>(StringComparer.Ordinal);
        using var serving = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var presence = _options.AnnouncePresence ? Task.Run(() => AnnouncePresenceAsync(session, serving.Token), CancellationToken.None) : Task.CompletedTask;
        try
        {
            // Its own reply deltas are not read back: each reply's final event restates them, and reading every delta
            // it wrote was a third of the agent's work per delta.
            var updates = session.JoinAsWriterAsync(_options.AgentId + "/", serving.Token).GetAsyncEnumerator(serving.Token);
            await using var updatesScope = updates.ConfigureAwait(false);
            while (true)
            {
                var next = updates.MoveNextAsync().AsTask();
                if (active is not null && untilAnswered && await Task.WhenAny(next, active.Completion).ConfigureAwait(false) != next
                    && await Task.WhenAny(next, Task.Delay(RunEndGrace, _options.TimeProvider, serving.Token)).ConfigureAwait(false) != next)
                {
                    // The run ended but its last events never showed (its final write failed): this turn cannot tell
                    // what is answered, so it ends, and the host gives it back to be served again. A turn stopped from
                    // outside (the host stopping, its lease lost) ends the same way, but that is no failure.
                    await serving.CancelAsync().ConfigureAwait(false);
                    await Task.WhenAny(next).ConfigureAwait(false);
                    cancellationToken.ThrowIfCancellationRequested();
                    throw new InvalidOperationException($"Run {active.RunId} in session {sessionId} ended without its final events.");
                }

                if (idle && await Task.WhenAny(next, Task.Delay(followUpWait, _options.TimeProvider, serving.Token)).ConfigureAwait(false) != next)
                {
                    // Nothing more came: the turn is done.
                    await serving.CancelAsync().ConfigureAwait(false);
                    await Task.WhenAny(next).ConfigureAwait(false);
                    break;
                }

                if (!await next.ConfigureAwait(false))
                {
                    break;
                }

                idle = false;

                var update = updates.Current;
                var state = update.State;
                if (active is not null)
                {
                    var status = state.GetRun(active.RunId)?.Status;
                    if (AnswersAnEditedMessage(state, status, active))
                    {
                        // The message was edited after the run read it, before the run's first write showed (an edit that
                        // sees the run stops it and asks for its reply again): the run answers text that is gone. It stops
                        // (or has ended), and is taken over as a cut run is, so its reply is written again from the new text.
                        active.Cancel();
                        await active.Completion.WaitAsync(cancellationToken).ConfigureAwait(false);
                        cut.Add(state.GetRun(active.RunId)!);
                    }
                    else if (FollowControl(state, status, update.Events, active, seenControls) || (status is { } ended && ended != RunStatus.Started))
                    {
                        // Stopped from outside (cancel, pause, handoff), or its last events are in: let the run wind
                        // down now, because this update (a hand-back, a finished reply) may be the last one for a while.
                        await active.Completion.WaitAsync(cancellationToken).ConfigureAwait(false);
                    }

                    if (active.Completion.IsCompleted)
                    {
                        active.Dispose();
                        active = null;
                        _answering.TryRemove(sessionId, out _);
                    }
                }

                if (!update.UpToDate)
                {
                    continue;
                }

                if (!recovered)
                {
                    // Runs of this agent still "started" when it (re)joins were cut: by a crash, or by a lease that ran
                    // out. Whoever serves the session now answers their messages again.
                    recovered = true;
                    cut = CutRuns(state);
                }
                else if (untilAnswered)
                {
                    // This turn holds the lease: a run of this agent that it did not start, started since it joined, is a
                    // worker's whose lease ran out before that start landed. It is cut too, and answered again here.
                    foreach (var late in CutRuns(state))
                    {
                        if (!startedHere.Contains(late.Id!) && !cut.Exists(c => c.Id == late.Id))
                        {
                            cut.Add(late);
                        }
                    }
                }

                // A run set aside as cut may have been stopped since (cancelled, paused by a handoff): it is no longer
                // this agent's to take over or to mark, and is read as it stands now.
                if (cut.Count > 0)
                {
                    cut = [.. cut.Select(r => state.GetRun(r.Id!)).Where(r => r is not null && (r.Status == RunStatus.Started || r.Status == RunStatus.Finished)).Select(r => r!)];
                }

                if (active is null && NextPendingMessage(state, cut) is { } message)
                {
                    var trigger = message.Id!;
                    var superseded = cut.Find(r => r.Trigger == trigger && r.MessageId is not null);
                    if (superseded is not null)
                    {
                        cut.Remove(superseded);
                    }

                    // A reply asked to be written again is written again in its own message (a cut run's takes precedence:
                    // it is the one writing that message now).
                    var rewritten = superseded?.MessageId ?? ReplyToWriteAgain(state, trigger);

                    if (cut.Count > 0)
                    {
                        await MarkInterruptedAsync(session, state, cut, serving.Token).ConfigureAwait(false);
                        cut = [];
                    }

                    active = StartRun(trigger, message.EditedAt, superseded, rewritten, serving.Token);
                    startedHere.Add(active.RunId);
                    var history = BuildHistory(state, trigger, rewritten);
                    active.Completion = Task.Run(() => ExecuteRunAsync(session, active, history), CancellationToken.None);
                    _answering[sessionId] = active;
                }
                else if (active is null)
                {
                    if (cut.Count > 0)
                    {
                        await MarkInterruptedAsync(session, state, cut, serving.Token).ConfigureAwait(false);
                        cut = [];
                    }

                    if (untilAnswered)
                    {
                        answered = update.Offset;
                        if (followUpWait <= TimeSpan.Zero)
                        {
                            break;
                        }

                        idle = true;
                    }
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            answered = null;
        }
        catch (Exception)
        {
            // A turn that fails (its session deleted, a write refused) stops its run and its presence heartbeats before
            // it reports the failure: nothing of it may go on announcing the agent in a session it no longer serves.
            await StopAsync().ConfigureAwait(false);
            throw;
        }
        finally
        {
            _answering.TryRemove(sessionId, out _);
        }

        await StopAsync().ConfigureAwait(false);
        if (_options.AnnouncePresence && untilAnswered && !cancellationToken.IsCancellationRequested)
        {
            try
            {
                // Tried while the turn is still this agent's: a server that does not answer meanwhile drops the presence when
                // its heartbeats stop.
                await session.LeaveAsync(_options.AgentId, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is HttpRequestException or DurableSessionsException || (ex is OperationCanceledException && cancellationToken.IsCancellationRequested))
            {
                Log.PresenceFailed(_logger, session.Id, ex);
            }
        }

        return answered;

        // Ends what the turn started: its run, then its presence heartbeats.
        async Task StopAsync()
        {
            if (active is not null)
            {
                active.Cancel();
                await active.Completion.ConfigureAwait(false);
                active.Dispose();
                active = null;
            }

            await serving.CancelAsync().ConfigureAwait(false);
            await presence.ConfigureAwait(false);
        }
    }

    /// <summary>Heartbeats as an <c>agent</c> participant, three times per presence timeout, until the agent stops.</summary>
    private async Task AnnouncePresenceAsync(SessionClient session, CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            var wait = TimeSpan.FromSeconds(5);
            try
            {
                wait = await session.HeartbeatAsync("agent", _options.AgentId, _options.AgentId, cancellationToken).ConfigureAwait(false) / 3;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is HttpRequestException or DurableSessionsException)
            {
                Log.PresenceFailed(_logger, session.Id, ex);
            }

            try
            {
                await Task.Delay(wait, _options.TimeProvider, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>
    /// Applies cancels and steers aimed at the active run (whose status in the session is <paramref name="status"/>);
    /// true when the run was stopped from outside.
    /// </summary>
    private static bool FollowControl(SessionState state, RunStatus? status, IReadOnlyList<JsonElement> events, ActiveRun active, HashSet<string> seenControls)
    {
        var stopped = status == RunStatus.Cancelled || status == RunStatus.Interrupted || status == RunStatus.Paused;
        if (stopped)
        {
            active.Cancel();
        }

        // Controls are looked up only when the update brings one: most updates are deltas.
        if (events.Any(IsControl))
        {
            foreach (var control in state.Controls)
            {
                if (control.RunId == active.RunId && control.Action == ControlAction.Steer && control.Id is { } id && control.Text is { } instruction && seenControls.Add(id))
                {
                    active.Steer(instruction);
                }
            }
        }

        return stopped;
    }

    // Events are read as stored: anything not of the expected kind is not a control.
    private static bool IsControl(JsonElement element)
        => element.ValueKind == JsonValueKind.Object
            && element.TryGetProperty("type", out var type) && type.ValueKind == JsonValueKind.String && type.ValueEquals(SessionEventTypes.Control);

    /// <summary>This agent's runs still <see cref="RunStatus.Started"/>: when it (re)joins a session, none of them is running any more.</summary>
    private List<SessionRun> CutRuns(SessionState state)
        => state.Runs.Where(r => r.Agent == _options.AgentId && r.Status == RunStatus.Started && r.Id is not null).ToList();

    private SessionMessage? NextPendingMessage(SessionState state, List<SessionRun> cut)
    {
        // While a human holds the session, agents stay quiet.
        if (state.Handoff?.Kind == ParticipantKind.Human)
        {
            return null;
        }

        var answered = new HashSet<string>(StringComparer.Ordinal);
        var rewritten = RunsWrittenAgain(state);
        foreach (var run in state.Runs)
        {
            // A run paused by a handoff, cut by a crash, or whose reply was asked to be written again does not count:
            // its message is answered again (by the run that writes it again, which counts).
            if (run.Agent == _options.AgentId && run.Trigger is { } trigger && run.Id is { } runId
                && run.Status != RunStatus.Paused && run.Status != RunStatus.Interrupted && !cut.Exists(c => c.Id == runId)
                && !rewritten.Contains(runId))
            {
                answered.Add(trigger);
            }
        }

        return state.Messages.FirstOrDefault(m => m.Role == MessageRole.User && m.RoutedTo is null && m.Id is { } id && !answered.Contains(id));
    }

    /// <summary>
    /// Whether <paramref name="active"/>, started or finished, answers its message as it was before an edit that did not
    /// see the run (one that did stopped it, or asked for its reply again), or a message an edit of an earlier one took
    /// out of the conversation.
    /// </summary>
    private static bool AnswersAnEditedMessage(SessionState state, RunStatus? status, ActiveRun active)
    {
        if ((status != RunStatus.Started && status != RunStatus.Finished) || SessionRules.IsAskedToWriteAgain(state, active.RunId))
        {
            return false;
        }

        if (state.GetMessage(active.TriggerId) is { } trigger)
        {
            return trigger.EditedAt != active.TriggerEditedAt;
        }

        // The question is gone. A reply that finished and went with it was seen by the edit that took it out: it stays
        // finished, with nothing to answer again.
        return status == RunStatus.Started || state.GetMessage(active.MessageId) is not null;
    }

    /// <summary>
    /// Whether <paramref name="run"/> answers a question the session no longer holds (an edit of an earlier message took it
    /// out). Read from the messages, so it holds for a state built from a snapshot too.
    /// </summary>
    private static bool AnswersAGoneQuestion(SessionState state, SessionRun? run)
        => run?.Trigger is { } trigger && state.GetMessage(trigger) is null;

    /// <summary>The runs whose reply a regenerate control asked to be written again.</summary>
    private static HashSet<string> RunsWrittenAgain(SessionState state)
        => [.. state.Controls.Where(c => c.Action == ControlAction.Regenerate && c.RunId is not null).Select(c => c.RunId!)];

    /// <summary>
    /// The message of this agent's latest reply to <paramref name="trigger"/> if a regenerate control asked for it to be
    /// written again, or null.
    /// </summary>
    private string? ReplyToWriteAgain(SessionState state, string trigger)
    {
        var latest = state.Runs.LastOrDefault(r => r.Agent == _options.AgentId && r.Trigger == trigger && r.Id is not null);
        return latest is not null && RunsWrittenAgain(state).Contains(latest.Id!) ? latest.MessageId : null;
    }

    /// <summary>
    /// A new run answering <paramref name="trigger"/>: its reply starts empty and streaming, as a new message, or in the
    /// message <paramref name="rewritten"/> an earlier reply to it was written in: taking over <paramref name="superseded"/>
    /// (the cut run ends as interrupted and names the new run, in the same append, so the fence holds it to nothing more),
    /// or writing a reply again that a regenerate control asks for.
    /// </summary>
    private ActiveRun StartRun(string trigger, string? triggerEditedAt, SessionRun? superseded, string? rewritten, CancellationToken agentStopping)
    {
        var runId = _events.NewId("r");
        var started = _events.RunStarted(runId, _options.AgentId, rewritten ?? _events.NewId("m"), trigger);
        var run = (SessionRun)started.Value!;
        var reply = _events.Reply(rewritten is null ? ChangeOperation.Insert : ChangeOperation.Update, run.MessageId!, _options.AgentId, runId, [new TextPart()], MessageStatus.Streaming, run.StartedAt!);
        IReadOnlyList<SessionEvent> start = superseded is null ? [started, reply] : [_events.RunSuperseded(superseded, runId), started, reply];
        return new ActiveRun(run, start, superseded, rewritesMessage: rewritten is not null, agentStopping) { TriggerEditedAt = triggerEditedAt };
    }

    /// <summary>
    /// The conversation a reply to <paramref name="trigger"/> is written from: the messages in the session's order, each
    /// agent reply placed right after the message it answers (a reply to a question queued behind another is stored after
    /// that later question), up to the next user message after <paramref name="trigger"/> (a question queued behind it,
    /// or asked after a reply to it was asked to be written again, is not part of its answer). Without
    /// <paramref name="rewritten"/>, the reply being written again, and any reply asked to be written again, whose text
    /// is being replaced.
    /// </summary>
    private List<ChatMessage> BuildHistory(SessionState state, string trigger, string? rewritten)
    {
        var history = new List<ChatMessage>();
        if (_options.Instructions is { } instructions)
        {
            history.Add(new ChatMessage(ChatRole.System, instructions));
        }

        var messages = state.Messages;
        var asked = messages.Where(m => m.Role == MessageRole.User && m.Id is not null).Select(m => m.Id!).ToHashSet(StringComparer.Ordinal);
        var writtenAgain = RunsWrittenAgain(state);
        var replies = new Dictionary<string, List<SessionMessage>>(StringComparer.Ordinal);
        foreach (var message in messages)
        {
            if (AnsweredBy(message) is { } answered)
            {
                (replies.TryGetValue(answered, out var list) ? list : replies[answered] = []).Add(message);
            }
        }

        var reached = false;
        foreach (var message in messages)
        {
            if (message.Role == MessageRole.User)
            {
                if (reached)
                {
                    break;
                }

                reached = message.Id == trigger;
                Add(message);
                foreach (var reply in message.Id is { } id && replies.TryGetValue(id, out var answers) ? answers : [])
                {
                    Add(reply);
                }
            }
            else if (AnsweredBy(message) is null && !AnswersATakenOutMessage(message))
            {
                Add(message);
            }
        }

        return history;

        // A reply to a question an edit took out (written by an agent that did not see it go) answers nothing that is left.
        bool AnswersATakenOutMessage(SessionMessage message)
            => message.RunId is { } runId && AnswersAGoneQuestion(state, state.GetRun(runId));

        // The user message an agent's reply answers, when the session holds it.
        string? AnsweredBy(SessionMessage message)
            => message.Role == MessageRole.Assistant && message.RunId is { } runId && state.GetRun(runId)?.Trigger is { } answered && asked.Contains(answered)
                ? answered
                : null;

        void Add(SessionMessage message)
        {
            // The reply being written again, and any other waiting to be (another agent's, after an edit): what they say
            // is being replaced.
            if ((rewritten is not null && message.Id == rewritten) || (message.RunId is { } runId && writtenAgain.Contains(runId)))
            {
                return;
            }

            ChatRole? role = message.Role == MessageRole.User ? ChatRole.User
                : message.Role == MessageRole.Assistant ? ChatRole.Assistant
                : message.Role == MessageRole.System ? ChatRole.System
                : null;
            var text = message.Text;
            if (role is not null && text.Length > 0)
            {
                history.Add(new ChatMessage(role.Value, text));
            }
        }
    }

    private async Task ExecuteRunAsync(SessionClient session, ActiveRun run, List<ChatMessage> history)
    {
        using var activity = AgentTelemetry.Source.StartActivity("durable_sessions.agent.run");
        activity?.SetTag("durable_sessions.session", session.Id);
        activity?.SetTag("durable_sessions.run_id", run.RunId);
        var started = Stopwatch.GetTimestamp();
        AgentTelemetry.ActiveRuns.Add(1);
        try
        {
            await ExecuteRunCoreAsync(session, run, history).ConfigureAwait(false);
        }
        finally
        {
            AgentTelemetry.ActiveRuns.Add(-1);
            AgentTelemetry.RunDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds);
        }
    }

    private async Task ExecuteRunCoreAsync(SessionClient session, ActiveRun run, List<ChatMessage> history)
    {
        using var producer = new StreamProducer(_client, session.StreamPath, $"{_options.AgentId}/{run.RunId}");
        var text = new StringBuilder();
        var reasoning = new StringBuilder();
        var tools = new List<MessagePart>();
        var startWritten = false;
        try
        {
            await producer.AppendAsync(run.StartEvents, run.Token).ConfigureAwait(false);
            startWritten = true;
            if (run.Supersedes is { } cut)
            {
                Log.RunTakenOver(_logger, session.Id, cut.Id!, run.RunId);
            }

            Log.RunStarted(_logger, session.Id, run.RunId, _options.AgentId);

            var finishReason = "stop";
            while (true)
            {
                using var generation = CancellationTokenSource.CreateLinkedTokenSource(run.Token, run.SteerToken);
                var deltas = new DeltaBatcher(producer, run, _options.DeltaLinger, _events, _options.TimeProvider);
                try
                {
                    await foreach (var update in _chat.GetStreamingResponseAsync(history, _options.ChatOptions, generation.Token).ConfigureAwait(false))
                    {
                        foreach (var content in update.Contents)
                        {
                            switch (content)
                            {
                                case TextContent t when t.Text.Length > 0:
                                    AgentTelemetry.Tokens.Add(1);
                                    text.Append(t.Text);
                                    deltas.Add(0, "text", t.Text);
                                    break;
                                case TextReasoningContent r when r.Text.Length > 0:
                                    reasoning.Append(r.Text);
                                    deltas.Add(1, "reasoning", r.Text);
                                    break;
                                case FunctionCallContent call:
                                    tools.Add(new ToolCallPart(call.CallId, call.Name, JsonSerializer.SerializeToElement(call.Arguments)));
                                    await WriteToolPartsAsync(producer, deltas, run, text, reasoning, tools).ConfigureAwait(false);
                                    break;
                                case FunctionResultContent result:
                                    tools.Add(new ToolResultPart(result.CallId, JsonSerializer.SerializeToElement(result.Result)));
                                    await WriteToolPartsAsync(producer, deltas, run, text, reasoning, tools).ConfigureAwait(false);
                                    break;
                            }
                        }

                        if (update.FinishReason is { } reason)
                        {
                            finishReason = reason.Value;
                        }
                    }

                    await deltas.FlushAsync().ConfigureAwait(false);
                    break;
                }
                catch (OperationCanceledException) when (!run.Token.IsCancellationRequested && run.TakeSteer() is { } instruction)
                {
                    // Steered: keep what was written, then continue the same reply with the new instruction.
                    await deltas.FlushAsync().ConfigureAwait(false);
                    history.Add(new ChatMessage(ChatRole.Assistant, text.ToString()));
                    history.Add(new ChatMessage(ChatRole.User, instruction));
                }
                catch
                {
                    // The reply ends here (failed, cancelled): no delta of this batcher may land after the reply's last
                    // write, which restates its whole text.
                    await deltas.StopAsync().ConfigureAwait(false);
                    throw;
                }
            }

            await producer.AppendAsync(
            [
                Reply(run, MessageStatus.Complete, Parts(text, reasoning, tools)),
                _events.RunEnded(run.Run, RunStatus.Finished, finishReason),
            ], run.AgentStopping).ConfigureAwait(false);
            Log.RunFinished(_logger, session.Id, run.RunId);
        }
        catch (Exception ex) when (run.AgentStopping.IsCancellationRequested && ex is OperationCanceledException or HttpRequestException or IOException
            or DurableSessionsException { Code: not SessionRejection.AlreadyAnswered })
        {
            // The agent stopped serving the session (its lease lost, the host stopping), not a cancel: the run stays
            // "started" in the session, and whoever serves it next takes it over as a cut run.
            Log.RunLeftUnfinished(_logger, ex, session.Id, run.RunId);
        }
        catch (Exception ex) when (run.Token.IsCancellationRequested || ex is DurableSessionsException { Code: "RUN_CANCELLED" })
        {
            // Cancelled through the session: the server already recorded it and fenced the run.
            Log.RunCancelled(_logger, session.Id, run.RunId);
        }
        catch (DurableSessionsException ex) when (ex.Code == SessionRejection.AlreadyAnswered)
        {
            // Another worker took this turn over (this one paused past its lease) and answers the message: this run never
            // started, and leaves the session as it found it.
            Log.RunAnsweredElsewhere(_logger, session.Id, run.RunId, ex.Message);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            Log.RunFailed(_logger, ex, session.Id, run.RunId);
            if (ex is DurableSessionsException { Status: System.Net.HttpStatusCode.NotFound }
                || (!startWritten && ex is DurableSessionsException { Status: >= System.Net.HttpStatusCode.BadRequest and < System.Net.HttpStatusCode.InternalServerError }))
            {
                // The session is gone, or the run's start was refused (nothing of it is in the session): a failed reply
                // written now would land in a session created again at the same id, or answer for a run that never was.
                // A start that failed otherwise (cut, timed out) may have been stored: its run is ended as failed.
                return;
            }

            try
            {
                await producer.AppendAsync(
                [
                    Reply(run, MessageStatus.Failed, Parts(text, reasoning, tools), ex.Message),
                    _events.RunEnded(run.Run, RunStatus.Failed, error: ex.Message),
                ], run.AgentStopping).ConfigureAwait(false);
            }
            catch (Exception failed) when (failed is DurableSessionsException or OperationCanceledException)
            {
                // Refused, or the agent stopped serving the session before the server took it: the run stays "started",
                // and whoever serves the session next takes it over as a cut run.
            }
        }
    }

    /// <summary>Marks cut runs that nothing answers again (their message was answered since) as interrupted.</summary>
    private async Task MarkInterruptedAsync(SessionClient session, SessionState state, List<SessionRun> cut, CancellationToken cancellationToken)
    {
        var events = new List<SessionEvent>();
        foreach (var run in cut)
        {
            if (run.MessageId is { } messageId && state.GetMessage(messageId) is { } message)
            {
                // A reply to a message that an edit of an earlier one took out of the conversation goes with it.
                events.Add(AnswersAGoneQuestion(state, run)
                    ? _events.MessageRemoved(messageId)
                    : _events.MessageStatusChanged(message, MessageStatus.Interrupted));
            }

            events.Add(_events.RunStatusChanged(run, RunStatus.Interrupted));
        }

        using var producer = new StreamProducer(_client, session.StreamPath, $"{_options.AgentId}/recovery/{_events.NewId("p")}");
        await producer.AppendAsync(events, cancellationToken).ConfigureAwait(false);
        Log.RunsInterrupted(_logger, session.Id, cut.Count);
    }

    /// <summary>Writes the message with its tool parts so far (text and reasoning deltas keep their part indexes 0 and 1).</summary>
    private async Task WriteToolPartsAsync(StreamProducer producer, DeltaBatcher deltas, ActiveRun run, StringBuilder text, StringBuilder reasoning, List<MessagePart> tools)
    {
        await deltas.FlushAsync().ConfigureAwait(false);
        await producer.AppendAsync([Reply(run, MessageStatus.Streaming, Parts(text, reasoning, tools, keepReasoningSlot: true))], run.Token).ConfigureAwait(false);
    }

    private SessionEvent Reply(ActiveRun run, MessageStatus status, IReadOnlyList<MessagePart> parts, string? error = null)
        => _events.Reply(ChangeOperation.Update, run.MessageId, _options.AgentId, run.RunId, parts, status, run.StartedAt, error);

    /// <summary>The reply's parts: its text, its reasoning (when there is any, or its slot is kept), then its tool parts.</summary>
    private static List<MessagePart> Parts(StringBuilder text, StringBuilder reasoning, List<MessagePart> tools, bool keepReasoningSlot = false)
    {
        var parts = new List<MessagePart>(2 + tools.Count) { new TextPart(text.ToString()) };
        if (reasoning.Length > 0 || (keepReasoningSlot && tools.Count > 0))
        {
            parts.Add(new ReasoningPart(reasoning.ToString()));
        }

        parts.AddRange(tools);
        return parts;
    }

    private static partial class Log
    {
        [LoggerMessage(400, LogLevel.Debug, "Session {SessionId}: run {RunId} started by {AgentId}")]
        public static partial void RunStarted(ILogger logger, string sessionId, string runId, string agentId);

        [LoggerMessage(401, LogLevel.Debug, "Session {SessionId}: run {RunId} finished")]
        public static partial void RunFinished(ILogger logger, string sessionId, string runId);

        [LoggerMessage(402, LogLevel.Information, "Session {SessionId}: run {RunId} cancelled")]
        public static partial void RunCancelled(ILogger logger, string sessionId, string runId);

        [LoggerMessage(408, LogLevel.Information, "Session {SessionId}: run {RunId} left unfinished: the agent stopped serving the session (its lease lost or its host stopping); whoever serves the session next takes the run over")]
        public static partial void RunLeftUnfinished(ILogger logger, Exception exception, string sessionId, string runId);

        [LoggerMessage(403, LogLevel.Warning, "Session {SessionId}: run {RunId} failed")]
        public static partial void RunFailed(ILogger logger, Exception exception, string sessionId, string runId);

        [LoggerMessage(404, LogLevel.Information, "Session {SessionId}: marked {Count} unfinished runs as interrupted")]
        public static partial void RunsInterrupted(ILogger logger, string sessionId, int count);

        [LoggerMessage(406, LogLevel.Information, "Session {SessionId}: run {CutRunId} was cut; run {RunId} answers its message again")]
        public static partial void RunTakenOver(ILogger logger, string sessionId, string cutRunId, string runId);

        [LoggerMessage(407, LogLevel.Information, "Session {SessionId}: run {RunId} not started, another run answers its message: {Reason}")]
        public static partial void RunAnsweredElsewhere(ILogger logger, string sessionId, string runId, string reason);

        [LoggerMessage(405, LogLevel.Debug, "Session {SessionId}: presence heartbeat failed; retrying")]
        public static partial void PresenceFailed(ILogger logger, string sessionId, Exception exception);
    }
}
