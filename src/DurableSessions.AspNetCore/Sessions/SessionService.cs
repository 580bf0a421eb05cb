using System.Diagnostics;
using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Nodes;
using DurableSessions.AspNetCore.Streams;
using DurableSessions.Live;
using DurableSessions.Sessions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DurableSessions.AspNetCore.Sessions;

/// <summary>
/// Server-side session services over the session streams (<c>sessions/{id}</c>): the materialized snapshot, the run
/// fence that makes a cancel final, and the session operations (post a message, cancel, steer, handoff).
/// </summary>
/// <remarks>
/// <para>Every append to a session stream passes through <see cref="AppendAsync"/>, which holds the session's lock while it
/// checks the events (<see cref="SessionEventRules"/>) and the fence and appends, so a cancel and an agent's write can
/// never interleave: content for a cancelled run committed after the fence offset is impossible.</para>
/// <para>The operations are decided by <see cref="SessionRules"/> on the caught-up state; this service reads, locks,
/// appends, and answers rejections.</para>
/// <para>Materialized sessions are kept in memory while they are used and evicted when idle for
/// <see cref="SessionServiceOptions.MemoryIdleTimeout"/> or when more than
/// <see cref="SessionServiceOptions.MaxInMemory"/> are held (least recently used first); an evicted session is
/// rebuilt from its stream on next use.</para>
/// </remarks>
internal sealed partial class SessionService : IDisposable
{
    /// <summary>The stream path prefix of sessions.</summary>
    public const string Prefix = "sessions/";

    private readonly StreamStore _store;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, Session> _sessions = new(StringComparer.Ordinal);
    private readonly SessionServiceOptions _options;
    private readonly TimeProvider _time;
    private readonly SessionEvents _events;
    private readonly ITimer _evictionTimer;
    private int _trimming;

    private readonly Agents.AgentTurnService _turns;

    public SessionService(StreamStore store, Agents.AgentTurnService turns, IOptions<SessionServiceOptions> options, ILogger<SessionService> logger)
    {
        _store = store;
        _turns = turns;
        _logger = logger;
        _options = options.Value;
        _time = store.TimeProvider;
        _events = new SessionEvents(_time);
        var period = TimeSpan.FromTicks(Math.Clamp(_options.MemoryIdleTimeout.Ticks / 4, TimeSpan.TicksPerMillisecond * 50, TimeSpan.TicksPerMinute));
        _evictionTimer = _time.CreateTimer(_ => Trim(keep: null), null, period, period);
        _activeSessions = () => _sessions.Count;
        Telemetry.ObserveActiveSessions(_activeSessions);
        _sessionsById = _sessions.GetAlternateLookup<ReadOnlySpan<char>>();
        store.Fanout.AddObserver(Heard);
    }

    private readonly ConcurrentDictionary<string, Session>.AlternateLookup<ReadOnlySpan<char>> _sessionsById;

    /// <summary>
    /// Tells a session held in memory what was committed to its stream, by this node or (through a shared store) another:
    /// its state is known to be current while it holds everything heard, and is caught up from the store only when it
    /// does not. Runs on the commit path: one lookup, nothing allocated.
    /// </summary>
    private void Heard(LiveAppend change)
    {
        if (change.Path.StartsWith(Prefix, StringComparison.Ordinal) && _sessionsById.TryGetValue(change.Path.AsSpan(Prefix.Length), out var session))
        {
            session.Heard(change);
        }
    }

    // Held here: the gauge holds its sources weakly, so it forgets a disposed service.
    private readonly Func<long> _activeSessions;

    /// <summary>How many sessions are materialized in memory now (for tests and diagnostics).</summary>
    internal int CachedSessionCount => _sessions.Count;

    public void Dispose() => _evictionTimer.Dispose();

    public static bool IsSessionPath(string path) => path.StartsWith(Prefix, StringComparison.Ordinal) && path.Length > Prefix.Length;

    public static string StreamPath(string sessionId) => Prefix + sessionId;

    /// <summary>Creates the session's stream (idempotent) with a <c>session</c> entity.</summary>
    public async Task<CreateStreamStatus> CreateAsync(string sessionId, JsonObject? settings, (long? MaxStreams, string? Owner, long? MaxStreamsPerOwner) limits, CancellationToken cancellationToken)
    {
        var path = StreamPath(sessionId);
        var existing = await _store.GetAsync(path, cancellationToken).ConfigureAwait(false);
        if (existing.Status == StreamLookupStatus.Found)
        {
            return existing.Stream!.IsJson ? CreateStreamStatus.AlreadyExists : CreateStreamStatus.Conflict;
        }

        var session = _events.SessionCreated(
            sessionId,
            SessionJson.Text(settings, "title"),
            SessionJson.Text(settings, "newMessagePolicy") is "queue" or "interrupt" or "reject" ? new NewMessagePolicy(SessionJson.Text(settings, "newMessagePolicy")!) : NewMessagePolicy.Queue,
            SessionJson.Text(settings, "handoffPolicy") == "pause" ? HandoffPolicy.Pause : HandoffPolicy.Cancel,
            SessionJson.Text(settings, "notifyUrl"));
        var created = await _store.CreateAsync(new CreateStreamRequest
        {
            Path = path,
            ContentType = StreamContentType.Json,
            InitialData = Frame([session.ToJson()]),
            MaxStreams = limits.MaxStreams,
            Owner = limits.Owner,
            MaxStreamsPerOwner = limits.MaxStreamsPerOwner,
        }, cancellationToken).ConfigureAwait(false);
        return created.Status;
    }

    /// <summary>The human a message was routed to (posted while that human held the session), or null.</summary>
    public Task<string?> RoutedToAsync(string sessionId, string messageId, CancellationToken cancellationToken)
        => ReadStateAsync(sessionId, state => state.GetMessage(messageId)?.RoutedTo, cancellationToken);

    /// <summary>The session's <c>session</c> entity (title, policies, notification URL), or null.</summary>
    /// <remarks>
    /// Read from a session held in memory as it stands when it holds everything the fan-out told of its stream, with no
    /// lookup: the notifier asks about a change this node committed (and so heard), not about what a client just wrote
    /// through another node.
    /// </remarks>
    public Task<JsonObject?> SessionSettingsAsync(string sessionId, CancellationToken cancellationToken)
        => ReadStateAsync(sessionId, state => state.Get(SessionEventTypes.Session, "session"), cancellationToken, trustHeard: true);

