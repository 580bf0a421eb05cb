namespace DurableSessions.AspNetCore.Subscriptions;

/// <summary>
/// Decides when subscriptions are due: leases that expire, and failed webhook deliveries whose backoff has passed. Pure
/// logic over a <see cref="TimeProvider"/>; it keeps only the subscriptions that have a deadline, so its cost follows
/// the wakes in flight, not the number of subscriptions.
/// </summary>
/// <remarks>
/// Not thread-safe: every method but <see cref="NextDeadline"/> and <see cref="AnyDue"/> is called under the
/// subscriptions' lock. Those two read one volatile value and may be called from any thread (a timer callback), so a
/// node with nothing scheduled answers them without touching the lock or the store.
/// </remarks>
internal sealed class WakeScheduler
{
    /// <summary>The longest wait between failed webhook deliveries.</summary>
    public static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(60);

    private const long Never = long.MaxValue;
    private readonly TimeProvider _time;
    private readonly Func<double> _jitter;
    private readonly Dictionary<string, (Subscription Subscription, long Deadline)> _timed = new(StringComparer.Ordinal);
    private readonly SortedSet<(long Deadline, string Id)> _order = [];
    private long _next = Never;

    /// <summary>Creates a scheduler.</summary>
    /// <param name="time">The clock.</param>
    /// <param name="jitter">A source of uniform samples in [0, 1) for the backoff's jitter; random when null.</param>
    public WakeScheduler(TimeProvider time, Func<double>? jitter = null)
    {
        _time = time;
        _jitter = jitter ?? Random.Shared.NextDouble;
    }

    /// <summary>Raised (under the subscriptions' lock) when <see cref="NextDeadline"/> changes.</summary>
    public event Action? NextDeadlineChanged;

    /// <summary>The earliest deadline of any subscription, or null when nothing is scheduled.</summary>
    public DateTimeOffset? NextDeadline
        => Volatile.Read(ref _next) is var next && next == Never ? null : new DateTimeOffset(next, TimeSpan.Zero);

    /// <summary>Whether some deadline has passed, so <see cref="CollectDue"/> has work.</summary>
    public bool AnyDue => Volatile.Read(ref _next) <= _time.GetUtcNow().UtcTicks;

    /// <summary>How many subscriptions have a deadline.</summary>
    public int ScheduledCount => _timed.Count;

    /// <summary>How long to wait after the <paramref name="failedAttempts"/>-th failed delivery in a row.</summary>
    /// <param name="failedAttempts">Failures in a row, from 1.</param>
    /// <param name="jitter">A sample in [0, 1); 0.5 gives the exact exponential step.</param>
    /// <remarks>1 s, 2 s, 4 s, … capped at 60 s, each within ±20 % so receivers that failed together retry apart.</remarks>
    public static TimeSpan BackoffDelay(int failedAttempts, double jitter)
    {
        var seconds = Math.Min(MaxBackoff.TotalSeconds, Math.Pow(2, Math.Max(0, failedAttempts - 1)));
        return TimeSpan.FromSeconds(seconds * (1 + ((jitter * 0.4) - 0.2)));
    }

    /// <summary>Whether a wake may start now: none in flight, no holder, and no failure backoff pending.</summary>
    public bool IsIdle(Subscription subscription)
        => subscription.WakeId is null && subscription.Holder is null
           && (subscription.NextAttemptAt is not { } next || next <= _time.GetUtcNow());

    /// <summary>Whether the subscription should be woken now, given whether it has unacknowledged data.</summary>
    public bool ShouldWake(Subscription subscription, bool hasPending) => hasPending && IsIdle(subscription);

    /// <summary>
    /// Starts (or, for an ack that is not done, extends) the lease of the current wake: it expires lease_ttl from now, or
    /// <paramref name="atLeast"/> from now when that is longer.
    /// </summary>
    public void StartLease(Subscription subscription, TimeSpan atLeast = default)
    {
        var ttl = TimeSpan.FromMilliseconds(subscription.Config.LeaseTtlMs);
        subscription.LeaseExpiresAt = _time.GetUtcNow() + (atLeast > ttl ? atLeast : ttl);
        Track(subscription);
    }

    /// <summary>Gives the current wake to <paramref name="worker"/> with a fresh lease.</summary>
    public void Claim(Subscription subscription, string worker)
    {
        subscription.Holder = worker;
        StartLease(subscription);
    }

