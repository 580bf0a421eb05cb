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
            services.WrapStore(inner => store = new FailingStore(inner, shared));
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

    [Fact]
    public async Task On_a_shared_store_a_participant_marked_left_elsewhere_while_it_beat_here_is_joined_again_by_its_next_beat()
    {
        FailingStore store = null!;
        await using var server = await InProcessServer.StartAsync(_clock, services: services =>
        {
            services.Configure<SessionServiceOptions>(o => o.PresenceSweepInterval = TimeSpan.FromDays(1));
            services.WrapStore(inner => store = new FailingStore(inner, shared: true));
        });
        var presence = server.Services.GetRequiredService<PresenceService>();
        var sessions = server.Services.GetRequiredService<SessionService>();
        using var bob = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, ParticipantId = "client:bob" });
        await bob.Session("room").CreateAsync();
        await bob.Session("room").HeartbeatAsync();

        // Another node's sweep: it writes bob's left event; bob beats here meanwhile (this node knows bob, so the beat
        // only refreshes it); then that sweep deletes bob's document.
        var events = new SessionEvents(_clock);
        var left = await sessions.AppendUnlessAsync("room", _ => false, _ => [events.Presence("client:bob", ParticipantKind.Client, null, PresenceStatus.Left, _clock.GetUtcNow())], CancellationToken.None);
        Assert.Equal(200, left.Status);
        await bob.Session("room").HeartbeatAsync();
        await store.DeleteDocumentAsync("presence:room", "client:bob");

        // This node's sweep finds bob's document gone and forgets bob here: bob's next beat announces it joined again.
        await presence.SweepAsync();
        await bob.Session("room").HeartbeatAsync();
        var state = await SessionWaits.StateAsync(bob, "room", s => s.GetPresence("client:bob")?.Status == PresenceStatus.Joined);
        Assert.Equal(PresenceStatus.Joined, state.GetPresence("client:bob")!.Status);
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
