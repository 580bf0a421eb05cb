using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using DurableSessions.Sessions;

namespace DurableSessions.FunctionalTests;

/// <summary>Sessions over real HTTP: rollup snapshots, late joiners, the cancel fence, message policies, steering.</summary>
public sealed class SessionTests : IAsyncLifetime
{
    private InProcessServer _server = null!;

    public async ValueTask InitializeAsync() => _server = await InProcessServer.StartAsync();

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    private HttpClient Client => _server.Client;

    private async Task CreateSession(string id, string policy = "queue")
    {
        var response = await Client.PutAsJsonAsync($"/v1/sessions/{id}", new { title = "t", newMessagePolicy = policy });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
    }

    private async Task<(JsonArray Snapshot, string Offset, long Bytes)> Snapshot(string id)
    {
        using var response = await Client.GetAsync($"/v1/sessions/{id}");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var bytes = await response.Content.ReadAsByteArrayAsync();
        return (JsonNode.Parse(bytes)!.AsArray(), response.Headers.GetValues("Stream-Next-Offset").Single(), bytes.Length);
    }

    private async Task<(JsonArray Events, string Offset, long Bytes)> ReadStream(string id, string offset = "-1")
    {
        using var response = await Client.GetAsync($"/v1/stream/sessions/{id}?offset={offset}");
        var bytes = await response.Content.ReadAsByteArrayAsync();
        return (JsonNode.Parse(bytes)!.AsArray(), response.Headers.GetValues("Stream-Next-Offset").Single(), bytes.Length);
    }

    private static string Materialize(IEnumerable<JsonNode?> events)
    {
        var state = new SessionState();
        foreach (var e in events)
        {
            state.Apply((JsonObject)e!);
        }

        // Compare the entities only (the snapshot's control offsets depend on where each state started).
        return new JsonArray([.. state.ToSnapshot().Where(m => m!["type"] is not null).Select(m => m!.DeepClone())]).ToJsonString();
    }

    [Fact]
    public async Task A_message_posted_again_with_the_id_its_client_chose_is_stored_once()
    {
        await CreateSession("idem");
        async Task<(HttpStatusCode Status, JsonNode? Body)> Post(string body)
        {
            using var response = await Client.PostAsync("/v1/sessions/idem/messages", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));
            return (response.StatusCode, JsonNode.Parse(await response.Content.ReadAsStringAsync()));
        }

        // Posted, then posted again (a retry after a lost answer): the same message, stored once.
        var first = await Post("{\"id\":\"m-client-1\",\"text\":\"hello\",\"author\":\"user:alice\"}");
        var again = await Post("{\"id\":\"m-client-1\",\"text\":\"hello\",\"author\":\"user:alice\"}");
        Assert.Equal(HttpStatusCode.Created, first.Status);
        Assert.Equal(HttpStatusCode.Created, again.Status);
        Assert.Equal("m-client-1", (string?)first.Body!["messageId"]);
        Assert.Equal("m-client-1", (string?)again.Body!["messageId"]);

        // The id of another's message is refused, and so is an id that is not one.
        var taken = await Post("{\"id\":\"m-client-1\",\"text\":\"hello\",\"author\":\"user:bob\"}");
        Assert.Equal(HttpStatusCode.Conflict, taken.Status);
        Assert.Equal("MESSAGE_ID_TAKEN", (string?)taken.Body!["error"]!["code"]);
        var invalid = await Post("{\"id\":\"no spaces\",\"text\":\"hello\"}");
        Assert.Equal(HttpStatusCode.BadRequest, invalid.Status);
        Assert.Equal("INVALID_MESSAGE_ID", (string?)invalid.Body!["error"]!["code"]);
        Assert.Equal(HttpStatusCode.BadRequest, (await Post("{\"id\":7,\"text\":\"hello\"}")).Status);

        var (events, _, _) = await ReadStream("idem");
        Assert.Single(events, e => (string?)e!["type"] == "message" && (string?)e["key"] == "m-client-1");

