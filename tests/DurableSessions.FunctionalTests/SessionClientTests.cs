using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.Client;
using DurableSessions.Sessions;

namespace DurableSessions.FunctionalTests;

/// <summary>The .NET client against real servers: disconnect recovery, multi-surface sync, cancel from another surface, restarts.</summary>
public sealed class SessionClientTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    private static DurableSessionsClient Client(Uri address, string participant) => new(DurableSessionsClientOptions.Default with
    {
        BaseAddress = address,
        ParticipantId = participant,
        ReconnectDelay = TimeSpan.FromMilliseconds(5),
        MaxReconnectDelay = TimeSpan.FromMilliseconds(100),
    });

    /// <summary>Entities only (the snapshot's control offsets say where a state started, which differs per client).</summary>
    private static string Entities(SessionState state)
        => new JsonArray([.. state.ToSnapshot().Where(m => m!["type"] is not null).Select(m => m!.DeepClone())]).ToJsonString();

    /// <summary>Follows a session until <paramref name="done"/> holds for its state; returns the state's entities.</summary>
    private static async Task<string> FollowUntil(SessionClient session, Func<SessionState, bool> done, Action<SessionUpdate>? onUpdate = null)
    {
        using var cancel = new CancellationTokenSource(Timeout);
        await foreach (var update in session.JoinAsync(cancel.Token))
        {
            onUpdate?.Invoke(update);
            if (update.UpToDate && done(update.State))
            {
                return Entities(update.State);
            }
        }

        throw new InvalidOperationException("the session ended before the condition held");
    }

    private static bool RunIs(SessionState state, string runId, string status)
        => state.Get("run", runId)?["status"]?.GetValue<string>() == status;

    private static async Task<string> StreamReply(HttpClient http, string sessionId, string runId, int batches, int delayMs)
    {
        var agent = new FakeAgent(http, sessionId, runId, "m-" + runId);
        Assert.Equal(HttpStatusCode.OK, (await agent.StartAsync()).StatusCode);
        var text = new StringBuilder();
        for (var i = 0; i < batches; i++)
        {
            var tokens = new[] { $"w{i}a ", $"w{i}b " };
            text.Append(string.Concat(tokens));
            Assert.Equal(HttpStatusCode.OK, (await agent.DeltaAsync(tokens)).StatusCode);
            await Task.Delay(delayMs);
        }

        Assert.Equal(HttpStatusCode.OK, (await agent.FinishAsync(text.ToString())).StatusCode);
        return text.ToString();
    }

    [Fact]
    public async Task A_live_read_on_a_link_that_went_silent_without_closing_resumes_from_its_offset_on_a_new_request()
    {
        await using var link = await IdleLink.StartAsync(null);
        var (proxy, client) = (link.Proxy, link.Client);
        var seen = new List<int>();
        var upToDate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var stop = new CancellationTokenSource(Timeout);
        var reading = Task.Run(async () =>
        {
            await foreach (var batch in client.ReadStreamAsync(IdleLink.Path, "-1", stop.Token))
            {
                seen.AddRange(batch.Messages.Select(m => m.GetProperty("n").GetInt32()));
                if (batch.UpToDate)
                {
                    upToDate.TrySetResult();
                }

                if (seen.Contains(3))
                {
                    return;
                }
            }
        });
        await upToDate.Task.WaitAsync(Timeout);

        // The link carries nothing either way from now on and never closes: only the read's idle timeout can tell. What
        // is written meanwhile (straight to the server) reaches the reader on a new request, each message once.
        proxy.Freeze();
        var frozenAt = DateTime.UtcNow;
        await link.PostAsync(2);
        await link.PostAsync(3);
        await reading.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal([1, 2, 3], seen);
        Assert.True(DateTime.UtcNow - frozenAt < TimeSpan.FromSeconds(15), "the silent read was not given up within its idle timeout");
    }

    [Fact]
    public async Task A_live_read_kept_alive_by_the_server_or_paused_by_its_consumer_is_not_taken_for_a_dead_link()
    {
        await using var link = await IdleLink.StartAsync(o => o.SseKeepAliveInterval = TimeSpan.FromMilliseconds(200));
        var (proxy, client) = (link.Proxy, link.Client);

        var seen = new List<int>();
        var resumed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var stop = new CancellationTokenSource(Timeout);
        var reading = Task.Run(async () =>
        {
            await foreach (var batch in client.ReadStreamAsync(IdleLink.Path, "-1", stop.Token))
            {
                seen.AddRange(batch.Messages.Select(m => m.GetProperty("n").GetInt32()));
                if (seen.Count == 1 && batch.UpToDate)
                {
                    // A consumer that takes longer than the idle timeout before it asks for more: only time the read
                    // spends waiting on the network counts.
                    await Task.Delay(TimeSpan.FromSeconds(2.5), stop.Token);
                    resumed.TrySetResult();
                }

                if (seen.Contains(2))
                {
                    return;
                }
            }
        });
        await resumed.Task.WaitAsync(Timeout);

        // Then a quiet stream: each keep-alive is at least 3 bytes plus its chunk's framing (about 10 bytes in all), so
        // 150 more bytes down are well over a second of nothing but keep-alives.
        var before = proxy.BytesDown;
        while (proxy.BytesDown < before + 150)
        {
            await Task.Delay(50, stop.Token);
        }

        await link.PostAsync(2);
        await reading.WaitAsync(Timeout);
        Assert.Equal([1, 2], seen);
        Assert.Equal(1, proxy.Connections);
    }

    /// <summary>
    /// A server holding a stream with message 1, a proxy in front of it, and a client reading through the proxy with a
    /// one-second idle timeout.
    /// </summary>
    private sealed class IdleLink : IAsyncDisposable
    {
        public const string Path = "client/idle";

        private IdleLink(InProcessServer server, ChaosProxy proxy, DurableSessionsClient client) => (Server, Proxy, Client) = (server, proxy, client);

        public InProcessServer Server { get; }

        public ChaosProxy Proxy { get; }

        public DurableSessionsClient Client { get; }

        public static async Task<IdleLink> StartAsync(Action<AspNetCore.DurableStreamsOptions>? configure)
        {
            var server = await InProcessServer.StartAsync(configure: configure);
            Assert.Equal(HttpStatusCode.Created, (await server.Client.PutAsync(new Uri("/v1/stream/" + Path, UriKind.Relative), new StringContent("[]", Encoding.UTF8, "application/json"))).StatusCode);
            var proxy = new ChaosProxy(server.BaseAddress, maxCuts: 0, seed: 1);
            var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with
            {
                BaseAddress = proxy.Address,
                ReconnectDelay = TimeSpan.FromMilliseconds(5),
                SseIdleTimeout = TimeSpan.FromSeconds(1),
            });
            var link = new IdleLink(server, proxy, client);
            await link.PostAsync(1);
            return link;
        }

        /// <summary>Appends message <paramref name="n"/> straight to the server, not through the proxy.</summary>
        public async Task PostAsync(int n)
            => Assert.Equal(HttpStatusCode.NoContent, (await Server.Client.PostAsync(new Uri("/v1/stream/" + Path, UriKind.Relative), new StringContent($"{{\"n\":{n}}}", Encoding.UTF8, "application/json"))).StatusCode);

        public async ValueTask DisposeAsync()
        {
            Client.Dispose();
            await Proxy.DisposeAsync();
            await Server.DisposeAsync();
        }
    }

    [Fact]
    public void An_sse_idle_timeout_must_be_positive_or_infinite()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new DurableSessionsClient(DurableSessionsClientOptions.Default with { SseIdleTimeout = TimeSpan.Zero }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new DurableSessionsClient(DurableSessionsClientOptions.Default with { SseIdleTimeout = TimeSpan.FromSeconds(-2) }));
        using var off = new DurableSessionsClient(DurableSessionsClientOptions.Default with { SseIdleTimeout = System.Threading.Timeout.InfiniteTimeSpan });
    }

    /// <summary>Answers the first request 503 with a Retry-After of one second, as a busy server does; passes the rest on.</summary>
    private sealed class BusyOnce : DelegatingHandler
    {
        private int _requests;

        public List<DateTimeOffset> Sent { get; } = [];

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            lock (Sent)
            {
                Sent.Add(DateTimeOffset.UtcNow);
            }

            if (Interlocked.Increment(ref _requests) > 1)
            {
                return base.SendAsync(request, cancellationToken);
            }

            var busy = new HttpResponseMessage(HttpStatusCode.ServiceUnavailable)
            {
                Content = new StringContent("{\"error\":{\"code\":\"SESSION_BUSY\",\"message\":\"busy\"}}", Encoding.UTF8, "application/json"),
            };
            busy.Headers.RetryAfter = new System.Net.Http.Headers.RetryConditionHeaderValue(TimeSpan.FromSeconds(1));
            return Task.FromResult(busy);
        }
    }

    [Fact]
    public async Task A_request_answered_503_with_retry_after_is_sent_again_no_sooner_than_the_server_asked()
    {
        await using var server = await InProcessServer.StartAsync();
        var busy = new BusyOnce { InnerHandler = new SocketsHttpHandler() };
        using var http = new HttpClient(busy) { BaseAddress = server.BaseAddress };
        using var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, ParticipantId = "client:busy" }, http);
        await client.Session("busy").CreateAsync();
        Assert.Equal(2, busy.Sent.Count);
        Assert.True(busy.Sent[1] - busy.Sent[0] >= TimeSpan.FromMilliseconds(950), $"sent again after {(busy.Sent[1] - busy.Sent[0]).TotalMilliseconds} ms");
        Assert.Equal(HttpStatusCode.OK, (await server.Client.GetAsync(new Uri("/v1/sessions/busy", UriKind.Relative))).StatusCode);
    }

    [Fact]
    public async Task A_client_cut_at_100_random_points_ends_identical_to_an_uninterrupted_one()
    {
        await using var server = await InProcessServer.StartAsync();
        await using var proxy = new ChaosProxy(server.BaseAddress, maxCuts: 100, seed: 7, maxBytesBeforeCut: 3000);
        using var steady = Client(server.BaseAddress, "client:steady");
        using var flaky = Client(proxy.Address, "client:flaky");
        await steady.Session("chaos").CreateAsync();

        var flakyDone = FollowUntil(flaky.Session("chaos"), s => RunIs(s, "r1", "finished"));
        var steadyDone = FollowUntil(steady.Session("chaos"), s => RunIs(s, "r1", "finished"));
        var expected = await StreamReply(server.Client, "chaos", "r1", batches: 300, delayMs: 10);

        var flakyState = await flakyDone.WaitAsync(Timeout);
        var steadyState = await steadyDone.WaitAsync(Timeout);
        Assert.Equal(steadyState, flakyState);
        Assert.Contains(expected, flakyState, StringComparison.Ordinal);
        Assert.True(proxy.Cuts >= 100, $"only {proxy.Cuts} cuts happened");
    }

    [Fact]
    public async Task Three_surfaces_stay_identical_and_a_late_joiner_loads_the_snapshot_not_the_history()
    {
        await using var server = await InProcessServer.StartAsync();
        await using var lateProxy = new ChaosProxy(server.BaseAddress, maxCuts: 0, seed: 1);
        using var a = Client(server.BaseAddress, "client:a");
        using var b = Client(server.BaseAddress, "client:b");
        using var late = Client(lateProxy.Address, "client:late");
        await a.Session("sync").CreateAsync();
        await a.Session("sync").SendMessageAsync("hello from a");

        var aDone = FollowUntil(a.Session("sync"), s => RunIs(s, "r1", "finished"));
        var bDone = FollowUntil(b.Session("sync"), s => RunIs(s, "r1", "finished"));
        var reply = StreamReply(server.Client, "sync", "r1", batches: 600, delayMs: 10);

        // Join mid-reply, once a good part of the history exists.
        var deadline = DateTime.UtcNow + Timeout;
        while (!reply.IsCompleted && await HistoryBytes(server.Client, "sync") < 40_000 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }

        Assert.False(reply.IsCompleted, "the late joiner must join while the reply is still streaming");

        var historyAtJoin = await HistoryBytes(server.Client, "sync");
        long hydrationBytes = -1;
        var lateDone = FollowUntil(late.Session("sync"), s => RunIs(s, "r1", "finished"), u =>
        {
            // The live tail is requested only after the snapshot update is consumed, so this counts the hydration alone.
            if (u.IsSnapshot)
            {
                hydrationBytes = lateProxy.BytesDown;
            }
        });
        await reply.WaitAsync(Timeout);
        var states = await Task.WhenAll(aDone, bDone, lateDone).WaitAsync(Timeout);
        Assert.Equal(states[0], states[1]);
        Assert.Equal(states[0], states[2]);
        Assert.InRange(hydrationBytes, 1, historyAtJoin / 3);
    }

    private static async Task<long> HistoryBytes(HttpClient http, string id)
        => (await (await http.GetAsync($"/v1/stream/sessions/{id}?offset=-1")).Content.ReadAsByteArrayAsync()).Length;

    [Fact]
    public async Task A_cancel_from_another_surface_is_acknowledged_with_the_fence_and_seen_by_everyone()
    {
        await using var server = await InProcessServer.StartAsync();
        using var a = Client(server.BaseAddress, "client:a");
        using var b = Client(server.BaseAddress, "client:b");
        await a.Session("stop").CreateAsync();
        var agent = new FakeAgent(server.Client, "stop", "r1", "m1");
        await agent.StartAsync();
        await agent.DeltaAsync("partial");

        var aSees = FollowUntil(a.Session("stop"), s => RunIs(s, "r1", "cancelled"));
        var ack = await b.Session("stop").CancelAsync("r1");
        Assert.Equal(HttpStatusCode.Conflict, (await agent.DeltaAsync("too late")).StatusCode);
        var state = await aSees.WaitAsync(Timeout);
        Assert.Contains("\"cancelledBy\":\"client:b\"", state, StringComparison.Ordinal);
        Assert.DoesNotContain("too late", state, StringComparison.Ordinal);
        var afterFence = await server.Client.GetStringAsync($"/v1/stream/sessions/stop?offset={ack.Offset}");
        Assert.Equal("[]", afterFence);

        var refused = await Assert.ThrowsAsync<DurableSessionsException>(() => b.Session("stop").CancelAsync("r1"));
        Assert.Equal("RUN_NOT_ACTIVE", refused.Code);
    }

    [Fact]
    public async Task A_client_resumes_across_a_server_kill_and_restart()
    {
        await using var server = await ServerProcess.StartAsync();
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        using var client = Client(server.BaseAddress, "client:restart");
        await client.Session("restart").CreateAsync();
        var agent = new FakeAgent(http, "restart", "r1", "m1");
        await agent.StartAsync();
        var done = FollowUntil(client.Session("restart"), s => RunIs(s, "r1", "finished"));
        var text = new StringBuilder();
        for (var i = 0; i < 60; i++)
        {
            if (i == 30)
            {
                await server.KillAsync();
                await server.StartAsync();
            }

            text.Append($"t{i} ");
            Assert.Equal(HttpStatusCode.OK, (await agent.DeltaAsync($"t{i} ")).StatusCode);
        }

        await agent.FinishAsync(text.ToString());
        var state = await done.WaitAsync(Timeout);
        Assert.Contains(text.ToString(), state, StringComparison.Ordinal);
    }
}
