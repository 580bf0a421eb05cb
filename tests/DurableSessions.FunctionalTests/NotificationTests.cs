using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.Agents;
using DurableSessions.AspNetCore.Sessions;
using DurableSessions.Client;
using DurableSessions.Sessions;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace DurableSessions.FunctionalTests;

/// <summary>Run-finished notifications to a real local HTTP receiver, sent only when nobody is watching.</summary>
public sealed class NotificationTests : IAsyncLifetime
{
    private const string Secret = "notification-test-secret";
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private readonly ConcurrentQueue<(string Body, string? Signature, string? Id)> _received = new();
    private readonly ConcurrentQueue<string> _receivedGlobal = new();
    private readonly CancellationTokenSource _stop = new();
    private WebApplication _receiver = null!;
    private InProcessServer _server = null!;
    private DurableSessionsClient _client = null!;
    private int _failFirst;

    public async ValueTask InitializeAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        _receiver = builder.Build();
        _receiver.MapPost("/hook", async (HttpContext context) =>
        {
            using var reader = new StreamReader(context.Request.Body);
            var body = await reader.ReadToEndAsync();
            _received.Enqueue((body, context.Request.Headers["DurableSessions-Signature"], context.Request.Headers["DurableSessions-Notification-Id"]));
            return Interlocked.Exchange(ref _failFirst, 0) == 1 ? Results.StatusCode(500) : Results.Ok();
        });
        _receiver.MapPost("/global", async (HttpContext context) =>
        {
            using var reader = new StreamReader(context.Request.Body);
            _receivedGlobal.Enqueue(await reader.ReadToEndAsync());
            return Results.Ok();
        });
        await _receiver.StartAsync();

