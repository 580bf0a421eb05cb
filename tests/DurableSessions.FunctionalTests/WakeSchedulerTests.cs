using DurableSessions.AspNetCore.Subscriptions;
using Microsoft.Extensions.Time.Testing;

namespace DurableSessions.FunctionalTests;

/// <summary>When subscriptions are due (leases, heartbeats, releases, failure backoff), on a fake clock.</summary>
public sealed class WakeSchedulerTests
{
    private const long LeaseTtlMs = 30_000;
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));
    private readonly WakeScheduler _scheduler;

    public WakeSchedulerTests()
    {
        // The middle of the jitter range: the exact exponential step.
        _scheduler = new WakeScheduler(_clock, jitter: () => 0.5);
    }

    [Fact]
    public void Nothing_is_scheduled_or_due_without_subscriptions()
    {
        Assert.Null(_scheduler.NextDeadline);
        Assert.False(_scheduler.AnyDue);
        _clock.Advance(TimeSpan.FromDays(1));
        Assert.False(_scheduler.AnyDue);
        var due = _scheduler.CollectDue();
        Assert.Empty(due.Expired);
        Assert.Empty(due.Retry);
    }

    [Fact]
    public void A_subscription_without_a_lease_or_backoff_is_not_scheduled()
    {
        var changes = 0;
        _scheduler.NextDeadlineChanged += () => changes++;
        _scheduler.Reset([NewSubscription("idle")]);
        Assert.Null(_scheduler.NextDeadline);
        Assert.Equal(0, _scheduler.ScheduledCount);
        Assert.Equal(0, changes);
    }

    [Fact]
    public void A_lease_expires_at_exactly_lease_ttl()
    {
        var subscription = Woken("lease");
        _scheduler.Claim(subscription, "worker-1");
        Assert.Equal(_clock.GetUtcNow().AddMilliseconds(LeaseTtlMs), _scheduler.NextDeadline);
        Assert.True(_scheduler.IsHeld(subscription));

        _clock.Advance(TimeSpan.FromMilliseconds(LeaseTtlMs - 1));
        Assert.False(_scheduler.AnyDue);
        Assert.Empty(_scheduler.CollectDue().Expired);
        Assert.Equal("worker-1", subscription.Holder);

        _clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.True(_scheduler.AnyDue);
        var due = _scheduler.CollectDue();
        Assert.Same(subscription, Assert.Single(due.Expired));
        Assert.Null(subscription.WakeId);
        Assert.Null(subscription.Holder);
        Assert.Null(subscription.LeaseExpiresAt);
        Assert.False(_scheduler.IsHeld(subscription));
        Assert.True(_scheduler.IsIdle(subscription));
        Assert.Null(_scheduler.NextDeadline);
    }

    [Fact]
    public void An_ack_heartbeat_extends_the_lease_by_lease_ttl_from_the_ack()
    {
        var subscription = Woken("heartbeat");
        _scheduler.Claim(subscription, "worker-1");
        _clock.Advance(TimeSpan.FromSeconds(20));
        _scheduler.StartLease(subscription);
        Assert.Equal(_clock.GetUtcNow().AddMilliseconds(LeaseTtlMs), _scheduler.NextDeadline);

        // Past the first lease's end, within the extended one.
        _clock.Advance(TimeSpan.FromSeconds(20));
        Assert.False(_scheduler.AnyDue);
        Assert.Empty(_scheduler.CollectDue().Expired);
        Assert.True(_scheduler.IsHeld(subscription));

        _clock.Advance(TimeSpan.FromSeconds(10));
        Assert.Same(subscription, Assert.Single(_scheduler.CollectDue().Expired));
    }

    [Fact]
    public void A_release_with_pending_work_makes_the_subscription_wake_again_and_unschedules_its_lease()
    {
        var subscription = Woken("release");
        _scheduler.Claim(subscription, "worker-1");
        Assert.False(_scheduler.ShouldWake(subscription, hasPending: true));

        _scheduler.EndWake(subscription);
        Assert.True(_scheduler.ShouldWake(subscription, hasPending: true));
        Assert.False(_scheduler.ShouldWake(subscription, hasPending: false));
        Assert.Null(_scheduler.NextDeadline);

        // The released lease never fires.
        _clock.Advance(TimeSpan.FromMilliseconds(LeaseTtlMs * 2));
        Assert.Empty(_scheduler.CollectDue().Expired);
    }

    [Fact]
    public void Failed_webhook_deliveries_back_off_exponentially_up_to_a_minute_and_an_answer_resets_the_backoff()
    {
        var subscription = NewSubscription("backoff");
        _scheduler.Reset([subscription]);
        int[] expected = [1, 2, 4, 8, 16, 32, 60, 60];
        foreach (var seconds in expected)
        {
            subscription.WakeId = "w_1";
            _scheduler.StartLease(subscription);
            _scheduler.DeliveryFailed(subscription);
            Assert.Equal("failed", subscription.Status);
            Assert.Null(subscription.WakeId);
            Assert.Equal(_clock.GetUtcNow().AddSeconds(seconds), _scheduler.NextDeadline);

            // Appends during the backoff do not wake it.
            Assert.False(_scheduler.ShouldWake(subscription, hasPending: true));
            _clock.Advance(TimeSpan.FromSeconds(seconds) - TimeSpan.FromMilliseconds(1));
            Assert.Empty(_scheduler.CollectDue().Retry);

            _clock.Advance(TimeSpan.FromMilliseconds(1));
            Assert.Same(subscription, Assert.Single(_scheduler.CollectDue().Retry));
            Assert.True(_scheduler.ShouldWake(subscription, hasPending: true));

            // Collected once: nothing fires again until the next failure.
            Assert.Null(_scheduler.NextDeadline);
        }

        _scheduler.DeliverySucceeded(subscription);
        Assert.Equal("active", subscription.Status);
        Assert.Equal(0, subscription.FailedAttempts);
        subscription.WakeId = "w_2";
        _scheduler.DeliveryFailed(subscription);
        Assert.Equal(_clock.GetUtcNow().AddSeconds(1), _scheduler.NextDeadline);
    }

    [Theory]
    [InlineData(1, 0.0, 0.8)]
    [InlineData(1, 0.999999, 1.2)]
    [InlineData(3, 0.0, 3.2)]
    [InlineData(20, 0.999999, 72)]
    public void The_backoff_jitter_stays_within_twenty_percent(int attempts, double jitter, double seconds)
        => Assert.Equal(seconds, WakeScheduler.BackoffDelay(attempts, jitter).TotalSeconds, precision: 3);

    [Fact]
    public void After_a_reload_the_earliest_deadline_of_every_subscription_is_scheduled_and_a_deleted_one_is_forgotten()
    {
        var early = Woken("early");
        early.LeaseExpiresAt = _clock.GetUtcNow().AddSeconds(5);
        var late = Woken("late");
        late.LeaseExpiresAt = _clock.GetUtcNow().AddSeconds(50);
        _scheduler.Reset([late, early, NewSubscription("idle")]);
        Assert.Equal(2, _scheduler.ScheduledCount);
        Assert.Equal(early.LeaseExpiresAt, _scheduler.NextDeadline);

        _scheduler.Forget("early");
        Assert.Equal(late.LeaseExpiresAt, _scheduler.NextDeadline);
        _clock.Advance(TimeSpan.FromSeconds(50));
        Assert.Same(late, Assert.Single(_scheduler.CollectDue().Expired));
    }

    private Subscription Woken(string id)
    {
        var subscription = NewSubscription(id);
        subscription.Generation = 1;
        subscription.WakeId = "w_" + id;
        return subscription;
    }

    private Subscription NewSubscription(string id) => new()
    {
        Id = id,
        Config = new SubscriptionConfig { Type = "pull-wake", Pattern = "jobs/*", WakeStream = "wake", LeaseTtlMs = LeaseTtlMs },
        ConfigHash = "hash",
        BaseUrl = "http://127.0.0.1",
        CreatedAt = _clock.GetUtcNow(),
    };
}
