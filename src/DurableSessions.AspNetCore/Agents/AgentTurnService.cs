using System.Threading.Channels;
using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using DurableSessions.AspNetCore.Streams;
using DurableSessions.Live;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DurableSessions.AspNetCore.Agents;

/// <summary>
/// The durable record of turns waiting for agents, handed out with leases the way pull-wake subscriptions are
/// (protocol §7.2–7.3): a user message an agent must answer makes its session a turn of every registered agent; a
/// wake event goes to the agent's wake stream; one worker claims the turn with a lease, heartbeats and acks it, or
/// releases it; a lease that runs out is woken again for another worker. Only waiting turns are stored, so an idle
/// session costs nothing.
/// </summary>
/// <remarks>
/// Unlike a subscription, whose single lease covers all its streams, every turn has its own lease, so any number of
/// workers share one agent's turns and each turn is served by exactly one of them at a time. All state lives in the
/// store's documents; on a shared store every operation runs under the store's lock and first reads the turns it works
/// on (one, or all of them for a claim of the oldest), so any node can answer any call. The operations waiting on one
/// node enter together, as a batch that takes the lock and reads once. Thread-safe.
/// </remarks>
internal sealed partial class AgentTurnService : IHostedService, IDisposable
{
    internal const string TurnsCollection = "agent-turns";
    internal const string AgentsCollection = "agents";
    private static readonly TimeSpan SharedLockLease = TimeSpan.FromSeconds(30);

    // Bounds how long one batch holds the shared lock, so the other nodes' operations are not kept waiting for long.
    private const int MaxBatch = 128;

    private readonly StreamStore _store;
    private readonly TimeProvider _time;
    private readonly AgentTurnOptions _options;
    private readonly ILogger _logger;
    private readonly Coordination.SharedSection _section;

    // The writes issued by the operation in the critical section, and the turns they write; only touched under it.
    private List<Task>? _writes;
    private HashSet<string>? _written;
    private readonly Dictionary<string, TurnRecord> _turns = new(StringComparer.Ordinal);

    // On a shared store: each turn's document as this node last read or wrote it. A call reads the turns it works on
    // again (a claim of the oldest, all of them), and only those whose bytes differ are parsed.
    private readonly Dictionary<string, byte[]> _loaded = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, AgentRegistration> _agents = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, byte> _wakeStreams = new(StringComparer.Ordinal);

    private readonly ITimer _expiry;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _scheduledExpiry = long.MaxValue;

    // On a shared store: the operations waiting for the critical section, run in batches by one drain at a time.
    private readonly ConcurrentQueue<PendingOperation> _pending = new();
    private int _draining;
    private long _batches;
    private readonly Channel<(string Stream, long StreamId)> _deletedSessions = Channel.CreateBounded<(string, long)>(new BoundedChannelOptions(4096) { SingleReader = true, FullMode = BoundedChannelFullMode.DropWrite });
    private readonly CancellationTokenSource _stopping = new();
    private Task _forgetting = Task.CompletedTask;

