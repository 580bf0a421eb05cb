using System.Security.Cryptography;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using DurableSessions.Live;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DurableSessions.AspNetCore.Subscriptions;

/// <summary>
/// Subscriptions (protocol §6–7): durable cursors over sets of streams that wake workers by webhook or by a wake
/// event on a pull-wake stream, with generation fencing and leases. Runs the operations of
/// <see cref="SubscriptionEndpoints"/> and reacts to appends and deadlines, over the <see cref="SubscriptionRegistry"/>
/// (state), the <see cref="WakeScheduler"/> (when) and the <see cref="SubscriptionDelivery"/> (how).
/// </summary>
/// <remarks>
/// All state changes happen inside the registry's lock and are persisted before they take effect for clients. Appends
/// are observed through the store's fan-out, never by polling streams, and each is matched only against the
/// subscriptions that can concern it. With no subscription nothing runs: no timer is armed unless a lease or a failure
/// backoff is pending, and an append is looked at only when a subscription exists (on a shared store: one read of the
/// version document per batch of appends, to learn of subscriptions other nodes created).
/// </remarks>
internal sealed partial class SubscriptionService : IHostedService, IAsyncDisposable
{
    private static readonly LiveAppend TickMarker = new(-1, string.Empty, default, closed: false);

    private readonly StreamStore _store;
    private readonly SubscriptionRegistry _registry;
    private readonly WakeScheduler _scheduler;
    private readonly SubscriptionDelivery _delivery;
    private readonly SubscriptionOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly Channel<LiveAppend> _appends = Channel.CreateUnbounded<LiveAppend>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _timerGate = new();

    // Set when a pass failed: the next one, RecheckDelay later, looks at every subscription, whatever that pass had taken.
    private static readonly TimeSpan RecheckDelay = TimeSpan.FromSeconds(1);


    private int _queued;
    private int _overflowed;

    // Between the wake's save and its POST going out (a shared store's round trips, a busy thread pool).
    private static readonly TimeSpan WebhookLeaseMargin = TimeSpan.FromSeconds(2);
    private volatile bool _recheckAll;
    private Task? _loop;
    private ITimer? _timer;

    public SubscriptionService(StreamStore store, SubscriptionRegistry registry, WakeScheduler scheduler, SubscriptionDelivery delivery, IOptions<SubscriptionOptions> options, ILogger<SubscriptionService> logger)
    {
        _store = store;
        _registry = registry;
        _scheduler = scheduler;
        _delivery = delivery;
        _options = options.Value;
        _logger = logger;
        _time = store.TimeProvider;
    }

    public WebhookSigningKeys Keys => _registry.Keys;

    public SubscriptionOptions Options => _options;

    /// <summary>The most appends waiting for the next pass; past it they are dropped and the pass looks at every subscription.</summary>
    internal int MaxQueuedChanges { get; set; } = 100_000;

