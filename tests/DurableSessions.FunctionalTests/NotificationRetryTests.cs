using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.Agents;
using DurableSessions.AspNetCore.Sessions;
using DurableSessions.Client;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// A notification its receiver keeps refusing is retried on the server's clock, the waits doubling up to a minute, and
/// dropped as soon as its last attempt fails: it holds its place among the notifications in flight no longer.
/// </summary>
public sealed class NotificationRetryTests
{
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));
    private int _attempts;

    [Fact]
    public async Task Retries_wait_on_the_servers_clock_and_the_last_failed_attempt_drops_the_notification_at_once()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        await using var receiver = builder.Build();
        receiver.MapPost("/hook", () =>
        {
            Interlocked.Increment(ref _attempts);
            return Results.StatusCode(503);
        });
        await receiver.StartAsync();

        var log = new LogCapture(category => category.EndsWith(nameof(NotificationService), StringComparison.Ordinal));
        await using var server = await InProcessServer.StartAsync(_clock, services: s =>
        {
            s.AddSingleton<ILoggerProvider>(log);
            s.Configure<SessionServiceOptions>(o =>
            {
                o.NotificationAttempts = 3;
                o.NotificationRetryDelay = TimeSpan.FromSeconds(40);
            });
        });
        using var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, ParticipantId = "client:phone" });
        var created = await server.Client.PutAsync("/v1/sessions/n", new StringContent(new JsonObject { ["notifyUrl"] = receiver.Urls.First() + "/hook" }.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.True(created.IsSuccessStatusCode);
        using var stop = new CancellationTokenSource();
        var agent = new SessionAgent(new DemoChatClient(tokensPerSecond: 0), client, new SessionAgentOptions { AgentId = "agent:n" });
        var serving = Task.Run(() => agent.RunAsync("n", stop.Token));
        await client.Session("n").SendMessageAsync("hello");

        // Attempt 1 fails; the next waits 40 s and the one after 80 s, capped at a minute, on the server's clock (moved
        // a second at a time: the wait is armed just after the failure is logged). The ranges leave room for an attempt
        // that takes a few steps of real time on a loaded machine, and still tell the cap from the 80 s it caps.
        Assert.True(await log.WaitFor(321, count: 1, TimeSpan.FromSeconds(30)));
        Assert.InRange(await SecondsUntil(log, attempts: 2), 40, 52);
        Assert.InRange(await SecondsUntil(log, attempts: 3), 60, 72);

        // The last attempt failed: dropped at once, with no wait after it.
        Assert.True(await log.WaitFor(322, count: 1, TimeSpan.FromSeconds(30)));
        Assert.Equal(3, Volatile.Read(ref _attempts));

        await stop.CancelAsync();
        await serving.ContinueWith(_ => { }, TaskScheduler.Default);
    }

    /// <summary>Moves the server's clock a second at a time until the receiver has seen <paramref name="attempts"/>; the seconds it took.</summary>
    private async Task<int> SecondsUntil(LogCapture log, int attempts)
    {
        for (var seconds = 1; seconds <= 120; seconds++)
        {
            _clock.Advance(TimeSpan.FromSeconds(1));
            if (await log.WaitFor(321, attempts, TimeSpan.FromMilliseconds(250)))
            {
                return seconds;
            }
        }

        return int.MaxValue;
    }
}