    public AgentTurnService(StreamStore store, IOptions<AgentTurnOptions> options, ILogger<AgentTurnService> logger)
    {
        _store = store;
        _time = store.TimeProvider;
        _options = options.Value;
        _logger = logger;
        _section = new Coordination.SharedSection(store, TurnsCollection, SharedLockLease, logger);
        _expiry = _time.CreateTimer(_ => _ = ExpireLeasesAsync(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);

        // Claims waiting on this node wake when any node writes a wake event (the store's fan-out spans nodes).
        _store.Fanout.AddObserver(change =>
        {
            if (_wakeStreams.ContainsKey(change.Path))
            {
                Signal();
            }

            // A session deleted (or expired) takes its waiting turns with it, judged by the node that deleted it: a turn
            // no worker may claim (its grants leave the session out) would otherwise never be dropped. Bounded: a turn
            // left over when the queue is full is dropped by the claim that finds its session gone.
            if (change.Deleted && !change.IsRemote && change.Path.StartsWith("sessions/", StringComparison.Ordinal) && (!_agents.IsEmpty || _store.IsShared))
            {
                _deletedSessions.Writer.TryWrite((change.Path, change.StreamId));
            }
        });
    }

    /// <summary>How many turns wait or are claimed now (for tests and diagnostics).</summary>
    internal int TurnCount => _turns.Count;

    /// <summary>On a shared store: how many batches this node has run (for tests and diagnostics).</summary>
    internal long BatchCount => Interlocked.Read(ref _batches);

    /// <summary>On a shared store: how many operations wait for the next batch (for tests and diagnostics).</summary>
    internal int PendingCount => _pending.Count;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        // Read in full once, here: the section's own entry read would only do it twice.
        await using (await EnterAsync(static _ => Task.CompletedTask, cancellationToken).ConfigureAwait(false))
        {
            await ReloadAsync(cancellationToken).ConfigureAwait(false);
            ScheduleExpiry();
        }

        _forgetting = ForgetDeletedSessionsAsync();
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _expiry.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        Signal();
        await _stopping.CancelAsync().ConfigureAwait(false);
        await _forgetting.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    public void Dispose()
    {
        _expiry.Dispose();
        _section.Dispose();
        _stopping.Dispose();
    }

    /// <summary>Drops the turns waiting on sessions deleted on this node, one session at a time.</summary>
    private async Task ForgetDeletedSessionsAsync()
    {
        try
        {
            await foreach (var (stream, streamId) in _deletedSessions.Reader.ReadAllAsync(_stopping.Token).ConfigureAwait(false))
            {
                try
                {
                    await RunAsync(TurnReads.OfStream(stream), () => ForgetDeletedLockedAsync(stream, streamId), _stopping.Token).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    // Left for the claim that finds the session gone.
                    Log.DeletedSessionNotForgotten(_logger, ex, stream);
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private Task<bool> ForgetDeletedLockedAsync(string stream, long streamId)
    {
        // A turn a worker holds stays until its next heartbeat, ack or release, which is answered 404 and ends it.
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        foreach (var turn in _turns.Values.Where(t => t.Stream == stream && (t.StreamId == streamId || t.StreamId == 0) && !IsHeld(t, now)).ToList())
        {
            Drop(turn);
        }

        return Task.FromResult(true);
    }

    /// <summary>Whether <paramref name="agent"/> is a valid agent id: 1–128 letters, digits, '-', '_', '.' or ':'.</summary>
    public static bool IsValidAgentId(string agent)
        => agent is not ("." or "..") && agent.Length is > 0 and <= 128 && agent.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or ':');

    /// <summary>The wake stream of an agent: an ordinary JSON stream that receives one wake event per waiting turn.</summary>
    public static string WakeStreamOf(string agent) => "agents/" + agent + "/wake";

    /// <summary>Registers an agent (or re-confirms it, updating its lease); from then on, every user message is its turn.</summary>
    public async Task<(AgentRegisterStatus Status, AgentRegistration? Agent)> RegisterAsync(string agent, long? leaseTtlMs, string? description, CancellationToken cancellationToken)
    {
        await using var held = await EnterAsync(static _ => Task.CompletedTask, cancellationToken).ConfigureAwait(false);
        await RefreshAgentsAsync(cancellationToken).ConfigureAwait(false);
        var existing = _agents.GetValueOrDefault(agent);
        if (existing is null && _agents.Count >= _options.MaxAgents)
        {
            return (AgentRegisterStatus.LimitReached, null);
        }

        var registration = new AgentRegistration
        {
            Agent = agent,
            LeaseTtlMs = leaseTtlMs ?? existing?.LeaseTtlMs ?? (long)_options.DefaultLeaseTtl.TotalMilliseconds,
            WakeStream = WakeStreamOf(agent),
            Description = description ?? existing?.Description,
            CreatedAt = existing?.CreatedAt ?? _time.GetUtcNow(),
        };
        // Without its wake stream a new agent would be woken nowhere (a webhook agent never): refused, and said why.
        if (!await EnsureWakeStreamAsync(registration.WakeStream, cancellationToken).ConfigureAwait(false) && existing is null)
        {
            return (AgentRegisterStatus.WakeStreamUnavailable, null);
        }

        if (registration != existing)
        {
            await _section.PutDocumentAsync(AgentsCollection, agent, JsonSerializer.SerializeToUtf8Bytes(registration, AgentTurnJsonContext.Default.AgentRegistration), cancellationToken).ConfigureAwait(false);
        }

        _agents[agent] = registration;
        _wakeStreams[registration.WakeStream] = 0;
        if (existing is null)
        {
            Log.Registered(_logger, agent, registration.LeaseTtlMs);
        }

        return (existing is null ? AgentRegisterStatus.Created : AgentRegisterStatus.Updated, registration);
    }

    /// <summary>The registered agent, or null.</summary>
    public async Task<AgentRegistration?> GetAgentAsync(string agent, CancellationToken cancellationToken)
    {
        if (!_store.IsShared)
        {
            return _agents.GetValueOrDefault(agent);
        }

        // Read from the store, not this node's copy: another node may have registered or unregistered it.
        return await _store.GetDocumentAsync(AgentsCollection, agent, cancellationToken).ConfigureAwait(false) is { } data
            ? ParseRegistration(agent, data)
            : null;
    }

    /// <summary>
    /// Unregisters an agent: from then on no message is its turn, the turns waiting for it are dropped, and its wake
    /// stream is deleted (its followers, on every node, hear that it is gone). A turn a worker holds now stays that
    /// worker's, on the lease it was granted, until it is acked, released or its lease runs out, and then ends instead
    /// of waiting again: a reply being written is finished, not cut. False when no such agent is registered.
    /// </summary>
    public async Task<bool> UnregisterAsync(string agent, CancellationToken cancellationToken)
    {
        // Once entered, it runs to the end whatever the caller does: half of it would drop turns and keep the agent.
        if (!await RunAsync(TurnReads.Everything, () => UnregisterLockedAsync(agent), cancellationToken).ConfigureAwait(false))
        {
            return false;
        }

        // Claims waiting on this node for the agent's turns hear at once that it is gone.
        Signal();
        Log.Unregistered(_logger, agent);
        return true;
    }

    private async Task<bool> UnregisterLockedAsync(string agent)
    {
        if (!_agents.ContainsKey(agent))
        {
            return false;
        }

        // The waiting turns go first, each durably, and the registration last: a failure on the way leaves the agent
        // registered, so the call can be made again, never turns of an agent that is gone.
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var waiting = _turns.Values.Where(t => t.Agent == agent && !IsHeld(t, now)).ToList();
        await Task.WhenAll(waiting.Select(t => _section.DeleteDocumentAsync(TurnsCollection, t.Key, CancellationToken.None).AsTask())).ConfigureAwait(false);
        foreach (var turn in waiting)
        {
            Forget(turn.Key);
        }

        // The wake stream before the registration, under the lock: a register entering next creates it again, and
        // none can find it still there only to see it deleted after.
        var wakeStream = WakeStreamOf(agent);
        await _store.DeleteAsync(wakeStream, CancellationToken.None).ConfigureAwait(false);
        await _section.DeleteDocumentAsync(AgentsCollection, agent, CancellationToken.None).ConfigureAwait(false);
        _agents.TryRemove(agent, out _);
        _wakeStreams.TryRemove(wakeStream, out _);

        // Every turn was just read: the leases still held, granted on any node, end here even if that node is gone.
        ScheduleExpiry();
        return true;
    }

    private static bool IsHeld(TurnRecord turn, long now) => turn.Holder is not null && turn.LeaseExpiresAt > now;

    /// <summary>
    /// Whether the session a turn belongs to is gone: deleted, or deleted and created again at its path (a message
    /// there would have made the turn the new session's, with its id).
    /// </summary>
    private static bool IsGone(TurnRecord turn, StreamLookup lookup)
        => lookup.Status != StreamLookupStatus.Found || (turn.StreamId != 0 && lookup.Stream!.Id != turn.StreamId);

    /// <summary>
    /// Ends a claim given back, run out or answered with something new since: the turn waits again for the next worker,
    /// or, its agent unregistered meanwhile, is dropped.
    /// </summary>
    private void WaitAgainOrDrop(TurnRecord turn)
    {
        if (!_agents.ContainsKey(turn.Agent))
        {
            Drop(turn);
            return;
        }

        ClearClaim(turn);
        Wake(turn);
        Save(turn);
    }

    /// <summary>
    /// Records that <paramref name="stream"/> has something every registered agent must answer (a user message, a
    /// session handed back), and wakes each agent whose turn there is not already claimed. Durable when it returns.
    /// </summary>
    public Task MarkAsync(string stream, long streamId, long position, CancellationToken cancellationToken)
        => _agents.IsEmpty && !_store.IsShared ? Task.CompletedTask : RunAsync(TurnReads.OfStream(stream), () => MarkLockedAsync(stream, streamId, position), cancellationToken);

    private Task<bool> MarkLockedAsync(string stream, long streamId, long position)
    {
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var claimable = false;
        foreach (var agent in _agents.Values)
        {
            var key = TurnRecord.KeyOf(agent.Agent, stream);
            if (!_turns.TryGetValue(key, out var turn))
            {
                turn = new TurnRecord { Agent = agent.Agent, Stream = stream, WaitingSince = now };
                _turns[key] = turn;
            }

            turn.Version++;

            // A turn left from a session deleted since (and created again at its path) keeps nothing of it: the new
            // stream's positions start over (an answer in it would never reach the old one's, and the turn would be
            // woken after every answer), and a worker still serving the old one is fenced (its answer up to an old
            // offset would end the new message's turn).
            if (turn.StreamId != streamId)
            {
                if (turn.StreamId != 0)
                {
                    ClearClaim(turn);
                }

                turn.PendingPosition = position;
                turn.StreamId = streamId;
            }
            else
            {
                turn.PendingPosition = Math.Max(turn.PendingPosition, position);
            }
            if (turn.Holder is null && turn.WakeId is null)
            {
                Wake(turn);
            }

            claimable |= turn.Holder is null || turn.LeaseExpiresAt <= now;
            Save(turn);
        }

        // A message into a session whose turn is held (a conversation answered in one turn) gives waiting claims
        // nothing new: only a turn that can be claimed wakes them.
        if (claimable)
        {
            Signal();
        }

        return Task.FromResult(true);
    }

    /// <summary>
    /// Claims the oldest waiting turn of <paramref name="agent"/> (or the turn of <paramref name="stream"/>) for
    /// <paramref name="worker"/>, waiting up to <paramref name="wait"/> for one. <paramref name="canServe"/> limits the
    /// sessions the caller may be given (its token's grants). A claim that repeats <paramref name="claimId"/> (a retry
    /// whose first answer was lost) is given the turn that id was granted, if <paramref name="worker"/> still holds it,
    /// with a new token, rather than a second turn. The endpoint binds the id to its caller before it comes here.
    /// </summary>
    public async Task<TurnClaim> ClaimAsync(string agent, string worker, string? claimId, string? stream, TimeSpan wait, Func<string, bool> canServe, CancellationToken cancellationToken)
    {
        var claimHash = claimId is null ? null : Hash(claimId);
        var deadline = _time.GetUtcNow() + (wait > _options.MaxClaimWait ? _options.MaxClaimWait : wait);
        while (true)
        {
            var changed = Volatile.Read(ref _changed).Task;
            var outcome = await TryClaimAsync(agent, worker, claimHash, stream, canServe, cancellationToken).ConfigureAwait(false);
            if (outcome.Status != TurnClaimStatus.NothingWaiting)
            {
                return outcome;
            }

            var now = _time.GetUtcNow();
            var remaining = deadline - now;
            if (remaining <= TimeSpan.Zero)
            {
                return outcome;
            }

            // A lease another node granted runs out unseen by this node's timer: look again when it does.
            var untilExpiry = outcome.NextLeaseExpiry is { } expiry ? TimeSpan.FromMilliseconds(Math.Max(1, expiry - now.ToUnixTimeMilliseconds())) : remaining;
            // Waited without a timeout exception: claims that find nothing are the common case of an idle agent.
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var delay = Task.Delay(untilExpiry < remaining ? untilExpiry : remaining, _time, timeout.Token);
            if (await Task.WhenAny(changed, delay).ConfigureAwait(false) != changed)
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (untilExpiry >= remaining)
                {
                    return outcome;
                }
            }
            else
            {
                await timeout.CancelAsync().ConfigureAwait(false);
            }
        }
    }

    private Task<TurnClaim> TryClaimAsync(string agent, string worker, string? claimHash, string? stream, Func<string, bool> canServe, CancellationToken cancellationToken)
        => RunAsync(
            // A claim of one session reads only its turn; a claim of the oldest waiting one has to read them all.
            stream is null ? TurnReads.Everything : TurnReads.Turn(agent, stream),
            () => TryClaimLockedAsync(agent, worker, claimHash, stream, canServe, cancellationToken),
            cancellationToken);

    private async Task<TurnClaim> TryClaimLockedAsync(string agent, string worker, string? claimHash, string? stream, Func<string, bool> canServe, CancellationToken cancellationToken)
    {
        var registration = _agents.GetValueOrDefault(agent);
        if (registration is null)
        {
            return new TurnClaim(TurnClaimStatus.UnknownAgent);
        }

        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        if (stream is not null)
        {
            if (!_turns.TryGetValue(TurnRecord.KeyOf(agent, stream), out var wanted))
            {
                var lookup = await _store.GetAsync(stream, cancellationToken).ConfigureAwait(false);
                return new TurnClaim(lookup.Status == StreamLookupStatus.Found ? TurnClaimStatus.NothingWaiting : TurnClaimStatus.StreamNotFound);
            }

            if (IsHeld(wanted, now))
            {
                if (IsClaimOf(wanted, worker, claimHash))
                {
                    return await GrantAsync(registration, wanted, worker, claimHash, now, cancellationToken, again: true).ConfigureAwait(false)
                        ?? new TurnClaim(TurnClaimStatus.StreamNotFound);
                }

                return new TurnClaim(TurnClaimStatus.AlreadyClaimed, Turn: wanted);
            }

            return await GrantAsync(registration, wanted, worker, claimHash, now, cancellationToken).ConfigureAwait(false)
                ?? new TurnClaim(TurnClaimStatus.StreamNotFound);
        }

        if (claimHash is not null)
        {
            // A retry of a claim whose answer was lost: the turn it was granted, not a second one (which would leave the
            // first held by nobody serving it until its lease ran out).
            foreach (var held in _turns.Values)
            {
                if (held.Agent == agent && IsHeld(held, now) && IsClaimOf(held, worker, claimHash) && canServe(held.Stream)
                    && await GrantAsync(registration, held, worker, claimHash, now, cancellationToken, again: true).ConfigureAwait(false) is { } again)
                {
                    return again;
                }
            }
        }

        // The oldest waiting turn this worker may serve, found in one pass (no sort of every turn per claim); one whose
        // session is gone is dropped by GrantAsync, and the next oldest is looked for.
        while (OldestWaiting(agent, now, canServe) is { } oldest)
        {
            if (await GrantAsync(registration, oldest, worker, claimHash, now, cancellationToken).ConfigureAwait(false) is { } claim)
            {
                return claim;
            }
        }

        // Every turn was just read: leases granted on other nodes arm this node's timer too, so that their end is woken
        // (a wake event written) even when the node that granted them is gone.
        ScheduleExpiry();
        var nextExpiry = _turns.Values.Where(t => t.Agent == agent && IsHeld(t, now)).Min(t => t.LeaseExpiresAt);
        return new TurnClaim(TurnClaimStatus.NothingWaiting, NextLeaseExpiry: nextExpiry);
    }

    private TurnRecord? OldestWaiting(string agent, long now, Func<string, bool> canServe)
    {
        TurnRecord? oldest = null;
        foreach (var turn in _turns.Values)
        {
            if (turn.Agent == agent && !IsHeld(turn, now) && (oldest is null || turn.WaitingSince < oldest.WaitingSince) && canServe(turn.Stream))
            {
                oldest = turn;
            }
        }

        return oldest;
    }

    private static bool IsClaimOf(TurnRecord turn, string worker, string? claimHash)
        => claimHash is not null && turn.Holder == worker && turn.ClaimIdHash == claimHash;

    /// <summary>
    /// Gives the turn to <paramref name="worker"/>; null (and the turn dropped) when its session is gone. <paramref name="again"/>:
    /// the claim that holds it asks again (its answer lost), and keeps its wake and generation with a new token.
    /// </summary>
    private async Task<TurnClaim?> GrantAsync(AgentRegistration agent, TurnRecord turn, string worker, string? claimHash, long now, CancellationToken cancellationToken, bool again = false)
    {
        var lookup = await _store.GetAsync(turn.Stream, cancellationToken).ConfigureAwait(false);
        if (IsGone(turn, lookup))
        {
            // Its session is gone; one created again at the path since has asked nothing yet (a message would have
            // made the turn its own).
            Drop(turn);
            return null;
        }

        if (!again)
        {
            if (turn.Holder is not null)
            {
                Log.LeaseExpired(_logger, turn.Agent, turn.Stream, turn.Holder, turn.Generation);
            }

            // Every claim is a wake of its own (protocol §7.3): requests for an earlier one are fenced.
            turn.Generation++;
            turn.WakeId = NewWakeId();
            turn.ClaimedVersion = turn.Version;
        }

        // The token of a claim asked again is new (the first one never reached anybody), its lease counted from now.
        var token = "ct_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(24));
        turn.Holder = worker;
        turn.TokenHash = Hash(token);
        turn.LeaseExpiresAt = now + agent.LeaseTtlMs;
        turn.LeaseTtlMs = agent.LeaseTtlMs;
        turn.ClaimIdHash = claimHash;
        Save(turn);
        ScheduleExpiry();
        return new TurnClaim(TurnClaimStatus.Claimed, turn, token, agent.LeaseTtlMs, lookup.Stream!.TailPosition);
    }

    /// <summary>
    /// Heartbeats (<paramref name="done"/> false: the lease is extended) or completes a claim. A completed turn is
    /// deleted unless something new came since the claim; then it is woken again.
    /// </summary>
    public Task<TurnAckOutcome> AckAsync(string agent, string stream, string? token, string? wakeId, long? generation, bool done, long? answeredPosition, CancellationToken cancellationToken)
        => RunAsync(TurnReads.Turn(agent, stream), () => AckLockedAsync(agent, stream, token, wakeId, generation, done, answeredPosition, cancellationToken), cancellationToken);

    private async Task<TurnAckOutcome> AckLockedAsync(string agent, string stream, string? token, string? wakeId, long? generation, bool done, long? answeredPosition, CancellationToken cancellationToken)
    {
        var (turn, tail, gone) = await CurrentClaimAsync(agent, stream, token, wakeId, generation, cancellationToken).ConfigureAwait(false);
        if (turn is null)
        {
            return await EndedAsync(stream, gone, cancellationToken).ConfigureAwait(false);
        }

        // An offset past the session's end names an answer to what nobody has asked yet: refused, and nothing changes.
        if (answeredPosition > tail)
        {
            return new TurnAckOutcome(TurnAckStatus.OffsetBeyondTail, false, null);
        }

        var registration = _agents.GetValueOrDefault(agent);
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        if (!done)
        {
            // Renewed by the lease it was granted: a worker times its heartbeats by that one.
            turn.LeaseExpiresAt = now + (turn.LeaseTtlMs > 0 ? turn.LeaseTtlMs : registration?.LeaseTtlMs ?? (long)_options.DefaultLeaseTtl.TotalMilliseconds);
            Save(turn);
            ScheduleExpiry();
            return new TurnAckOutcome(TurnAckStatus.Ok, false, turn.LeaseExpiresAt);
        }

        // Answered up to an offset the worker names (its acks, protocol §7.2), or else everything as of its claim.
        if (answeredPosition is { } answered ? answered >= turn.PendingPosition : turn.Version == turn.ClaimedVersion)
        {
            Drop(turn);
            return new TurnAckOutcome(TurnAckStatus.Ok, false, null);
        }

        // Something new arrived while it was served: the turn waits again.
        WaitAgainOrDrop(turn);
        Signal();
        return new TurnAckOutcome(TurnAckStatus.Ok, _agents.ContainsKey(agent), null);
    }

    /// <summary>Gives a claimed turn back unanswered: it waits again, woken for the next worker.</summary>
    public Task<TurnAckOutcome> ReleaseAsync(string agent, string stream, string? token, string? wakeId, long? generation, CancellationToken cancellationToken)
        => RunAsync(TurnReads.Turn(agent, stream), () => ReleaseLockedAsync(agent, stream, token, wakeId, generation, cancellationToken), cancellationToken);

    private async Task<TurnAckOutcome> ReleaseLockedAsync(string agent, string stream, string? token, string? wakeId, long? generation, CancellationToken cancellationToken)
    {
        var (turn, _, gone) = await CurrentClaimAsync(agent, stream, token, wakeId, generation, cancellationToken).ConfigureAwait(false);
        if (turn is null)
        {
            return await EndedAsync(stream, gone, cancellationToken).ConfigureAwait(false);
        }

        WaitAgainOrDrop(turn);
        Signal();
        return new TurnAckOutcome(TurnAckStatus.Ok, _agents.ContainsKey(agent), null);
    }

    /// <summary>
    /// The turn a claim's token, wake id and generation hold, with its session's tail; no turn when they hold none now.
    /// A session deleted under the claim, or deleted and created again at its path, ends the turn (<c>Gone</c>).
    /// </summary>
    private async Task<(TurnRecord? Turn, long Tail, bool Gone)> CurrentClaimAsync(string agent, string stream, string? token, string? wakeId, long? generation, CancellationToken cancellationToken)
    {
        if (!_turns.TryGetValue(TurnRecord.KeyOf(agent, stream), out var turn) || token is null || turn.TokenHash is null)
        {
            return default;
        }

        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var matches = CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(Hash(token)), Encoding.ASCII.GetBytes(turn.TokenHash))
            && wakeId == turn.WakeId && generation == turn.Generation && turn.LeaseExpiresAt > now;
        if (!matches)
        {
            return default;
        }

        // A session deleted under a claim ends the turn: the claimer hears 404, not a fence. So does one deleted and
        // created again at the path: the claim answered the session that is gone, and the new one asked nothing of it
        // (a message there would have made the turn the new session's, and fenced this claim).
        var lookup = await _store.GetAsync(stream, cancellationToken).ConfigureAwait(false);
        if (IsGone(turn, lookup))
        {
            Drop(turn);
            return (null, 0, true);
        }

        return (turn, lookup.Stream!.TailPosition, false);
    }

    private async Task<TurnAckOutcome> EndedAsync(string stream, bool gone, CancellationToken cancellationToken)
    {
        if (gone)
        {
            return new TurnAckOutcome(TurnAckStatus.StreamNotFound, false, null);
        }

        var lookup = await _store.GetAsync(stream, cancellationToken).ConfigureAwait(false);
        return new TurnAckOutcome(lookup.Status == StreamLookupStatus.Found ? TurnAckStatus.Fenced : TurnAckStatus.StreamNotFound, false, null);
    }

    private static void ClearClaim(TurnRecord turn)
    {
        turn.Holder = null;
        turn.TokenHash = null;
        turn.ClaimIdHash = null;
        turn.LeaseExpiresAt = null;
        turn.LeaseTtlMs = 0;
        turn.WakeId = null;
    }

    /// <summary>Wakes the turns whose lease ran out, for another worker (protocol §7.3).</summary>
    private async Task ExpireLeasesAsync()
    {
        try
        {
            await RunAsync(
                TurnReads.Everything,
                async () =>
                {
                    Interlocked.Exchange(ref _scheduledExpiry, long.MaxValue);
                    var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
                    foreach (var turn in _turns.Values.Where(t => t.Holder is not null && t.LeaseExpiresAt <= now).ToList())
                    {
                        Log.LeaseExpired(_logger, turn.Agent, turn.Stream, turn.Holder!, turn.Generation);

                        // A session deleted while its turn was held (whose waiting turns went with it) ends it here:
                        // waiting again, it would wait for good where no worker may claim it.
                        var lookup = await _store.GetAsync(turn.Stream, CancellationToken.None).ConfigureAwait(false);
                        if (IsGone(turn, lookup))
                        {
                            Drop(turn);
                            continue;
                        }

                        WaitAgainOrDrop(turn);
                    }

                    ScheduleExpiry();
                    Signal();
                    return true;
                },
                CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // A timer callback must never throw. The store failed (a shared store's blip): the sweep is tried again
            // shortly. A schedule left in the past would keep every later lease from arming the timer again.
            Log.ExpiryFailed(_logger, ex);
            Interlocked.Exchange(ref _scheduledExpiry, _time.GetUtcNow().ToUnixTimeMilliseconds() + (long)ExpiryRetry.TotalMilliseconds);
            try
            {
                _expiry.Change(ExpiryRetry, Timeout.InfiniteTimeSpan);
            }
            catch (ObjectDisposedException)
            {
                // The service is stopping.
            }
        }
    }

    /// <summary>How soon a lease sweep that failed is tried again.</summary>
    private static readonly TimeSpan ExpiryRetry = TimeSpan.FromSeconds(1);

    /// <summary>Arms the expiry timer for the earliest lease held; no lease, no timer.</summary>
    private void ScheduleExpiry()
    {
        var earliest = long.MaxValue;
        foreach (var turn in _turns.Values)
        {
            if (turn.Holder is not null && turn.LeaseExpiresAt is { } expires && expires < earliest)
            {
                earliest = expires;
            }
        }

        if (earliest == long.MaxValue || earliest >= Interlocked.Read(ref _scheduledExpiry))
        {
            return;
        }

        Interlocked.Exchange(ref _scheduledExpiry, earliest);
        var due = TimeSpan.FromMilliseconds(Math.Max(0, earliest - _time.GetUtcNow().ToUnixTimeMilliseconds()));
        _expiry.Change(due, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Starts a new wake generation and writes its wake event to the agent's wake stream (protocol §7.2).</summary>
    private void Wake(TurnRecord turn)
    {
        turn.Generation++;
        turn.WakeId = NewWakeId();
        var payload = JsonSerializer.SerializeToUtf8Bytes<WakeEvent[]>([new WakeEvent("wake", turn.Agent, turn.Stream, turn.Generation, _time.GetUtcNow().ToUnixTimeMilliseconds())], AgentWakeJsonContext.Default.WakeEventArray);
        if (JsonFraming.TryFrame(payload, allowEmptyArray: false, out var data, out _))
        {
            Write(AppendWakeAsync(turn.Agent, data));
        }
    }

    private async Task AppendWakeAsync(string agent, StreamPayload data)
    {
        var wakeStream = WakeStreamOf(agent);
        var result = await _store.AppendAsync(new AppendRequest { Path = wakeStream, ContentType = StreamContentType.Json, Data = data }, CancellationToken.None).ConfigureAwait(false);
        if (result.Status is AppendStatus.NotFound or AppendStatus.Gone && _agents.ContainsKey(agent))
        {
            // Deleted by someone: wakes are only hints, so the stream is simply created again (unless its agent is
            // gone: a wake written just before the agent was unregistered does not bring the stream back).
            await EnsureWakeStreamAsync(wakeStream, CancellationToken.None).ConfigureAwait(false);
            result = await _store.AppendAsync(new AppendRequest { Path = wakeStream, ContentType = StreamContentType.Json, Data = data }, CancellationToken.None).ConfigureAwait(false);
        }

        if (result.Status != AppendStatus.Appended)
        {
            Log.WakeStreamRejected(_logger, agent, wakeStream, result.Status);
            return;
        }

        if (await WakeStreamRetention.TrimAfterAppendAsync(_store, wakeStream, result.TailPosition, data.Units, _options.WakeStreamRetention).ConfigureAwait(false) is { } failure)
        {
            Log.WakeStreamTrimFailed(_logger, wakeStream, failure);
        }
    }

    /// <summary>Creates the wake stream unless it is there; false (and logged) when it cannot be.</summary>
    private async Task<bool> EnsureWakeStreamAsync(string path, CancellationToken cancellationToken)
    {
        var created = await _store.CreateAsync(new CreateStreamRequest { Path = path, ContentType = StreamContentType.Json }, cancellationToken).ConfigureAwait(false);
        if (created.Status is not (CreateStreamStatus.Created or CreateStreamStatus.AlreadyExists))
        {
            Log.WakeStreamRejected(_logger, path, path, AppendStatus.NotFound);
            return false;
        }

        return true;
    }

    private void Drop(TurnRecord turn)
    {
        Forget(turn.Key);
        Write(_section.DeleteDocumentAsync(TurnsCollection, turn.Key, CancellationToken.None).AsTask(), turn.Key);
    }

    private void Save(TurnRecord turn)
    {
        var data = turn.Serialize();
        if (_store.IsShared)
        {
            _loaded[turn.Key] = data;
        }

        Write(_section.PutDocumentAsync(TurnsCollection, turn.Key, data, CancellationToken.None).AsTask(), turn.Key);
    }

    private void Signal()
    {
        var previous = Interlocked.Exchange(ref _changed, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        previous.TrySetResult();
    }

    /// <summary>
    /// A shared store's entry for a batch of operations: everything if one of them needs it, else the agents and then the
    /// turns the operations work on, all read in one round trip.
    /// </summary>
    private async Task RefreshAsync(List<PendingOperation> batch, CancellationToken cancellationToken)
    {
        if (batch.Exists(operation => operation.Reads.All))
        {
            await ReloadAsync(cancellationToken).ConfigureAwait(false);
            return;
        }

        // A mark works on the turn of every agent, so the agents are read before its turns are known.
        var ofStreams = batch.Exists(operation => operation.Reads.Stream is not null);
        if (ofStreams)
        {
            await RefreshAgentsAsync(cancellationToken).ConfigureAwait(false);
        }

        var keys = new HashSet<string>(StringComparer.Ordinal);
        foreach (var operation in batch)
        {
            if (operation.Reads.Key is { } key)
            {
                keys.Add(key);
            }
            else if (operation.Reads.Stream is { } stream)
            {
                foreach (var agent in _agents.Keys)
                {
                    keys.Add(TurnRecord.KeyOf(agent, stream));
                }
            }
        }

        await LoadTurnsAsync([.. keys], cancellationToken, refreshAgents: !ofStreams).ConfigureAwait(false);
    }

    /// <summary>
    /// Reads the named turns again, and the agents beside them (a shared store's entry for an operation on one turn):
    /// another node may have changed them, and the operation needs no other turn.
    /// </summary>
    private async Task LoadTurnsAsync(string[] keys, CancellationToken cancellationToken, bool refreshAgents = true)
    {
        // Every read is sent before any is awaited: one round trip to a shared store, not one per read.
        var agents = refreshAgents ? RefreshAgentsAsync(cancellationToken) : Task.CompletedTask;
        var reads = new Task<byte[]?>[keys.Length];
        try
        {
            for (var i = 0; i < keys.Length; i++)
            {
                reads[i] = _store.GetDocumentAsync(TurnsCollection, keys[i], cancellationToken).AsTask();
            }

            for (var i = 0; i < keys.Length; i++)
            {
                Loaded(keys[i], await reads[i].ConfigureAwait(false));
            }
        }
        catch
        {
            _loaded.Clear();
            await Task.WhenAll(reads.Where(read => read is not null).Append(agents)).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            throw;
        }

        await agents.ConfigureAwait(false);
    }

    /// <summary>Takes one turn's document as read from the store (null: there is no such turn).</summary>
    private void Loaded(string key, byte[]? data)
    {
        if (data is null)
        {
            Forget(key);
        }
        else if (!(_loaded.TryGetValue(key, out var known) && known.AsSpan().SequenceEqual(data) && _turns.ContainsKey(key)))
        {
            if (TurnRecord.Deserialize(data) is { } turn && turn.Key == key)
            {
                _turns[key] = turn;
                if (_store.IsShared)
                {
                    _loaded[key] = data;
                }
            }
            else
            {
                Forget(key);
            }
        }
    }

    private void Forget(string key)
    {
        _turns.Remove(key);
        _loaded.Remove(key);
    }

    private async Task ReloadAsync(CancellationToken cancellationToken)
    {
        // The agents are read beside the turns, not after them: one round trip to a shared store instead of two.
        var agents = RefreshAgentsAsync(cancellationToken);
        try
        {
            var seen = new HashSet<string>(_turns.Count, StringComparer.Ordinal);
            await foreach (var (key, data) in _store.ListDocumentsAsync(TurnsCollection, cancellationToken).ConfigureAwait(false))
            {
                Loaded(key, data);
                seen.Add(key);
            }

            // Always swept, not only when the counts differ: an unparseable document counted as seen could hide a turn
            // another node deleted, which would then be handed out again.
            foreach (var gone in _turns.Keys.Where(k => !seen.Contains(k)).ToList())
            {
                Forget(gone);
            }
        }
        catch
        {
            // Whatever was read half is not trusted: the next entry parses every turn again.
            _loaded.Clear();
            await agents.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            throw;
        }

        await agents.ConfigureAwait(false);
    }

    /// <summary>Reads the registered agents again; only in the critical section, which is where they change.</summary>
    private async Task RefreshAgentsAsync(CancellationToken cancellationToken)
    {
        var seen = new HashSet<string>(_agents.Count, StringComparer.Ordinal);
        await foreach (var (key, data) in _store.ListDocumentsAsync(AgentsCollection, cancellationToken).ConfigureAwait(false))
        {
            if (ParseRegistration(key, data) is { } agent)
            {
                _agents[key] = agent;
                _wakeStreams[agent.WakeStream] = 0;
                seen.Add(key);
            }
        }

        // Unregistered since, through this node or another.
        foreach (var (key, gone) in _agents)
        {
            if (!seen.Contains(key) && _agents.TryRemove(key, out _))
            {
                _wakeStreams.TryRemove(gone.WakeStream, out _);
            }
        }
    }

    private static AgentRegistration? ParseRegistration(string key, byte[] data)
    {
        try
        {
            return JsonSerializer.Deserialize(data, AgentTurnJsonContext.Default.AgentRegistration) is { } agent && agent.Agent == key ? agent : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>
    /// Runs <paramref name="operation"/> in the turns' critical section. The writes it issues are sent in order under the
    /// lock, but awaited after it, so operations on different turns share the store's group commit instead of queueing
    /// behind each other's flushes; the caller still hears back only once its writes are durable. On a shared store the
    /// operations waiting on this node run together, in a batch (see <see cref="RunBatchAsync"/>).
    /// </summary>
    /// <param name="reads">What a shared store's entry reads again: the turns the operation works on.</param>
    /// <param name="operation">The operation.</param>
    /// <param name="cancellationToken">Cancels the wait to enter.</param>
    private async Task<T> RunAsync<T>(TurnReads reads, Func<Task<T>> operation, CancellationToken cancellationToken)
    {
        if (_store.IsShared)
        {
            var pending = new PendingOperation<T>(reads, operation, cancellationToken);

            // A caller that gives up is told at once; its operation is skipped unless it already started.
            using var registration = cancellationToken.Register(static state => ((PendingOperation)state!).TryCancel(), pending);
            _pending.Enqueue(pending);
            if (Interlocked.CompareExchange(ref _draining, 1, 0) == 0)
            {
                _ = DrainAsync();
            }

            return await pending.Task.ConfigureAwait(false);
        }

        List<Task>? writes;
        T result;
        await using (await EnterAsync(static _ => Task.CompletedTask, cancellationToken).ConfigureAwait(false))
        {
            try
            {
                result = await operation().ConfigureAwait(false);
            }
            finally
            {
                writes = _writes;
                _writes = null;
                _written = null;
            }
        }

        if (writes is not null)
        {
            await Task.WhenAll(writes).ConfigureAwait(false);
        }

        return result;
    }

    /// <summary>Runs the waiting operations in batches until none waits; one drain runs at a time.</summary>
    private async Task DrainAsync()
    {
        List<PendingOperation>? carried = null;
        while (true)
        {
            // What the last batch had no time left for goes first.
            var batch = carried ?? [];
            carried = null;
            while (batch.Count < MaxBatch && _pending.TryDequeue(out var next))
            {
                if (!next.TryCancel())
                {
                    batch.Add(next);
                }
            }

            if (batch.Count > 0)
            {
                carried = await RunBatchAsync(batch).ConfigureAwait(false);
                continue;
            }

            // Nothing left: stop, unless an operation came between the last look and the flag going down (a full fence:
            // the look at the queue must not be ordered before the flag is down).
            Interlocked.Exchange(ref _draining, 0);
            if (_pending.IsEmpty || Interlocked.CompareExchange(ref _draining, 1, 0) != 0)
            {
                return;
            }
        }
    }

    /// <summary>
    /// Runs a batch on a shared store: one entry (the lock taken, and every turn the batch works on read in one round
    /// trip), the operations one after the other as if each had entered alone, then all their writes awaited together
    /// before the lock is let go, because the next node to enter reads them. Every node's operations then pay the
    /// lock's and the store's round trips once per batch instead of once each. Never throws: each operation hears its
    /// own outcome. Returns the operations it left for the next batch, or null.
    /// </summary>
    private async Task<List<PendingOperation>?> RunBatchAsync(List<PendingOperation> batch)
    {
        List<PendingOperation>? left = null;
        Interlocked.Increment(ref _batches);
        try
        {
            await using (await EnterAsync(ct => RefreshAsync(batch, ct), CancellationToken.None).ConfigureAwait(false))
            {
                // Operations that make their own store calls are bounded in time, not only in number: the store renews
                // the lock's lease while it is held, but every other node's operations wait for the batch, and a lease
                // that ran out anyway (Redis away) must find little still to run.
                var deadline = _time.GetTimestamp() + (long)(SharedLockLease.TotalSeconds / 3 * _time.TimestampFrequency);
                foreach (var operation in batch)
                {
                    if (left is not null || _time.GetTimestamp() > deadline)
                    {
                        (left ??= []).Add(operation);
                        continue;
                    }

                    if (operation.TryCancel())
                    {
                        continue;
                    }

                    try
                    {
                        await SettleEarlierWritesAsync(batch, operation).ConfigureAwait(false);
                        await operation.RunAsync().ConfigureAwait(false);
                    }
                    catch (Exception ex)
                    {
                        // An operation cut short may have changed a turn it did not save: the next entry reads every
                        // turn afresh.
                        operation.Error = ex;
                        _loaded.Clear();
                    }
                    finally
                    {
                        operation.Writes = _writes;
                        operation.Written = _written;
                        _writes = null;
                        _written = null;
                    }
                }

                await Task.WhenAll(batch.Where(operation => operation.Writes is not null).SelectMany(operation => operation.Writes!)).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
        }
        catch (Exception ex)
        {
            // The lock could not be taken or the turns not read (none of the operations ran: they fail), or it could not
            // be let go (those that ran have their writes durable, and the lock's lease ends it; those left for the next
            // batch stay left).
            foreach (var operation in batch)
            {
                if (left?.Contains(operation) != true)
                {
                    operation.NotRun(ex);
                }
            }
        }

        foreach (var operation in batch)
        {
            if (left?.Contains(operation) != true)
            {
                operation.Finish();
            }
        }

        return left;
    }

    /// <summary>
    /// Issues a write of the current operation (see <see cref="RunAsync{T}"/>), of the turn <paramref name="turn"/> if it
    /// writes one.
    /// </summary>
    private void Write(Task write, string? turn = null)
    {
        (_writes ??= []).Add(write);

        // Only batches (a shared store) look at which turns were written.
        if (turn is not null && _store.IsShared)
        {
            (_written ??= new(StringComparer.Ordinal)).Add(turn);
        }
    }

    /// <summary>
    /// Before an operation of a batch that works on a turn an earlier operation of the same batch changed: waits for those
    /// writes, and when one failed (or an earlier operation on these turns threw), reads this operation's turns again. The
    /// operations of a batch issue their writes without awaiting them, so without this a later operation would act on a
    /// change the store never took: a claim that failed to save would make a second claim of the same turn find it
    /// taken, and a message marked on that turn would save the failed claim with it. Operations on other turns do not wait.
    /// </summary>
    private async Task SettleEarlierWritesAsync(List<PendingOperation> batch, PendingOperation operation)
    {
        List<PendingOperation>? writers = null;
        var stale = false;
        foreach (var other in batch)
        {
            if (ReferenceEquals(other, operation))
            {
                break;
            }

            if (other.Error is not null && !other.Settled && operation.Reads.Overlaps(other.Reads))
            {
                // It threw, perhaps after changing a turn it did not save (and every turn is parsed again on a read).
                stale = true;
            }

            if (other.Written is { Count: > 0 } written && other.Writes is not null && written.Any(operation.Reads.Covers))
            {
                (writers ??= []).Add(other);
            }
        }

        if (writers is not null)
        {
            await Task.WhenAll(writers.SelectMany(other => other.Writes!)).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            stale |= writers.Exists(other => other.Writes!.Exists(write => write.IsFaulted));
        }

        if (!stale)
        {
            return;
        }

        // The entry's own read, for this operation's turns: a turn whose stored bytes differ from what this node last
        // wrote (a save that failed) is parsed again; one the store took after all stays as this node has it.
        await RefreshAsync([operation], CancellationToken.None).ConfigureAwait(false);

        // Those turns match the store now: later operations need not read them again for the same failures.
        foreach (var other in batch)
        {
            if (ReferenceEquals(other, operation))
            {
                break;
            }

            if (other.Error is not null && operation.Reads.Includes(other.Reads))
            {
                other.Settled = true;
            }

            if (other.Written is not null && other.Writes is not null && other.Writes.Exists(write => write.IsFaulted))
            {
                other.Written.RemoveWhere(operation.Reads.Covers);
            }
        }
    }

    /// <summary>Enters the turns' critical section (on a shared store, with <paramref name="refresh"/> run first).</summary>
    private Task<System.Runtime.CompilerServices.ConfiguredAsyncDisposable> EnterAsync(Func<CancellationToken, Task> refresh, CancellationToken cancellationToken)
        => _section.EnterAsync(refresh, cancellationToken);

    private static string NewWakeId() => "w_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12));

    private static string Hash(string token) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(token)));

    private static partial class Log
    {
        [LoggerMessage(700, LogLevel.Information, "Agent {Agent} registered (lease {LeaseTtlMs} ms)")]
        public static partial void Registered(ILogger logger, string agent, long leaseTtlMs);

        [LoggerMessage(701, LogLevel.Information, "Agent {Agent}: the lease of {Holder} on {Stream} (generation {Generation}) ran out; the turn waits for another worker")]
        public static partial void LeaseExpired(ILogger logger, string agent, string stream, string holder, long generation);

        [LoggerMessage(702, LogLevel.Warning, "Agent {Agent}: wake stream {WakeStream} refused a wake ({Status})")]
        public static partial void WakeStreamRejected(ILogger logger, string agent, string wakeStream, AppendStatus status);

        [LoggerMessage(703, LogLevel.Error, "Expiring agent leases failed; retried on the next claim")]
        public static partial void ExpiryFailed(ILogger logger, Exception exception);

        [LoggerMessage(705, LogLevel.Information, "Agent {Agent} unregistered")]
        public static partial void Unregistered(ILogger logger, string agent);

        [LoggerMessage(704, LogLevel.Warning, "Trimming the wake stream {WakeStream} failed; tried again when it has grown by its retention")]
        public static partial void WakeStreamTrimFailed(ILogger logger, string wakeStream, Exception exception);

        [LoggerMessage(706, LogLevel.Warning, "The turns waiting on {Stream}, deleted, were not dropped; the claim that finds it gone drops them")]
        public static partial void DeletedSessionNotForgotten(ILogger logger, Exception exception, string stream);
    }
}

/// <summary>A wake event on an agent's wake stream, shaped as protocol §7.2's (the agent id is the subscription id).</summary>
internal sealed record WakeEvent(
    [property: System.Text.Json.Serialization.JsonPropertyName("type")] string Type,
    [property: System.Text.Json.Serialization.JsonPropertyName("subscription_id")] string SubscriptionId,
    [property: System.Text.Json.Serialization.JsonPropertyName("stream")] string Stream,
    [property: System.Text.Json.Serialization.JsonPropertyName("generation")] long Generation,
    [property: System.Text.Json.Serialization.JsonPropertyName("ts")] long Ts);

[System.Text.Json.Serialization.JsonSerializable(typeof(WakeEvent[]))]
internal sealed partial class AgentWakeJsonContext : System.Text.Json.Serialization.JsonSerializerContext;

internal enum TurnClaimStatus
{
    Claimed,
    NothingWaiting,
    AlreadyClaimed,
    UnknownAgent,
    StreamNotFound,
}

/// <summary>
/// The outcome of a claim: the turn, its claim token, lease and the session's tail when claimed; when nothing waits, the
/// earliest lease of the agent's turns held now (Unix ms), when one of them may be claimed again.
/// </summary>
internal sealed record TurnClaim(TurnClaimStatus Status, TurnRecord? Turn = null, string? Token = null, long LeaseTtlMs = 0, long TailPosition = 0, long? NextLeaseExpiry = null);

internal enum AgentRegisterStatus
{
    Created,
    Updated,
    LimitReached,
    WakeStreamUnavailable,
}

internal enum TurnAckStatus
{
    Ok,
    Fenced,
    StreamNotFound,
    OffsetBeyondTail,
}

internal readonly record struct TurnAckOutcome(TurnAckStatus Status, bool NextWake, long? LeaseExpiresAt);

/// <summary>What an operation on the turns reads again when it enters on a shared store.</summary>
/// <param name="All">Every turn (a claim of the oldest, the lease-expiry sweep).</param>
/// <param name="Key">One turn.</param>
/// <param name="Stream">The turn of every agent on one session (a mark).</param>
internal readonly record struct TurnReads(bool All, string? Key, string? Stream)
{
    public static TurnReads Everything => new(true, null, null);

    public static TurnReads Turn(string agent, string stream) => new(false, TurnRecord.KeyOf(agent, stream), null);

    public static TurnReads OfStream(string stream) => new(false, null, stream);

    /// <summary>Whether the turn <paramref name="key"/> is among these.</summary>
    public bool Covers(string key)
        => All || (Key is not null ? Key == key : Stream is not null && TurnRecord.StreamOfKey(key).SequenceEqual(Stream));

    /// <summary>Whether every turn of <paramref name="other"/> is among these.</summary>
    public bool Includes(TurnReads other)
        => All || (!other.All && (other.Key is not null ? Covers(other.Key) : other.Stream is not null && Stream == other.Stream));

    /// <summary>Whether these and <paramref name="other"/> share a turn.</summary>
    public bool Overlaps(TurnReads other)
        => All || other.All
            || (Key is not null ? other.Covers(Key)
                : other.Key is not null ? Covers(other.Key)
                : Stream is not null && Stream == other.Stream);
}

/// <summary>An operation waiting for a batch on a shared store, with the writes it issued and its outcome.</summary>
internal abstract class PendingOperation(TurnReads reads, CancellationToken cancellationToken)
{
    private bool _ran;

    public TurnReads Reads => reads;

    public List<Task>? Writes { get; set; }

    /// <summary>The turns the operation changed (their writes are <see cref="Writes"/>).</summary>
    public HashSet<string>? Written { get; set; }

    /// <summary>After the operation threw: whether a later operation of its batch has read all its turns again since.</summary>
    public bool Settled { get; set; }

    public Exception? Error { get; set; }

    protected CancellationToken CancellationToken => cancellationToken;

    /// <summary>True, and the caller told, when the caller gave up (the operation is then skipped if it has not run).</summary>
    public abstract bool TryCancel();

    public Task RunAsync()
    {
        _ran = true;
        return RunCoreAsync();
    }

    protected abstract Task RunCoreAsync();

    /// <summary>The batch failed: an operation that did not run fails with <paramref name="error"/>.</summary>
    public void NotRun(Exception error)
    {
        if (!_ran)
        {
            Error ??= error;
        }
    }

    /// <summary>Tells the caller: the operation's error, its writes' error, or its result.</summary>
    public abstract void Finish();
}

internal sealed class PendingOperation<T>(TurnReads reads, Func<Task<T>> operation, CancellationToken cancellationToken)
    : PendingOperation(reads, cancellationToken)
{
    private readonly TaskCompletionSource<T> _outcome = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private T? _result;

    public Task<T> Task => _outcome.Task;

    public override bool TryCancel()
    {
        if (!CancellationToken.IsCancellationRequested)
        {
            return false;
        }

        _outcome.TrySetCanceled(CancellationToken);
        return true;
    }

    protected override async Task RunCoreAsync() => _result = await operation().ConfigureAwait(false);

    public override void Finish()
    {
        if (_outcome.Task.IsCompleted)
        {
            return;
        }

        var failed = Error ?? Writes?.FirstOrDefault(write => write.IsFaulted)?.Exception?.InnerException;
        if (failed is not null)
        {
            _outcome.TrySetException(failed);
        }
        else
        {
            _outcome.TrySetResult(_result!);
        }
    }
}