        _server = await InProcessServer.StartAsync(services: s => s.Configure<SessionServiceOptions>(o =>
        {
            o.NotificationSecret = Secret;
            o.NotificationRetryDelay = TimeSpan.FromMilliseconds(50);
            o.NotificationUrl = _receiver.Urls.First() + "/global";
        }));
        _client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = _server.BaseAddress, ParticipantId = "client:phone" });
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _client.Dispose();
        await _server.DisposeAsync();
        await _receiver.DisposeAsync();
        _stop.Dispose();
    }

    private string HookUrl => _receiver.Urls.First() + "/hook";

    private async Task CreateSession(string id)
    {
        var response = await _server.Client.PutAsync($"/v1/sessions/{id}", new StringContent(new JsonObject { ["notifyUrl"] = HookUrl }.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.True(response.IsSuccessStatusCode);
        var agent = new SessionAgent(new DemoChatClient(tokensPerSecond: 0), _client, new SessionAgentOptions { AgentId = "agent:n" });
        _ = Task.Run(() => agent.RunAsync(id, _stop.Token));
    }

    private async Task<string> AnswerAsync(string sessionId, string text)
    {
        var session = _client.Session(sessionId);
        var messageId = await session.SendMessageAsync(text);
        using var cancel = new CancellationTokenSource(Timeout);
        await foreach (var update in session.JoinAsync(cancel.Token))
        {
            if (update.UpToDate && update.State.All(SessionEventTypes.Run).FirstOrDefault(r => r["trigger"]!.GetValue<string>() == messageId && r["status"]!.GetValue<string>() == "finished") is { } run)
            {
                return run["id"]!.GetValue<string>();
            }
        }

        throw new InvalidOperationException("no answer");
    }

    private async Task WaitForRequests(int count)
    {
        var deadline = DateTime.UtcNow + Timeout;
        while (_received.Count < count)
        {
            Assert.True(DateTime.UtcNow < deadline, $"expected {count} webhook requests, got {_received.Count}");
            await Task.Delay(20);
        }
    }

    private static bool Verify(string body, string? signature)
    {
        var parts = signature!.Split(',').Select(p => p.Split('=', 2)).ToDictionary(p => p[0], p => p[1]);
        var mac = HMACSHA256.HashData(Encoding.UTF8.GetBytes(Secret), Encoding.UTF8.GetBytes(parts["t"] + "." + body));
        return Math.Abs(DateTimeOffset.UtcNow.ToUnixTimeSeconds() - long.Parse(parts["t"], System.Globalization.CultureInfo.InvariantCulture)) < 300
            && CryptographicOperations.FixedTimeEquals(mac, Convert.FromHexString(parts["v1"]));
    }

    [Fact]
    public async Task A_signed_webhook_is_sent_only_when_nobody_is_watching()
    {
        await CreateSession("notify");
        await _client.Session("notify").HeartbeatAsync();
        await AnswerAsync("notify", "first, while I watch");

        await _client.Session("notify").LeaveAsync();
        var unwatched = await AnswerAsync("notify", "second, after I left");
        await WaitForRequests(1);

        Assert.Single(_received);
        var (body, signature, id) = _received.Single();
        var notification = JsonNode.Parse(body)!;
        Assert.Equal("run.finished", notification["type"]!.GetValue<string>());
        Assert.Equal(unwatched, notification["runId"]!.GetValue<string>());
        Assert.Equal("notify", notification["sessionId"]!.GetValue<string>());
        Assert.Equal(HookUrl, notification["destination"]!.GetValue<string>());
        Assert.Equal(notification["id"]!.GetValue<string>(), id);
        Assert.True(Verify(body, signature), "the HMAC-SHA256 signature must verify with the shared secret");
        Assert.False(Verify(body.Replace("notify", "notifz", StringComparison.Ordinal), signature), "a tampered body must not verify");

        // The runs' ends were found by the append path's own parse of each write, handed to the notifier with the change:
        // it parsed none of them again.
        Assert.Equal(0, _server.Services.GetRequiredService<NotificationService>().ChangesParsed);
    }

    [Fact]
    public async Task A_failed_delivery_is_retried_with_the_same_notification_id()
    {
        Volatile.Write(ref _failFirst, 1);
        await CreateSession("retry");
        await AnswerAsync("retry", "nobody is watching");
        await WaitForRequests(2);
        var attempts = _received.ToArray();
        Assert.Equal(attempts[0].Id, attempts[1].Id);
        Assert.Equal(attempts[0].Body, attempts[1].Body);
    }

    [Fact]
    public async Task A_receiver_that_never_answers_holds_up_only_its_own_notifications()
    {
        // A receiver that accepts connections and never answers: each attempt waits out its whole timeout.
        // Another host than the receiver that answers (127.0.0.2; loopback answers the whole 127.0.0.0/8).
        using var blackhole = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Parse("127.0.0.2"), 0);
        blackhole.Start();
        var held = new ConcurrentBag<System.Net.Sockets.Socket>();
        _ = Task.Run(async () =>
        {
            while (!_stop.IsCancellationRequested)
            {
                held.Add(await blackhole.AcceptSocketAsync(_stop.Token));
            }
        });
        var silent = $"http://127.0.0.2:{((System.Net.IPEndPoint)blackhole.LocalEndpoint).Port}/hook";

        // Four POSTs at once in all, so one per host.
        await using var server = await InProcessServer.StartAsync(services: s => s.Configure<SessionServiceOptions>(o => o.MaxConcurrentNotifications = 4));
        using var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, ParticipantId = "client:phone" });
        Task AnswerOn(string id, string url) => AnswerOnAsync(server, client, id, url);

        // Four runs finish for the silent receiver: enough to take every slot if one receiver could.
        for (var i = 0; i < 4; i++)
        {
            await AnswerOn($"silent-{i}", silent);
        }

        await WaitForAsync(() => !held.IsEmpty);

        // Another receiver's notification goes out at once, while the silent one's first attempt still waits.
        await AnswerOn("heard", HookUrl);
        await WaitForRequests(1);
        Assert.Equal("heard", JsonNode.Parse(_received.Single().Body)!["sessionId"]!.GetValue<string>());
    }

    [Fact]
    public async Task Sessions_naming_many_silent_hosts_leave_the_operators_notification_url_its_share()
    {
        // Receivers on four hosts that accept connections and never answer.
        using var silent = new SilentHosts(4, _stop.Token);

        // One POST at once: four notifications held in all, one per host, three for sessions' own URLs.
        await using var server = await InProcessServer.StartAsync(services: s => s.Configure<SessionServiceOptions>(o =>
        {
            o.MaxConcurrentNotifications = 1;
            o.NotificationUrl = HookUrl;
        }));
        using var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, ParticipantId = "client:phone" });
        Task AnswerOn(string id, string? url) => AnswerOnAsync(server, client, id, url);

        // A run finishes for each silent host: the sessions' share is full after three.
        for (var i = 0; i < silent.Urls.Count; i++)
        {
            await AnswerOn($"many-{i}", silent.Urls[i]);
        }

        await WaitForAsync(() => silent.Held.Count >= 1);

        // The operator's URL still takes a notification (without its share it would be dropped at once, the bound
        // being full). It is sent once the silent hosts stop holding the one POST at a time: they go away.
        await AnswerOn("operator", null);
        silent.Dispose();
        await WaitForRequests(1);
        Assert.Equal("operator", JsonNode.Parse(_received.Single().Body)!["sessionId"]!.GetValue<string>());
    }

    [Fact]
    public async Task Silent_session_hosts_hold_at_most_three_quarters_of_the_posts_in_flight_so_the_operators_notification_goes_at_once()
    {
        // Receivers on four hosts that accept connections and never answer: each POST to one holds its slot for its
        // whole attempt.
        using var silent = new SilentHosts(4, _stop.Token);

        // Four POSTs at once, of which sessions' own URLs may hold three; an attempt outlasts the test, so nothing but
        // the sessions' share can free a place for the fourth session's POST.
        await using var server = await InProcessServer.StartAsync(services: s =>
        {
            s.Configure<SessionServiceOptions>(o =>
            {
                o.MaxConcurrentNotifications = 4;
                o.NotificationUrl = HookUrl;
            });
            s.Configure<DurableSessions.AspNetCore.Subscriptions.SubscriptionOptions>(o => o.WebhookTimeout = TimeSpan.FromMinutes(10));
        });
        using var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, ParticipantId = "client:phone" });
        for (var i = 0; i < silent.Urls.Count; i++)
        {
            await AnswerOnAsync(server, client, $"silent-{i}", silent.Urls[i]);
        }

        await WaitForAsync(() => silent.Held.Count >= 3);

        // The operator's notification is sent while the silent hosts still hold theirs: the fourth session's POST
        // waits for a slot of the sessions' share, which none of them gives back before its attempt times out.
        await AnswerOnAsync(server, client, "operator", null);
        await WaitForRequests(1);
        Assert.Equal("operator", JsonNode.Parse(_received.Single().Body)!["sessionId"]!.GetValue<string>());
        Assert.Equal(3, silent.Held.Count);
    }

    /// <summary>
    /// Receivers on loopback hosts 127.0.0.2 and up, one each, that accept connections and never answer. Disposing them
    /// stops listening and drops what they hold.
    /// </summary>
    private sealed class SilentHosts : IDisposable
    {
        private readonly List<System.Net.Sockets.TcpListener> _listeners = [];

        public SilentHosts(int count, CancellationToken stop)
        {
            for (var host = 2; host < 2 + count; host++)
            {
                var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Parse($"127.0.0.{host}"), 0);
                listener.Start();
                _listeners.Add(listener);
                _ = Task.Run(async () =>
                {
                    while (!stop.IsCancellationRequested)
                    {
                        Held.Add(await listener.AcceptSocketAsync(stop));
                    }
                });
                Urls.Add($"http://127.0.0.{host}:{((System.Net.IPEndPoint)listener.LocalEndpoint).Port}/hook");
            }
        }

        /// <summary>Each host's URL.</summary>
        public List<string> Urls { get; } = [];

        /// <summary>The connections accepted, one per POST sent to any of them.</summary>
        public ConcurrentBag<System.Net.Sockets.Socket> Held { get; } = [];

        public void Dispose()
        {
            foreach (var listener in _listeners)
            {
                listener.Stop();
            }

            foreach (var socket in Held)
            {
                socket.Dispose();
            }
        }
    }

    /// <summary>
    /// Creates a session on <paramref name="server"/> notifying <paramref name="url"/> (null: the server's own URL), has
    /// an agent answer a question there with nobody watching, and returns once its run has finished.
    /// </summary>
    private async Task AnswerOnAsync(InProcessServer server, DurableSessionsClient client, string id, string? url)
    {
        var response = await server.Client.PutAsync($"/v1/sessions/{id}", new StringContent(url is null ? "{}" : new JsonObject { ["notifyUrl"] = url }.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.True(response.IsSuccessStatusCode);
        var agent = new SessionAgent(new DemoChatClient(tokensPerSecond: 0), client, new SessionAgentOptions { AgentId = "agent:n" });
        _ = Task.Run(() => agent.RunAsync(id, _stop.Token));
        var session = client.Session(id);
        var messageId = await session.SendMessageAsync("nobody is watching");
        using var cancel = new CancellationTokenSource(Timeout);
        await foreach (var update in session.JoinAsync(cancel.Token))
        {
            if (update.UpToDate && update.State.All(SessionEventTypes.Run).Any(r => r["trigger"]!.GetValue<string>() == messageId && r["status"]!.GetValue<string>() == "finished"))
            {
                return;
            }
        }
    }

    private static async Task WaitForAsync(Func<bool> condition)
    {
        using var cancel = new CancellationTokenSource(Timeout);
        while (!condition())
        {
            await Task.Delay(20, cancel.Token);
        }
    }

    [Fact]
    public async Task A_run_spelled_with_escapes_is_notified_and_escaped_text_in_a_delta_is_not_a_run()
    {
        var created = await _server.Client.PutAsync("/v1/sessions/escaped", new StringContent(new JsonObject { ["notifyUrl"] = HookUrl }.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.True(created.IsSuccessStatusCode);
        async Task Append(string events)
        {
            var response = await _server.Client.PostAsync("/v1/stream/sessions/escaped", new StringContent(events, Encoding.UTF8, "application/json"));
            Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
        }

        // Text with escapes (an apostrophe as a JSON writer escapes it by default) that names no run: no notification.
        await Append("""
            [{"type":"message","key":"m_a","value":{"id":"m_a","role":"assistant","author":"agent:x","parts":[{"type":"text","text":""}],"status":"streaming"},"headers":{"operation":"insert"}},
             {"type":"delta","key":"m_a:0","value":{"messageId":"m_a","part":0,"text":"it\u0027s \"run\" time","at":"2026-01-01T00:00:00.000Z"},"headers":{"operation":"insert"}}]
            """);

        // A finished run whose type and status are spelled with escapes is a finished run all the same.
        await Append("""
            [{"type":"\u0072un","key":"r_esc","value":{"id":"r_esc","agent":"agent:x","messageId":"m_a","status":"fini\u0073hed"},"headers":{"operation":"insert"}}]
            """);

        // Changes are judged in order, so by the time the run's notification is in, the delta's turn has passed.
        await WaitForRequests(1);
        var notification = JsonNode.Parse(Assert.Single(_received).Body)!;
        Assert.Equal("run.finished", notification["type"]!.GetValue<string>());
        Assert.Equal("r_esc", notification["runId"]!.GetValue<string>());
    }

    [Fact]
    public async Task Runs_appended_without_an_id_are_each_notified_with_their_key_as_the_run_id()
    {
        var created = await _server.Client.PutAsync("/v1/sessions/idless", new StringContent(new JsonObject { ["notifyUrl"] = HookUrl }.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.True(created.IsSuccessStatusCode);

        // A run's id may be left out of its value: its key is its id. Two such runs in one change are two runs.
        var response = await _server.Client.PostAsync("/v1/stream/sessions/idless", new StringContent("""
            [{"type":"run","key":"r_one","value":{"agent":"agent:x","status":"finished"},"headers":{"operation":"insert"}},
             {"type":"run","key":"r_two","value":{"agent":"agent:x","status":"failed"},"headers":{"operation":"insert"}}]
            """, Encoding.UTF8, "application/json"));
        Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());

        await WaitForRequests(2);
        var notified = _received.Select(r => JsonNode.Parse(r.Body)!).Select(n => (n["runId"]?.GetValue<string>(), n["type"]!.GetValue<string>())).OrderBy(n => n.Item1).ToArray();
        Assert.Equal([("r_one", "run.finished"), ("r_two", "run.failed")], notified);
    }

    [Fact]
    public async Task A_fork_does_not_notify_its_sources_notify_url()
    {
        var created = await _server.Client.PutAsync("/v1/sessions/fork-source", new StringContent(new JsonObject { ["notifyUrl"] = HookUrl }.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.True(created.IsSuccessStatusCode);
        var fork = new HttpRequestMessage(HttpMethod.Put, "/v1/stream/sessions/fork-copy");
        fork.Headers.Add("Stream-Forked-From", "sessions/fork-source");
        Assert.True((await _server.Client.SendAsync(fork)).IsSuccessStatusCode);

        // The fork holds the source's session entity, notifyUrl and all; its runs go to the operator's URL, not there.
        await AppendFinishedRunAsync("fork-copy", "r_fork");
        await WaitForAsync(() => !_receivedGlobal.IsEmpty);
        var notification = JsonNode.Parse(Assert.Single(_receivedGlobal))!;
        Assert.Equal("fork-copy", notification["sessionId"]!.GetValue<string>());
        Assert.Equal("r_fork", notification["runId"]!.GetValue<string>());
        Assert.Equal(_receiver.Urls.First() + "/global", notification["destination"]!.GetValue<string>());

        // The source's own runs still go to the URL it was created with.
        await AppendFinishedRunAsync("fork-source", "r_source");
        await WaitForRequests(1);
        Assert.Equal("r_source", JsonNode.Parse(Assert.Single(_received).Body)!["runId"]!.GetValue<string>());
        Assert.Single(_receivedGlobal);
    }

    private async Task AppendFinishedRunAsync(string sessionId, string runId)
    {
        var response = await _server.Client.PostAsync($"/v1/stream/sessions/{sessionId}", new StringContent(
            $$$"""[{"type":"run","key":"{{{runId}}}","value":{"id":"{{{runId}}}","agent":"agent:x","status":"finished"},"headers":{"operation":"insert"}}]""",
            Encoding.UTF8, "application/json"));
        Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task A_private_notify_url_is_rejected()
    {
        var response = await _server.Client.PutAsync("/v1/sessions/ssrf", new StringContent("{\"notifyUrl\":\"http://10.1.2.3/hook\"}", Encoding.UTF8, "application/json"));
        Assert.Equal(System.Net.HttpStatusCode.BadRequest, response.StatusCode);
    }
}