        // The .NET client chooses an id for each message it sends.
        using var client = new DurableSessions.Client.DurableSessionsClient(DurableSessions.Client.DurableSessionsClientOptions.Default with { BaseAddress = _server.BaseAddress });
        var sent = await client.Session("idem").SendMessageAsync("from the client");
        Assert.StartsWith("m-", sent, StringComparison.Ordinal);
        Assert.Single((await ReadStream("idem")).Events, e => (string?)e!["key"] == sent);
    }

    [Fact]
    public async Task A_delta_the_rules_refuse_into_a_closed_session_held_in_memory_gets_the_closed_streams_answer()
    {
        await CreateSession("shut");
        var agent = new FakeAgent(Client, "shut", "r1", "m1");
        Assert.True((await agent.StartAsync()).IsSuccessStatusCode);
        Assert.True((await agent.DeltaAsync("a")).IsSuccessStatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Client.PostAsJsonAsync("/v1/sessions/shut/runs/r1/cancel", new { by = "user:bob" })).StatusCode);
        using (var close = new HttpRequestMessage(HttpMethod.Post, "/v1/stream/sessions/shut"))
        {
            close.Headers.Add("Stream-Closed", "true");
            Assert.True((await Client.SendAsync(close)).IsSuccessStatusCode);
        }

        // The fence would refuse the delta too, but the stream is closed: writers are told that, so that they stop.
        using var late = await agent.DeltaAsync("b");
        Assert.Equal(HttpStatusCode.Conflict, late.StatusCode);
        Assert.Equal("STREAM_CLOSED", (string?)JsonNode.Parse(await late.Content.ReadAsStringAsync())!["error"]!["code"]);
        Assert.Equal("true", late.Headers.GetValues("Stream-Closed").Single());
    }

    [Fact]
    public async Task Deltas_decided_on_a_deleted_session_are_refused_by_the_one_created_again_at_its_path_even_at_the_same_offset()
    {
        // The server takes the deltas of a session it holds in memory without looking the stream up first. In the
        // first session, run r1 streams.
        await CreateSession("reborn");
        var agent = new FakeAgent(Client, "reborn", "r1", "m1");
        Assert.True((await agent.StartAsync()).IsSuccessStatusCode);
        foreach (var token in new[] { "a", "b", "c", "d" })
        {
            Assert.True((await agent.DeltaAsync(token)).IsSuccessStatusCode);
        }

        var (_, oldTail, _) = await ReadStream("reborn");

        // Deleted and created again as a raw stream (this server's sessions in memory are not told), where run r2 writes
        // message m1, with as many events as the first one had: the same offset.
        var (oldEvents, _, _) = await ReadStream("reborn");
        Assert.Equal(HttpStatusCode.NoContent, (await Client.DeleteAsync("/v1/stream/sessions/reborn")).StatusCode);
        static JsonObject Change(string type, string key, string op, JsonObject value) => new() { ["type"] = type, ["key"] = key, ["value"] = value, ["headers"] = new JsonObject { ["operation"] = op } };
        var initial = new JsonArray(
            Change("run", "r2", "insert", new JsonObject { ["id"] = "r2", ["agent"] = "agent:test", ["messageId"] = "m1", ["status"] = "started" }),
            Change("message", "m1", "insert", new JsonObject { ["id"] = "m1", ["role"] = "assistant", ["runId"] = "r2", ["parts"] = new JsonArray(), ["status"] = "streaming" }));
        while (initial.Count < oldEvents.Count)
        {
            initial.Add(Change("message", $"u{initial.Count}", "insert", new JsonObject { ["id"] = $"u{initial.Count}", ["role"] = "user", ["parts"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "hi" }), ["status"] = "complete" }));
        }

        using (var create = await Client.PutAsync("/v1/stream/sessions/reborn", new StringContent(initial.ToJsonString(), Encoding.UTF8, "application/json")))
        {
            Assert.True(create.StatusCode == HttpStatusCode.Created, await create.Content.ReadAsStringAsync());
        }

        var (_, tail, _) = await ReadStream("reborn");
        Assert.Equal(oldTail, tail);

        // A delta of the first session's run r1, decided on its state in memory: in the new session, r2 owns the message.
        var delta = new JsonArray(Change("delta", "m1:stale", "insert", new JsonObject { ["messageId"] = "m1", ["runId"] = "r1", ["part"] = 0, ["partType"] = "text", ["text"] = "stale" }));
        using var stale = await Client.PostAsync("/v1/stream/sessions/reborn", new StringContent(delta.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Conflict, stale.StatusCode);
        Assert.Equal("RUN_CANCELLED", (string?)JsonNode.Parse(await stale.Content.ReadAsStringAsync())!["error"]!["code"]);
        var (events, after, _) = await ReadStream("reborn");
        Assert.DoesNotContain(events, e => (string?)e!["type"] == "delta");
        Assert.Equal(tail, after);
    }

    [Fact]
    public async Task A_late_joiner_hydrates_from_a_snapshot_sized_by_the_conversation_not_the_tokens()
    {
        await CreateSession("late");
        var post = await Client.PostAsJsonAsync("/v1/sessions/late/messages", new { text = "tell me a story", author = "user:alice" });
        Assert.Equal(HttpStatusCode.Created, post.StatusCode);

        var agent = new FakeAgent(Client, "late", "r1", "m-reply");
        Assert.Equal(HttpStatusCode.OK, (await agent.StartAsync()).StatusCode);
        var expected = new StringBuilder();
        for (var batch = 0; batch < 100; batch++)
        {
            var tokens = Enumerable.Range(0, 5).Select(i => $"tok{batch}-{i} ").ToArray();
            expected.Append(string.Concat(tokens));
            Assert.Equal(HttpStatusCode.OK, (await agent.DeltaAsync(tokens)).StatusCode);
        }

        // Mid-reply: the snapshot carries the reply as far as it has come, without the 500 deltas.
        var (snapshot, offset, snapshotBytes) = await Snapshot("late");
        var (history, _, historyBytes) = await ReadStream("late");
        var reply = snapshot.Single(m => m!["type"]?.GetValue<string>() == "message" && m["key"]!.GetValue<string>() == "m-reply");
        Assert.Equal(expected.ToString(), reply!["value"]!["parts"]![0]!["text"]!.GetValue<string>());
        Assert.DoesNotContain(snapshot, m => m!["type"]?.GetValue<string>() == "delta");
        Assert.True(snapshotBytes * 5 < historyBytes, $"snapshot {snapshotBytes} B should be far smaller than the {historyBytes} B of history");

        // Snapshot + tail from its offset materializes exactly like the full history.
        await agent.DeltaAsync("the end");
        await agent.FinishAsync(expected + "the end");
        var (tail, _, _) = await ReadStream("late", offset);
        var (full, _, _) = await ReadStream("late");
        Assert.Equal(Materialize(full), Materialize(snapshot.Concat(tail)));
    }

    [Fact]
    public async Task A_writer_following_its_session_is_not_sent_its_own_deltas_live_but_everything_else()
    {
        await CreateSession("echo");
        var ct = TestContext.Current.CancellationToken;
        var (_, tail, _) = await ReadStream("echo");

        // Two live readers from the tail: one skips the progress of producers named "agent-r1…" (the first run's), one
        // reads everything.
        using var skipping = await Client.GetAsync($"/v1/stream/sessions/echo?offset={tail}&live=sse&skip-progress-of=agent-r1", HttpCompletionOption.ResponseHeadersRead, ct);
        using var everything = await Client.GetAsync($"/v1/stream/sessions/echo?offset={tail}&live=sse", HttpCompletionOption.ResponseHeadersRead, ct);
        Assert.Equal(HttpStatusCode.OK, skipping.StatusCode);
        var skippingEvents = SseClient.ReadEventsAsync(await skipping.Content.ReadAsStreamAsync(ct), ct).GetAsyncEnumerator(ct);
        var everythingEvents = SseClient.ReadEventsAsync(await everything.Content.ReadAsStreamAsync(ct), ct).GetAsyncEnumerator(ct);
        await TypesUntil(skippingEvents, tail);
        await TypesUntil(everythingEvents, tail);

        var agent = new FakeAgent(Client, "echo", "r1", "m1");
        Assert.True((await agent.StartAsync()).IsSuccessStatusCode);
        Assert.True((await agent.DeltaAsync("hello ", "world")).IsSuccessStatusCode);
        Assert.True((await agent.DeltaAsync("!")).IsSuccessStatusCode);
        Assert.True((await agent.FinishAsync("hello world!")).IsSuccessStatusCode);
        var (stored, end, _) = await ReadStream("echo", tail);

        // Both end at the same offset; the skipping reader got every event but the deltas, whose text the final
        // message restates, and the store still holds them for any reader that catches up.
        Assert.Equal(["run", "message", "message", "run"], await TypesUntil(skippingEvents, end));
        Assert.Equal(["run", "message", "delta", "delta", "delta", "message", "run"], await TypesUntil(everythingEvents, end));
        Assert.Equal(3, stored.Count(e => e!["type"]!.GetValue<string>() == "delta"));

        // Another producer's deltas are sent to it as usual.
        var other = new FakeAgent(Client, "echo", "r2", "m2");
        Assert.True((await other.StartAsync()).IsSuccessStatusCode);
        Assert.True((await other.DeltaAsync("hi")).IsSuccessStatusCode);
        (_, end, _) = await ReadStream("echo", end);
        Assert.Equal(["run", "message", "delta"], await TypesUntil(skippingEvents, end));

        static async Task<List<string>> TypesUntil(IAsyncEnumerator<(string Event, string Data)> events, string offset)
        {
            var types = new List<string>();
            while (await events.MoveNextAsync())
            {
                var (type, data) = events.Current;
                if (type == "data")
                {
                    types.AddRange(JsonNode.Parse(data)!.AsArray().Select(e => e!["type"]!.GetValue<string>()));
                }
                else if (type == "control" && SseClient.ParseControl(data) is { NextOffset: var next, UpToDate: true } && next == offset)
                {
                    return types;
                }
            }

            throw new InvalidOperationException($"The read ended before offset {offset}.");
        }
    }

    [Theory]
    [InlineData("skip-progress-of=")]
    [InlineData("skip-progress-of=a&skip-progress-of=b")]
    public async Task A_bad_skip_progress_parameter_gets_a_400(string query)
    {
        await CreateSession("skipbad");
        using var response = await Client.GetAsync($"/v1/stream/sessions/skipbad?offset=-1&live=sse&{query}", TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        using var tooLong = await Client.GetAsync($"/v1/stream/sessions/skipbad?offset=-1&live=sse&skip-progress-of={new string('p', 257)}", TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.BadRequest, tooLong.StatusCode);
    }

    [Fact]
    public async Task Cancel_fences_the_run_and_marks_the_partial_reply_cancelled()
    {
        await CreateSession("cancel");
        var agent = new FakeAgent(Client, "cancel", "r1", "m1");
        await agent.StartAsync();
        await agent.DeltaAsync("partial ", "answer");

        var cancel = await Client.PostAsJsonAsync("/v1/sessions/cancel/runs/r1/cancel", new { by = "user:bob" });
        Assert.Equal(HttpStatusCode.OK, cancel.StatusCode);
        var ack = JsonNode.Parse(await cancel.Content.ReadAsStringAsync())!;
        var fence = ack["offset"]!.GetValue<string>();
        Assert.StartsWith("c_", ack["controlId"]!.GetValue<string>());

        var late = await agent.DeltaAsync("more tokens");
        Assert.Equal(HttpStatusCode.Conflict, late.StatusCode);
        Assert.Contains("RUN_CANCELLED", await late.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.Conflict, (await agent.FinishAsync("done")).StatusCode);

        var (afterFence, _, _) = await ReadStream("cancel", fence);
        Assert.Empty(afterFence);
        var (snapshot, _, _) = await Snapshot("cancel");
        var message = snapshot.Single(m => m!["key"]?.GetValue<string>() == "m1")!["value"]!;
        Assert.Equal("cancelled", message["status"]!.GetValue<string>());
        Assert.Equal("partial answer", message["parts"]![0]!["text"]!.GetValue<string>());
        var run = snapshot.Single(m => m!["type"]?.GetValue<string>() == "run")!["value"]!;
        Assert.Equal("cancelled", run["status"]!.GetValue<string>());
        Assert.Equal("user:bob", run["cancelledBy"]!.GetValue<string>());

        // A second cancel is refused: the run is no longer active.
        var again = await Client.PostAsJsonAsync("/v1/sessions/cancel/runs/r1/cancel", new { by = "user:bob" });
        Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
    }

    [Theory]
    [InlineData("queue", HttpStatusCode.Created, "started")]
    [InlineData("interrupt", HttpStatusCode.Created, "cancelled")]
    [InlineData("reject", HttpStatusCode.Conflict, "started")]
    public async Task A_new_message_during_a_run_follows_the_session_policy(string policy, HttpStatusCode expected, string runStatus)
    {
        var id = "policy-" + policy;
        await CreateSession(id, policy);
        await new FakeAgent(Client, id, "r1", "m1").StartAsync();
        var post = await Client.PostAsJsonAsync($"/v1/sessions/{id}/messages", new { text = "wait, one more thing" });
        Assert.Equal(expected, post.StatusCode);
        var (snapshot, _, _) = await Snapshot(id);
        Assert.Equal(runStatus, snapshot.Single(m => m!["type"]?.GetValue<string>() == "run")!["value"]!["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task Steering_appends_an_instruction_for_the_running_agent()
    {
        await CreateSession("steer");
        var agent = new FakeAgent(Client, "steer", "r1", "m1");
        await agent.StartAsync();
        var steer = await Client.PostAsJsonAsync("/v1/sessions/steer/runs/r1/steer", new { text = "shorter, please", by = "user:alice" });
        Assert.Equal(HttpStatusCode.OK, steer.StatusCode);
        var (events, _, _) = await ReadStream("steer");
        var control = events.Last(e => e!["type"]?.GetValue<string>() == "control")!["value"]!;
        Assert.Equal("steer", control["action"]!.GetValue<string>());
        Assert.Equal("shorter, please", control["text"]!.GetValue<string>());

        await agent.FinishAsync("ok");
        Assert.Equal(HttpStatusCode.Conflict, (await Client.PostAsJsonAsync("/v1/sessions/steer/runs/r1/steer", new { text = "again" })).StatusCode);
    }

    [Fact]
    public async Task A_cancel_or_steer_sent_again_with_its_id_is_answered_again_and_stored_once()
    {
        await CreateSession("control-ids");
        var agent = new FakeAgent(Client, "control-ids", "r1", "m1");
        await agent.StartAsync();

        var first = await Client.PostAsJsonAsync("/v1/sessions/control-ids/runs/r1/steer", new { id = "c-s1", text = "shorter", by = "user:alice" });
        var again = await Client.PostAsJsonAsync("/v1/sessions/control-ids/runs/r1/steer", new { id = "c-s1", text = "shorter", by = "user:alice" });
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        Assert.Equal("c-s1", (await again.Content.ReadFromJsonAsync<JsonObject>())!["controlId"]!.GetValue<string>());

        var cancel = await Client.PostAsJsonAsync("/v1/sessions/control-ids/runs/r1/cancel", new { id = "c-c1", by = "user:alice" });
        Assert.Equal(HttpStatusCode.OK, cancel.StatusCode);
        Assert.True(StreamOffset.TryParse((await cancel.Content.ReadFromJsonAsync<JsonObject>())!["offset"]!.GetValue<string>(), out var fence));

        // The run is cancelled now: the same cancel is acknowledged again, at or after its fence; another is refused.
        var repeated = await Client.PostAsJsonAsync("/v1/sessions/control-ids/runs/r1/cancel", new { id = "c-c1", by = "user:alice" });
        Assert.Equal(HttpStatusCode.OK, repeated.StatusCode);
        var answer = (await repeated.Content.ReadFromJsonAsync<JsonObject>())!;
        Assert.Equal("c-c1", answer["controlId"]!.GetValue<string>());
        Assert.True(StreamOffset.TryParse(answer["offset"]!.GetValue<string>(), out var repeatedAt) && repeatedAt >= fence);
        Assert.Equal(HttpStatusCode.Conflict, (await Client.PostAsJsonAsync("/v1/sessions/control-ids/runs/r1/cancel", new { by = "user:alice" })).StatusCode);

        var taken = await Client.PostAsJsonAsync("/v1/sessions/control-ids/runs/r1/cancel", new { id = "c-s1", by = "user:alice" });
        Assert.Equal(HttpStatusCode.Conflict, taken.StatusCode);
        Assert.Equal("CONTROL_ID_TAKEN", (await taken.Content.ReadFromJsonAsync<JsonObject>())!["error"]!["code"]!.GetValue<string>());
        var bad = await Client.PostAsJsonAsync("/v1/sessions/control-ids/runs/r1/steer", new { id = "not ok", text = "x" });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Equal("INVALID_CONTROL_ID", (await bad.Content.ReadFromJsonAsync<JsonObject>())!["error"]!["code"]!.GetValue<string>());

        var (events, _, _) = await ReadStream("control-ids");
        Assert.Equal(["c-s1", "c-c1"], events.Where(e => e!["type"]?.GetValue<string>() == "control").Select(e => e!["key"]!.GetValue<string>()));
    }

    [Fact]
    public async Task The_clients_steer_and_cancel_retried_after_a_lost_answer_are_stored_once_and_acknowledged()
    {
        await CreateSession("lost-answers");
        var agent = new FakeAgent(Client, "lost-answers", "r1", "m1");
        await agent.StartAsync();
        var lossy = new LoseFirstAnswer(new SocketsHttpHandler());
        using var http = new HttpClient(lossy) { BaseAddress = _server.BaseAddress };
        using var client = new DurableSessions.Client.DurableSessionsClient(DurableSessions.Client.DurableSessionsClientOptions.Default with
        {
            BaseAddress = _server.BaseAddress,
            ParticipantId = "user:alice",
            ReconnectDelay = TimeSpan.FromMilliseconds(10),
        }, http);

        // Each request reaches the server, which stores it; its answer is lost, and the client sends it again.
        var steer = await client.Session("lost-answers").SteerAsync("r1", "shorter");
        var cancel = await client.Session("lost-answers").CancelAsync("r1");
        Assert.Equal(2, lossy.Lost);

        var (events, _, _) = await ReadStream("lost-answers");
        var controls = events.Where(e => e!["type"]?.GetValue<string>() == "control").Select(e => e!["value"]!).ToList();
        Assert.Equal([steer.ControlId, cancel.ControlId], controls.Select(c => c["id"]!.GetValue<string>()));
        Assert.Equal(["steer", "cancel"], controls.Select(c => c["action"]!.GetValue<string>()));

        // Leaving twice (the second finds the participant gone) is no error either.
        await client.Session("lost-answers").HeartbeatAsync();
        await client.Session("lost-answers").LeaveAsync();
        await client.Session("lost-answers").LeaveAsync();
    }

    /// <summary>Sends each control request on, then loses its answer once (as a dropped connection would).</summary>
    private sealed class LoseFirstAnswer(HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        private readonly HashSet<string> _seen = [];
        private int _lost;

        public int Lost => Volatile.Read(ref _lost);

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var response = await base.SendAsync(request, cancellationToken);
            var path = request.RequestUri!.AbsolutePath;
            if (path.Contains("/runs/", StringComparison.Ordinal) && _seen.Add(path))
            {
                response.Dispose();
                Interlocked.Increment(ref _lost);
                throw new HttpRequestException("The connection dropped before the answer (test).");
            }

            return response;
        }
    }

    [Theory]
    [InlineData("PUT", "/v1/sessions/bad%20id", "{}")]
    [InlineData("PUT", "/v1/sessions/s1", "{\"newMessagePolicy\":\"sometimes\"}")]
    [InlineData("PUT", "/v1/sessions/s1", "[1,2]")]
    [InlineData("POST", "/v1/sessions/s1/messages", "{}")]
    [InlineData("POST", "/v1/sessions/s1/messages", "{\"text\":\"x\",\"role\":\"robot\"}")]
    [InlineData("POST", "/v1/sessions/nope/messages", "{\"text\":\"x\"}")]
    [InlineData("POST", "/v1/sessions/s1/runs/r9/cancel", "{}")]
    [InlineData("POST", "/v1/sessions/s1/runs/r9/steer", "{}")]
    [InlineData("GET", "/v1/sessions/nope", null)]
    [InlineData("POST", "/v1/stream/sessions/s1", "[1, 2]")]
    [InlineData("DELETE", "/v1/sessions/s1/whatever", null)]
    [InlineData("POST", "/v1/sessions/s1/handoff", "{}")]
    [InlineData("DELETE", "/v1/sessions/s1/handoff", "{\"holder\":\"human:nobody\"}")]
    [InlineData("DELETE", "/v1/sessions/s1/presence/client:ghost", null)]
    [InlineData("PUT", "/v1/sessions/s2", "{\"handoffPolicy\":\"teleport\"}")]
    [InlineData("PUT", "/v1/sessions/s2", "{\"notifyUrl\":\"ftp://example.com\"}")]
    public async Task Bad_session_requests_get_a_clear_4xx_and_change_nothing(string method, string target, string? body)
    {
        await Client.PutAsJsonAsync("/v1/sessions/s1", new { });
        var (before, beforeOffset, _) = await ReadStream("s1");
        using var request = new HttpRequestMessage(new HttpMethod(method), target);
        if (body is not null)
        {
            request.Content = new StringContent(body, Encoding.UTF8, "application/json");
        }

        using var response = await Client.SendAsync(request);
        Assert.InRange((int)response.StatusCode, 400, 499);
        var error = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!;
        Assert.False(string.IsNullOrWhiteSpace(error["message"]!.GetValue<string>()));
        var (after, afterOffset, _) = await ReadStream("s1");
        Assert.Equal(beforeOffset, afterOffset);
        Assert.Equal(before.ToJsonString(), after.ToJsonString());
    }

    [Fact]
    public async Task Json_is_written_readably_without_unicode_escapes_for_quotes_markup_or_accents()
    {
        const string text = "Grüße — \"quoted\" <b>bold</b> & 'single'";
        await CreateSession("readable-json");
        using (var posted = await Client.PostAsJsonAsync("/v1/sessions/readable-json/messages", new { text }))
        {
            Assert.Equal(HttpStatusCode.Created, posted.StatusCode);
        }

        foreach (var path in new[] { "/v1/stream/sessions/readable-json?offset=-1", "/v1/sessions/readable-json" })
        {
            using var response = await Client.GetAsync(path);
            var raw = Encoding.UTF8.GetString(await response.Content.ReadAsByteArrayAsync());
            Assert.Contains("Grüße — \\\"quoted\\\" <b>bold</b> & 'single'", raw, StringComparison.Ordinal);
            Assert.DoesNotContain("\\u00", raw, StringComparison.Ordinal);
        }

        // Error bodies too: a message naming a value in quotes keeps its quotes.
        using var refused = await Client.PutAsJsonAsync("/v1/sessions/readable-json-2", new { newMessagePolicy = "sometimes" });
        var error = await refused.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        Assert.DoesNotContain("\\u00", error, StringComparison.Ordinal);
    }
}
