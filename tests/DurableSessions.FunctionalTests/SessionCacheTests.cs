using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.Storage.Redis;
using DurableSessions.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// A session held in memory by a node of a shared store asks the store about its stream only when the fan-out told it
/// the stream changed, and a decision taken on what it held is taken again when another node wrote first.
/// </summary>
public sealed class SessionCacheTests : IAsyncLifetime
{
    private RedisServer _redis = null!;
    private InProcessServer _a = null!;
    private InProcessServer _b = null!;

    public async ValueTask InitializeAsync()
    {
        _redis = await RedisServer.StartAsync();
        _a = await InProcessServer.StartAsync(redis: _redis.Configuration);
        _b = await InProcessServer.StartAsync(redis: _redis.Configuration);
    }

    public async ValueTask DisposeAsync()
    {
        await _a.DisposeAsync();
        await _b.DisposeAsync();
        await _redis.DisposeAsync();
    }

    [Fact]
    public async Task Appends_to_a_session_held_in_memory_look_nothing_up_until_another_node_writes_to_it()
    {
        await CreateAsync(_a, "held", "queue");
        await RunAsync(new FakeAgent(_a.Client, "held", "r0", "a0"));

        // Five runs written through the node that holds the session: their starts and ends (not deltas) are decided on
        // the state in memory, with no lookup of the stream (two a write before: the session opened, then caught up).
        var loads = 0;
        var store = (RedisStreamStore)_a.Services.GetRequiredService<StreamStore>();
        store.OnLoad = key =>
        {
            if (key.ToString().Contains("{sessions/held}", StringComparison.Ordinal))
            {
                Interlocked.Increment(ref loads);
            }
        };
        for (var i = 1; i <= 5; i++)
        {
            await RunAsync(new FakeAgent(_a.Client, "held", $"r{i}", $"a{i}"));
        }

        Assert.Equal(0, Volatile.Read(ref loads));

        // Another node writes while the holder hears nothing: the holder's next write, decided on what it held, is
        // refused by the store for the tail that moved, and decided again on the stream; it lands after the other's.
        using (Deafen(_a))
        {
            await RunAsync(new FakeAgent(_b.Client, "held", "rb", "ab"));
            await RunAsync(new FakeAgent(_a.Client, "held", "r6", "a6"));
        }

        Assert.True(Volatile.Read(ref loads) > 0);
        store.OnLoad = null;

        var runs = await FinishedRunsAsync(_b, "held");
        Assert.Equal(["r0", "r1", "r2", "r3", "r4", "r5", "rb", "r6"], runs);
        Assert.Equal(runs, await FinishedRunsAsync(_a, "held"));
    }

