using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.Agents;
using DurableSessions.AspNetCore.Sessions;
using DurableSessions.AspNetCore.Subscriptions;
using DurableSessions.Client;
using DurableSessions.Sessions;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// The server's own requests (subscription webhooks, run notifications) never reach the server's network: the resolved
/// address is checked when the connection is made, and redirects are not followed.
/// </summary>
public sealed class OutboundRequestTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_server_refuses_webhooks_and_notifications_to_localhost_unless_told_otherwise()
    {
        // The tests' harness allows loopback; this server has the setting's own default.
        await using var server = await InProcessServer.StartAsync(services: s => s.PostConfigure<SubscriptionOptions>(o => o.AllowLocalhostWebhooks = new SubscriptionOptions().AllowLocalhostWebhooks));
        using var session = await server.Client.PutAsync(new Uri("/v1/sessions/notified", UriKind.Relative), new StringContent("{\"notifyUrl\":\"http://127.0.0.1:9/hook\"}", System.Text.Encoding.UTF8, "application/json"));
        using var subscription = await server.Client.PutAsync(new Uri("/v1/stream/__ds/subscriptions/local", UriKind.Relative), new StringContent("{\"type\":\"webhook\",\"streams\":[\"jobs/a\"],\"webhook\":{\"url\":\"http://localhost:9/hook\"}}", System.Text.Encoding.UTF8, "application/json"));
        foreach (var refused in new[] { session, subscription })
        {
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
            var error = System.Text.Json.Nodes.JsonNode.Parse(await refused.Content.ReadAsStringAsync())!["error"]!;
            Assert.Equal("WEBHOOK_URL_REJECTED", (string?)error["code"]);
            Assert.Contains("Subscriptions:AllowLocalhostWebhooks", (string?)error["message"], StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task A_webhook_to_a_host_name_that_resolves_to_loopback_never_connects_when_localhost_webhooks_are_off()
    {
        var alias = LoopbackAlias();
        await using var listener = CountingListener.Start();
        await using var server = await InProcessServer.StartAsync(services: s => s.Configure<SubscriptionOptions>(o => o.AllowLocalhostWebhooks = false));

        // The name passes the quick URL check (https, not an IP literal, not localhost): only the connect-time check stands.
        await CreateWebhookSubscription(server, "ssrf", $"https://{alias}:{listener.Port}/hook");
        await AppendJob(server, "jobs/a");
        await WaitForStatus(server, "ssrf", "failed");

        Assert.Equal(0, listener.Connections);
    }

    [Fact]
    public async Task A_webhook_answered_with_a_redirect_fails_without_following_it()
    {
        await using var target = CountingListener.Start();
        var hits = 0;
        await using var receiver = await StartReceiver(context =>
        {
            Interlocked.Increment(ref hits);
            context.Response.StatusCode = 302;
            context.Response.Headers.Location = $"http://127.0.0.1:{target.Port}/elsewhere";
        });
        await using var server = await InProcessServer.StartAsync();

        await CreateWebhookSubscription(server, "redirected", receiver.Urls.First() + "/hook");
        await AppendJob(server, "jobs/b");
        await WaitForStatus(server, "redirected", "failed");

        Assert.True(Volatile.Read(ref hits) >= 1, "the webhook receiver was never called");
        Assert.Equal(0, target.Connections);
    }

    [Fact]
    public async Task A_notification_to_a_host_name_that_resolves_to_loopback_never_connects_when_localhost_webhooks_are_off()
    {
        var alias = LoopbackAlias();
        await using var listener = CountingListener.Start();
        var logs = new LogCapture();
        await using var server = await InProcessServer.StartAsync(services: s =>
        {
            s.Configure<SubscriptionOptions>(o => o.AllowLocalhostWebhooks = false);
            s.Configure<SessionServiceOptions>(o => o.NotificationAttempts = 1);
            s.AddSingleton<ILoggerProvider>(logs);
        });
        using var stop = new CancellationTokenSource();
        using var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, ParticipantId = "client:phone" });
        var create = await server.Client.PutAsync("/v1/sessions/ssrf", new StringContent(new JsonObject { ["notifyUrl"] = $"https://{alias}:{listener.Port}/hook" }.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.True(create.IsSuccessStatusCode, $"the session was refused: {create.StatusCode}");
        var agent = new SessionAgent(new DemoChatClient(tokensPerSecond: 0), client, new SessionAgentOptions { AgentId = "agent:n" });
        var agentRun = Task.Run(() => agent.RunAsync("ssrf", stop.Token));

        var session = client.Session("ssrf");
        var messageId = await session.SendMessageAsync("nobody is watching");
        using (var cancel = new CancellationTokenSource(Timeout))
        {
            await foreach (var update in session.JoinAsync(cancel.Token))
            {
                if (update.UpToDate && update.State.All(SessionEventTypes.Run).Any(r => r["trigger"]!.GetValue<string>() == messageId && r["status"]!.GetValue<string>() == "finished"))
                {
                    break;
                }
            }
        }

        // The notification's only attempt failed and was dropped: that is the moment to count connections.
        await logs.Dropped.Task.WaitAsync(Timeout);
        await stop.CancelAsync();
        Assert.Equal(0, listener.Connections);
        Assert.Contains(logs.Messages, m => m.Contains("failed", StringComparison.Ordinal));
    }

    /// <summary>A name from /etc/hosts (read, never written) that resolves to 127.0.0.1 and that the URL check lets through.</summary>
    private static string LoopbackAlias()
    {
        foreach (var line in File.ReadLines("/etc/hosts"))
        {
            var fields = line.Split('#')[0].Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 2 || !fields[0].StartsWith("127.", StringComparison.Ordinal))
            {
                continue;
            }

            foreach (var name in fields.Skip(1))
            {
                if (!name.StartsWith("localhost", StringComparison.OrdinalIgnoreCase) && !name.Contains(".local", StringComparison.OrdinalIgnoreCase)
                    && !name.EndsWith(".internal", StringComparison.OrdinalIgnoreCase)
                    && Dns.GetHostAddresses(name).All(IPAddress.IsLoopback))
                {
                    return name;
                }
            }
        }

        throw new InvalidOperationException("This test needs a host name other than localhost that /etc/hosts maps to 127.0.0.1 (most machines map their own host name there).");
    }

    private static async Task CreateWebhookSubscription(InProcessServer server, string id, string url)
    {
        var body = new JsonObject { ["type"] = "webhook", ["pattern"] = "jobs/*", ["webhook"] = new JsonObject { ["url"] = url } };
        using var response = await server.Client.PutAsync($"/v1/stream/__ds/subscriptions/{id}", new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.True(response.IsSuccessStatusCode, $"the subscription was refused: {response.StatusCode} {await response.Content.ReadAsStringAsync()}");
    }

    private static async Task AppendJob(InProcessServer server, string path)
    {
        using var created = await server.Client.PutAsync($"/v1/stream/{path}", new StringContent("[]", Encoding.UTF8, "application/json"));
        Assert.True(created.IsSuccessStatusCode);
        using var appended = await server.Client.PostAsync($"/v1/stream/{path}", new StringContent("{\"job\":1}", Encoding.UTF8, "application/json"));
        Assert.True(appended.IsSuccessStatusCode);
    }

    private static async Task WaitForStatus(InProcessServer server, string id, string status)
    {
        var deadline = DateTime.UtcNow + Timeout;
        while (true)
        {
            var current = JsonNode.Parse(await server.Client.GetStringAsync($"/v1/stream/__ds/subscriptions/{id}"))!["status"]!.GetValue<string>();
            if (current == status)
            {
                return;
            }

            Assert.True(DateTime.UtcNow < deadline, $"subscription {id} is still {current}, not {status}");
            await Task.Delay(20);
        }
    }

    private static async Task<WebApplication> StartReceiver(Action<HttpContext> handle)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        var app = builder.Build();
        app.Run(context =>
        {
            handle(context);
            return Task.CompletedTask;
        });
        await app.StartAsync();
        return app;
    }

    /// <summary>A TCP listener on 127.0.0.1 that counts the connections made to it and closes them.</summary>
    private sealed class CountingListener : IAsyncDisposable
    {
        private readonly TcpListener _listener;
        private readonly Task _accepting;
        private int _connections;

        private CountingListener(TcpListener listener)
        {
            _listener = listener;
            _accepting = Task.Run(AcceptAsync);
        }

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        public int Connections => Volatile.Read(ref _connections);

        public static CountingListener Start()
        {
            var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            return new CountingListener(listener);
        }

        private async Task AcceptAsync()
        {
            try
            {
                while (true)
                {
                    using var socket = await _listener.AcceptSocketAsync();
                    Interlocked.Increment(ref _connections);
                }
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
            }
        }

        public async ValueTask DisposeAsync()
        {
            _listener.Stop();
            await _accepting.WaitAsync(TimeSpan.FromSeconds(10));
        }
    }

    /// <summary>Collects the server's log lines and signals when a notification is dropped.</summary>
    private sealed class LogCapture : ILoggerProvider, ILogger
    {
        public ConcurrentQueue<string> Messages { get; } = new();

        public TaskCompletionSource Dropped { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ILogger CreateLogger(string categoryName) => this;

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            Messages.Enqueue(formatter(state, exception) + " " + exception?.Message);
            if (eventId.Id == 322)
            {
                Dropped.TrySetResult();
            }
        }

        public void Dispose()
        {
        }
    }
}
