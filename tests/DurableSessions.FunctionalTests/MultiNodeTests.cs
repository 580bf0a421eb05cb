using System.Collections.Concurrent;
using System.Net;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using DurableSessions.Agents;
using DurableSessions.Client;
using DurableSessions.Sessions;
using DurableSessions.Testing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;

namespace DurableSessions.FunctionalTests;

/// <summary>Three server processes sharing one real redis-server: a session's participants spread over the nodes.</summary>
public sealed class MultiNodeTests : IAsyncLifetime
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentQueue<JsonObject> _wakes = new();
    private readonly ConcurrentQueue<JsonObject> _notifications = new();
    private WebApplication _receiver = null!;
    private RedisServer _redis = null!;
    private ServerProcess _a = null!;
    private ServerProcess _b = null!;
    private ServerProcess _c = null!;

    public async ValueTask InitializeAsync()
    {
        // A subscription worker (answers every wake with done) and a notification receiver, for all nodes.
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        _receiver = builder.Build();
        _receiver.MapPost("/wake", async (HttpContext context) =>
        {
            _wakes.Enqueue(JsonNode.Parse(await new StreamReader(context.Request.Body).ReadToEndAsync())!.AsObject());
            return Results.Json(new { done = true });
        });
        _receiver.MapPost("/notify", async (HttpContext context) =>
        {
            _notifications.Enqueue(JsonNode.Parse(await new StreamReader(context.Request.Body).ReadToEndAsync())!.AsObject());
            return Results.Ok();
        });
        await _receiver.StartAsync();

        _redis = await RedisServer.StartAsync();
        string[] args =
        [
            "--store", "redis", "--redis", _redis.Configuration + ",asyncTimeout=1000", "--Sessions:PresenceTimeout=00:00:02", "--Sessions:PresenceSweepInterval=00:00:00.200",
            "--Sessions:NotificationUrl=" + ReceiverUrl("/notify"), "--Sessions:NotificationSecret=multi-node",
        ];
        _a = await ServerProcess.StartAsync(null, args);
        _b = await ServerProcess.StartAsync(null, args);
        _c = await ServerProcess.StartAsync(null, args);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _a.DisposeAsync();
        await _b.DisposeAsync();
        await _c.DisposeAsync();
        await _redis.DisposeAsync();
        await _receiver.DisposeAsync();
        _stop.Dispose();
    }

    private string ReceiverUrl(string path) => _receiver.Urls.First() + path;

    private static DurableSessionsClient ClientOf(ServerProcess node, string participant)
        => new(DurableSessionsClientOptions.Default with { BaseAddress = node.BaseAddress, ParticipantId = participant });

    /// <summary>
    /// Records whether the model's cancellation token fired. A reply to a question that asks for a long answer does not
    /// end by itself: it stays open after its text until it is cancelled, so a cancel always reaches a running reply,
    /// however slowly a loaded machine carries it.
    /// </summary>
    private sealed class WatchedChatClient(IChatClient inner) : DelegatingChatClient(inner)
    {
        public const string EndlessQuestion = "Now write a long answer";

        public TaskCompletionSource TokenFired { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            using var registration = cancellationToken.Register(() => TokenFired.TrySetResult());
            var endless = messages.LastOrDefault(m => m.Role == ChatRole.User)?.Text == EndlessQuestion;
            await foreach (var update in base.GetStreamingResponseAsync(messages, options, cancellationToken))
            {
                yield return update;
            }

            if (endless)
            {
                await Task.Delay(System.Threading.Timeout.Infinite, cancellationToken);
            }
        }
    }

    /// <summary>
    /// Tails a JSON stream over SSE through the given nodes in turn: when one dies it resumes from its last offset on the
    /// next, and while the store is unavailable it retries. Returns every message it received, in order, once
    /// <paramref name="done"/> holds for them at an up-to-date point.
    /// </summary>
    private static async Task<List<JsonObject>> TailAsync(string path, ServerProcess[] nodes, Func<List<JsonObject>, bool> done, Action<int>? onEvents = null)
    {
        using var http = new HttpClient { Timeout = System.Threading.Timeout.InfiniteTimeSpan };
        using var cancel = new CancellationTokenSource(Timeout);
        var events = new List<JsonObject>();
        var offset = "-1";
        var node = 0;
        while (true)
        {
            try
            {
                using var response = await http.GetAsync(new Uri(nodes[node].BaseAddress, $"/v1/stream/{path}?offset={offset}&live=sse"), HttpCompletionOption.ResponseHeadersRead, cancel.Token);
                if (!response.IsSuccessStatusCode)
                {
                    await Task.Delay(100, cancel.Token); // the store is unavailable for now
                    continue;
                }

                var pending = new List<JsonObject>();
                await foreach (var (type, data) in SseClient.ReadEventsAsync(await response.Content.ReadAsStreamAsync(cancel.Token), cancel.Token))
                {
                    if (type == "data")
                    {
                        pending.AddRange(JsonNode.Parse(data)!.AsArray().Select(e => e!.AsObject()));
                    }
                    else if (type == "control")
                    {
                        var control = SseClient.ParseControl(data);
                        events.AddRange(pending);
                        pending.Clear();
                        offset = control.NextOffset;
                        onEvents?.Invoke(events.Count);
                        if (control.UpToDate && done(events))
                        {
                            return events;
                        }
                    }
                }
            }
            catch (Exception ex) when (ex is HttpRequestException or IOException && !cancel.IsCancellationRequested)
            {
                node = Math.Min(node + 1, nodes.Length - 1); // that node is gone: go on from the same offset on the next
                await Task.Delay(100, cancel.Token);
            }
        }
    }

    /// <summary>Tails a session until <paramref name="done"/> holds for its materialized state.</summary>
    private static Task<List<JsonObject>> TailSessionAsync(string sessionId, ServerProcess[] nodes, Func<SessionState, bool> done, Action<int>? onEvents = null)
        => TailAsync("sessions/" + sessionId, nodes, events => done(Materialize(events)), onEvents);

    private static SessionState Materialize(IEnumerable<JsonObject> events)
    {
        var state = new SessionState();
        foreach (var e in events)
        {
            state.Apply(e);
        }

        return state;
    }

    private static IEnumerable<JsonObject> Runs(SessionState state, string status)
        => state.All(SessionEventTypes.Run).Where(r => r["status"]!.GetValue<string>() == status);

    private static async Task<SessionState> SnapshotAsync(ServerProcess node, string sessionId)
    {
        using var http = new HttpClient();
        var state = new SessionState();
        foreach (var e in JsonNode.Parse(await http.GetStringAsync(new Uri(node.BaseAddress, $"/v1/sessions/{sessionId}")))!.AsArray())
        {
            state.Apply(e!.AsObject());
        }

        return state;
    }

    [Fact]
    public async Task A_client_resumes_on_another_node_when_its_node_is_killed_mid_reply_and_a_cancel_on_a_third_node_stops_the_agent()
    {
        using var user = ClientOf(_c, "client:user");
        using var agentClient = ClientOf(_b, "agent:b");
        var session = user.Session("spread");
        await session.CreateAsync();
        var chat = new WatchedChatClient(new DemoChatClient(tokensPerSecond: 40));
        var agent = new SessionAgent(chat, agentClient, new SessionAgentOptions { AgentId = "agent:b" });
        _ = Task.Run(() => agent.RunAsync("spread", _stop.Token));

        // An uninterrupted reader on C, and one on A that loses A mid-reply and goes on on C.
        var finished = (SessionState s) => Runs(s, "finished").Any();
        var killedA = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var steady = TailSessionAsync("spread", [_c], finished);
        var roaming = TailSessionAsync("spread", [_a, _c], finished, count =>
        {
            if (count >= 12)
            {
                killedA.TrySetResult();
            }
        });
        var question = await session.SendMessageAsync("What happens when a node dies?");
        await killedA.Task.WaitAsync(Timeout);
        await _a.KillAsync(); // SIGKILL, in the middle of the reply

        var expected = await steady.WaitAsync(Timeout);
        var resumed = await roaming.WaitAsync(Timeout);
        Assert.Equal(Serialize(expected), Serialize(resumed));
        var reply = Materialize(resumed);

        var run = Runs(reply, "finished").Single();
        Assert.Equal(question, run["trigger"]!.GetValue<string>());
        var text = reply.Get(SessionEventTypes.Message, run["messageId"]!.GetValue<string>())!["parts"]![0]!["text"]!.GetValue<string>();
        Assert.Equal(DemoChatClient.ReplyTo([new ChatMessage(ChatRole.User, "What happens when a node dies?")]), text);

        // A cancel sent to C stops the agent that is attached through B.
        await session.SendMessageAsync(WatchedChatClient.EndlessQuestion);
        var running = await WaitForAsync(_c, "spread", s => Runs(s, "started").Any(r => Text(s, r).Length > 10));
        var runId = Runs(running, "started").Single()["id"]!.GetValue<string>();
        var ack = await session.CancelAsync(runId);
        await chat.TokenFired.Task.WaitAsync(Timeout);
        var cancelled = await WaitForAsync(_b, "spread", s => Runs(s, "cancelled").Any());
        Assert.Equal(runId, Runs(cancelled, "cancelled").Single()["id"]!.GetValue<string>());

        // The agent answers a whole next question after the fence: a still-running (wrongly unfenced) cancelled run
        // would have written meanwhile, so everything after the cancel's acknowledgement belongs to the next run.
        var next = await session.SendMessageAsync("Then a short one");
        await WaitForAsync(_b, "spread", s => Runs(s, "finished").Any(r => r["trigger"]?.GetValue<string>() == next));
        using var http = new HttpClient();
        var written = JsonNode.Parse(await http.GetStringAsync(new Uri(_b.BaseAddress, $"/v1/stream/sessions/spread?offset={ack.Offset}")))!.AsArray();
        Assert.NotEmpty(written);
        Assert.All(written, e => Assert.DoesNotContain(runId, e!.ToJsonString(), StringComparison.Ordinal));
    }

    [Fact]
    public async Task Presence_and_snapshots_agree_across_nodes_and_a_participant_beating_on_two_nodes_is_not_timed_out()
    {
        using var onA = ClientOf(_a, "client:phone");
        using var alsoOnC = ClientOf(_c, "client:phone");
        using var laptop = ClientOf(_b, "client:laptop");
        await onA.Session("presence").CreateAsync();
        await laptop.Session("presence").HeartbeatAsync();

        // The phone's heartbeats alternate between A and C for three timeouts, well inside the 2 s timeout however slowly
        // a loaded machine answers them; the laptop stops beating.
        for (var i = 0; i < 24; i++)
        {
            await (i % 2 == 0 ? onA : alsoOnC).Session("presence").HeartbeatAsync();
            await Task.Delay(250);
        }

        var snapshots = await Task.WhenAll(new[] { _a, _b, _c }.Select(n => SnapshotAsync(n, "presence")));
        foreach (var snapshot in snapshots)
        {
            Assert.Equal("joined", snapshot.Get(SessionEventTypes.Presence, "client:phone")!["status"]!.GetValue<string>());
            Assert.Equal("left", snapshot.Get(SessionEventTypes.Presence, "client:laptop")!["status"]!.GetValue<string>());
            Assert.Equal(snapshots[0].ToSnapshot().ToJsonString(), snapshot.ToSnapshot().ToJsonString());
        }

        // The laptop was marked left once, not once per node.
        using var http = new HttpClient();
        var history = JsonNode.Parse(await http.GetStringAsync(new Uri(_c.BaseAddress, "/v1/stream/sessions/presence?offset=-1")))!.AsArray();
        Assert.Single(history, e => e!["type"]!.GetValue<string>() == "presence" && e["key"]!.GetValue<string>() == "client:laptop" && e["value"]!["status"]!.GetValue<string>() == "left");
        Assert.Single(history, e => e!["type"]!.GetValue<string>() == "presence" && e["key"]!.GetValue<string>() == "client:phone");
    }

    [Fact]
    public async Task After_redis_is_killed_and_restarted_mid_stream_nothing_acknowledged_is_missing_and_readers_resume()
    {
        using var writer = new HttpClient { BaseAddress = _b.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
        Assert.Equal(HttpStatusCode.Created, (await writer.PutAsync("/v1/stream/outage", new StringContent("[]", Encoding.UTF8, "application/json"))).StatusCode);
        const int Total = 300;
        var reader = TailAsync("outage", [_a], events => events.Count >= Total);

        var acknowledged = new List<int>();
        var outageAnswers = 0;
        var longestWait = TimeSpan.Zero;
        Task? restart = null;
        for (var i = 0; i < Total; i++)
        {
            if (i == Total / 3)
            {
                // SIGKILL, down for longer than the nodes' 1 s command timeout, then up again on the same append-only file.
                restart = Task.Run(async () =>
                {
                    await _redis.KillAsync();
                    await Task.Delay(2500);
                    await _redis.StartAgainAsync();
                });
            }

            // Retried until acknowledged; the producer sequence makes a retry of an applied request a duplicate.
            var deadline = DateTime.UtcNow.AddSeconds(30);
            var started = System.Diagnostics.Stopwatch.StartNew();
            while (true)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/stream/outage") { Content = new StringContent($"[{{\"i\":{i}}}]", Encoding.UTF8, "application/json") };
                request.Headers.Add("Producer-Id", "outage-writer");
                request.Headers.Add("Producer-Epoch", "0");
                request.Headers.Add("Producer-Seq", i.ToString(System.Globalization.CultureInfo.InvariantCulture));
                try
                {
                    using var response = await writer.SendAsync(request);
                    if (response.IsSuccessStatusCode)
                    {
                        acknowledged.Add(i);
                        longestWait = TimeSpan.FromTicks(Math.Max(longestWait.Ticks, started.Elapsed.Ticks));
                        break;
                    }

                    // Redis down: the store is unavailable, nothing was acknowledged, retry.
                    Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
                    outageAnswers++;
                }
                catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
                {
                }

                Assert.True(DateTime.UtcNow < deadline, $"append {i} was not acknowledged within 30 s of Redis coming back");
                await Task.Delay(50);
            }
        }

        await restart!;
        // The writer met the outage: refused with 503, or held until Redis was back (the client library queues briefly).
        Assert.True(outageAnswers > 0 || longestWait > TimeSpan.FromSeconds(1), $"no append felt the outage (longest {longestWait})");
        Assert.Equal(Enumerable.Range(0, Total), acknowledged);
        using var check = new HttpClient { BaseAddress = _c.BaseAddress };
        var stored = JsonNode.Parse(await check.GetStringAsync("/v1/stream/outage?offset=-1"))!.AsArray().Select(e => e!["i"]!.GetValue<int>());
        Assert.Equal(Enumerable.Range(0, Total), stored);
        Assert.Equal(Enumerable.Range(0, Total), (await reader.WaitAsync(Timeout)).Select(e => e["i"]!.GetValue<int>()));
    }

    [Fact]
    public async Task A_subscription_made_on_one_node_wakes_for_appends_through_every_node_once_per_change()
    {
        var workerUrl = ReceiverUrl("/wake");
        var wakes = _wakes;

        using var a = new HttpClient { BaseAddress = _a.BaseAddress };
        using var b = new HttpClient { BaseAddress = _b.BaseAddress };
        using var c = new HttpClient { BaseAddress = _c.BaseAddress };
        var created = await a.PutAsync("/v1/stream/__ds/subscriptions/orders", new StringContent(
            new JsonObject { ["type"] = "webhook", ["pattern"] = "orders/*", ["webhook"] = new JsonObject { ["url"] = workerUrl } }.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);

        // Nodes B and C, which started before the subscription existed, take appends.
        Assert.Equal(HttpStatusCode.Created, (await b.PutAsync("/v1/stream/orders/1", new StringContent("[]", Encoding.UTF8, "application/json"))).StatusCode);
        const int Appends = 30;
        for (var i = 0; i < Appends; i++)
        {
            var response = await (i % 2 == 0 ? b : c).PostAsync("/v1/stream/orders/1", new StringContent($"[{{\"n\":{i}}}]", Encoding.UTF8, "application/json"));
            Assert.True(response.IsSuccessStatusCode);
            await Task.Delay(20);
        }

        // Every append is acknowledged by some wake, and no two wakes cover the same range (no change delivered twice).
        var deadline = DateTime.UtcNow + Timeout;
        while (true)
        {
            using var description = JsonDocument.Parse(await c.GetStringAsync("/v1/stream/__ds/subscriptions/orders"));
            var acked = description.RootElement.GetProperty("streams").EnumerateArray().Single(s => s.GetProperty("path").GetString() == "orders/1").GetProperty("acked_offset").GetString();
            if (acked == StreamOffset.Format(Appends))
            {
                break;
            }

            Assert.True(DateTime.UtcNow < deadline, $"acked {acked} after {wakes.Count} wakes");
            await Task.Delay(100);
        }

        var ranges = wakes
            .Select(w => (Generation: w["generation"]!.GetValue<long>(), Stream: w["streams"]!.AsArray().Single(s => s!["path"]!.GetValue<string>() == "orders/1")!))
            .Select(w => (w.Generation, From: w.Stream["acked_offset"]!.GetValue<string>(), To: w.Stream["tail_offset"]!.GetValue<string>()))
            .Where(r => r.From != r.To)
            .OrderBy(r => r.Generation)
            .ToList();
        Assert.Equal(ranges.Count, ranges.Select(r => r.Generation).Distinct().Count());
        for (var i = 1; i < ranges.Count; i++)
        {
            Assert.Equal(ranges[i - 1].To, ranges[i].From); // contiguous: nothing skipped, nothing repeated
        }

        Assert.Equal(StreamOffset.Format(0), ranges[0].From);
        Assert.Equal(StreamOffset.Format(Appends), ranges[^1].To);
    }

    [Fact]
    public async Task A_finished_run_is_notified_once_when_the_watcher_left_through_another_node()
    {
        using var user = ClientOf(_a, "client:user");
        using var userOnC = ClientOf(_c, "client:user");
        using var agentClient = ClientOf(_b, "agent:b");
        var session = user.Session("notified");
        await session.CreateAsync();
        var agent = new SessionAgent(new DemoChatClient(tokensPerSecond: 40), agentClient, new SessionAgentOptions { AgentId = "agent:b" });
        _ = Task.Run(() => agent.RunAsync("notified", _stop.Token));

        // Watching through A, heartbeating as a client does (well inside the 2 s presence timeout, however long the run
        // takes on a loaded machine): the run (committed through B) is not notified.
        await session.HeartbeatAsync();
        using var watching = new CancellationTokenSource();
        var heartbeats = Task.Run(async () =>
        {
            while (!watching.IsCancellationRequested)
            {
                try
                {
                    await Task.Delay(400, watching.Token);
                    await session.HeartbeatAsync(cancellationToken: watching.Token);
                }
                catch (OperationCanceledException)
                {
                }
            }
        });
        await session.SendMessageAsync("first, while I watch");
        await WaitForAsync(_c, "notified", s => Runs(s, "finished").Count() == 1);
        await watching.CancelAsync();
        await heartbeats;

        // Left through C: the next run is notified, once.
        await userOnC.Session("notified").LeaveAsync();
        await Task.Delay(1500); // every node's view of presence is refreshed by its sweep (every 200 ms here; slack for a loaded machine)
        await userOnC.Session("notified").SendMessageAsync("second, after I left");
        var done = await WaitForAsync(_c, "notified", s => Runs(s, "finished").Count() == 2);
        var second = Runs(done, "finished").Last()["id"]!.GetValue<string>();
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (_notifications.IsEmpty && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        // A third run, still unwatched, is notified too: a (wrong) second notification of the second run from another
        // node would have come while it ran, so the notifications are exactly one per run, in order.
        var thirdQuestion = await userOnC.Session("notified").SendMessageAsync("third, still away");
        done = await WaitForAsync(_c, "notified", s => Runs(s, "finished").Any(r => r["trigger"]?.GetValue<string>() == thirdQuestion));
        var third = Runs(done, "finished").Single(r => r["trigger"]?.GetValue<string>() == thirdQuestion)["id"]!.GetValue<string>();
        deadline = DateTime.UtcNow.AddSeconds(20);
        while (!_notifications.Any(n => n["runId"]!.GetValue<string>() == third) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        Assert.Equal([second, third], _notifications.Select(n => n["runId"]!.GetValue<string>()));
        Assert.All(_notifications, n => Assert.Equal("notified", n["sessionId"]!.GetValue<string>()));
    }

    private static string Serialize(List<JsonObject> events) => string.Join('\n', events.Select(e => e.ToJsonString()));

    private static string Text(SessionState state, JsonObject run)
        => state.Get(SessionEventTypes.Message, run["messageId"]!.GetValue<string>()) is { } m && m["parts"] is JsonArray { Count: > 0 } parts ? parts[0]!["text"]?.GetValue<string>() ?? string.Empty : string.Empty;

    private static async Task<SessionState> WaitForAsync(ServerProcess node, string sessionId, Func<SessionState, bool> condition)
    {
        var deadline = DateTime.UtcNow + Timeout;
        while (true)
        {
            var state = await SnapshotAsync(node, sessionId);
            if (condition(state))
            {
                return state;
            }

            Assert.True(DateTime.UtcNow < deadline, "timed out");
            await Task.Delay(50);
        }
    }
}