    /// <summary>
    /// What <paramref name="read"/> finds in the session's state, brought up to date with its stream under its lock;
    /// the default when there is no session.
    /// </summary>
    private async Task<T?> ReadStateAsync<T>(string sessionId, Func<SessionState, T?> read, CancellationToken cancellationToken, bool trustHeard = false)
    {
        var found = default(T);
        await UnderLockAsync(sessionId, session =>
        {
            found = read(session.State);
            return Task.FromResult(SessionOperationResult.Ok(sessionId, session.State.Position));
        }, cancellationToken, trustHeard).ConfigureAwait(false);
        return found;
    }

    /// <summary>The session's materialized state, brought up to date with its stream.</summary>
    public async Task<(JsonArray Snapshot, long Offset)?> SnapshotAsync(string sessionId, CancellationToken cancellationToken)
    {
        for (var opened = 1; ; opened++)
        {
            var session = await AcquireAsync(sessionId, cancellationToken).ConfigureAwait(false);
            if (session is null)
            {
                return null;
            }

            try
            {
                if (await CatchUpAsync(session, cancellationToken).ConfigureAwait(false))
                {
                    return (session.State.ToSnapshot(), session.State.Position);
                }
            }
            finally
            {
                session.Lock.Release();
            }

            // The stream at the path is not the one held (deleted, or deleted and created again, unheard): it was
            // dropped from memory, and is opened afresh from the store, once.
            if (opened == 2)
            {
                return null;
            }
        }
    }

    /// <summary>
    /// Appends to a session stream after checking its events against <see cref="SessionEventRules"/> for
    /// <paramref name="writer"/>, and that nothing adds content to a run that has been cancelled. Returns null with a
    /// reason when the append is refused; nothing is written then.
    /// </summary>
    public async Task<(AppendResult? Result, SessionEventRejection? Rejection)> AppendAsync(AppendRequest request, SessionWriter writer, CancellationToken cancellationToken)
        => (await AppendCheckedAsync(request, writer, held: false, cancellationToken).ConfigureAwait(false))!.Value;

    /// <summary>
    /// <see cref="AppendAsync(AppendRequest, SessionWriter, CancellationToken)"/>; with <paramref name="held"/> (an append
    /// taken with no lookup), null when the stream turns out closed: the caller's lookup path has the store answer it.
    /// </summary>
    private async Task<(AppendResult? Result, SessionEventRejection? Rejection)?> AppendCheckedAsync(AppendRequest request, SessionWriter writer, bool held, CancellationToken cancellationToken)
    {
        var deltas = ReadDeltas(request);
        if (deltas is not null && await TryAppendHeldAsync(request, deltas, writer, cancellationToken).ConfigureAwait(false) is { } taken)
        {
            return taken;
        }

        var sessionId = request.Path[Prefix.Length..];
        var session = await AcquireAsync(sessionId, cancellationToken).ConfigureAwait(false);
        if (session is null)
        {
            // Gone between the caller's lookup and here: answered as the store sees the path now, never appended unchecked.
            var lookup = await _store.GetAsync(request.Path, cancellationToken).ConfigureAwait(false);
            return (new AppendResult { Status = lookup.Status == StreamLookupStatus.Gone ? AppendStatus.Gone : AppendStatus.NotFound }, null);
        }

        try
        {
            if (deltas is not null)
            {
                return await AppendDeltasAsync(session, request, deltas, writer, caughtUp: true, cancellationToken).ConfigureAwait(false)
                    ?? (await ReplacedAsync(request.Path, cancellationToken).ConfigureAwait(false), null);
            }

            for (var attempt = 1; ; attempt++)
            {
                // The first attempt decides on the state in memory when it holds everything the fan-out told of the
                // stream: no lookup. Its write names the tail it was decided on, so one that another node's append (not
                // heard of yet) moved is refused by the store, and the next attempt asks the store first.
                var trusted = attempt == 1 && session.KnownCurrent(_store.Fanout.Interruptions);
                if (!trusted && !await CatchUpAsync(session, cancellationToken).ConfigureAwait(false))
                {
                    return (await ReplacedAsync(request.Path, cancellationToken).ConfigureAwait(false), null);
                }

                if (held && session.Closed)
                {
                    // Closed through another node, heard of only now: not the rules' to answer (see SessionAppendPolicy).
                    return null;
                }

                // Parsed once: checked against the fence, then applied to the materialized state.
                var (messages, rejection) = Check(session, request.Data, writer);
                if (rejection is not null)
                {
                    if (trusted)
                    {
                        // A refusal writes nothing for the store to check: it stands only on a state the store confirmed.
                        continue;
                    }

                    return (null, rejection);
                }

                // Written only onto the state just checked: another node may append to this session meanwhile. Seen
                // through whoever stops waiting (see AppendLockedAsync).
                var result = await _store.AppendAsync(request with { ExpectedTail = session.State.Position, ExpectedStreamId = session.StreamId, Progress = OnlyDeltas(messages), Annotation = SessionAppendAnnotation.Of(messages) }, CancellationToken.None).ConfigureAwait(false);
                if (Learn(session, result, attempt))
                {
                    continue;
                }

                if (result.Status == AppendStatus.Appended && session.State.Position == result.TailPosition - request.Data.Units)
                {
                    session.State.ApplyReadableMessages(messages, result.TailPosition);
                }

                if (result.Status == AppendStatus.Appended)
                {
                    await CommittedAsync(session, messages, result.TailPosition).ConfigureAwait(false);
                }

                return (result, null);
            }
        }
        finally
        {
            session.Lock.Release();
        }
    }

