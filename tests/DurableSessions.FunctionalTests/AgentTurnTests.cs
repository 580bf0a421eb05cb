using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.AspNetCore.Auth;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace DurableSessions.FunctionalTests;

/// <summary>The agents API: turns waiting for an agent, claimed with a lease, heartbeated, acked and released (protocol §7.2 shapes).</summary>
public sealed class AgentTurnTests : IAsyncLifetime
{
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));
    private InProcessServer _server = null!;

    public async ValueTask InitializeAsync()
    {
        _server = await InProcessServer.StartAsync(_clock);
        var registered = await Post(HttpMethod.Put, "/v1/agents/agent:a", "{\"lease_ttl_ms\":5000}");
        Assert.Equal(HttpStatusCode.Created, registered.StatusCode);
        Assert.Equal("agents/agent:a/wake", (string?)JsonNode.Parse(await registered.Content.ReadAsStringAsync())!["wake_stream"]);
    }

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    [Fact]
    public async Task A_user_message_is_a_turn_claimed_by_one_worker_and_gone_once_acked()
    {
        await Ask("s1");
        var claim = await Claim("w1");
        Assert.Equal("sessions/s1", (string?)claim["stream"]);
        Assert.Equal(5000, (long)claim["lease_ttl_ms"]!);
        Assert.True((bool)claim["streams"]![0]!["has_pending"]!);

        // Claimed once: a second worker gets nothing, or ALREADY_CLAIMED when it names the session.
        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\"}")).StatusCode);
        var named = await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\",\"stream\":\"sessions/s1\"}");
        Assert.Equal(HttpStatusCode.Conflict, named.StatusCode);
        var conflict = JsonNode.Parse(await named.Content.ReadAsStringAsync())!["error"]!;
        Assert.Equal("ALREADY_CLAIMED", (string?)conflict["code"]);
        Assert.Equal("w1", (string?)conflict["current_holder"]);

        var heartbeat = await Ack(claim, done: false);
        Assert.Equal(HttpStatusCode.OK, heartbeat.StatusCode);
        var done = await Ack(claim, done: true);
        Assert.Equal(HttpStatusCode.OK, done.StatusCode);
        Assert.False((bool)JsonNode.Parse(await done.Content.ReadAsStringAsync())!["next_wake"]!);

        // A double ack is fenced; the turn is gone, and the wake stream holds the one wake, in protocol §7.2's shape.
        await AssertFenced(await Ack(claim, done: true));
        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\"}")).StatusCode);
        var wakes = JsonNode.Parse(await _server.Client.GetStringAsync("/v1/stream/agents/agent:a/wake?offset=-1"))!.AsArray();
        var wake = Assert.Single(wakes)!;
        Assert.Equal("wake", (string?)wake["type"]);
        Assert.Equal("agent:a", (string?)wake["subscription_id"]);
        Assert.Equal("sessions/s1", (string?)wake["stream"]);
    }

    [Fact]
    public async Task A_lease_that_runs_out_goes_to_another_worker_and_fences_the_first()
    {
        await Ask("s2");
        var first = await Claim("w1");
        _clock.Advance(TimeSpan.FromMilliseconds(5001));
        var second = await Claim("w2");
        Assert.Equal("sessions/s2", (string?)second["stream"]);
        Assert.True((long)second["generation"]! > (long)first["generation"]!);

        // The first worker's heartbeat, ack and release are all fenced now: nothing is answered twice.
        await AssertFenced(await Ack(first, done: false));
        await AssertFenced(await Ack(first, done: true));
        await AssertFenced(await Post(HttpMethod.Post, "/v1/agents/agent:a/release", AckBody(first, done: false)));
        Assert.Equal(HttpStatusCode.OK, (await Ack(second, done: true)).StatusCode);
    }

    [Fact]
    public async Task A_heartbeat_keeps_the_lease_and_a_release_hands_the_turn_on_at_once()
    {
        await Ask("s3");
        var first = await Claim("w1");
        _clock.Advance(TimeSpan.FromSeconds(4));
        Assert.Equal(HttpStatusCode.OK, (await Ack(first, done: false)).StatusCode);
        _clock.Advance(TimeSpan.FromSeconds(4));
        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\"}")).StatusCode);

        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Post, "/v1/agents/agent:a/release", AckBody(first, done: false))).StatusCode);
        var second = await Claim("w2");
        Assert.Equal("sessions/s3", (string?)second["stream"]);
    }

    [Fact]
    public async Task A_message_that_comes_while_a_turn_is_served_wakes_it_again()
    {
        await Ask("s4");
        var claim = await Claim("w1");
        await Ask("s4");
        var done = await Ack(claim, done: true);
        Assert.True((bool)JsonNode.Parse(await done.Content.ReadAsStringAsync())!["next_wake"]!);
        Assert.Equal("sessions/s4", (string?)(await Claim("w2"))["stream"]);
    }

    [Fact]
    public async Task An_ack_names_how_far_it_answered_and_only_a_later_message_wakes_the_turn_again()
    {
        var first = await AskAt("s9");
        var claim = await Claim("w1");
        var second = await AskAt("s9");

        // Answered up to the first message only: the second one wakes the turn again.
        var partial = await Post(HttpMethod.Post, "/v1/agents/agent:a/ack", AckBody(claim, done: true, offset: first));
        Assert.True((bool)JsonNode.Parse(await partial.Content.ReadAsStringAsync())!["next_wake"]!);

        // Answered up to the second (as a turn that stayed for the follow-up would): nothing waits any more.
        var again = await Claim("w1");
        var full = await Post(HttpMethod.Post, "/v1/agents/agent:a/ack", AckBody(again, done: true, offset: second));
        Assert.False((bool)JsonNode.Parse(await full.Content.ReadAsStringAsync())!["next_wake"]!);
        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\"}")).StatusCode);

        var other = JsonNode.Parse(AckBody(again, done: true, offset: second))!.AsObject();
        other["acks"]![0]!["stream"] = "sessions/other";
        Assert.Equal(HttpStatusCode.BadRequest, (await Post(HttpMethod.Post, "/v1/agents/agent:a/ack", other.ToJsonString())).StatusCode);
    }

    [Fact]
    public async Task A_deleted_session_ends_its_turn_with_404()
    {
        await Ask("s5");
        var claim = await Claim("w1");
        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.DeleteAsync("/v1/stream/sessions/s5")).StatusCode);
        var ack = await Ack(claim, done: true);
        Assert.Equal(HttpStatusCode.NotFound, ack.StatusCode);
        Assert.Equal("STREAM_NOT_FOUND", (string?)JsonNode.Parse(await ack.Content.ReadAsStringAsync())!["error"]!["code"]);

        var named = await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", "{\"worker\":\"w1\",\"stream\":\"sessions/never\"}");
        Assert.Equal(HttpStatusCode.NotFound, named.StatusCode);

        // A session deleted while it waited is skipped by claims.
        await Ask("s6");
        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.DeleteAsync("/v1/stream/sessions/s6")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", "{\"worker\":\"w1\"}")).StatusCode);
    }

    [Fact]
    public async Task A_deleted_sessions_waiting_turns_go_with_it_and_a_held_one_ends_at_its_claimers_next_word()
    {
        var turns = _server.Services.GetRequiredService<DurableSessions.AspNetCore.Agents.AgentTurnService>();
        await Ask("s10");
        await Ask("s11");
        var held = await Claim("w1");
        Assert.Equal(2, turns.TurnCount);

        // Waiting turns are dropped with their session, whether or not any worker could ever claim them.
        var waiting = held["stream"]!.GetValue<string>() == "sessions/s10" ? "s11" : "s10";
        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.DeleteAsync($"/v1/stream/sessions/{waiting}")).StatusCode);
        using (var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(15)))
        {
            while (turns.TurnCount != 1)
            {
                await Task.Delay(20, cancel.Token);
            }
        }

        // A held one stays its worker's until the worker hears that its session is gone.
        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.DeleteAsync($"/v1/stream/{held["stream"]!.GetValue<string>()}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await Ack(held, done: false)).StatusCode);
        Assert.Equal(0, turns.TurnCount);
    }

    [Fact]
    public async Task A_turn_held_when_its_session_was_deleted_ends_when_its_lease_runs_out_unheard()
    {
        var turns = _server.Services.GetRequiredService<DurableSessions.AspNetCore.Agents.AgentTurnService>();
        await Ask("s12");
        await Claim("w1");
        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.DeleteAsync("/v1/stream/sessions/s12")).StatusCode);
        Assert.Equal(1, turns.TurnCount);

        // Its worker crashed and never hears: the lease's end finds the session gone, and the turn does not wait again.
        _clock.Advance(TimeSpan.FromMilliseconds(5001));
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        while (turns.TurnCount != 0)
        {
            await Task.Delay(20, cancel.Token);
        }
    }

    [Fact]
    public async Task A_session_deleted_and_created_again_under_a_claim_ends_the_claims_turn_with_404()
    {
        await Ask("s7");
        var claim = await Claim("w1");
        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.DeleteAsync("/v1/stream/sessions/s7")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await _server.Client.PutAsync("/v1/sessions/s7", new StringContent("{}", System.Text.Encoding.UTF8, "application/json"))).StatusCode);

        // The claim answered the session that is gone: its heartbeat hears so, whatever is at the path now.
        var heartbeat = await Ack(claim, done: false);
        Assert.Equal(HttpStatusCode.NotFound, heartbeat.StatusCode);
        Assert.Equal("STREAM_NOT_FOUND", (string?)JsonNode.Parse(await heartbeat.Content.ReadAsStringAsync())!["error"]!["code"]);

        // That ended the turn: the claim holds nothing any more, and nothing waits.
        await AssertFenced(await Ack(claim, done: true));
        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\"}")).StatusCode);
    }

    [Fact]
    public async Task An_ack_past_the_sessions_end_is_400_and_leaves_the_claim_as_it_was()
    {
        var asked = await AskAt("s8");
        var claim = await Claim("w1");
        var beyond = await Post(HttpMethod.Post, "/v1/agents/agent:a/ack", AckBody(claim, done: true, offset: "0000000000000000_0000000099999999"));
        Assert.Equal(HttpStatusCode.BadRequest, beyond.StatusCode);
        Assert.Equal("OFFSET_BEYOND_TAIL", (string?)JsonNode.Parse(await beyond.Content.ReadAsStringAsync())!["error"]!["code"]);

        // The claim still holds the turn: the ack that names the real offset completes it.
        var done = await Post(HttpMethod.Post, "/v1/agents/agent:a/ack", AckBody(claim, done: true, offset: asked));
        Assert.Equal(HttpStatusCode.OK, done.StatusCode);
        Assert.False((bool)JsonNode.Parse(await done.Content.ReadAsStringAsync())!["next_wake"]!);
    }

    [Theory]
    [InlineData("PUT", "/v1/agents/agent:a", "{\"lease_ttl_ms\":10}", 400, "INVALID_LEASE")]
    [InlineData("PUT", "/v1/agents/agent:a", "{\"lease_ttl_ms\":\"1000\"}", 400, "INVALID_LEASE")]
    [InlineData("PUT", "/v1/agents/bad%20id", "{}", 400, "INVALID_AGENT_ID")]
    [InlineData("PUT", "/v1/agents/%252E%252E", "{}", 400, "INVALID_AGENT_ID")]
    [InlineData("POST", "/v1/agents/agent:a/claim", "{}", 400, "INVALID_WORKER")]
    [InlineData("POST", "/v1/agents/agent:a/claim", "{\"worker\":\"w\",\"wait_ms\":-1}", 400, "INVALID_WAIT")]
    [InlineData("POST", "/v1/agents/agent:a/claim", "{\"worker\":\"w\",\"stream\":\"other/x\"}", 400, "INVALID_STREAM")]
    [InlineData("POST", "/v1/agents/agent:a/claim", "[1]", 400, "INVALID_BODY")]
    [InlineData("POST", "/v1/agents/agent:a/claim", "{\"worker\":\"w\",\"claim_id\":\"short\"}", 400, "INVALID_CLAIM_ID")]
    [InlineData("POST", "/v1/agents/agent:a/claim", "{\"worker\":\"w\",\"claim_id\":7}", 400, "INVALID_CLAIM_ID")]
    [InlineData("POST", "/v1/agents/agent:nobody/claim", "{\"worker\":\"w\"}", 404, "AGENT_NOT_FOUND")]
    [InlineData("POST", "/v1/agents/agent:a/ack", "{\"stream\":\"sessions/x\"}", 400, "INVALID_ACK")]
    [InlineData("POST", "/v1/agents/agent:a/ack", "{\"stream\":\"sessions/x\",\"token\":\"t\",\"wake_id\":\"w\",\"generation\":1,\"done\":\"yes\"}", 400, "INVALID_ACK")]
    [InlineData("POST", "/v1/agents/agent:a/ack", "{\"stream\":\"sessions/x\",\"token\":\"t\",\"wake_id\":\"w\",\"generation\":1}", 404, "STREAM_NOT_FOUND")]
    [InlineData("POST", "/v1/agents/agent:a/elsewhere", "{}", 404, "NOT_FOUND")]
    public async Task Bad_requests_get_a_clear_4xx(string method, string url, string body, int status, string code)
    {
        var response = await Post(new HttpMethod(method), url, body);
        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal(code, (string?)JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!["code"]);
    }

    [Fact]
    public async Task A_claim_repeated_with_its_claim_id_gets_its_turn_back_with_a_new_token_and_nobody_else_does()
    {
        await Ask("again1");
        await Ask("again2");
        const string Body = "{\"worker\":\"w1\",\"claim_id\":\"0123456789abcdef0123\"}";
        var first = await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", Body);
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        var lost = JsonNode.Parse(await first.Content.ReadAsStringAsync())!.AsObject();

        // Its answer lost, the claim is sent again: the same turn, wake and generation, under a new token; the old token
        // is fenced, and the other waiting turn is left for the next claim.
        var retried = await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", Body);
        Assert.Equal(HttpStatusCode.OK, retried.StatusCode);
        var again = JsonNode.Parse(await retried.Content.ReadAsStringAsync())!.AsObject();
        Assert.Equal((string?)lost["stream"], (string?)again["stream"]);
        Assert.Equal((string?)lost["wake_id"], (string?)again["wake_id"]);
        Assert.Equal((long)lost["generation"]!, (long)again["generation"]!);
        Assert.NotEqual((string?)lost["token"], (string?)again["token"]);
        await AssertFenced(await Ack(lost, done: false));
        Assert.Equal(HttpStatusCode.OK, (await Ack(again, done: false)).StatusCode);
        var other = await Claim("w1");
        Assert.NotEqual((string?)again["stream"], (string?)other["stream"]);

        // Another worker with the same claim id, or the same worker naming the session with another one, gets nothing of it.
        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", Body.Replace("w1", "w2", StringComparison.Ordinal))).StatusCode);
        var named = await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", $"{{\"worker\":\"w1\",\"claim_id\":\"another-claim-id-0000\",\"stream\":\"{(string?)again["stream"]}\"}}");
        Assert.Equal(HttpStatusCode.Conflict, named.StatusCode);

        // Once completed, the claim id names nothing.
        Assert.Equal(HttpStatusCode.OK, (await Ack(again, done: true)).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", Body)).StatusCode);
    }

    [Fact]
    public async Task The_dotnet_client_whose_claim_answer_is_lost_gets_that_turn_on_its_retry()
    {
        await Ask("lost-answer");
        using var losing = new LoseFirstClaimAnswer(new SocketsHttpHandler());
        using var http = new HttpClient(losing) { BaseAddress = _server.BaseAddress };
        using var client = new DurableSessions.Client.DurableSessionsClient(DurableSessions.Client.DurableSessionsClientOptions.Default with { BaseAddress = _server.BaseAddress, ReconnectDelay = TimeSpan.FromMilliseconds(1) }, http);

        // The first answer (a turn granted) is lost on its way; the retry gets that turn, not "nothing waiting".
        var turn = await client.Agent("agent:a").ClaimAsync("w1", TimeSpan.Zero, TestContext.Current.CancellationToken);
        Assert.Equal(1, losing.Lost);
        Assert.NotNull(turn);
        Assert.Equal("sessions/lost-answer", turn.Stream);
        Assert.True(await client.Agent("agent:a").CompleteAsync(turn, cancellationToken: TestContext.Current.CancellationToken));
    }

    /// <summary>Throws away the first claim answer that grants a turn, as a connection cut after the server answered would.</summary>
    private sealed class LoseFirstClaimAnswer(HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        private int _lost;

        public int Lost => Volatile.Read(ref _lost);

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var response = await base.SendAsync(request, cancellationToken);
            if (request.RequestUri!.AbsolutePath.EndsWith("/claim", StringComparison.Ordinal) && response.StatusCode == HttpStatusCode.OK && Interlocked.CompareExchange(ref _lost, 1, 0) == 0)
            {
                response.Dispose();
                throw new HttpRequestException("The answer was lost (test).");
            }

            return response;
        }
    }

    [Fact]
    public async Task Someone_elses_claim_token_is_fenced()
    {
        await Ask("s7");
        await Ask("s8");
        var mine = await Claim("w1");
        var theirs = await Claim("w2");
        var forged = (JsonObject)mine.DeepClone();
        forged["token"] = (string?)theirs["token"];
        await AssertFenced(await Ack(forged, done: true));
        Assert.Equal(HttpStatusCode.OK, (await Ack(mine, done: true)).StatusCode);
    }

    [Fact]
    public async Task With_access_control_claims_need_write_on_the_agent_and_only_give_granted_sessions()
    {
        const string key = "test-signing-key-of-at-least-32-bytes!";
        await using var server = await InProcessServer.StartAsync(services: s => s.Configure<AccessOptions>(o => o.SigningKey = key));
        var tokens = server.Services.GetRequiredService<AccessTokens>();
        var admin = tokens.Issue("user:root", new Dictionary<string, Capability[]> { ["**"] = [Capability.Read, Capability.Write, Capability.Control, Capability.Admin] }, TimeSpan.FromMinutes(5));
        var agent = tokens.Issue("agent:b", new Dictionary<string, Capability[]> { ["agents/agent:b"] = [Capability.Write], ["sessions/mine-*"] = [Capability.Read, Capability.Write] }, TimeSpan.FromMinutes(5));
        var user = tokens.Issue("user:u", new Dictionary<string, Capability[]> { ["sessions/**"] = [Capability.Read, Capability.Write] }, TimeSpan.FromMinutes(5));

        Assert.Equal(HttpStatusCode.Forbidden, (await Send(server, HttpMethod.Put, "/v1/agents/agent:b", user, "{}")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(server, HttpMethod.Put, "/v1/agents/agent:b", null, "{}")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Send(server, HttpMethod.Put, "/v1/agents/agent:b", agent, "{}")).StatusCode);
        foreach (var id in new[] { "other-1", "mine-1" })
        {
            Assert.Equal(HttpStatusCode.Created, (await Send(server, HttpMethod.Put, $"/v1/sessions/{id}", admin, "{}")).StatusCode);
            Assert.Equal(HttpStatusCode.Created, (await Send(server, HttpMethod.Post, $"/v1/sessions/{id}/messages", user, "{\"text\":\"hi\"}")).StatusCode);
        }

        const string ClaimBody = "{\"worker\":\"w\",\"claim_id\":\"claim-id-of-agent-b-0001\"}";
        var claimed = await Send(server, HttpMethod.Post, "/v1/agents/agent:b/claim", agent, ClaimBody);
        Assert.Equal(HttpStatusCode.OK, claimed.StatusCode);
        Assert.Equal("sessions/mine-1", (string?)JsonNode.Parse(await claimed.Content.ReadAsStringAsync())!["stream"]);

        // A claim id is the claimer's: another caller with the same grants, worker name and claim id (read from a log, say)
        // is not given that turn, while the one that claimed it gets it back on a retry.
        var impostor = tokens.Issue("agent:b-impostor", new Dictionary<string, Capability[]> { ["agents/agent:b"] = [Capability.Write], ["sessions/mine-*"] = [Capability.Read, Capability.Write] }, TimeSpan.FromMinutes(5));
        Assert.Equal(HttpStatusCode.NoContent, (await Send(server, HttpMethod.Post, "/v1/agents/agent:b/claim", impostor, ClaimBody)).StatusCode);
        var retried = await Send(server, HttpMethod.Post, "/v1/agents/agent:b/claim", agent, ClaimBody);
        Assert.Equal(HttpStatusCode.OK, retried.StatusCode);
        Assert.Equal("sessions/mine-1", (string?)JsonNode.Parse(await retried.Content.ReadAsStringAsync())!["stream"]);
        Assert.Equal(HttpStatusCode.NoContent, (await Send(server, HttpMethod.Post, "/v1/agents/agent:b/claim", agent, "{\"worker\":\"w\"}")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(server, HttpMethod.Post, "/v1/agents/agent:b/claim", agent, "{\"worker\":\"w\",\"stream\":\"sessions/other-1\"}")).StatusCode);

        // An ack or release of a session the token cannot see tells nothing of it, not even whether it exists.
        foreach (var action in new[] { "ack", "release" })
        {
            foreach (var id in new[] { "other-1", "other-missing" })
            {
                var probe = $"{{\"stream\":\"sessions/{id}\",\"token\":\"guess\",\"wake_id\":\"w-1\",\"generation\":1,\"done\":true}}";
                var answer = await Send(server, HttpMethod.Post, $"/v1/agents/agent:b/{action}", agent, probe);
                Assert.Equal((HttpStatusCode.Forbidden, "FORBIDDEN"), (answer.StatusCode, (string?)JsonNode.Parse(await answer.Content.ReadAsStringAsync())!["error"]!["code"]));
            }
        }

        // Unregistering drops turns of sessions the worker's token cannot see (other-1's): it needs admin on the agent.
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(server, HttpMethod.Delete, "/v1/agents/agent:b", agent, "")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(server, HttpMethod.Delete, "/v1/agents/agent:b/", agent, "")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Send(server, HttpMethod.Get, "/v1/agents/agent:b", agent, "")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Send(server, HttpMethod.Delete, "/v1/agents/agent:b/", admin, "")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await Send(server, HttpMethod.Get, "/v1/agents/agent:b", agent, "")).StatusCode);
    }

    private static async Task<HttpResponseMessage> Send(InProcessServer server, HttpMethod method, string url, string? token, string body)
    {
        using var request = new HttpRequestMessage(method, url) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return await server.Client.SendAsync(request);
    }

    [Fact]
    public async Task A_session_created_again_after_a_delete_is_done_once_answered_not_woken_by_its_old_turn()
    {
        // The first session at the path grows a long tail while nobody answers, and is deleted.
        for (var i = 0; i < 5; i++)
        {
            await Ask("again");
        }

        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.DeleteAsync("/v1/stream/sessions/again")).StatusCode);

        // Created again, with one question: answered up to it, the turn is done. The old session's larger offsets count
        // for nothing in the new one.
        var offset = await AskAt("again");
        var claim = await Claim("w1");
        Assert.Equal("sessions/again", (string?)claim["stream"]);
        var ack = await Post(HttpMethod.Post, "/v1/agents/agent:a/ack", AckBody(claim, done: true, offset: offset));
        Assert.False((bool)JsonNode.Parse(await ack.Content.ReadAsStringAsync())!["next_wake"]!);
        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\"}")).StatusCode);
    }

    [Fact]
    public async Task A_session_created_as_a_raw_stream_with_a_user_message_is_a_turn()
    {
        static JsonObject Message(string id, string role) => new()
        {
            ["type"] = "message",
            ["key"] = id,
            ["value"] = new JsonObject { ["id"] = id, ["role"] = role, ["parts"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "hi" }), ["status"] = "complete" },
            ["headers"] = new JsonObject { ["operation"] = "insert" },
        };

        // Its first events are an assistant's greeting only: nothing to answer.
        var greeting = await _server.Client.PutAsync("/v1/stream/sessions/raw0", new StringContent(new JsonArray(Message("a0", "assistant")).ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, greeting.StatusCode);

        // With a user's question among them: answered as if it had been appended.
        var asked = await _server.Client.PutAsync("/v1/stream/sessions/raw1", new StringContent(new JsonArray(Message("a1", "assistant"), Message("u1", "user")).ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, asked.StatusCode);
        Assert.Equal("sessions/raw1", (string?)(await Claim("w1"))["stream"]);
        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\"}")).StatusCode);
    }

    [Fact]
    public async Task A_create_repeated_or_a_fork_is_a_turn_while_the_session_holds_a_question_nobody_answered()
    {
        static JsonObject Change(string type, string key, JsonObject value) => new() { ["type"] = type, ["key"] = key, ["value"] = value, ["headers"] = new JsonObject { ["operation"] = "insert" } };
        var question = new JsonArray(Change("message", "u1", new JsonObject { ["id"] = "u1", ["role"] = "user", ["parts"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "hi" }), ["status"] = "complete" })).ToJsonString();
        Task<HttpResponseMessage> Put(string path, string body, string? forkedFrom = null)
        {
            var request = new HttpRequestMessage(HttpMethod.Put, "/v1/stream/" + path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            if (forkedFrom is not null)
            {
                request.Headers.Add("Stream-Forked-From", forkedFrom);
            }

            return _server.Client.SendAsync(request);
        }

        async Task AssertNoTurn() => Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", "{\"worker\":\"w9\"}")).StatusCode);

        // The first create's turn is served and given up with nothing written: the question waits still. The same create
        // again (a retry whose first answer was lost, and with it, after a crash, the turn) is a turn again; so is a fork.
        Assert.Equal(HttpStatusCode.Created, (await Put("sessions/again1", question)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Ack(await Claim("w1"), done: true)).StatusCode);
        await AssertNoTurn();
        Assert.Equal(HttpStatusCode.OK, (await Put("sessions/again1", question)).StatusCode);
        var retried = await Claim("w1");
        Assert.Equal("sessions/again1", (string?)retried["stream"]);
        Assert.Equal(HttpStatusCode.Created, (await Put("sessions/again1-fork", "", forkedFrom: "/v1/stream/sessions/again1")).StatusCode);
        Assert.Equal("sessions/again1-fork", (string?)(await Claim("w2"))["stream"]);

        // Answered, the session makes no turn when created again, nor does a fork of it.
        var answer = new JsonArray(
            Change("run", "r1", new JsonObject { ["id"] = "r1", ["agent"] = "agent:a", ["messageId"] = "a1", ["trigger"] = "u1", ["status"] = "finished" }),
            Change("message", "a1", new JsonObject { ["id"] = "a1", ["role"] = "assistant", ["author"] = "agent:a", ["runId"] = "r1", ["parts"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "hello" }), ["status"] = "complete" }));
        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Post, "/v1/stream/sessions/again1", answer.ToJsonString())).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Ack(retried, done: true)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Put("sessions/again1", question)).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Put("sessions/again1-fork2", "", forkedFrom: "/v1/stream/sessions/again1")).StatusCode);
        await AssertNoTurn();
    }

    [Fact]
    public async Task A_message_whose_client_hangs_up_right_after_sending_it_is_still_a_turn_once_stored()
    {
        // The client resets its connection at varying moments after its message went out (a closed tab, a "stop"):
        // whenever the message was stored, it must be a turn, or no agent would ever answer it.
        var stored = 0;
        for (var attempt = 0; attempt < 40; attempt++)
        {
            var session = "cut" + attempt;
            Assert.Equal(HttpStatusCode.Created, (await _server.Client.PutAsync($"/v1/sessions/{session}", new StringContent("{}", Encoding.UTF8, "application/json"))).StatusCode);
            using (var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp))
            {
                socket.NoDelay = true;
                socket.LingerState = new System.Net.Sockets.LingerOption(true, 0);
                await socket.ConnectAsync(IPAddress.Loopback, _server.BaseAddress.Port);
                const string Body = "{\"text\":\"hello\"}";
                await socket.SendAsync(Encoding.ASCII.GetBytes($"POST /v1/sessions/{session}/messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {Body.Length}\r\n\r\n{Body}"));

                // Spreads the reset over the request's path (reading it, the session's lock, the store's flush).
                if (attempt % 8 > 0)
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(attempt % 8));
                }
            }

            // A session operation takes the session's lock after the cut message did, if that got so far: once it is
            // answered, the message is stored (with its turn) or never will be.
            var marker = await Post(HttpMethod.Post, $"/v1/sessions/{session}/runs/none/cancel", "{}");
            Assert.True((int)marker.StatusCode is >= 400 and < 500, $"cancel of no run answered {(int)marker.StatusCode}");
            if (!(await _server.Client.GetStringAsync($"/v1/sessions/{session}")).Contains("\"hello\"", StringComparison.Ordinal))
            {
                continue;
            }

            stored++;
            var claim = await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", $"{{\"worker\":\"w\",\"stream\":\"sessions/{session}\"}}");
            Assert.True(claim.StatusCode == HttpStatusCode.OK, $"Attempt {attempt}: the stored message is no turn (claim answered {(int)claim.StatusCode}).");
        }

        Assert.True(stored > 0, "No cut message was stored in 40 attempts: the test did not reach its case.");
    }

    [Fact]
    public async Task An_unregistered_agent_has_no_turns_left_and_its_workers_finish_the_ones_they_hold()
    {
        await Ask("u1");
        await Ask("u2");
        var held = await Claim("w1");
        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Delete, "/v1/agents/agent:a", "")).StatusCode);

        // Gone: described, claimed and unregistered again it is a 404.
        foreach (var (method, url, body) in new[] { (HttpMethod.Get, "/v1/agents/agent:a", ""), (HttpMethod.Delete, "/v1/agents/agent:a", ""), (HttpMethod.Post, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\"}") })
        {
            var response = await Post(method, url, body);
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
            Assert.Equal("AGENT_NOT_FOUND", (string?)JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!["code"]);
        }

        // Its wake stream is deleted, and nothing brings it back while the agent is gone.
        Assert.Equal(HttpStatusCode.NotFound, (await _server.Client.GetAsync("/v1/stream/agents/agent:a/wake?offset=-1")).StatusCode);

        // The turn a worker holds is still its own to finish, renewed by the lease it was granted (5 s, not the server's
        // default); a message that came meanwhile wakes nothing.
        await Ask(((string)held["stream"]!)["sessions/".Length..]);
        await Ask("u3");
        _clock.Advance(TimeSpan.FromSeconds(3));
        var heartbeat = await Ack(held, done: false);
        Assert.Equal(HttpStatusCode.OK, heartbeat.StatusCode);
        Assert.Equal(_clock.GetUtcNow().ToUnixTimeMilliseconds() + 5000, (long)JsonNode.Parse(await heartbeat.Content.ReadAsStringAsync())!["lease_expires_at"]!);
        _clock.Advance(TimeSpan.FromSeconds(4));
        var done = await Ack(held, done: true);
        Assert.Equal(HttpStatusCode.OK, done.StatusCode);
        Assert.False((bool)JsonNode.Parse(await done.Content.ReadAsStringAsync())!["next_wake"]!);
        Assert.Equal(HttpStatusCode.NotFound, (await _server.Client.GetAsync("/v1/stream/agents/agent:a/wake?offset=-1")).StatusCode);

        // Nothing is left of it: registered again, it starts with no turn (the messages asked before are not its own).
        Assert.Equal(0, _server.Services.GetRequiredService<DurableSessions.AspNetCore.Agents.AgentTurnService>().TurnCount);
        Assert.Equal(HttpStatusCode.Created, (await Post(HttpMethod.Put, "/v1/agents/agent:a", "{\"lease_ttl_ms\":5000}")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", "{\"worker\":\"w2\"}")).StatusCode);
        await Ask("u4");
        Assert.Equal("sessions/u4", (string?)(await Claim("w2"))["stream"]);
        var wake = Assert.Single(JsonNode.Parse(await _server.Client.GetStringAsync("/v1/stream/agents/agent:a/wake?offset=-1"))!.AsArray())!;
        Assert.Equal("sessions/u4", (string?)wake["stream"]);
    }

    [Fact]
    public async Task An_agent_whose_wake_stream_path_is_taken_by_another_stream_is_refused_with_the_reason()
    {
        Assert.Equal(HttpStatusCode.Created, (await _server.Client.PutAsync("/v1/stream/agents/agent:taken/wake", new StringContent("x", Encoding.UTF8, "text/plain"))).StatusCode);
        var refused = await Post(HttpMethod.Put, "/v1/agents/agent:taken", "{}");
        Assert.Equal(HttpStatusCode.Conflict, refused.StatusCode);
        Assert.Equal("WAKE_STREAM_CONFLICT", (string?)JsonNode.Parse(await refused.Content.ReadAsStringAsync())!["error"]!["code"]);
        Assert.Equal(HttpStatusCode.NotFound, (await Post(HttpMethod.Get, "/v1/agents/agent:taken", "")).StatusCode);

        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.DeleteAsync("/v1/stream/agents/agent:taken/wake")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Post(HttpMethod.Put, "/v1/agents/agent:taken", "{}")).StatusCode);
    }

    [Fact]
    public async Task A_turn_held_when_its_agent_is_unregistered_ends_when_released_or_run_out_instead_of_waiting_again()
    {
        await Ask("r1");
        await Ask("r2");
        var released = await Claim("w1");
        var runsOut = await Claim("w2");
        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Delete, "/v1/agents/agent:a", "")).StatusCode);

        Assert.Equal(HttpStatusCode.NoContent, (await Post(HttpMethod.Post, "/v1/agents/agent:a/release", AckBody(released, done: false))).StatusCode);
        var turns = _server.Services.GetRequiredService<DurableSessions.AspNetCore.Agents.AgentTurnService>();
        Assert.Equal(1, turns.TurnCount);

        // The other lease runs out: the expiry drops the turn (a waiting turn would be kept, and woken).
        _clock.Advance(TimeSpan.FromMilliseconds(5001));
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (turns.TurnCount != 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10);
        }

        Assert.Equal(0, turns.TurnCount);
        await AssertFenced(await Ack(runsOut, done: true));
    }

    [Fact]
    public async Task Unregistering_an_agent_frees_its_place_under_the_limit_of_agents()
    {
        await using var server = await InProcessServer.StartAsync(_clock, services: s => s.Configure<DurableSessions.AspNetCore.Agents.AgentTurnOptions>(o => o.MaxAgents = 2));
        Task<HttpResponseMessage> Register(string agent) => server.Client.PutAsync($"/v1/agents/{agent}", new StringContent("{}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, (await Register("a1")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Register("a2")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Register("a3")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await server.Client.DeleteAsync("/v1/agents/a1")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Register("a3")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Register("a1")).StatusCode);
    }

    private async Task Ask(string session)
    {
        await _server.Client.PutAsync($"/v1/sessions/{session}", new StringContent("{}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, (await Post(HttpMethod.Post, $"/v1/sessions/{session}/messages", "{\"text\":\"hello\"}")).StatusCode);
    }

    /// <summary>Asks a question and returns the session's offset after it.</summary>
    private async Task<string> AskAt(string session)
    {
        await _server.Client.PutAsync($"/v1/sessions/{session}", new StringContent("{}", Encoding.UTF8, "application/json"));
        var posted = await Post(HttpMethod.Post, $"/v1/sessions/{session}/messages", "{\"text\":\"hello\"}");
        Assert.Equal(HttpStatusCode.Created, posted.StatusCode);
        return (string)JsonNode.Parse(await posted.Content.ReadAsStringAsync())!["offset"]!;
    }

    private async Task<JsonObject> Claim(string worker)
    {
        var response = await Post(HttpMethod.Post, "/v1/agents/agent:a/claim", $"{{\"worker\":\"{worker}\"}}");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject();
    }

    private Task<HttpResponseMessage> Ack(JsonObject claim, bool done) => Post(HttpMethod.Post, "/v1/agents/agent:a/ack", AckBody(claim, done));

    private static string AckBody(JsonObject claim, bool done, string? offset = null) => AgentTurnBodies.Ack(claim, done, offset);

    private static async Task AssertFenced(HttpResponseMessage response)
    {
        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        Assert.Equal("FENCED", (string?)JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!["code"]);
    }

    private Task<HttpResponseMessage> Post(HttpMethod method, string url, string body)
        => _server.Client.SendAsync(new HttpRequestMessage(method, url) { Content = new StringContent(body, Encoding.UTF8, "application/json") });
}