    /// <summary>Whether another worker holds a lease that has not expired.</summary>
    public bool IsHeld(Subscription subscription)
        => subscription.Holder is not null && subscription.LeaseExpiresAt > _time.GetUtcNow();

    /// <summary>Ends the current wake (done, released, expired, failed): no wake id, holder or lease.</summary>
    public void EndWake(Subscription subscription)
    {
        subscription.WakeId = null;
        subscription.WakeSnapshot = null;
        subscription.WakeStreamIds = null;
        subscription.Holder = null;
        subscription.LeaseExpiresAt = null;
        Track(subscription);
    }

    /// <summary>Records a failed webhook delivery: the wake ends and the next one waits for the backoff.</summary>
    public void DeliveryFailed(Subscription subscription)
    {
        subscription.FailedAttempts++;
        subscription.Status = "failed";
        subscription.NextAttemptAt = _time.GetUtcNow() + BackoffDelay(subscription.FailedAttempts, _jitter());
        EndWake(subscription);
    }

    /// <summary>Records an answered webhook delivery: the failure count and backoff are cleared.</summary>
    public void DeliverySucceeded(Subscription subscription)
    {
        subscription.Status = "active";
        subscription.FailedAttempts = 0;
        subscription.NextAttemptAt = null;
        Track(subscription);
    }

    /// <summary>
    /// Takes every subscription whose deadline has passed. Expired leases end their wake here (the subscription must be
    /// saved); subscriptions whose backoff has passed are returned to be woken if they have pending data.
    /// </summary>
    public DueWork CollectDue()
    {
        var now = _time.GetUtcNow();
        var due = new DueWork();
        while (_order.Count > 0 && _order.Min.Deadline <= now.UtcTicks)
        {
            var (_, id) = _order.Min;
            var subscription = _timed[id].Subscription;
            Untrack(id);
            if (subscription.LeaseExpiresAt is { } expires && expires <= now)
            {
                EndWake(subscription);
                due.Expired.Add(subscription);
            }
            else if (subscription.WakeId is null && subscription.NextAttemptAt <= now)
            {
                // Collected once: if nothing is pending now, the next append wakes it (its backoff is over).
                due.Retry.Add(subscription);
            }
            else
            {
                Track(subscription);
            }
        }

        Publish();
        return due;
    }

    /// <summary>Schedules <paramref name="subscription"/> by its lease and backoff, or unschedules it when it has neither.</summary>
    public void Track(Subscription subscription)
    {
        Untrack(subscription.Id);
        var deadline = Never;
        if (!subscription.Deleted)
        {
            if (subscription.LeaseExpiresAt is { } lease)
            {
                deadline = lease.UtcTicks;
            }

            if (subscription.Status == "failed" && subscription.WakeId is null && subscription.NextAttemptAt is { } next)
            {
                deadline = Math.Min(deadline, next.UtcTicks);
            }
        }

        if (deadline != Never)
        {
            _timed[subscription.Id] = (subscription, deadline);
            _order.Add((deadline, subscription.Id));
        }

        Publish();
    }

    /// <summary>Unschedules a deleted subscription.</summary>
    public void Forget(string id)
    {
        Untrack(id);
        Publish();
    }

    /// <summary>Replaces everything scheduled with the deadlines of <paramref name="subscriptions"/> (after a reload).</summary>
    public void Reset(IEnumerable<Subscription> subscriptions)
    {
        _timed.Clear();
        _order.Clear();
        foreach (var subscription in subscriptions)
        {
            Track(subscription);
        }

        Publish();
    }

    private void Untrack(string id)
    {
        if (_timed.Remove(id, out var entry))
        {
            _order.Remove((entry.Deadline, id));
        }
    }

    private void Publish()
    {
        var next = _order.Count == 0 ? Never : _order.Min.Deadline;
        if (Interlocked.Exchange(ref _next, next) != next)
        {
            NextDeadlineChanged?.Invoke();
        }
    }
}

/// <summary>What <see cref="WakeScheduler.CollectDue"/> found due.</summary>
internal sealed class DueWork
{
    /// <summary>Subscriptions whose lease expired; their wake has ended and they must be saved.</summary>
    public List<Subscription> Expired { get; } = [];

    /// <summary>Subscriptions whose failure backoff has passed.</summary>
    public List<Subscription> Retry { get; } = [];
}
