using System.Net;
using DurableSessions.Client;
using DurableSessions.Sessions;
using Microsoft.Extensions.Time.Testing;

namespace DurableSessions.FunctionalTests;

/// <summary>Presence with a fake clock: heartbeats keep participants present; silence marks them left.</summary>
public sealed class PresenceTests : IAsyncLifetime
{
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));
    private InProcessServer _server = null!;

    public async ValueTask InitializeAsync() => _server = await InProcessServer.StartAsync(_clock);

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    private DurableSessionsClient Client(string participant) => new(DurableSessionsClientOptions.Default with { BaseAddress = _server.BaseAddress, ParticipantId = participant });

    private async Task<SessionState> WaitFor(DurableSessionsClient client, Func<SessionState, bool> condition)
    {
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await foreach (var update in client.Session("room").JoinAsync(cancel.Token))
        {
            if (update.UpToDate && condition(update.State))
            {
                return update.State;
            }
        }

        throw new InvalidOperationException("session ended");
    }

    private static string? Status(SessionState state, string participant) => state.Get("presence", participant)?["status"]?.GetValue<string>();

    [Fact]
    public async Task Participants_that_stop_beating_are_marked_left_after_the_timeout()
    {
        using var alice = Client("human:alice");
        using var bob = Client("client:bob");
        await alice.Session("room").CreateAsync();
        Assert.Equal(TimeSpan.FromSeconds(30), await alice.Session("room").HeartbeatAsync("human", "Alice"));
        await bob.Session("room").HeartbeatAsync();
        var state = await WaitFor(alice, s => Status(s, "client:bob") == "joined" && Status(s, "human:alice") == "joined");
        Assert.Equal("human", state.Get("presence", "human:alice")!["kind"]!.GetValue<string>());

        _clock.Advance(TimeSpan.FromSeconds(20));
        await alice.Session("room").HeartbeatAsync("human", "Alice");
        _clock.Advance(TimeSpan.FromSeconds(15));

        state = await WaitFor(alice, s => Status(s, "client:bob") == "left");
        Assert.Equal("joined", Status(state, "human:alice"));

        await alice.Session("room").LeaveAsync();
        state = await WaitFor(bob, s => Status(s, "human:alice") == "left");
        Assert.Equal("left", Status(state, "client:bob"));

        // Coming back after leaving announces the participant again.
        await bob.Session("room").HeartbeatAsync();
        await WaitFor(alice, s => Status(s, "client:bob") == "joined");
    }

    [Theory]
    [InlineData("{\"kind\":\"client\"}")]
    [InlineData("{\"participantId\":\"a b\",\"kind\":\"client\"}")]
    [InlineData("{\"participantId\":\"client:x\",\"kind\":\"robot\"}")]
    public async Task Bad_heartbeats_get_a_400(string body)
    {
        using var client = Client("client:x");
        await client.Session("room").CreateAsync();
        var response = await _server.Client.PostAsync("/v1/sessions/room/presence", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
    }
}
