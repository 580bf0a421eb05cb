using System.Net;
using DurableSessions.Client;
using DurableSessions.Sessions;
using Microsoft.Extensions.DependencyInjection;
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

    private async Task<SessionState> WaitFor(DurableSessionsClient client, Func<SessionState, bool> condition, string session = "room")
    {
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await foreach (var update in client.Session(session).JoinAsync(cancel.Token))
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
    [InlineData("{\"participantId\":\"client:x\",\"kind\":\"client\",\"name\":\"" + LongName + "\"}")]
    public async Task Bad_heartbeats_get_a_400(string body)
    {
        using var client = Client("client:x");
        await client.Session("room").CreateAsync();
        var response = await _server.Client.PostAsync("/v1/sessions/room/presence", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
    }

    private const string LongName = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        + "x";

    [Fact]
    public async Task A_heartbeat_for_a_session_that_does_not_exist_or_no_longer_does_is_a_404_and_leaves_nothing_held()
    {
        var presence = _server.Services.GetRequiredService<DurableSessions.AspNetCore.Sessions.PresenceService>();
        var cancel = TestContext.Current.CancellationToken;
        async Task<HttpStatusCode> Beat(string session)
        {
            using var response = await _server.Client.PostAsync($"/v1/sessions/{session}/presence", new StringContent("""{"participantId":"client:bob","kind":"client"}""", System.Text.Encoding.UTF8, "application/json"), cancel);
            return response.StatusCode;
        }

        // Beats for sessions that were never created.
        for (var i = 0; i < 50; i++)
        {
            Assert.Equal(HttpStatusCode.NotFound, await Beat($"nowhere-{i}"));
        }

        Assert.Equal(0, presence.SessionsHeld);

        // A participant of a session that is then deleted: its next beat is a 404, and the session is no longer held.
        using var bob = Client("client:bob");
        await bob.Session("gone").CreateAsync();
        Assert.Equal(HttpStatusCode.OK, await Beat("gone"));
        await WaitFor(bob, s => Status(s, "client:bob") == "joined", "gone");
        Assert.Equal(1, presence.SessionsHeld);
        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.DeleteAsync("/v1/stream/sessions/gone", cancel)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, await Beat("gone"));
        Assert.Equal(0, presence.SessionsHeld);

        // Created again under the same id: the next beat joins the new session.
        await bob.Session("gone").CreateAsync();
        Assert.Equal(HttpStatusCode.OK, await Beat("gone"));
        await WaitFor(bob, s => Status(s, "client:bob") == "joined", "gone");

        // Once nobody is present, the next sweep lets the session go.
        await bob.Session("gone").LeaveAsync();
        using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (presence.SessionsHeld != 0)
        {
            _clock.Advance(TimeSpan.FromSeconds(1));
            await Task.Delay(10, wait.Token);
        }
    }
}