    /// <summary>
    /// <see cref="AppendAsync"/> with no lookup of the stream first, for what nearly every append is: an agent's text
    /// streaming into its reply (plain delta inserts, read without JSON nodes, by the same rules), into a session already
    /// held in memory (on Redis, a lookup is a round trip and a parse on every delta). The store appends only onto the
    /// stream and tail they were checked against, and the session catches up when either moved. Null when the append is
    /// not that, or the session is not held (or no longer the stream at its path): the caller looks it up.
    /// </summary>
    /// <remarks>
    /// Any other append to a session held in memory, whose stream the fan-out has told of since the store was last asked
    /// (open, and the one at its path), is decided on the state held as well (<see cref="AppendAsync"/>): no lookup.
    /// </remarks>
    public Task<(AppendResult? Result, SessionEventRejection? Rejection)?> TryAppendHeldAsync(AppendRequest request, SessionWriter writer, CancellationToken cancellationToken)
    {
        if (!_sessions.TryGetValue(request.Path[Prefix.Length..], out var held))
        {
            return Task.FromResult<(AppendResult?, SessionEventRejection?)?>(null);
        }

        if (ReadDeltas(request) is { } deltas)
        {
            return TryAppendHeldAsync(request, deltas, writer, cancellationToken);
        }

        return held.StreamKnown(_store.Fanout.Interruptions) && !held.Closed
            ? AppendCheckedAsync(request, writer, held: true, cancellationToken)
            : Task.FromResult<(AppendResult?, SessionEventRejection?)?>(null);
    }

    /// <summary>An append's events as typed deltas, when it is made only of plain delta inserts; otherwise null.</summary>
    private static List<DeltaChange>? ReadDeltas(AppendRequest request)
        => SessionDeltas.TryRead(request.Data.Data.Span, out var deltas) && deltas.Count == request.Data.Units ? deltas : null;

    private async Task<(AppendResult? Result, SessionEventRejection? Rejection)?> TryAppendHeldAsync(AppendRequest request, List<DeltaChange> deltas, SessionWriter writer, CancellationToken cancellationToken)
    {
        if (!_sessions.TryGetValue(request.Path[Prefix.Length..], out var known))
        {
            return null;
        }

        await known.Lock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (known.Evicted)
            {
                return null;
            }

            known.LastUsed = _time.GetTimestamp();

            // Decided on the state in memory unless a write was refused since for a tail another node moved: then that state
            // is behind, and deciding on it would only be refused again.
            return await AppendDeltasAsync(known, request, deltas, writer, caughtUp: known.Doubted, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            known.Lock.Release();
        }
    }

    /// <summary>
    /// Decides an append of plain delta inserts now, without waiting (<see cref="IStreamAppendPolicy.TryHold"/>): to a
    /// session held in memory whose lock is free, by the same rules as <see cref="TryAppendHeldAsync(AppendRequest, SessionWriter, CancellationToken)"/>
    /// on the state held. The session stays locked until <see cref="HeldAppend.Complete"/> takes the store's answer and
    /// applies the deltas to the state. Null when it cannot be decided so: not plain deltas, not held, locked (another
    /// write to the session is being decided), or refused (a refusal decided in memory stands only once the store
    /// confirms that state, which the usual path does).
    /// </summary>
    internal HeldAppend? TryHoldDeltas(AppendRequest request, SessionWriter writer)
    {
        if (!_sessions.TryGetValue(request.Path[Prefix.Length..], out var known) || ReadDeltas(request) is not { } deltas || !known.Lock.Wait(0))
        {
            return null;
        }

        try
        {
            // A session in doubt (a write refused for a tail another node moved) catches up first, on the usual path.
            if (known.Evicted || known.Doubted || (SessionEventRules.CheckDeltas(known.State, deltas, writer) ?? SessionRules.CheckDeltasFence(known.State, deltas)) is not null)
            {
                known.Lock.Release();
                return null;
            }

            known.LastUsed = _time.GetTimestamp();
            return new HeldDeltas(this, known, deltas, request with { ExpectedTail = known.State.Position, ExpectedStreamId = known.StreamId, Progress = true, Annotation = SessionAppendAnnotation.NoneEnded });
        }
        catch
        {
            known.Lock.Release();
            throw;
        }
    }

    /// <summary>Deltas decided on a session's state in memory, its lock held until the store answers (<see cref="TryHoldDeltas"/>).</summary>
    private sealed class HeldDeltas(SessionService service, Session session, List<DeltaChange> deltas, AppendRequest request) : HeldAppend(request)
    {
        protected override AppendResult? CompleteCore(AppendResult? stored)
        {
            try
            {
                if (stored is not { } result)
                {
                    return null;
                }

                if (result.Status == AppendStatus.TailMoved)
                {
                    // Another node appended meanwhile: nothing was written, and the usual path catches up and decides again.
                    session.Doubt();
                    return null;
                }

                // As the usual path answers on its last attempt: a stream gone is dropped from memory, a closed one marked.
                service.Learn(session, result, MaxAttempts);
                if (result.Status == AppendStatus.Appended)
                {
                    if (session.State.Position == result.TailPosition - Request.Data.Units)
                    {
                        session.State.ApplyDeltas(deltas, result.TailPosition);
                    }

                    Telemetry.DeltasCommitted(deltas);
                }

                return result;
            }
            finally
            {
                session.Lock.Release();
            }
        }
    }

    /// <summary>
    /// <see cref="AppendAsync"/> for an append of plain delta inserts, under the session's lock: the same checks, write
    /// and state update on typed deltas. Deltas are progress (restated by the reply's final message event), and never
    /// need an answer. Null when the stream at the session's path is no longer the one in memory (deleted, or deleted
    /// and created again): the session is dropped from memory, to be opened afresh. Null too when a refusal decided in
    /// memory meets a stream closed or deleted since: the caller answers through its lookup. With <c>caughtUp</c> false it
    /// decides first on the state in memory, with no lookup: the store refuses the write if the stream's tail moved past
    /// it, and the session then catches up.
    /// </summary>
    private async Task<(AppendResult? Result, SessionEventRejection? Rejection)?> AppendDeltasAsync(Session session, AppendRequest request, List<DeltaChange> deltas, SessionWriter writer, bool caughtUp, CancellationToken cancellationToken)
    {
        var decidedInMemory = !caughtUp;
        for (var attempt = 1; ; attempt++)
        {
            if (caughtUp && !await CatchUpAsync(session, cancellationToken).ConfigureAwait(false))
            {
                return null;
            }

            caughtUp = true;
            if ((SessionEventRules.CheckDeltas(session.State, deltas, writer) ?? SessionRules.CheckDeltasFence(session.State, deltas)) is { } rejection)
            {
                // Decided on the state in memory: a refusal stands only once that state is known to be the stream's.
                // A stream closed, deleted or replaced meanwhile is answered as the lookup path answers it (a closed
                // stream's own 409, a deleted one's 410), not with a rule of the session it was.
                if (decidedInMemory && attempt == 1)
                {
                    var lookup = await _store.GetAsync(session.Path, cancellationToken).ConfigureAwait(false);
                    if (lookup.Status != StreamLookupStatus.Found || lookup.Stream is not { } stream || stream.Closed || stream.Id != session.StreamId)
                    {
                        return null;
                    }

                    if (stream.TailPosition != session.State.Position)
                    {
                        continue;
                    }
                }

                return (null, rejection);
            }

            // Seen through whoever stops waiting (see AppendLockedAsync): the held state must learn what was stored.
            var result = await _store.AppendAsync(request with { ExpectedTail = session.State.Position, ExpectedStreamId = session.StreamId, Progress = true, Annotation = SessionAppendAnnotation.NoneEnded }, CancellationToken.None).ConfigureAwait(false);
            if (Learn(session, result, attempt))
            {
                continue;
            }

            if (result.Status == AppendStatus.Appended)
            {
                if (session.State.Position == result.TailPosition - request.Data.Units)
                {
                    session.State.ApplyDeltas(deltas, result.TailPosition);
                }

                Telemetry.DeltasCommitted(deltas);
            }

            return (result, null);
        }
    }