    /// <summary>How many appends wait for the next pass now (for tests and diagnostics).</summary>
    internal int QueuedChanges => Volatile.Read(ref _queued);

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        // One-shot, armed for the earliest lease expiry or backoff end and disarmed when there is none.
        _timer = _time.CreateTimer(_ => _appends.Writer.TryWrite(TickMarker), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _scheduler.NextDeadlineChanged += ArmTimer;
        await _registry.StartAsync(cancellationToken).ConfigureAwait(false);
        ArmTimer();

        _store.Fanout.AddObserver(change =>
        {
            // Each change is delivered once, by the node that committed it. On a shared store another node may have
            // created a subscription this node has not loaded yet, so every local change is looked at.
            if (!change.IsRemote && (_registry.IsShared || !_registry.IsEmpty))
            {
                // Bounded, and without the appended data (only where it starts is looked at): while a pass waits (a
                // shared store's lock held elsewhere, a slow store), appends must not pile up in memory. Past the bound
                // the next pass looks at every subscription instead of at the changes it missed.
                if (Interlocked.Increment(ref _queued) > MaxQueuedChanges)
                {
                    Interlocked.Decrement(ref _queued);
                    if (Interlocked.Exchange(ref _overflowed, 1) == 0)
                    {
                        Log.ChangesOverflowed(_logger, MaxQueuedChanges);
                        _appends.Writer.TryWrite(TickMarker);
                    }

                    return;
                }

                _appends.Writer.TryWrite(new LiveAppend(change.StreamId, change.Path, new StreamChunk(change.Chunk.Start, change.Chunk.End, default), change.Closed, change.Deleted));
            }
        });
        _loop = Task.Run(ProcessAppendsAsync, CancellationToken.None);

        // Appends made while no node looked (this one stopped or crashed before its pass; on a shared store, a node
        // that died before its pass, once some node starts) wake no one by themselves: the first pass looks at every
        // subscription idle, reading its streams' tails, once per start.
        if (!_registry.IsEmpty)
        {
            _recheckAll = true;
            _appends.Writer.TryWrite(TickMarker);
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        _appends.Writer.TryComplete();
        _scheduler.NextDeadlineChanged -= ArmTimer;
        lock (_timerGate)
        {
            _timer?.Dispose();
            _timer = null;
        }

        if (_loop is not null)
        {
            // The loop ends promptly once stopping is signalled; if the host's shutdown timeout passes first, stop
            // without it rather than fail the shutdown (deliveries resume from their stored offsets on the next start).
            await _loop.WaitAsync(cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_stopping.IsCancellationRequested)
        {
            await StopAsync(CancellationToken.None).ConfigureAwait(false);
        }

        _stopping.Dispose();
    }

    // ---- API operations (called by SubscriptionEndpoints) ----

    public async Task<(SubscriptionPutStatus Status, Subscription? Subscription)> PutAsync(string id, SubscriptionConfig config, string baseUrl, CancellationToken cancellationToken)
    {
        await using var held = await _registry.EnterAsync(cancellationToken).ConfigureAwait(false);
        var (status, subscription) = await _registry.CreateAsync(id, config, baseUrl, cancellationToken).ConfigureAwait(false);
        if (status == SubscriptionPutStatus.Created)
        {
            Log.Created(_logger, id, config.Type);
        }

        return (status, subscription);
    }

    public async Task<Subscription?> GetAsync(string id, CancellationToken cancellationToken)
    {
        if (_registry.IsShared)
        {
            // Another node may have changed it.
            await using (await _registry.EnterAsync(cancellationToken).ConfigureAwait(false))
            {
            }
        }

        return _registry.Get(id);
    }

    public async Task<bool> DeleteAsync(string id, CancellationToken cancellationToken)
    {
        await using var held = await _registry.EnterAsync(cancellationToken).ConfigureAwait(false);
        return await _registry.DeleteAsync(id, cancellationToken).ConfigureAwait(false);
    }

    public async Task<SubscriptionAddStatus> AddStreamsAsync(string id, IReadOnlyList<string> paths, CancellationToken cancellationToken)
    {
        await using var held = await _registry.EnterAsync(cancellationToken).ConfigureAwait(false);
        return await _registry.AddStreamsAsync(id, paths, cancellationToken).ConfigureAwait(false);
    }

    public async Task<bool> RemoveStreamAsync(string id, string path, CancellationToken cancellationToken)
    {
        await using var held = await _registry.EnterAsync(cancellationToken).ConfigureAwait(false);
        return await _registry.RemoveStreamAsync(id, path, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Applies a webhook callback or a pull-wake ack; <see cref="AckOutcome.Fenced"/> when the wake is not current.</summary>
    public async Task<AckOutcome> AckAsync(string id, string? token, string? wakeId, long? generation, IReadOnlyList<(string Stream, string Offset)> acks, bool done, CancellationToken cancellationToken)
    {
        if (Unproven(id, token, wakeId, generation) is { } refused)
        {
            return refused;
        }

        await using var held = await _registry.EnterAsync(cancellationToken).ConfigureAwait(false);
        if (_registry.Get(id) is not { } subscription)
        {
            return AckOutcome.NotFound;
        }

        if (!IsCurrent(subscription, token, wakeId, generation))
        {
            return AckOutcome.Fenced;
        }

        // Every ack is judged before any is applied: one past its stream's tail would mark data not yet written as
        // processed, and the appends that later fill that range would wake no one.
        var moves = new List<(SubscriptionLink Link, long Position, long StreamId)>(acks.Count);
        foreach (var (stream, offset) in acks)
        {
            if (!StreamOffset.TryParse(offset, out var position))
            {
                return AckOutcome.InvalidOffset(stream);
            }

            if (!subscription.Links.TryGetValue(stream, out var link))
            {
                continue;
            }

            // A stream no longer linked (above), no longer there, or deleted and created again since the wake or the link
            // saw it, has no cursor this wake can move: its ack is moot. A recreated stream's data stays pending and
            // wakes the subscription again (its link starts again from 0 when next read). Judged by the stream's id,
            // whichever node saw the delete, or none.
            var (tail, streamId) = await _registry.StreamAtAsync(stream, cancellationToken).ConfigureAwait(false);
            if (streamId is not { } current
                || (subscription.WakeStreamIds?.TryGetValue(stream, out var seen) == true && seen != current)
                || (link.StreamId is { } linked && linked != current)
                || position <= link.AckedPosition)
            {
                continue;
            }

            if (position > tail)
            {
                return AckOutcome.BeyondTail(stream);
            }

            moves.Add((link, position, current));
        }

        foreach (var (link, position, streamId) in moves)
        {
            link.AckedPosition = Math.Max(link.AckedPosition, position);
            link.StreamId = streamId;
        }

        if (!done)
        {
            // An ack that is not done is also the worker's heartbeat.
            _scheduler.StartLease(subscription);
            await _registry.SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
            return AckOutcome.Ok(nextWake: false);
        }

        _scheduler.EndWake(subscription);
        var pending = await _registry.HasPendingAsync(subscription, cancellationToken).ConfigureAwait(false);
        await _registry.SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
        if (pending)
        {
            await WakeAfterAsync(subscription, pending: true).ConfigureAwait(false);
        }

        return AckOutcome.Ok(pending);
    }

    public async Task<AckOutcome> ReleaseAsync(string id, string? token, string? wakeId, long? generation, CancellationToken cancellationToken)
    {
        if (Unproven(id, token, wakeId, generation) is { } refused)
        {
            return refused;
        }

        await using var held = await _registry.EnterAsync(cancellationToken).ConfigureAwait(false);
        if (_registry.Get(id) is not { } subscription)
        {
            return AckOutcome.NotFound;
        }

        if (!IsCurrent(subscription, token, wakeId, generation))
        {
            return AckOutcome.Fenced;
        }

        _scheduler.EndWake(subscription);
        await _registry.SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
        await WakeAfterAsync(subscription, pending: null).ConfigureAwait(false);
        return AckOutcome.Ok(nextWake: false);
    }

    public async Task<ClaimOutcome> ClaimAsync(string id, string worker, CancellationToken cancellationToken)
    {
        await using var held = await _registry.EnterAsync(cancellationToken).ConfigureAwait(false);
        if (_registry.Get(id) is not { } subscription)
        {
            return new ClaimOutcome(ClaimStatus.NotFound, null, null);
        }

        if (subscription.Config.IsWebhook)
        {
            return new ClaimOutcome(ClaimStatus.WrongType, subscription, null);
        }

        if (_scheduler.IsHeld(subscription))
        {
            return new ClaimOutcome(ClaimStatus.AlreadyClaimed, subscription, null);
        }

        if (subscription.WakeId is not null && subscription.Holder is not null)
        {
            // The holder's lease ran out and the deadline pass has not ended its wake yet: it ends now, so this claim is
            // a new generation and the old holder's token is fenced, as it would be a moment later.
            Log.LeaseExpired(_logger, subscription.Id, subscription.Generation);
            _scheduler.EndWake(subscription);
            await _registry.SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
        }

        if (subscription.WakeId is null)
        {
            if (!await _registry.HasPendingAsync(subscription, cancellationToken).ConfigureAwait(false))
            {
                return new ClaimOutcome(ClaimStatus.NothingPending, subscription, null);
            }

            await WakeAsync(subscription, cancellationToken, claiming: true).ConfigureAwait(false);
        }

        // Claimed, the wake is being served: a backoff left by wake events its stream refused is over.
        if (subscription.FailedAttempts > 0)
        {
            _scheduler.DeliverySucceeded(subscription);
        }

        // What the worker is given is what its acks are judged against: a wake that waited for its claim sees the streams
        // as they are now (one deleted and created again meanwhile is the new one).
        var streamIds = new Dictionary<string, long>(StringComparer.Ordinal);
        var streams = await _registry.DescribeStreamsAsync(subscription, cancellationToken, streamIds).ConfigureAwait(false);
        subscription.WakeSnapshot = Snapshot(streams);
        subscription.WakeStreamIds = streamIds;
        _scheduler.Claim(subscription, worker);
        await _registry.SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
        return new ClaimOutcome(ClaimStatus.Claimed, subscription, streams);
    }

    /// <summary>The subscription's streams as the API shows them, read under the lock: passes change its links.</summary>
    public async Task<List<JsonObject>> DescribeStreamsAsync(Subscription subscription, CancellationToken cancellationToken)
    {
        await using var held = await _registry.EnterAsync(cancellationToken).ConfigureAwait(false);
        return await _registry.DescribeStreamsAsync(subscription, cancellationToken).ConfigureAwait(false);
    }

    // ---- reacting to appends and deadlines ----

    private async Task ProcessAppendsAsync()
    {
        var token = _stopping.Token;
        var changes = new List<LiveAppend>();
        try
        {
            while (await _appends.Reader.WaitToReadAsync(token).ConfigureAwait(false))
            {
                changes.Clear();
                var tick = false;
                while (_appends.Reader.TryRead(out var change))
                {
                    if (ReferenceEquals(change, TickMarker))
                    {
                        tick = true;
                    }
                    else
                    {
                        Interlocked.Decrement(ref _queued);
                        changes.Add(change);
                    }
                }

                if (Interlocked.Exchange(ref _overflowed, 0) == 1)
                {
                    // Changes were dropped: every subscription is looked at again (a stream only a pattern matches, seen
                    // in none of the changes kept, is linked at its next append).
                    _recheckAll = true;
                }

                try
                {
                    await ProcessAsync(changes, tick, token).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    // The store failed (a shared store's blip). Deadlines this pass took are not lost: everything is
                    // read again and the pass tried once more shortly.
                    Log.ProcessingFailed(_logger, ex);
                    RetryProcessingSoon();
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task ProcessAsync(List<LiveAppend> changes, bool tick, CancellationToken cancellationToken)
    {
        // Neither the lock nor the store is touched unless a deadline has passed, an append concerns a subscription
        // this node knows, or (on a shared store) another node changed the subscriptions.
        var recheck = _recheckAll;
        var due = (tick && _scheduler.AnyDue) || recheck;
        if (!due && !changes.Exists(change => _registry.Candidates(change).Count > 0)
            && !(changes.Count > 0 && await _registry.IsStaleAsync(cancellationToken).ConfigureAwait(false)))
        {
            if (tick)
            {
                // Woken before the deadline (or the deadline went away meanwhile): wait for the current one.
                ArmTimer();
            }

            return;
        }

        await using var held = await _registry.EnterAsync(cancellationToken).ConfigureAwait(false);
        var touched = new HashSet<Subscription>();
        var changed = new HashSet<Subscription>();
        foreach (var change in changes)
        {
            foreach (var subscription in _registry.Candidates(change))
            {
                var observed = Observe(subscription, change);
                if (observed != Observation.Unrelated)
                {
                    touched.Add(subscription);
                }

                if (observed == Observation.Linked)
                {
                    changed.Add(subscription);
                }
            }
        }

        if (recheck)
        {
            // After a failed pass: deadlines it took from the scheduler are taken again from the subscriptions, and each
            // one idle with data pending is woken below.
            _scheduler.Reset(_registry.All);
            touched.UnionWith(_registry.All);
        }

        var work = _scheduler.CollectDue();
        foreach (var subscription in work.Expired)
        {
            Log.LeaseExpired(_logger, subscription.Id, subscription.Generation);
            touched.Add(subscription);
            changed.Add(subscription);
        }

        touched.UnionWith(work.Retry);
        foreach (var subscription in touched)
        {
            if (subscription.Deleted)
            {
                continue;
            }

            if (changed.Contains(subscription))
            {
                await _registry.SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
            }

            if (_scheduler.IsIdle(subscription) && await _registry.HasPendingAsync(subscription, cancellationToken).ConfigureAwait(false))
            {
                await WakeAsync(subscription, cancellationToken).ConfigureAwait(false);
            }
        }

        if (recheck)
        {
            _recheckAll = false;
        }
    }

    /// <summary>After a failed pass: the next one, a second from now, looks at every subscription.</summary>
    private void RetryProcessingSoon()
    {
        _recheckAll = true;
        lock (_timerGate)
        {
            _timer?.Change(RecheckDelay, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>Links a newly seen matching stream; says whether the subscription may need a wake.</summary>
    private Observation Observe(Subscription subscription, LiveAppend change)
    {
        if (subscription.Links.TryGetValue(change.Path, out var link))
        {
            if (change.Deleted)
            {
                // A link only the pattern made goes with its stream; an explicit one stays, and a recreated stream
                // starts again from its beginning.
                if (!_registry.UnlinkDeleted(subscription, change.Path))
                {
                    link.AckedPosition = 0;
                    link.StreamId = null;
                }

                return Observation.Linked;
            }

            return Observation.Existing;
        }

        if (change.Deleted || subscription.Config.Pattern is not { } pattern || !PathGlob.IsMatch(pattern, change.Path))
        {
            return Observation.Unrelated;
        }

        // Linked "before" this append so the append itself is pending.
        if (_registry.TryLinkGlob(subscription, change.Path, change.Chunk.Start, change.StreamId))
        {
            return Observation.Linked;
        }

        if (subscription.StreamLimitReached)
        {
            return Observation.Unrelated;
        }

        // Said once, and kept with the subscription (its GET shows it): each later stream left out is not logged again.
        subscription.StreamLimitReached = true;
        Log.StreamLimitReached(_logger, subscription.Id, change.Path, _options.MaxStreamsPerSubscription);
        return Observation.Linked;
    }

    private enum Observation
    {
        Unrelated,
        Existing,
        Linked,
    }

    /// <summary>Arms the timer for the scheduler's earliest deadline, or disarms it when there is none.</summary>
    private void ArmTimer()
    {
        // Serialized, so a stale deadline read by one caller cannot overwrite a newer one armed by another.
        lock (_timerGate)
        {
            if (_timer is null)
            {
                return;
            }

            var due = _scheduler.NextDeadline is { } next
                ? TimeSpan.FromTicks(Math.Max(0, (next - _time.GetUtcNow()).Ticks))
                : Timeout.InfiniteTimeSpan;
            if (_recheckAll && (due == Timeout.InfiniteTimeSpan || due > RecheckDelay))
            {
                // A pass failed: the one that looks at every subscription is due whatever the deadlines say.
                due = RecheckDelay;
            }
            _timer.Change(due, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>
    /// The answer to a callback, ack or release whose token does not prove the wake it names, decided without the lock:
    /// these routes take no bearer token, so a request anyone can make must not queue the subscriptions' lock (on a
    /// shared store, every node's) before it is judged. Null when the token holds up; the wake is then checked again,
    /// as current, under the lock.
    /// </summary>
    private AckOutcome? Unproven(string id, string? token, string? wakeId, long? generation)
    {
        if (Keys.TryValidateToken(token, out var tokenSubscription, out var tokenGeneration, out var tokenWake)
            && tokenSubscription == id && tokenGeneration == generation && tokenWake == wakeId)
        {
            return null;
        }

        // Without a token of this server's for it, the answer is the same as under the lock, from what this node knows
        // (on a shared store, as of its last entry).
        return _registry.Get(id) is null ? AckOutcome.NotFound : AckOutcome.Fenced;
    }

    private bool IsCurrent(Subscription subscription, string? token, string? wakeId, long? generation)
    {
        if (!Keys.TryValidateToken(token, out var tokenSubscription, out var tokenGeneration, out var tokenWake))
        {
            return false;
        }

        return tokenSubscription == subscription.Id
            && tokenGeneration == subscription.Generation
            && tokenWake == subscription.WakeId
            && generation == subscription.Generation
            && wakeId == subscription.WakeId;
    }

    /// <summary>The tails a wake names, by path, from its streams as described.</summary>
    private static Dictionary<string, long> Snapshot(List<JsonObject> streams)
        => streams.ToDictionary(s => (string)s["path"]!, s => StreamOffset.TryParse((string)s["tail_offset"]!, out var p) ? p : 0, StringComparer.Ordinal);

    /// <summary>
    /// Starts a new wake generation: a webhook delivery, or a wake event on the pull-wake stream (which, for a wake a
    /// claim starts (<paramref name="claiming"/>), is only a hint: the claim carries the wake whether it was written or not).
    /// </summary>
    private async Task WakeAsync(Subscription subscription, CancellationToken cancellationToken, bool claiming = false)
    {
        // Read before anything changes: a failure here leaves the subscription idle, for the retry a second from now.
        List<JsonObject> streams;
        Dictionary<string, long> streamIds;
        try
        {
            streams = await _registry.DescribeStreamsAsync(subscription, cancellationToken, streamIds = new Dictionary<string, long>(StringComparer.Ordinal)).ConfigureAwait(false);
        }
        catch
        {
            RetryProcessingSoon();
            throw;
        }

        subscription.Generation++;
        subscription.WakeId = "w_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12));
        subscription.WakeSnapshot = Snapshot(streams);
        subscription.WakeStreamIds = streamIds;
        Log.Waking(_logger, subscription.Id, subscription.Generation);
        try
        {
            await StartWakeAsync(subscription, streams, claiming, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            // The wake did not go out (its save or its wake event failed). Left in flight, it would have no lease and no
            // event: nothing would ever end it, and the subscription would never wake again. Undone (and saved so, if the
            // store takes it: a reload must not bring the half-done wake back), it is idle, and a pass a second from now
            // looks at every subscription and wakes it anew, as a later generation, whoever called this.
            _scheduler.EndWake(subscription);
            RetryProcessingSoon();
            try
            {
                await _registry.SaveAsync(subscription, CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is StreamStoreUnavailableException or OperationCanceledException)
            {
                // The store is failing; the retry saves the next wake.
            }

            throw;
        }
    }

    /// <summary>
    /// After a wake ended and was saved (an ack, a release, a webhook's done): the next wake, if data is pending
    /// (<paramref name="pending"/>, or looked up when null). What ended is durable, so a failure here is not the caller's:
    /// it is left to the retry a second from now (which looks at every subscription).
    /// </summary>
    private async Task WakeAfterAsync(Subscription subscription, bool? pending)
    {
        try
        {
            if (pending ?? await _registry.HasPendingAsync(subscription, CancellationToken.None).ConfigureAwait(false))
            {
                await WakeAsync(subscription, CancellationToken.None).ConfigureAwait(false);
            }
        }
        catch (StreamStoreUnavailableException ex)
        {
            Log.ProcessingFailed(_logger, ex);
            RetryProcessingSoon();
        }
    }

    private async Task StartWakeAsync(Subscription subscription, List<JsonObject> streams, bool claiming, CancellationToken cancellationToken)
    {
        if (!subscription.Config.IsWebhook)
        {
            // A pull-wake lease starts when a worker claims the wake.
            await _registry.SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
            var announced = await _delivery.AppendWakeEventsAsync(subscription, streams, cancellationToken).ConfigureAwait(false);
            if (announced && subscription.FailedAttempts > 0)
            {
                _scheduler.DeliverySucceeded(subscription);
                await _registry.SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
            }

            if (announced || claiming)
            {
                return;
            }

            // The wake stream refused it (not there, closed, not JSON): in flight with no event, the wake would be
            // heard by no one and end never. It ends now, and is tried again after a backoff, as a failed webhook is.
            _scheduler.DeliveryFailed(subscription);
            await _registry.SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
            return;
        }

        // The lease outlasts the POST that carries the wake: one that ran out while the POST was still out would start
        // the next wake, and its POST, beside it, so a receiver slower than a short lease_ttl_ms would get a POST per
        // lease, each answer discarded as late. Each wake sends one POST; a failed one ends the wake, retried after the backoff.
        _scheduler.StartLease(subscription, atLeast: _options.WebhookTimeout + WebhookLeaseMargin);
        await _registry.SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
        var body = _delivery.WebhookBody(subscription, streams, Keys);
        var (generation, wakeId) = (subscription.Generation, subscription.WakeId!);
        _ = Task.Run(async () =>
        {
            try
            {
                await DeliverAsync(subscription, generation, wakeId, body).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                // A fire-and-forget delivery must never fault unobserved (at shutdown its failures are expected).
                if (!_stopping.IsCancellationRequested)
                {
                    Log.DeliveryFailed(_logger, subscription.Id, ex);
                }
            }
        }, CancellationToken.None);
    }

    /// <summary>Sends one webhook wake and applies its outcome, if that wake is still current.</summary>
    private async Task DeliverAsync(Subscription subscription, long generation, string wakeId, byte[] body)
    {
        bool? done;
        try
        {
            done = await _delivery.SendWebhookAsync(subscription.Id, subscription.Config.WebhookUrl!, body, Keys, _stopping.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
            return;
        }

        await using var held = await _registry.EnterAsync(CancellationToken.None).ConfigureAwait(false);

        // The current instance: on a shared store it may have been reloaded while the webhook was out.
        if (_registry.Get(subscription.Id) is not { } current)
        {
            return;
        }

        subscription = current;
        if (subscription.Deleted || subscription.Generation != generation || subscription.WakeId != wakeId)
        {
            return;
        }

        if (done is null)
        {
            // Persisted, so a restart honours the backoff.
            _scheduler.DeliveryFailed(subscription);
            await _registry.SaveAsync(subscription, CancellationToken.None).ConfigureAwait(false);
            return;
        }

        _scheduler.DeliverySucceeded(subscription);
        if (done == true)
        {
            foreach (var (path, tail) in subscription.WakeSnapshot ?? [])
            {
                if (!subscription.Links.TryGetValue(path, out var link) || tail <= link.AckedPosition)
                {
                    continue;
                }

                // Only for the stream the wake saw: one deleted (and perhaps created again) since keeps its data pending.
                // (A wake stored by an earlier version has no ids to compare.)
                if (subscription.WakeStreamIds is { } ids)
                {
                    if (!ids.TryGetValue(path, out var seen) || (link.StreamId is { } linked && linked != seen)
                        || (await _registry.StreamAtAsync(path, CancellationToken.None).ConfigureAwait(false)).Id != seen)
                    {
                        continue;
                    }

                    link.StreamId = seen;
                }

                link.AckedPosition = tail;
            }

            _scheduler.EndWake(subscription);
            await _registry.SaveAsync(subscription, CancellationToken.None).ConfigureAwait(false);
            await WakeAfterAsync(subscription, pending: null).ConfigureAwait(false);
            return;
        }

        // Answered, not done: the receiver holds the wake from now on (it acks through the callback), on lease_ttl_ms
        // from its answer, like a pull-wake worker's claim; the longer lease only covered the POST.
        _scheduler.StartLease(subscription);
        await _registry.SaveAsync(subscription, CancellationToken.None).ConfigureAwait(false);
    }

    private static partial class Log
    {
        [LoggerMessage(200, LogLevel.Information, "Subscription {Id} created ({Type})")]
        public static partial void Created(ILogger logger, string id, string type);

        [LoggerMessage(201, LogLevel.Debug, "Subscription {Id} wake generation {Generation}")]
        public static partial void Waking(ILogger logger, string id, long generation);

        [LoggerMessage(203, LogLevel.Debug, "Subscription {Id} lease of generation {Generation} expired")]
        public static partial void LeaseExpired(ILogger logger, string id, long generation);

        [LoggerMessage(205, LogLevel.Error, "Subscription processing failed")]
        public static partial void ProcessingFailed(ILogger logger, Exception exception);

        [LoggerMessage(206, LogLevel.Error, "Applying the webhook delivery of subscription {Id} failed")]
        public static partial void DeliveryFailed(ILogger logger, string id, Exception exception);

        [LoggerMessage(209, LogLevel.Warning, "Subscription {Id} links its limit of {Max} streams (Subscriptions:MaxStreamsPerSubscription): {Path}, which its pattern matches, and later matches are not linked and wake nothing")]
        public static partial void StreamLimitReached(ILogger logger, string id, string path, int max);

        [LoggerMessage(207, LogLevel.Warning, "More than {Max} appends wait for subscription processing; the next pass looks at every subscription instead")]
        public static partial void ChangesOverflowed(ILogger logger, int max);
    }
}

internal readonly record struct AckOutcome(int Status, bool NextWake, string? Stream = null, string? Code = null)
{
    public static AckOutcome NotFound => new(404, false);

    public static AckOutcome Fenced => new(409, false);

    public static AckOutcome Ok(bool nextWake) => new(200, nextWake);

    /// <summary>An ack past the tail of <paramref name="stream"/>; nothing of the request was applied.</summary>
    public static AckOutcome BeyondTail(string stream) => new(400, false, stream, "OFFSET_BEYOND_TAIL");

    /// <summary>An ack of <paramref name="stream"/> naming no offset of this server's; nothing of the request was applied.</summary>
    public static AckOutcome InvalidOffset(string stream) => new(400, false, stream, "INVALID_OFFSET");
}

internal enum ClaimStatus
{
    Claimed,
    NotFound,
    AlreadyClaimed,
    NothingPending,
    WrongType,
}

internal sealed record ClaimOutcome(ClaimStatus Status, Subscription? Subscription, List<JsonObject>? Streams);
