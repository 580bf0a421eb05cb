using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// The agents API on two nodes sharing one Redis: every call goes to either node, and each node reads only the turns a
/// call works on (all of them only for a claim of the oldest), so what one node changed must be what the other acts on.
/// </summary>
public sealed class SharedAgentTurnTests : IAsyncLifetime
{
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));
    private RedisServer _redis = null!;
    private InProcessServer _a = null!;
    private InProcessServer _b = null!;

    public async ValueTask InitializeAsync()
    {
        _redis = await RedisServer.StartAsync();
        _a = await InProcessServer.StartAsync(_clock, redis: _redis.Configuration);
        _b = await InProcessServer.StartAsync(_clock, redis: _redis.Configuration);
        Assert.Equal(HttpStatusCode.Created, (await Post(_a, "/v1/agents/agent:a", "{\"lease_ttl_ms\":5000}", HttpMethod.Put)).StatusCode);
    }

    public async ValueTask DisposeAsync()
    {
        await _a.DisposeAsync();
        await _b.DisposeAsync();
        await _redis.DisposeAsync();
    }

    [Fact]
    public async Task Each_turn_call_on_either_node_sees_what_the_other_node_did()
    {
        // Asked on A, claimed on B; a second claim on A finds it held, by name and by age.
        await Ask(_a, "x1");
        var claim = await Claim(_b, "w1");
        Assert.Equal("sessions/x1", (string?)claim["stream"]);
        Assert.Equal(HttpStatusCode.NoContent, (await Post(_a, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\"}")).StatusCode);
        var named = await Post(_a, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\",\"stream\":\"sessions/x1\"}");
        Assert.Equal(HttpStatusCode.Conflict, named.StatusCode);
        Assert.Equal("w1", (string?)JsonNode.Parse(await named.Content.ReadAsStringAsync())!["error"]!["current_holder"]);

        // A heartbeat on A extends the lease B granted: past the first lease's end, nobody else can claim it.
        _clock.Advance(TimeSpan.FromSeconds(4));
        Assert.Equal(HttpStatusCode.OK, (await Post(_a, "/v1/agents/agent:a/ack", AckBody(claim, done: false))).StatusCode);
        _clock.Advance(TimeSpan.FromSeconds(4));
        Assert.Equal(HttpStatusCode.NoContent, (await Post(_b, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\"}")).StatusCode);

        // A message on B while it is served: the ack on A says the turn waits again, and a claim on B gets it.
        await Ask(_b, "x1");
        var done = await Post(_a, "/v1/agents/agent:a/ack", AckBody(claim, done: true));
        Assert.Equal(HttpStatusCode.OK, done.StatusCode);
        Assert.True((bool)JsonNode.Parse(await done.Content.ReadAsStringAsync())!["next_wake"]!);
        var again = await Claim(_b, "w2");
        Assert.Equal("sessions/x1", (string?)again["stream"]);

        // The first claim is fenced on both nodes; the second one's release on B hands the turn to a claim on A.
        await AssertFenced(await Post(_a, "/v1/agents/agent:a/ack", AckBody(claim, done: true)));
        await AssertFenced(await Post(_b, "/v1/agents/agent:a/ack", AckBody(claim, done: false)));
        Assert.Equal(HttpStatusCode.NoContent, (await Post(_b, "/v1/agents/agent:a/release", AckBody(again, done: false))).StatusCode);
        var third = await Claim(_a, "w3", "sessions/x1");

        // Its lease runs out unrenewed: a claim on B takes the turn over, and the third claim is fenced on A.
        _clock.Advance(TimeSpan.FromMilliseconds(5001));
        var fourth = await Claim(_b, "w4");
        Assert.True((long)fourth["generation"]! > (long)third["generation"]!);
        await AssertFenced(await Post(_a, "/v1/agents/agent:a/ack", AckBody(third, done: true)));

        // Answered: gone for both nodes.
        Assert.Equal(HttpStatusCode.OK, (await Post(_b, "/v1/agents/agent:a/ack", AckBody(fourth, done: true))).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Post(_a, "/v1/agents/agent:a/claim", "{\"worker\":\"w5\"}")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Post(_b, "/v1/agents/agent:a/claim", "{\"worker\":\"w5\"}")).StatusCode);
    }

    [Fact]
    public async Task A_session_deleted_through_one_node_ends_a_turn_claimed_through_the_other_with_404()
    {
        await Ask(_a, "x2");
        var claim = await Claim(_a, "w1");
        Assert.Equal(HttpStatusCode.NoContent, (await _b.Client.DeleteAsync("/v1/stream/sessions/x2")).StatusCode);

        var ack = await Post(_b, "/v1/agents/agent:a/ack", AckBody(claim, done: true));
        Assert.Equal(HttpStatusCode.NotFound, ack.StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Post(_a, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\"}")).StatusCode);
    }

    [Fact]
    public async Task A_turn_answered_through_one_node_is_never_handed_out_again_by_the_other_whatever_else_is_stored()
    {
        // A holds the turn in memory; B answers it, which deletes it from the store.
        await Ask(_a, "x3");
        var claim = await Claim(_a, "w1");
        Assert.Equal(HttpStatusCode.OK, (await Post(_b, "/v1/agents/agent:a/ack", AckBody(claim, done: true))).StatusCode);

        // A turn document no node can read sits beside the others (a damaged or foreign one).
        using var redisClient = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(_redis.Configuration);
        await redisClient.GetDatabase().HashSetAsync("ds:doc:agent-turns", "agent:a\nsessions/unreadable", "{not a turn");

        // Past the old lease, A's claim of the oldest reads every turn: the answered one must be gone from A too.
        _clock.Advance(TimeSpan.FromMilliseconds(5001));
        Assert.Equal(HttpStatusCode.NoContent, (await Post(_a, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\"}")).StatusCode);
    }

    [Fact]
    public async Task Calls_arriving_at_once_on_both_nodes_each_get_their_own_outcome()
    {
        // Calls that wait on one node run together in one entry; each must still hear its own outcome, as if alone.
        const int Sessions = 40;
        var node = (int i) => i % 2 == 0 ? _a : _b;
        var batchesBefore = Batches(_a) + Batches(_b);
        await Task.WhenAll(Enumerable.Range(0, Sessions).Select(i => Ask(node(i), $"many{i}")));

        // More claims than turns, on both nodes at once: every turn goes to exactly one of them.
        var claims = await Task.WhenAll(Enumerable.Range(0, Sessions + 10).Select(i => Post(node(i), "/v1/agents/agent:a/claim", $"{{\"worker\":\"w{i}\"}}")));
        var granted = new List<(JsonObject Claim, int Node)>();
        for (var i = 0; i < claims.Length; i++)
        {
            if (claims[i].StatusCode == HttpStatusCode.OK)
            {
                granted.Add((JsonNode.Parse(await claims[i].Content.ReadAsStringAsync())!.AsObject(), i));
            }
            else
            {
                Assert.Equal(HttpStatusCode.NoContent, claims[i].StatusCode);
            }
        }

        Assert.Equal(Enumerable.Range(0, Sessions).Select(i => $"sessions/many{i}").Order(), granted.Select(g => (string)g.Claim["stream"]!).Order());

        // Acks at once, each through the node that did not grant it; each answers its own turn.
        var acks = await Task.WhenAll(granted.Select(g => Post(node(g.Node + 1), "/v1/agents/agent:a/ack", AckBody(g.Claim, done: true))));
        Assert.All(acks, ack => Assert.Equal(HttpStatusCode.OK, ack.StatusCode));

        // Every turn is answered on both nodes: its claim is fenced, and nothing is left to claim.
        await AssertFenced(await Post(_a, "/v1/agents/agent:a/ack", AckBody(granted[0].Claim, done: true)));
        await AssertFenced(await Post(_b, "/v1/agents/agent:a/ack", AckBody(granted[^1].Claim, done: false)));
        Assert.Equal(HttpStatusCode.NoContent, (await Post(_a, "/v1/agents/agent:a/claim", "{\"worker\":\"late\"}")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Post(_b, "/v1/agents/agent:a/claim", "{\"worker\":\"late\"}")).StatusCode);

        // 134 calls (questions, claims, acks) entered in batches: far fewer entries than calls (16 where measured).
        Assert.InRange(Batches(_a) + Batches(_b) - batchesBefore, 1, 2 * Sessions);
    }

    [Fact]
    public async Task An_agent_unregistered_through_one_node_is_gone_for_the_other()
    {
        // B knows the agent (it served a turn of it) before A unregisters it.
        await Ask(_a, "x9");
        Assert.Equal(HttpStatusCode.OK, (await Post(_b, "/v1/agents/agent:a/ack", AckBody(await Claim(_b, "w1"), done: true))).StatusCode);

        // A claim waiting on B (nothing waits for the agent now) hears of it at once: answered 404, not 204 at the end of its wait.
        var waiting = Post(_b, "/v1/agents/agent:a/claim", "{\"worker\":\"w9\",\"wait_ms\":60000}");
        await Task.Delay(200, TestContext.Current.CancellationToken);
        Assert.False(waiting.IsCompleted);
        Assert.Equal(HttpStatusCode.NoContent, (await Post(_a, "/v1/agents/agent:a", "", HttpMethod.Delete)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await waiting.WaitAsync(TimeSpan.FromSeconds(20), TestContext.Current.CancellationToken)).StatusCode);

        // B describes it, claims for it and unregisters it as gone; a message through B is no turn of it.
        foreach (var (method, url, body) in new[] { (HttpMethod.Get, "/v1/agents/agent:a", ""), (HttpMethod.Post, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\"}"), (HttpMethod.Delete, "/v1/agents/agent:a", "") })
        {
            var response = await Post(_b, url, body, method);
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
            Assert.Equal("AGENT_NOT_FOUND", (string?)JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!["code"]);
        }

        await Ask(_b, "x10");
        Assert.Equal(HttpStatusCode.Created, (await Post(_b, "/v1/agents/agent:a", "{}", HttpMethod.Put)).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Post(_a, "/v1/agents/agent:a/claim", "{\"worker\":\"w3\"}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Post(_a, "/v1/agents/agent:a", "", HttpMethod.Get)).StatusCode);
    }

    private static long Batches(InProcessServer node) => node.Services.GetRequiredService<DurableSessions.AspNetCore.Agents.AgentTurnService>().BatchCount;

    private static async Task<HttpResponseMessage> Post(InProcessServer node, string url, string body, HttpMethod? method = null)
    {
        using var request = new HttpRequestMessage(method ?? HttpMethod.Post, url) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        return await node.Client.SendAsync(request);
    }

    private static async Task Ask(InProcessServer node, string session)
    {
        await node.Client.PutAsync($"/v1/sessions/{session}", new StringContent("{}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, (await Post(node, $"/v1/sessions/{session}/messages", "{\"text\":\"hello\"}")).StatusCode);
    }

    private static async Task<JsonObject> Claim(InProcessServer node, string worker, string? stream = null)
    {
        var body = stream is null ? $"{{\"worker\":\"{worker}\"}}" : $"{{\"worker\":\"{worker}\",\"stream\":\"{stream}\"}}";
        var response = await Post(node, "/v1/agents/agent:a/claim", body);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject();
    }

    private static string AckBody(JsonObject claim, bool done) => AgentTurnBodies.Ack(claim, done);

    private static async Task AssertFenced(HttpResponseMessage response)
    {
        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        Assert.Equal("FENCED", (string?)JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!["code"]);
    }
}