    /// <summary>
    /// What a session write's outcome tells of the session held: a tail another node moved (not heard of yet: the next
    /// attempt asks the store, and true while attempts are left, to decide the write again), a stream gone (the session
    /// dropped from memory) or closed (left to the store from then on).
    /// </summary>
    private bool Learn(Session session, AppendResult result, int attempt)
    {
        switch (result.Status)
        {
            case AppendStatus.TailMoved:
                session.Doubt();
                return attempt < MaxAttempts;
            case AppendStatus.NotFound or AppendStatus.Gone:
                Forget(session);
                return false;
            case AppendStatus.StreamClosed:
                session.Closed = true;
                return false;
            default:
                return false;
        }
    }

    /// <summary>
    /// The answer to an append whose session stream went away while it was decided: deleted (as the store sees the path
    /// now), or replaced by another stream, when the caller is told the session changed.
    /// </summary>
    private async Task<AppendResult> ReplacedAsync(string path, CancellationToken cancellationToken)
    {
        var lookup = await _store.GetAsync(path, cancellationToken).ConfigureAwait(false);
        return new AppendResult
        {
            Status = lookup.Status switch
            {
                StreamLookupStatus.Gone => AppendStatus.Gone,
                StreamLookupStatus.NotFound => AppendStatus.NotFound,
                _ => AppendStatus.TailMoved,
            },
        };
    }

    /// <summary>Drops a session whose stream is gone from memory; call under its lock.</summary>
    private void Forget(Session session)
    {
        session.Evicted = true;
        _sessions.TryRemove(new KeyValuePair<string, Session>(session.Path[Prefix.Length..], session));
    }

    /// <summary>Posts a message from a participant, applying the session's policy when a run is active.</summary>
    public Task<SessionOperationResult> PostMessageAsync(string sessionId, PostMessageRequest request, CancellationToken cancellationToken)
        => DecideAsync(sessionId, state => SessionRules.PostMessage(state, request, _events), cancellationToken, RetriedMessageAsync);

