using DurableSessions.AspNetCore.Sessions;
using DurableSessions.Client;
using DurableSessions.Sessions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// A presence sweep that cannot write a participant's <c>left</c> event (the store is down) must leave the participant
/// to the next sweep, on one node and on a shared store: never forget it while the session still shows it joined.
/// </summary>
public sealed class PresenceSweepFailureTests
{
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_participant_whose_left_event_could_not_be_written_is_marked_left_by_the_next_sweep(bool shared)
    {
        FailingStore store = null!;
        await using var server = await InProcessServer.StartAsync(_clock, services: services =>
        {
            // Sweeps are run by the test alone, one at a time: the timer never comes due.
            services.Configure<SessionServiceOptions>(o => o.PresenceSweepInterval = TimeSpan.FromDays(1));
            var original = services.Single(d => d.ServiceType == typeof(StreamStore));
            services.Remove(original);
            services.AddSingleton<StreamStore>(sp => store = new FailingStore((StreamStore)original.ImplementationFactory!(sp), shared));
        });
        var presence = server.Services.GetRequiredService<PresenceService>();
        using var bob = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, ParticipantId = "client:bob" });
        await bob.Session("room").CreateAsync();
        await bob.Session("room").HeartbeatAsync();
        Assert.Equal(PresenceStatus.Joined, (await SessionWaits.StateAsync(bob, "room", s => s.GetPresence("client:bob") is not null)).GetPresence("client:bob")!.Status);

        _clock.Advance(TimeSpan.FromSeconds(31));
        store.FailAppends = true;
        await presence.SweepAsync();
        Assert.True(store.FailedAppends > 0);
        store.FailAppends = false;

        // Nothing was written, and the participant is still known: the next sweep marks it left.
        Assert.Equal(PresenceStatus.Joined, (await SessionWaits.StateAsync(bob, "room", _ => true)).GetPresence("client:bob")!.Status);
        await presence.SweepAsync();
        var state = await SessionWaits.StateAsync(bob, "room", s => s.GetPresence("client:bob")?.Status == PresenceStatus.Left);
        Assert.Equal(PresenceStatus.Left, state.GetPresence("client:bob")!.Status);
    }

    /// <summary>A store that fails every append while armed, and says it is shared when asked to.</summary>
    private sealed class FailingStore(StreamStore inner, bool shared) : DelegatingStore(inner)
    {
        private int _failed;

        public volatile bool FailAppends;

        public int FailedAppends => Volatile.Read(ref _failed);

        public override bool IsShared => shared;

        public override ValueTask<AppendResult> AppendAsync(AppendRequest request, CancellationToken cancellationToken = default)
        {
            if (FailAppends)
            {
                Interlocked.Increment(ref _failed);
                throw new StreamStoreUnavailableException("The store is down (test).");
            }

            return base.AppendAsync(request, cancellationToken);
        }
    }
}
