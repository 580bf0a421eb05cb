using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.AspNetCore.Agents;
using DurableSessions.AspNetCore.Auth;
using DurableSessions.AspNetCore.Streams;
using DurableSessions.AspNetCore.Subscriptions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// Retention over the wire: a stream whose older data was removed answers reads from before it with 410 OFFSET_GONE
/// (protocol §5.6) on every read path, and wake streams (an agent's, a pull-wake subscription's) keep only their latest wakes.
/// </summary>
public sealed class RetentionTests
{
    [Fact]
    public async Task Reads_from_before_the_retained_data_are_410_on_every_path_and_minus_one_starts_where_it_begins()
    {
        await using var server = await InProcessServer.StartAsync();
        var http = server.Client;
        Assert.Equal(HttpStatusCode.Created, (await http.PutAsync(new Uri("/v1/stream/kept", UriKind.Relative), Json("[]"))).StatusCode);
        var offsets = new List<string>();
        for (var i = 0; i < 4; i++)
        {
            using var appended = await http.PostAsync(new Uri("/v1/stream/kept", UriKind.Relative), Json($"{{\"n\":{i}}}"));
            offsets.Add(appended.Headers.GetValues("Stream-Next-Offset").Single());
        }

        var store = server.Services.GetRequiredService<StreamStore>();
        Assert.Equal(new TrimResult(TrimStatus.Trimmed, 2), await store.TrimAsync("kept", 2));

        // Catch-up, long-poll and SSE from an offset before it: 410, with the offset to start from.
        foreach (var query in new[] { $"offset={StreamOffset.Format(0)}", $"offset={offsets[0]}", $"offset={offsets[0]}&live=long-poll", $"offset={offsets[0]}&live=sse" })
        {
            using var gone = await http.GetAsync(new Uri($"/v1/stream/kept?{query}", UriKind.Relative));
            Assert.Equal(HttpStatusCode.Gone, gone.StatusCode);
            var error = JsonNode.Parse(await gone.Content.ReadAsStringAsync())!["error"]!;
            Assert.Equal("OFFSET_GONE", (string?)error["code"]);
            Assert.Equal(offsets[1], (string?)error["retainedFrom"]);
            Assert.Equal("no-store", gone.Headers.CacheControl?.ToString());
        }

        // A read from -1 of a trimmed stream is not cached: where it starts moves with the next trim.
        using (var fromStart = await http.GetAsync(new Uri("/v1/stream/kept?offset=-1", UriKind.Relative)))
        {
            Assert.Equal("no-store", fromStart.Headers.CacheControl?.ToString());
        }

        // -1 starts at the retained data; its offset and every later one read as before.
        Assert.Equal("[{\"n\":2},{\"n\":3}]", await http.GetStringAsync(new Uri("/v1/stream/kept?offset=-1", UriKind.Relative)));
        Assert.Equal("[{\"n\":2},{\"n\":3}]", await http.GetStringAsync(new Uri($"/v1/stream/kept?offset={offsets[1]}", UriKind.Relative)));
        Assert.Equal("[{\"n\":3}]", await http.GetStringAsync(new Uri($"/v1/stream/kept?offset={offsets[2]}", UriKind.Relative)));

        // A fork cannot start in what was removed.
        using var earlyFork = new HttpRequestMessage(HttpMethod.Put, new Uri("/v1/stream/kept-fork", UriKind.Relative)) { Content = Json("[]") };
        earlyFork.Headers.Add("Stream-Forked-From", "/v1/stream/kept");
        earlyFork.Headers.Add("Stream-Fork-Offset", offsets[0]);
        using var refusedFork = await http.SendAsync(earlyFork);
        Assert.Equal(HttpStatusCode.Gone, refusedFork.StatusCode);
        Assert.Equal("OFFSET_GONE", (string?)JsonNode.Parse(await refusedFork.Content.ReadAsStringAsync())!["error"]!["code"]);

        // Over WebSocket: a subscription from before it is refused with the offset to start from; from -1 it reads
        // the retained data.
        await using var socket = await SocketClient.ConnectAsync(server.BaseAddress);
        await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "old", ["path"] = "kept", ["offset"] = offsets[0] });
        var refused = await socket.NextAsync(m => Type(m) == "error" && Sub(m) == "old");
        Assert.Equal(410, refused["status"]!.GetValue<int>());
        Assert.Equal("OFFSET_GONE", refused["code"]!.GetValue<string>());
        Assert.Equal(offsets[1], refused["retainedFrom"]!.GetValue<string>());
        await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "all", ["path"] = "kept", ["offset"] = "-1" });
        var data = await socket.NextAsync(m => Type(m) == "data" && Sub(m) == "all");
        Assert.Equal("[{\"n\":2},{\"n\":3}]", data["data"]!.ToJsonString());
        Assert.Equal(offsets[3], data["offset"]!.GetValue<string>());

        // The .NET client's read from before it throws with the offset to read on from, which reads the rest.
        using var client = new DurableSessions.Client.DurableSessionsClient(DurableSessions.Client.DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress });
        var thrown = await Assert.ThrowsAsync<DurableSessions.Client.DurableSessionsException>(async () =>
        {
            await foreach (var batch in client.ReadStreamAsync("kept", offsets[0]))
            {
            }
        });
        Assert.Equal((HttpStatusCode.Gone, "OFFSET_GONE", offsets[1]), (thrown.Status, thrown.Code, thrown.RetainedFrom));
        var rest = new List<string>();
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await foreach (var batch in client.ReadStreamAsync("kept", thrown.RetainedFrom!, stop.Token))
        {
            rest.AddRange(batch.Messages.Select(e => e.GetRawText()));
            if (batch.UpToDate)
            {
                break;
            }
        }

        Assert.Equal(["{\"n\":2}", "{\"n\":3}"], rest);
    }

    [Fact]
    public async Task An_agents_wake_stream_keeps_its_latest_wakes_and_every_turn_stays_claimable()
    {
        const int Keep = 10;
        const int Turns = 35;
        await using var server = await InProcessServer.StartAsync(services: s => s.Configure<AgentTurnOptions>(o => o.WakeStreamRetention = Keep));
        var http = server.Client;
        Assert.Equal(HttpStatusCode.Created, (await http.PutAsync(new Uri("/v1/agents/agent:kept", UriKind.Relative), Json("{}"))).StatusCode);
        for (var i = 0; i < Turns; i++)
        {
            Assert.Equal(HttpStatusCode.Created, (await http.PutAsync(new Uri($"/v1/sessions/kept-{i}", UriKind.Relative), Json("{}"))).StatusCode);
            Assert.Equal(HttpStatusCode.Created, (await http.PostAsync(new Uri($"/v1/sessions/kept-{i}/messages", UriKind.Relative), Json("{\"text\":\"hello\"}"))).StatusCode);
        }

        // The wake events (and trims) are written after each message's answer: wait until the last one is there and
        // the stream holds between Keep and twice Keep of them. Without retention it would hold all 35.
        var store = server.Services.GetRequiredService<StreamStore>();
        StreamInfo wake = null!;
        await Until(
            async () => (wake = (await store.GetAsync("agents/agent:kept/wake")).Stream!) is { TailPosition: Turns } w && w.TailPosition - w.RetainedFrom is >= Keep and < 2 * Keep,
            "every turn's wake event, the older ones trimmed");

        // The latest are kept; reading from the start is 410.
        var held = wake.TailPosition - wake.RetainedFrom;
        var wakes = JsonNode.Parse(await http.GetStringAsync(new Uri("/v1/stream/agents/agent:kept/wake?offset=-1", UriKind.Relative)))!.AsArray();
        Assert.Equal(held, wakes.Count);
        Assert.Equal($"sessions/kept-{Turns - 1}", (string?)wakes[^1]!["stream"]);
        using var fromStart = await http.GetAsync(new Uri($"/v1/stream/agents/agent:kept/wake?offset={StreamOffset.Format(0)}", UriKind.Relative));
        Assert.Equal(HttpStatusCode.Gone, fromStart.StatusCode);

        // Wakes are hints: every turn, also those whose wake was removed, is still claimed once.
        var claimed = new HashSet<string>();
        for (var i = 0; i < Turns; i++)
        {
            using var claim = await http.PostAsync(new Uri("/v1/agents/agent:kept/claim", UriKind.Relative), Json("{\"worker\":\"w\"}"));
            Assert.Equal(HttpStatusCode.OK, claim.StatusCode);
            Assert.True(claimed.Add((string)JsonNode.Parse(await claim.Content.ReadAsStringAsync())!["stream"]!));
        }

        Assert.Equal(Turns, claimed.Count);
    }

    [Theory]
    [InlineData(true, true)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    public async Task A_pull_wake_subscriptions_wake_stream_keeps_its_latest_wakes_when_asked_by_a_creator_who_may_delete_it(bool asked, bool creatorMayDelete)
    {
        const int Keep = 10;
        const int Wakes = 35;
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));
        await using var server = await InProcessServer.StartAsync(clock, services: s =>
        {
            s.Configure<SubscriptionOptions>(o => o.WakeStreamRetention = Keep);
            s.Configure<AccessOptions>(o => o.SigningKey = "test-signing-key-of-at-least-32-bytes!");
        });
        var tokens = server.Services.GetRequiredService<AccessTokens>();
        Capability[] all = [Capability.Read, Capability.Write, Capability.Control, Capability.Admin];
        var root = tokens.Issue("admin:root", new Dictionary<string, Capability[]> { ["**"] = all }, TimeSpan.FromMinutes(5));

        // The creator always holds write on the wake stream (what a pull-wake subscription needs). A trim removes
        // whatever the stream holds, so it is asked for, never implied, and only by a creator who may delete the stream.
        var creator = tokens.Issue("user:creator", new Dictionary<string, Capability[]>
        {
            ["__ds"] = all,
            ["jobs/**"] = [Capability.Read],
            ["wake/kept"] = creatorMayDelete ? [Capability.Write, Capability.Admin] : [Capability.Write],
        }, TimeSpan.FromMinutes(5));
        var http = server.Client;
        async Task<HttpResponseMessage> Send(HttpMethod method, string url, string token, string? body = null)
        {
            using var request = new HttpRequestMessage(method, new Uri(url, UriKind.Relative)) { Content = body is null ? null : Json(body) };
            request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
            return await http.SendAsync(request);
        }

        foreach (var path in new[] { "jobs/kept", "wake/kept" })
        {
            Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Put, $"/v1/stream/{path}", root, "[]")).StatusCode);
        }

        var subscription = new JsonObject { ["type"] = "pull-wake", ["streams"] = new JsonArray("jobs/kept"), ["wake_stream"] = "wake/kept", ["lease_ttl_ms"] = 5_000 };
        foreach (var bad in new JsonNode?[] { "yes", 1, new JsonObject() })
        {
            subscription["trim_wake_stream"] = bad;
            Assert.Equal(HttpStatusCode.BadRequest, (await Send(HttpMethod.Put, "/v1/stream/__ds/subscriptions/kept", creator, subscription.ToJsonString())).StatusCode);
        }

        // A webhook subscription has no wake stream to trim.
        var webhook = new JsonObject { ["type"] = "webhook", ["streams"] = new JsonArray("jobs/kept"), ["webhook"] = new JsonObject { ["url"] = "http://127.0.0.1:9/hook" } };
        foreach (var bad in new JsonNode?[] { true, "yes" })
        {
            webhook["trim_wake_stream"] = bad;
            Assert.Equal(HttpStatusCode.BadRequest, (await Send(HttpMethod.Put, "/v1/stream/__ds/subscriptions/hook", creator, webhook.ToJsonString())).StatusCode);
        }

        subscription["trim_wake_stream"] = asked;
        using (var created = await Send(HttpMethod.Put, "/v1/stream/__ds/subscriptions/kept", creator, subscription.ToJsonString()))
        {
            if (asked && !creatorMayDelete)
            {
                Assert.Equal(HttpStatusCode.Forbidden, created.StatusCode);
                using var none = await Send(HttpMethod.Get, "/v1/stream/__ds/subscriptions/kept", root);
                Assert.Equal(HttpStatusCode.NotFound, none.StatusCode);
                return;
            }

            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
            Assert.Equal(asked, JsonNode.Parse(await created.Content.ReadAsStringAsync())!["trim_wake_stream"]!.GetValue<bool>());
        }

        // The same request again is the same subscription (false and absent alike); the other choice is a different one.
        using (var read = await Send(HttpMethod.Get, "/v1/stream/__ds/subscriptions/kept", root))
        {
            Assert.Equal(asked, JsonNode.Parse(await read.Content.ReadAsStringAsync())!["trim_wake_stream"]!.GetValue<bool>());
        }

        foreach (var same in asked ? new JsonNode?[] { true } : [false, null])
        {
            subscription["trim_wake_stream"] = same;
            using var again = await Send(HttpMethod.Put, "/v1/stream/__ds/subscriptions/kept", creator, subscription.ToJsonString());
            Assert.Equal(HttpStatusCode.OK, again.StatusCode);
            Assert.Equal(asked, JsonNode.Parse(await again.Content.ReadAsStringAsync())!["trim_wake_stream"]!.GetValue<bool>());
        }

        subscription["trim_wake_stream"] = !asked;
        using (var other = await Send(HttpMethod.Put, "/v1/stream/__ds/subscriptions/kept", creator, subscription.ToJsonString()))
        {
            Assert.Equal(HttpStatusCode.Conflict, other.StatusCode);
        }

        Assert.Equal(HttpStatusCode.NoContent, (await Send(HttpMethod.Post, "/v1/stream/jobs/kept", root, "{\"job\":1}")).StatusCode);

        // Each generation wakes once: claimed, and its lease left to run out with the job still pending, it wakes the
        // next. Without retention the wake stream holds all 35 wakes.
        var store = server.Services.GetRequiredService<StreamStore>();
        for (var generation = 1; generation <= Wakes; generation++)
        {
            await Until(async () => (await store.GetAsync("wake/kept")).Stream!.TailPosition == generation, $"wake {generation}");
            using var claim = await Send(HttpMethod.Post, "/v1/stream/__ds/subscriptions/kept/claim", root, "{\"worker\":\"w\"}");
            Assert.Equal(HttpStatusCode.OK, claim.StatusCode);
            Assert.Equal(generation, JsonNode.Parse(await claim.Content.ReadAsStringAsync())!["generation"]!.GetValue<int>());
            if (generation < Wakes)
            {
                clock.Advance(TimeSpan.FromSeconds(6));
            }
        }

        StreamInfo wake = null!;
        await Until(
            async () => (wake = (await store.GetAsync("wake/kept")).Stream!) is { TailPosition: Wakes } w && (asked ? w.TailPosition - w.RetainedFrom is >= Keep and < 2 * Keep : w.RetainedFrom == 0),
            asked ? "the older wakes trimmed" : "every wake");
        using var fromMinusOne = await Send(HttpMethod.Get, "/v1/stream/wake/kept?offset=-1", root);
        var wakes = JsonNode.Parse(await fromMinusOne.Content.ReadAsStringAsync())!.AsArray();
        Assert.Equal(wake.TailPosition - wake.RetainedFrom, wakes.Count);
        Assert.Equal(Wakes, wakes[^1]!["generation"]!.GetValue<int>());
        using var fromStart = await Send(HttpMethod.Get, $"/v1/stream/wake/kept?offset={StreamOffset.Format(0)}", root);
        Assert.Equal(asked ? HttpStatusCode.Gone : HttpStatusCode.OK, fromStart.StatusCode);
    }

    [Fact]
    public void A_stored_subscription_keeps_its_trim_choice_and_one_stored_before_the_choice_existed_does_not_trim()
    {
        var config = new SubscriptionConfig { Type = "pull-wake", Streams = ["jobs/a"], WakeStream = "wake/a", TrimWakeStream = true };
        var stored = new Subscription { Id = "s", Config = config, ConfigHash = config.Hash(), BaseUrl = "http://127.0.0.1" };
        var loaded = Subscription.Deserialize(stored.Serialize())!;
        Assert.True(loaded.Config.TrimWakeStream);
        Assert.Equal(stored.ConfigHash, loaded.Config.Hash());
        Assert.NotEqual(config.Hash(), (config with { TrimWakeStream = false }).Hash());

        // A subscription stored before the choice existed: no such field, and its hash as it was then (pinned, so that
        // its idempotent re-PUT keeps answering 200, not 409).
        var older = JsonNode.Parse(new Subscription { Id = "s", Config = config with { TrimWakeStream = false }, ConfigHash = "x", BaseUrl = "http://127.0.0.1" }.Serialize())!;
        Assert.True(older["Config"]!.AsObject().Remove("TrimWakeStream"));
        var loadedOlder = Subscription.Deserialize(Encoding.UTF8.GetBytes(older.ToJsonString()))!.Config;
        Assert.False(loadedOlder.TrimWakeStream);
        Assert.Equal("6231D005252D2AC2169016584A39767DEFBC6896C3749D226D4046A6990F44B7", loadedOlder.Hash());
    }

    [Theory]
    [InlineData(19, 1, 10, null)] // short of twice what is kept
    [InlineData(10, 1, 10, null)] // the first multiple: the stream holds only what it keeps
    [InlineData(20, 1, 10, 10L)] // the second: trimmed back to what it keeps
    [InlineData(21, 1, 10, null)] // crossed already, by an earlier append
    [InlineData(30, 1, 10, 20L)]
    [InlineData(22, 5, 10, 10L)] // an append of several wakes that carries the tail past a multiple
    [InlineData(40, 25, 10, 30L)] // one that passes several: trimmed once, to the last one's
    [InlineData(20, 20, 10, 10L)] // the stream's first append, already twice what is kept
    public void A_wake_stream_is_trimmed_by_the_append_that_carries_its_tail_past_a_multiple_of_what_it_keeps(long tail, long units, int keep, long? expected)
        => Assert.Equal(expected, WakeStreamRetention.TrimPoint(tail, units, keep));

    [Fact]
    public async Task A_read_that_races_a_delete_is_answered_as_deleted_not_as_gone_or_empty()
    {
        await using var server = await InProcessServer.StartAsync(services: services =>
        {
            services.WrapStore(inner => new DeletingBeforeReadStore(inner));
        });
        var http = server.Client;
        Assert.Equal(HttpStatusCode.Created, (await http.PutAsync(new Uri("/v1/stream/racing", UriKind.Relative), Json("[]"))).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await http.PostAsync(new Uri("/v1/stream/racing", UriKind.Relative), Json("{\"n\":1}"))).StatusCode);

        // Looked up, then deleted before the store is read: the rows are gone, and so is the stream.
        using var read = await http.GetAsync(new Uri("/v1/stream/racing?offset=-1", UriKind.Relative));
        Assert.Equal(HttpStatusCode.NotFound, read.StatusCode);
        Assert.Equal("STREAM_NOT_FOUND", (string?)JsonNode.Parse(await read.Content.ReadAsStringAsync())!["error"]!["code"]);
    }

    /// <summary>Deletes the stream between the handler's lookup and its read, as a concurrent delete can.</summary>
    private sealed class DeletingBeforeReadStore(StreamStore inner) : DelegatingStore(inner)
    {
        public override async ValueTask<ReadResult> ReadAsync(StreamInfo stream, long fromPosition, int maxBytes, CancellationToken cancellationToken = default)
        {
            if (stream.Path == "racing")
            {
                Assert.Equal(DeleteStreamStatus.Deleted, await DeleteAsync(stream.Path, cancellationToken));
            }

            return await base.ReadAsync(stream, fromPosition, maxBytes, cancellationToken);
        }
    }

    private static async Task Until(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}");
            await Task.Delay(20);
        }
    }

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    private static string? Type(JsonObject message) => message["type"]?.GetValue<string>();

    private static string? Sub(JsonObject message) => message["sub"]?.GetValue<string>();
}