    /// <summary>
    /// A message posted again with its id, already stored: the request that stored it may have failed after that, before
    /// the message was made a turn, so one that no run answers yet is made one again (a turn marked twice is one turn).
    /// </summary>
    private async Task RetriedMessageAsync(Session session, string messageId)
    {
        if (session.State.GetMessage(messageId) is { RoutedTo: null } message && message.Role == MessageRole.User
            && !session.State.Runs.Any(run => run.Trigger == messageId))
        {
            await _turns.MarkAsync(session.Path, session.StreamId, session.State.Position, CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Cancels an active run: records the cancel, marks the run and its partial reply cancelled, and fences the run so
    /// no further content for it is accepted. The returned offset is the fence.
    /// </summary>
    public async Task<SessionOperationResult> CancelAsync(string sessionId, string runId, string by, string? controlId, CancellationToken cancellationToken)
    {
        var repeated = false;
        var result = await DecideAsync(
            sessionId,
            state => SessionRules.Cancel(state, runId, by, _events, controlId),
            cancellationToken,
            nothingToAppend: (_, _) =>
            {
                // The same cancel again (a retry): acknowledged, but nothing was cancelled now.
                repeated = true;
                return Task.CompletedTask;
            }).ConfigureAwait(false);
        if (result.Status == 200 && !repeated)
        {
            Telemetry.Cancels.Add(1);
            Log.Cancelled(_logger, sessionId, runId, StreamOffset.Format(result.Offset));
        }

        return result;
    }

    /// <summary>
    /// Asks for a reply to be written again (see <see cref="SessionRules.Regenerate"/>): a regenerate control, after a
    /// cancel of the reply's run when it is still running and <paramref name="mayStop"/>. The session becomes a turn for
    /// its agents. Also answers the message the reply answers, which the new run answers again.
    /// </summary>
    public async Task<(SessionOperationResult Result, string? Trigger)> RegenerateAsync(string sessionId, string? replyId, string by, string? controlId, bool mayStop, CancellationToken cancellationToken)
    {
        string? trigger = null;
        var result = await DecideAsync(
            sessionId,
            state =>
            {
                var decision = SessionRules.Regenerate(state, replyId, by, _events, controlId, mayStop);
                if (!decision.IsRejected)
                {
                    // Under the lock: the control is the one just decided, or one the session holds.
                    var control = decision.Events.Select(e => e.Value).OfType<SessionControl>().FirstOrDefault(c => c.Id == decision.Id)
                        ?? state.Controls.FirstOrDefault(c => c.Id == decision.Id);
                    trigger = control?.RunId is { } runId ? state.GetRun(runId)?.Trigger : null;
                }

                return decision;
            },
            cancellationToken,
            RepeatedRegenerateAsync).ConfigureAwait(false);
        return (result, trigger);
    }

    /// <summary>
    /// A regenerate accepted with nothing appended (a retry, or a request already waiting): the request that stored it may
    /// have failed after that, before the session was made a turn, so one that no run has taken up yet is made one again.
    /// </summary>
    private async Task RepeatedRegenerateAsync(Session session, string controlId)
    {
        var state = session.State;
        if (state.Controls.FirstOrDefault(c => c.Id == controlId) is { RunId: { } runId }
            && state.GetRun(runId)?.MessageId is { } replyId && state.GetMessage(replyId)?.RunId == runId)
        {
            await _turns.MarkAsync(session.Path, session.StreamId, state.Position, CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Edits a user message (see <see cref="SessionRules.EditMessage"/>): its content is replaced, what came after it taken
    /// out, and every agent's reply to it asked to be written again, which makes the session a turn for its agents.
    /// </summary>
    public Task<SessionOperationResult> EditMessageAsync(string sessionId, string messageId, string author, IReadOnlyList<MessagePart> parts, bool mayStop, CancellationToken cancellationToken)
        => DecideAsync(sessionId, state => SessionRules.EditMessage(state, messageId, author, parts, _events, mayStop), cancellationToken, RepeatedEditAsync);

    /// <summary>
    /// An edit accepted with nothing appended (a retry): the request that stored it may have failed after that, before the
    /// session was made a turn, so replies to it still waiting to be written again make it one again.
    /// </summary>
    private async Task RepeatedEditAsync(Session session, string messageId)
    {
        var state = session.State;
        var waiting = state.Runs.Where(r => r.Trigger == messageId && r.Id is not null).GroupBy(r => r.Agent).Select(g => g.Last())
            .Any(run => SessionRules.IsAskedToWriteAgain(state, run.Id));
        if (waiting)
        {
            await _turns.MarkAsync(session.Path, session.StreamId, state.Position, CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>Delivers a new instruction to a running agent.</summary>
    public Task<SessionOperationResult> SteerAsync(string sessionId, string runId, string by, string text, string? controlId, CancellationToken cancellationToken)
        => DecideAsync(sessionId, state => SessionRules.Steer(state, runId, by, text, _events, controlId), cancellationToken);

    /// <summary>
    /// A human takes the session's control lease: the active agent run is stopped (per the session's handoff policy)
    /// and new user messages are routed to the human until control is handed back.
    /// </summary>
    public Task<SessionOperationResult> TakeControlAsync(string sessionId, string human, CancellationToken cancellationToken)
        => DecideAsync(sessionId, state => SessionRules.TakeControl(state, human, _events), cancellationToken);

    /// <summary>Hands control back to the agents.</summary>
    public Task<SessionOperationResult> ReturnControlAsync(string sessionId, string human, CancellationToken cancellationToken)
        => DecideAsync(sessionId, state => SessionRules.ReturnControl(state, human, _events), cancellationToken);

    /// <summary>
    /// Decides a session operation on the session's caught-up state and appends what it decided, under the lock. A
    /// rejection is answered 400 for an invalid message, 409 otherwise.
    /// </summary>
    /// <param name="sessionId">The session.</param>
    /// <param name="decide">The rule.</param>
    /// <param name="cancellationToken">Cancels the wait for the session's lock.</param>
    /// <param name="nothingToAppend">Runs under the lock when the rule accepts with nothing to append, with the decision's id.</param>
    private Task<SessionOperationResult> DecideAsync(string sessionId, Func<SessionState, SessionDecision> decide, CancellationToken cancellationToken, Func<Session, string, Task>? nothingToAppend = null)
        => UnderLockAsync(sessionId, async session =>
        {
            var decision = decide(session.State);
            if (decision.IsRejected)
            {
                var rejection = decision.Rejection;
                return new SessionOperationResult(rejection.Code == SessionRejection.InvalidMessage ? 400 : 409, null, 0, rejection.Code, rejection.Message);
            }

            if (decision.Events.Count == 0)
            {
                if (nothingToAppend is not null)
                {
                    await nothingToAppend(session, decision.Id).ConfigureAwait(false);
                }

                return SessionOperationResult.Ok(decision.Id, session.State.Position) with { NothingAppended = true };
            }

            var result = await AppendLockedAsync(session, decision.Events).ConfigureAwait(false);
            return Answer(result, decision.Id);
        }, cancellationToken);

    /// <summary>
    /// Appends <paramref name="events"/> unless <paramref name="alreadyDone"/> holds on the session's current state (so a
    /// change decided on several nodes at once is written once). Answers <c>ALREADY</c> when nothing was written.
    /// </summary>
    public Task<SessionOperationResult> AppendUnlessAsync(string sessionId, Func<SessionState, bool> alreadyDone, Func<SessionState, IReadOnlyList<SessionEvent>> events, CancellationToken cancellationToken)
        => UnderLockAsync(sessionId, async session =>
        {
            if (alreadyDone(session.State))
            {
                return SessionOperationResult.Rejected("ALREADY", "The session already records this.");
            }

            var result = await AppendLockedAsync(session, events(session.State)).ConfigureAwait(false);
            return Answer(result, sessionId);
        }, cancellationToken);

    /// <summary>A session operation's answer from its append's: a closed session takes nothing more, a missing one is not found.</summary>
    private static SessionOperationResult Answer(AppendResult result, string id) => result.Status switch
    {
        AppendStatus.Appended => SessionOperationResult.Ok(id, result.TailPosition),
        AppendStatus.StreamClosed => SessionOperationResult.Closed,
        _ => SessionOperationResult.NotFound,
    };

    /// <summary>Runs a session operation under the session's lock, with its state caught up with the stream.</summary>
    /// <param name="sessionId">The session.</param>
    /// <param name="operation">The operation.</param>
    /// <param name="cancellationToken">Cancels the wait for the lock and the catch-up.</param>
    /// <param name="trustHeard">Whether a state holding everything the fan-out told of the stream is taken as it is, with no lookup (for a read that need not see another node's latest write).</param>
    private async Task<SessionOperationResult> UnderLockAsync(string sessionId, Func<Session, Task<SessionOperationResult>> operation, CancellationToken cancellationToken, bool trustHeard = false)
    {
        for (var opened = 1; ; opened++)
        {
            var session = await AcquireAsync(sessionId, cancellationToken).ConfigureAwait(false);
            if (session is null)
            {
                return SessionOperationResult.NotFound;
            }

            try
            {
                for (var attempt = 1; ; attempt++)
                {
                    try
                    {
                        if (!(trustHeard && attempt == 1 && session.KnownCurrent(_store.Fanout.Interruptions))
                            && !await CatchUpAsync(session, cancellationToken).ConfigureAwait(false))
                        {
                            break;
                        }

                        return await operation(session).ConfigureAwait(false);
                    }
                    catch (TailMovedException) when (attempt < MaxAttempts)
                    {
                        // Another node appended first: decide again on the caught-up state.
                    }
                    catch (TailMovedException)
                    {
                        // Other nodes appended first every time: answered as a raw append in that case is, not as a fault.
                        return SessionOperationResult.Contended;
                    }
                }
            }
            finally
            {
                session.Lock.Release();
            }

            // The stream at the path is not the one held (see SnapshotAsync): opened afresh from the store, once.
            if (opened == 2)
            {
                return SessionOperationResult.NotFound;
            }
        }
    }

    /// <summary>
    /// Checks a direct append: every event must meet <see cref="SessionEventRules"/> for its writer, and nothing may add
    /// content to a run that has been cancelled.
    /// </summary>
    // Deltas are restated in full by the reply's final message event: an append of nothing else is progress.
    private static bool OnlyDeltas(JsonArray messages)
    {
        foreach (var message in messages)
        {
            if (message is not JsonObject change || change["type"] is not JsonValue type
                || !type.TryGetValue<string>(out var name) || name != SessionEventTypes.Delta)
            {
                return false;
            }
        }

        return messages.Count > 0;
    }

    private static (JsonArray Messages, SessionEventRejection? Rejection) Check(Session session, StreamPayload payload, SessionWriter writer)
    {
        JsonArray messages;
        try
        {
            messages = JsonFraming.ParseMessages(payload.Data.Span);
        }
        catch (JsonException ex)
        {
            return ([], new SessionEventRejection(400, "INVALID_EVENT", "Session events must be JSON objects: " + ex.Message));
        }

        // The fence is checked once the events are known to be sound. The payload is an append's body to a JSON stream,
        // framed (and so checked for depth and decodable text) by JsonFraming.TryFrame on its way in.
        return (messages, SessionEventRules.CheckAppend(session.State, messages, writer, framed: true) ?? SessionRules.CheckFence(session.State, messages));
    }

    /// <summary>
    /// Checks the initial events of a session stream created by a raw <c>PUT /v1/stream/sessions/{id}</c>: the same rules
    /// as an append to an empty session. A fork under <c>sessions/</c> must fork another session, whose events met them.
    /// </summary>
    public static SessionEventRejection? CheckCreate(string? forkedFrom, StreamPayload initialData, SessionWriter writer)
    {
        if (forkedFrom is not null && !IsSessionPath(forkedFrom))
        {
            return new SessionEventRejection(403, "SERVER_OWNED_EVENT", "A stream under sessions/ can only fork another session.");
        }

        if (initialData.IsEmpty)
        {
            return null;
        }

        // A fork's first events would be judged against its source's state (owners, fences), which a create does not
        // materialize: a fork of a session starts as a copy, and anything new is appended afterwards.
        if (forkedFrom is not null)
        {
            return new SessionEventRejection(400, "INVALID_EVENT", "A fork of a session takes no initial events; append them once it exists.");
        }

        JsonArray messages;
        try
        {
            messages = JsonFraming.ParseMessages(initialData.Data.Span);
        }
        catch (JsonException ex)
        {
            return new SessionEventRejection(400, "INVALID_EVENT", "Session events must be JSON objects: " + ex.Message);
        }

        return SessionEventRules.CheckAppend(new SessionState(), messages, writer);
    }

    private async Task<AppendResult> AppendLockedAsync(Session session, IReadOnlyList<SessionEvent> decided)
    {
        var events = decided.Select(e => e.ToJson()).ToList();
        var payload = Frame(events);
        var request = new AppendRequest { Path = session.Path, ContentType = StreamContentType.Json, Data = payload, ExpectedTail = session.State.Position, ExpectedStreamId = session.StreamId, Annotation = SessionAppendAnnotation.Of(events) };

        // Seen through whoever stops waiting: the store commits a queued append anyway, and what follows a commit (the
        // held state, the agents' turn) must not be skipped because a client hung up right after sending its message.
        var result = await _store.AppendAsync(request, CancellationToken.None).ConfigureAwait(false);
        if (result.Status == AppendStatus.TailMoved)
        {
            session.Doubt();
            throw new TailMovedException();
        }

        if (result.Status != AppendStatus.Appended)
        {
            return result;
        }

        if (session.State.Position == result.TailPosition - payload.Units)
        {
            session.State.ApplyReadableMessages(events, result.TailPosition);
        }

        await CommittedAsync(session, events, result.TailPosition).ConfigureAwait(false);
        return result;
    }

    /// <summary>
    /// A session created as a raw stream with its first events (checked by <see cref="CheckCreate"/> before it was
    /// stored), or as a fork of another: when it holds something to answer, it becomes a turn, as an append of those
    /// events would have. A create repeated (<paramref name="created"/> false: the stream was there, its first answer
    /// perhaps lost with the turn it should have made) is judged by what the session holds, as a fork is, since a mark
    /// already made is not made twice for nothing: a session whose question was answered makes no turn.
    /// </summary>
    public async Task CreatedAsync(StreamInfo stream, StreamPayload initialData, bool created, bool forked)
    {
        // A closed session takes no answer: its turn could only fail, again and again.
        var awaits = !stream.Closed && (created && !forked
            ? NeedsAnswer(JsonFraming.ParseMessages(initialData.Data.Span))
            : stream.TailPosition > 0 && IsSessionPath(stream.Path)
                // Read through whoever stops waiting, as the mark it decides is.
                && await ReadStateAsync(stream.Path[Prefix.Length..], SessionRules.AwaitsAgents, CancellationToken.None).ConfigureAwait(false));
        if (awaits)
        {
            await _turns.MarkAsync(stream.Path, stream.Id, stream.TailPosition, CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Hands a committed append's events, parsed once, to the agents' turns when they need an answer (durable before the
    /// append is acknowledged).
    /// </summary>
    private async Task CommittedAsync(Session session, IEnumerable<JsonNode?> events, long tailPosition)
    {
        var path = session.Path;
        session.RememberMessageTraces(events);
        Telemetry.SessionEventsCommitted(events, session.MessageTrace);
        if (NeedsAnswer(events))
        {
            // Not the caller's token: the events are stored, and a client that hangs up now (a closed tab, a "stop" in
            // the chat) must not leave its message without a turn, which no agent would ever answer.
            await _turns.MarkAsync(path, session.StreamId, tailPosition, CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Whether committed events give agents something to answer: a user message not routed to a human, a reply to write
    /// again, or the session handed back to the agents. Such a session becomes a turn of every registered agent (<see cref="Agents.AgentTurnService"/>).
    /// </summary>
    private static bool NeedsAnswer(IEnumerable<JsonNode?> events)
    {
        foreach (var node in events)
        {
            var value = node?["value"];
            var type = SessionJson.Text(node, "type");
            if ((type == SessionEventTypes.Message && SessionJson.Text(node?["headers"], "operation") == "insert" && SessionJson.Text(value, "role") == "user" && value?["routedTo"] is null)
                || (type == SessionEventTypes.Handoff && SessionJson.Text(value, "kind") == "agent")
                || (type == SessionEventTypes.Control && SessionJson.Text(value, "action") == "regenerate"))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Opens the session and takes its lock; null when no session stream exists. The caller releases the lock. A session
    /// evicted while this waited for the lock is opened again.
    /// </summary>
    private async Task<Session?> AcquireAsync(string sessionId, CancellationToken cancellationToken)
    {
        while (true)
        {
            var session = await OpenAsync(sessionId, cancellationToken).ConfigureAwait(false);
            if (session is null)
            {
                return null;
            }

            await session.Lock.WaitAsync(cancellationToken).ConfigureAwait(false);
            if (!session.Evicted)
            {
                session.LastUsed = _time.GetTimestamp();
                return session;
            }

            session.Lock.Release();
        }
    }

    private async Task<Session?> OpenAsync(string sessionId, CancellationToken cancellationToken)
    {
        if (_sessions.TryGetValue(sessionId, out var held) && held.StreamKnown(_store.Fanout.Interruptions))
        {
            // Still the stream at its path, as far as the fan-out told (a delete or another stream there raises a doubt).
            return held;
        }

        var path = StreamPath(sessionId);
        var lookup = await _store.GetAsync(path, cancellationToken).ConfigureAwait(false);
        if (lookup.Status != StreamLookupStatus.Found || !lookup.Stream!.IsJson)
        {
            _sessions.TryRemove(sessionId, out _);
            return null;
        }

        if (_sessions.TryGetValue(sessionId, out var session) && session.StreamId == lookup.Stream.Id)
        {
            return session;
        }

        // New to memory, or a new incarnation of the stream (deleted and re-created): start over.
        var fresh = new Session(path) { StreamId = lookup.Stream.Id, LastUsed = _time.GetTimestamp() };
        session = _sessions.AddOrUpdate(sessionId, fresh, (_, existing) => existing.StreamId == lookup.Stream.Id ? existing : fresh);
        if (ReferenceEquals(session, fresh) && _sessions.Count > _options.MaxInMemory)
        {
            Trim(keep: fresh);
        }

        return session;
    }

    /// <summary>
    /// Evicts sessions idle for longer than the idle timeout, then the least recently used ones beyond the bound. A
    /// session whose lock is held is in use and stays. Never throws: it runs on a timer.
    /// </summary>
    private void Trim(Session? keep)
    {
        if (Interlocked.Exchange(ref _trimming, 1) == 1)
        {
            return;
        }

        try
        {
            var now = _time.GetTimestamp();
            var kept = new List<KeyValuePair<string, Session>>();
            foreach (var entry in _sessions)
            {
                if (ReferenceEquals(entry.Value, keep) || _time.GetElapsedTime(entry.Value.LastUsed, now) < _options.MemoryIdleTimeout || !TryEvict(entry))
                {
                    kept.Add(entry);
                }
            }

            var excess = kept.Count - _options.MaxInMemory;
            if (excess > 0)
            {
                foreach (var entry in kept.Where(e => !ReferenceEquals(e.Value, keep)).OrderBy(e => e.Value.LastUsed))
                {
                    if (excess == 0)
                    {
                        break;
                    }

                    if (TryEvict(entry))
                    {
                        excess--;
                    }
                }
            }
        }
        catch (Exception ex)
        {
            Log.TrimFailed(_logger, ex);
        }
        finally
        {
            Volatile.Write(ref _trimming, 0);
        }
    }

    private bool TryEvict(KeyValuePair<string, Session> entry)
    {
        var session = entry.Value;
        if (!session.Lock.Wait(0))
        {
            return false;
        }

        try
        {
            // Marked under the lock, so a request that found the session before its removal opens it again.
            session.Evicted = true;
            _sessions.TryRemove(entry);
            return true;
        }
        finally
        {
            session.Lock.Release();
        }
    }

    /// <summary>
    /// Applies whatever the stream has beyond the materialized position. Call under the session lock. False, with the
    /// session dropped from memory, when the stream at its path is gone or another one.
    /// </summary>
    private async Task<bool> CatchUpAsync(Session session, CancellationToken cancellationToken)
    {
        var interruptions = _store.Fanout.Interruptions;
        var doubts = session.Doubts;
        var lookup = await _store.GetAsync(session.Path, cancellationToken).ConfigureAwait(false);
        if (lookup.Stream is not { } stream || stream.Id != session.StreamId)
        {
            // Gone, or another stream at its path: this session is over, and the next operation opens what is there.
            Forget(session);
            return false;
        }

        session.MayExpire = stream.TtlSeconds is not null || stream.ExpiresAt is not null;
        if (stream.Closed)
        {
            session.Closed = true;
        }

        // What the store holds counts as heard: a state that could not be read that far is not taken as current.
        session.HeardUpTo(stream.TailPosition);

        while (session.State.Position < stream.TailPosition)
        {
            var read = await _store.ReadAsync(stream, session.State.Position, 1 << 20, cancellationToken).ConfigureAwait(false);
            if (read.GoneBefore is not null || read.NextPosition == session.State.Position)
            {
                // Deleted since the lookup (or its history removed): this session cannot be caught up.
                Forget(session);
                return false;
            }

            foreach (var chunk in read.Chunks)
            {
                session.State.ApplyChunk(chunk.Data.Span, chunk.End);
            }

            if (read.Chunks.Count == 0)
            {
                break;
            }
        }

        session.Settle(doubts, interruptions);
        return true;
    }

    private static StreamPayload Frame(IReadOnlyList<JsonObject> events)
    {
        var bytes = DurableJson.ToUtf8Bytes(new JsonArray([.. events]));

        // Every field the server writes was checked where it came in; an event that cannot be framed is a server bug,
        // and must never be committed as something else (or as nothing).
        return JsonFraming.TryFrame(bytes, allowEmptyArray: false, out var payload, out var error)
            ? payload
            : throw new InvalidOperationException("A server-written session event could not be framed: " + error);
    }

    /// <summary>How often a session write is decided again when other nodes keep appending first.</summary>
    private const int MaxAttempts = 64;

    /// <summary>A session write lost the race to another node's append; the operation is decided again.</summary>
    private sealed class TailMovedException : Exception;

    private sealed class Session(string path)
    {
        public string Path { get; } = path;

        public long StreamId { get; set; }

        public SemaphoreSlim Lock { get; } = new(1, 1);

        public SessionState State { get; } = new();

        /// <summary>When the session was last used (<see cref="TimeProvider.GetTimestamp"/>).</summary>
        public long LastUsed { get; set; }

        /// <summary>Set (under the lock) when the session was dropped from memory.</summary>
        public bool Evicted { get; set; }

        // What the fan-out told of the stream since the store was last asked. The highest end heard; a count of doubts
        // (the stream deleted or replaced, a write refused because another node moved the tail), where a fresh session
        // starts in doubt; and, as of the last time the store was asked, the doubts and the fan-out's interruptions then.
        private long _heardTail;
        private int _doubts = 1;
        private int _settledDoubts;
        private long _settledInterruptions = -1;

        /// <summary>Whether the stream has a time to live, which ends it with nothing published: then the store is always asked.</summary>
        public bool MayExpire { get; set; }

        /// <summary>Whether the stream was closed, as looked up, heard or answered (a close is for good): appends to it are answered by the store.</summary>
        public bool Closed { get; set; }

        public int Doubts => Volatile.Read(ref _doubts);

        /// <summary>Whether the state may be behind the stream since the store was last asked (a doubt not settled yet).</summary>
        public bool Doubted => Volatile.Read(ref _doubts) != Volatile.Read(ref _settledDoubts);

        /// <summary>Takes a committed change of the stream at this session's path (on the commit path: never blocks).</summary>
        public void Heard(LiveAppend change)
        {
            if (change.Deleted || change.StreamId != StreamId)
            {
                Doubt();
                return;
            }

            if (change.Closed)
            {
                Closed = true;
            }

            HeardUpTo(change.Chunk.End);
        }

        /// <summary>Records that the stream reaches at least <paramref name="tail"/>.</summary>
        public void HeardUpTo(long tail)
        {
            long heard;
            while (tail > (heard = Volatile.Read(ref _heardTail)) && Interlocked.CompareExchange(ref _heardTail, tail, heard) != heard)
            {
            }
        }

        /// <summary>The state may be behind the stream in a way nothing published tells: the store is asked next time.</summary>
        public void Doubt() => Interlocked.Increment(ref _doubts);

        /// <summary>Records (under the lock) that the store was asked and the state caught up, as of these counts.</summary>
        public void Settle(int doubts, long interruptions)
        {
            Volatile.Write(ref _settledDoubts, doubts);
            Volatile.Write(ref _settledInterruptions, interruptions);
        }

        /// <summary>Whether the stream is the one in memory, as far as the fan-out told since the store was last asked.</summary>
        public bool StreamKnown(long interruptions)
            => !MayExpire && !Evicted && Volatile.Read(ref _doubts) == Volatile.Read(ref _settledDoubts) && interruptions == Volatile.Read(ref _settledInterruptions);

        /// <summary>Whether the state (read under the lock) holds everything heard of the stream, which is known.</summary>
        public bool KnownCurrent(long interruptions) => StreamKnown(interruptions) && State.Position >= Volatile.Read(ref _heardTail);

        // The trace of the request that posted each of the latest messages, for the span of the run that answers it.
        private readonly Queue<(string MessageId, ActivityContext Trace)> _messageTraces = new();

        /// <summary>Remembers (under the lock) the current trace for user messages inserted by these events.</summary>
        public void RememberMessageTraces(IEnumerable<JsonNode?> events)
        {
            if (Activity.Current?.Context is not { } trace || trace == default)
            {
                return;
            }

            foreach (var node in events)
            {
                if (SessionJson.Text(node, "type") == SessionEventTypes.Message && SessionJson.Text(node?["headers"], "operation") == "insert"
                    && SessionJson.Text(node?["value"], "role") == "user" && SessionJson.Text(node, "key") is { } id)
                {
                    _messageTraces.Enqueue((id, trace));
                    if (_messageTraces.Count > MaxMessageTraces)
                    {
                        _messageTraces.Dequeue();
                    }
                }
            }
        }

        /// <summary>The trace of the request that posted message <paramref name="messageId"/>, if it is remembered.</summary>
        public ActivityContext MessageTrace(string messageId)
        {
            foreach (var (id, trace) in _messageTraces)
            {
                if (id == messageId)
                {
                    return trace;
                }
            }

            return default;
        }

        private const int MaxMessageTraces = 8;
    }

    private static partial class Log
    {
        [LoggerMessage(300, LogLevel.Information, "Session {SessionId}: run {RunId} cancelled, fence at {Fence}")]
        public static partial void Cancelled(ILogger logger, string sessionId, string runId, string fence);

        [LoggerMessage(301, LogLevel.Warning, "Evicting idle sessions from memory failed")]
        public static partial void TrimFailed(ILogger logger, Exception exception);
    }
}

/// <summary>The outcome of a session operation.</summary>
internal readonly record struct SessionOperationResult(int Status, string? Id, long Offset, string? Code, string? Message)
{
    /// <summary>Whether the operation was accepted with nothing to append (the same request again, say).</summary>
    public bool NothingAppended { get; init; }

    public static SessionOperationResult NotFound => new(404, null, 0, "SESSION_NOT_FOUND", "No session with this id.");

    /// <summary>The session's stream is closed: nothing more is appended to it.</summary>
    public static SessionOperationResult Closed => new(409, null, 0, "STREAM_CLOSED", "The session is closed; nothing more is accepted.");

    /// <summary>
    /// Other nodes kept appending to the session while the operation was decided; nothing was written. A 503, as for a
    /// store out of reach: the clients send the operation again (its ids make that safe).
    /// </summary>
    public static SessionOperationResult Contended => new(503, null, 0, "SESSION_BUSY", "The session kept changing while the operation was decided; nothing was written. Try again.");

    public static SessionOperationResult Ok(string id, long offset) => new(200, id, offset, null, null);

    public static SessionOperationResult Rejected(string code, string message) => new(409, null, 0, code, message);
}
