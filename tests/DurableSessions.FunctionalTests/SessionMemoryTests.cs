using System.Net;
using System.Text;
using DurableSessions.AspNetCore.Sessions;
using Microsoft.Extensions.DependencyInjection;

namespace DurableSessions.FunctionalTests;

/// <summary>Materialized sessions are evicted from memory when idle or past a bound, and rebuilt from their stream (issue 9, finding 14).</summary>
public sealed class SessionMemoryTests
{
    private static async Task<bool> WaitUntil(Func<bool> condition, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        while (!condition())
        {
            try
            {
                await Task.Delay(20, cts.Token);
            }
            catch (OperationCanceledException)
            {
                return condition();
            }
        }

        return true;
    }

    private static async Task<string> Snapshot(HttpClient client, string id)
    {
        var response = await client.GetAsync($"/v1/sessions/{id}", TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
    }

    [Fact]
    public async Task Touching_more_sessions_than_the_bound_keeps_at_most_the_bound_in_memory_and_each_still_reads_whole()
    {
        await using var server = await InProcessServer.StartAsync(services: s => s.Configure<SessionServiceOptions>(o => o.MaxInMemory = 2));
        var sessions = server.Services.GetRequiredService<SessionService>();
        for (var i = 0; i < 8; i++)
        {
            Assert.Equal(HttpStatusCode.Created, (await server.Client.PutAsync($"/v1/sessions/m{i}", new StringContent("{}", Encoding.UTF8, "application/json"), TestContext.Current.CancellationToken)).StatusCode);
            Assert.Equal(HttpStatusCode.Created, (await server.Client.PostAsync($"/v1/sessions/m{i}/messages", new StringContent($"{{\"text\":\"hello {i}\"}}", Encoding.UTF8, "application/json"), TestContext.Current.CancellationToken)).StatusCode);
            Assert.True(sessions.CachedSessionCount <= 2, $"{sessions.CachedSessionCount} sessions in memory after touching {i + 1}");
        }

        // A cancel's fence holds across eviction: the rebuilt state still knows the run is cancelled.
        var agent = new FakeAgent(server.Client, "m0", "r1", "a1");
        Assert.True((await agent.StartAsync()).IsSuccessStatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Client.PostAsync("/v1/sessions/m0/runs/r1/cancel", new StringContent("{}", Encoding.UTF8, "application/json"), TestContext.Current.CancellationToken)).StatusCode);
        for (var i = 0; i < 8; i++)
        {
            Assert.Contains($"hello {i}", await Snapshot(server.Client, $"m{i}"), StringComparison.Ordinal);
            Assert.True(sessions.CachedSessionCount <= 2);
        }

        Assert.Equal(HttpStatusCode.Conflict, (await agent.DeltaAsync("late")).StatusCode);
    }

    [Fact]
    public async Task A_message_an_edit_took_out_stays_out_after_its_session_left_memory_a_retried_post_of_it_is_still_refused()
    {
        await using var server = await InProcessServer.StartAsync(services: s => s.Configure<SessionServiceOptions>(o => o.MaxInMemory = 1));
        var sessions = server.Services.GetRequiredService<SessionService>();
        var ct = TestContext.Current.CancellationToken;
        async Task<HttpResponseMessage> Post(string path, string body) => await server.Client.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"), ct);

        Assert.Equal(HttpStatusCode.Created, (await server.Client.PutAsync("/v1/sessions/e0", new StringContent("{}", Encoding.UTF8, "application/json"), ct)).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Post("/v1/sessions/e0/messages", "{\"id\":\"q1\",\"text\":\"Waht is a fence?\"}")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Post("/v1/sessions/e0/messages", "{\"id\":\"q2\",\"text\":\"And a lease?\"}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Post("/v1/sessions/e0/messages/q1/edit", "{\"text\":\"What is a fence?\"}")).StatusCode);

        // The later question is gone; its post sent again is refused, while the session is in memory and once it was
        // rebuilt from its stream.
        async Task RetryIsRefused()
        {
            using var retried = await Post("/v1/sessions/e0/messages", "{\"id\":\"q2\",\"text\":\"And a lease?\"}");
            Assert.Equal(HttpStatusCode.Conflict, retried.StatusCode);
            Assert.Contains("MESSAGE_ID_TAKEN", await retried.Content.ReadAsStringAsync(ct), StringComparison.Ordinal);
        }

        await RetryIsRefused();
        Assert.Equal(HttpStatusCode.Created, (await server.Client.PutAsync("/v1/sessions/e1", new StringContent("{}", Encoding.UTF8, "application/json"), ct)).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Post("/v1/sessions/e1/messages", "{\"text\":\"another session\"}")).StatusCode);
        Assert.Equal(1, sessions.CachedSessionCount);
        await RetryIsRefused();

        var snapshot = await Snapshot(server.Client, "e0");
        Assert.Contains("What is a fence?", snapshot, StringComparison.Ordinal);
        Assert.DoesNotContain("And a lease?", snapshot, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Idle_sessions_leave_memory_and_are_rebuilt_on_next_use()
    {
        await using var server = await InProcessServer.StartAsync(services: s => s.Configure<SessionServiceOptions>(o => o.MemoryIdleTimeout = TimeSpan.FromMilliseconds(200)));
        var sessions = server.Services.GetRequiredService<SessionService>();
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.Created, (await server.Client.PutAsync($"/v1/sessions/i{i}", new StringContent("{}", Encoding.UTF8, "application/json"), TestContext.Current.CancellationToken)).StatusCode);
            Assert.Equal(HttpStatusCode.Created, (await server.Client.PostAsync($"/v1/sessions/i{i}/messages", new StringContent($"{{\"text\":\"idle {i}\"}}", Encoding.UTF8, "application/json"), TestContext.Current.CancellationToken)).StatusCode);
        }

        Assert.True(await WaitUntil(() => sessions.CachedSessionCount == 0, TimeSpan.FromSeconds(10)), $"{sessions.CachedSessionCount} sessions still in memory");
        Assert.Contains("idle 1", await Snapshot(server.Client, "i1"), StringComparison.Ordinal);
    }
}