    [Fact]
    public async Task A_refusal_decided_on_a_session_held_in_memory_is_decided_again_on_the_stream_another_node_changed()
    {
        // A session that refuses new messages while a run is active, held in memory by node A. Each run starts through
        // node B, and A has caught up with that start; then A stops hearing changes, the run ends through B, and a
        // question goes through A. On what A holds the run is still active: the refusal must be decided again on the
        // stream, where the run has ended.
        await CreateAsync(_a, "refuses", "reject");
        await RunAsync(new FakeAgent(_a.Client, "refuses", "r0", "a0"));
        for (var i = 1; i <= 3; i++)
        {
            var agent = new FakeAgent(_b.Client, "refuses", $"r{i}", $"a{i}");
            using (var started = await agent.StartAsync())
            {
                started.EnsureSuccessStatusCode();
            }

            using (var snapshot = await _a.Client.GetAsync("/v1/sessions/refuses"))
            {
                Assert.Contains($"\"r{i}\"", await snapshot.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            }

            using (Deafen(_a))
            {
                using (var finished = await agent.FinishAsync("done"))
                {
                    finished.EnsureSuccessStatusCode();
                }

                using var question = await AskAsync(_a, $"q{i}");
                Assert.True(question.IsSuccessStatusCode, $"question {i}: {(int)question.StatusCode} {await question.Content.ReadAsStringAsync()}");
            }
        }

        // While a run is active, a question is still refused: the rule stands once the store confirms the state.
        using (var started = await new FakeAgent(_b.Client, "refuses", "r4", "a4").StartAsync())
        {
            started.EnsureSuccessStatusCode();
        }

        using var refused = await AskAsync(_a, "q4");
        Assert.Equal(409, (int)refused.StatusCode);
        Assert.Contains("RUN_ACTIVE", await refused.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_append_to_a_session_another_node_closed_unheard_is_answered_as_closed_not_by_its_rules()
    {
        // A session that refuses new messages while a run is active, with a run active, held by node A; node B closes
        // it while A hears nothing. A question through A is answered as the store answers appends to a closed stream,
        // not with the rule A's state would apply.
        await CreateAsync(_a, "refuses", "reject");
        using (var started = await new FakeAgent(_a.Client, "refuses", "r0", "a0").StartAsync())
        {
            started.EnsureSuccessStatusCode();
        }

        using (Deafen(_a))
        {
            using var close = new HttpRequestMessage(HttpMethod.Post, "/v1/stream/sessions/refuses");
            close.Headers.Add("Stream-Closed", "true");
            using (var closed = await _b.Client.SendAsync(close))
            {
                closed.EnsureSuccessStatusCode();
            }

            using var late = await AskAsync(_a, "q1");
            Assert.Equal(409, (int)late.StatusCode);
            Assert.Contains("STREAM_CLOSED", await late.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task A_session_deleted_and_created_again_through_another_node_unheard_is_served_as_it_is_now()
    {
        // Node A holds a session with a run in it; node B deletes it and creates it again, empty, while A hears nothing.
        // A's snapshot and its next append serve the new stream, not the one A held and not a 404.
        await CreateAsync(_a, "again", "queue");
        await RunAsync(new FakeAgent(_a.Client, "again", "r0", "a0"));
        using (Deafen(_a))
        {
            using (var deleted = await _b.Client.DeleteAsync("/v1/stream/sessions/again"))
            {
                deleted.EnsureSuccessStatusCode();
            }

            await CreateAsync(_b, "again", "queue");
            using (var snapshot = await _a.Client.GetAsync("/v1/sessions/again"))
            {
                Assert.Equal(200, (int)snapshot.StatusCode);
                Assert.DoesNotContain("\"r0\"", await snapshot.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            }

            await RunAsync(new FakeAgent(_a.Client, "again", "r1", "a1"));
        }

        Assert.Equal(["r1"], await FinishedRunsAsync(_b, "again"));
    }

    /// <summary>Appends a user message to the session's stream through <paramref name="node"/>.</summary>
    private static Task<HttpResponseMessage> AskAsync(InProcessServer node, string id)
        => node.Client.PostAsync("/v1/stream/sessions/refuses", Json(new JsonArray(new JsonObject
        {
            ["type"] = "message",
            ["key"] = id,
            ["value"] = new JsonObject { ["id"] = id, ["role"] = "user", ["parts"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "next" }), ["status"] = "complete" },
            ["headers"] = new JsonObject { ["operation"] = "insert" },
        })));

    /// <summary>Holds <paramref name="node"/>'s hearing of changes committed through other nodes until disposed.</summary>
    private static Deafened Deafen(InProcessServer node)
    {
        var store = (RedisStreamStore)node.Services.GetRequiredService<StreamStore>();
        var hearing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        store.BeforeChangeHandled = () => hearing.Task;
        return new Deafened(store, hearing);
    }

    private sealed class Deafened(RedisStreamStore store, TaskCompletionSource hearing) : IDisposable
    {
        public void Dispose()
        {
            store.BeforeChangeHandled = null;
            hearing.TrySetResult();
        }
    }

    private static StringContent Json(JsonNode body) => new(body.ToJsonString(), Encoding.UTF8, "application/json");

    private static async Task CreateAsync(InProcessServer node, string id, string newMessagePolicy)
    {
        using var created = await node.Client.PutAsync($"/v1/sessions/{id}", Json(new JsonObject { ["newMessagePolicy"] = newMessagePolicy }));
        created.EnsureSuccessStatusCode();
    }

    private static async Task RunAsync(FakeAgent agent)
    {
        foreach (var write in new Func<Task<HttpResponseMessage>>[] { agent.StartAsync, () => agent.DeltaAsync("one ", "two"), () => agent.FinishAsync("one two") })
        {
            using var response = await write();
            Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        }
    }

    /// <summary>The ids of the session's finished runs, in the order the stream holds their starts.</summary>
    private static async Task<List<string>> FinishedRunsAsync(InProcessServer node, string id)
    {
        var history = JsonNode.Parse(await node.Client.GetStringAsync($"/v1/stream/sessions/{id}?offset=-1"))!.AsArray();
        var started = history.Where(e => e!["type"]!.GetValue<string>() == "run" && e["headers"]!["operation"]!.GetValue<string>() == "insert")
            .Select(e => e!["key"]!.GetValue<string>()).ToList();
        var finished = history.Where(e => e!["type"]!.GetValue<string>() == "run" && e["value"]!["status"]!.GetValue<string>() == "finished")
            .Select(e => e!["key"]!.GetValue<string>()).ToHashSet();
        return [.. started.Where(finished.Contains)];
    }
}
