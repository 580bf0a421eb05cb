using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.Storage.Redis;
using DurableSessions.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// Two nodes on one Redis, and a node held up inside the agent turns' shared lock until its lease has run out and the
/// other node has taken the lock, decided and written. The held-up node's write must then be refused: were it taken, it
/// would overwrite the other node's decision with one made on what the store held before it.
/// </summary>
public sealed class SharedLockFencingTests : IAsyncLifetime
{
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));
    private RedisServer _redis = null!;
    private StallingStore _stalling = null!;
    private InProcessServer _a = null!;
    private InProcessServer _b = null!;

    public async ValueTask InitializeAsync()
    {
        _redis = await RedisServer.StartAsync();
        _a = await InProcessServer.StartAsync(_clock, redis: _redis.Configuration, services: services =>
        {
            services.WrapStore(inner =>
            {
                // The host connects the Redis store it finds registered; this one is wrapped, so it is connected here.
                ((RedisStreamStore)inner).ConnectAsync(CancellationToken.None).GetAwaiter().GetResult();
                return _stalling = new StallingStore(inner);
            });
        });
        _b = await InProcessServer.StartAsync(_clock, redis: _redis.Configuration);
        Assert.Equal(HttpStatusCode.Created, (await Post(_b, "/v1/agents/agent:a", "{\"lease_ttl_ms\":60000}", HttpMethod.Put)).StatusCode);
    }

    public async ValueTask DisposeAsync()
    {
        await _a.DisposeAsync();
        await _b.DisposeAsync();
        await _redis.DisposeAsync();
    }

    [Fact]
    public async Task A_claim_written_after_its_node_lost_the_shared_lock_is_refused_and_the_other_nodes_claim_stands()
    {
        await _b.Client.PutAsync("/v1/sessions/fenced", new StringContent("{}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, (await Post(_b, "/v1/sessions/fenced/messages", "{\"text\":\"hello\"}")).StatusCode);

        // A claims the waiting turn and is held up just before it writes its claim, inside the lock.
        var gate = _stalling.StallNextWrite(AspNetCore.Agents.AgentTurnService.TurnsCollection);
        var claimOnA = Post(_a, "/v1/agents/agent:a/claim", "{\"worker\":\"w-a\"}");
        await _stalling.Stalled.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // Meanwhile its lease runs out (the lock's key expires in Redis), and B takes the lock and the turn.
        using (var redisClient = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(_redis.Configuration))
        {
            Assert.True(await redisClient.GetDatabase().KeyDeleteAsync("ds:lock:" + AspNetCore.Agents.AgentTurnService.TurnsCollection));
        }

        var claimOnB = await Post(_b, "/v1/agents/agent:a/claim", "{\"worker\":\"w-b\"}");
        Assert.Equal(HttpStatusCode.OK, claimOnB.StatusCode);
        var granted = JsonNode.Parse(await claimOnB.Content.ReadAsStringAsync())!.AsObject();
        Assert.Equal("sessions/fenced", (string?)granted["stream"]);

        // A goes on: its write is refused, and its caller is told to retry, not handed the turn.
        gate.SetResult();
        var refused = await claimOnA;
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Equal("STORE_UNAVAILABLE", (string?)JsonNode.Parse(await refused.Content.ReadAsStringAsync())!["error"]!["code"]);
        Assert.Equal(1, _stalling.RefusedWrites);

        // Both nodes see B's worker holding the turn, whose claim goes on to answer it.
        foreach (var node in new[] { _a, _b })
        {
            var named = await Post(node, "/v1/agents/agent:a/claim", "{\"worker\":\"w-c\",\"stream\":\"sessions/fenced\"}");
            Assert.Equal(HttpStatusCode.Conflict, named.StatusCode);
            Assert.Equal("w-b", (string?)JsonNode.Parse(await named.Content.ReadAsStringAsync())!["error"]!["current_holder"]);
        }

        Assert.Equal(HttpStatusCode.OK, (await Post(_a, "/v1/agents/agent:a/ack", AgentTurnBodies.Ack(granted, done: true))).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Post(_b, "/v1/agents/agent:a/claim", "{\"worker\":\"w-d\"}")).StatusCode);
    }

    [Fact]
    public async Task A_subscription_deleted_after_its_node_lost_the_shared_lock_stays_and_a_retried_delete_removes_it()
    {
        foreach (var path in new[] { "chats/fenced", "wakes/fenced" })
        {
            Assert.Equal(HttpStatusCode.Created, (await _b.Client.PutAsync($"/v1/stream/{path}", new StringContent("[]", Encoding.UTF8, "application/json"))).StatusCode);
        }

        const string Subscription = "/v1/stream/__ds/subscriptions/fenced";
        Assert.Equal(HttpStatusCode.Created, (await Post(_b, Subscription, "{\"type\":\"pull-wake\",\"streams\":[\"chats/fenced\"],\"wake_stream\":\"wakes/fenced\"}", HttpMethod.Put)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await _a.Client.GetAsync(Subscription)).StatusCode);

        // A deletes it and is held up before its first write, until the subscriptions' lock is no longer its own.
        var gate = _stalling.StallNextWrite("subscriptions-meta");
        var deleteOnA = _a.Client.DeleteAsync(Subscription);
        await _stalling.Stalled.Task.WaitAsync(TimeSpan.FromSeconds(30));
        using (var redisClient = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(_redis.Configuration))
        {
            Assert.True(await redisClient.GetDatabase().KeyDeleteAsync("ds:lock:subscriptions"));
        }

        gate.SetResult();
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await deleteOnA).StatusCode);
        Assert.Equal(1, _stalling.RefusedWrites);

        // Nothing was deleted, on either node; A acts on what the store holds, so the retried delete finds and removes it.
        Assert.Equal(HttpStatusCode.OK, (await _b.Client.GetAsync(Subscription)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await _a.Client.GetAsync(Subscription)).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await _a.Client.DeleteAsync(Subscription)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await _b.Client.GetAsync(Subscription)).StatusCode);
    }

    private static async Task<HttpResponseMessage> Post(InProcessServer node, string url, string body, HttpMethod? method = null)
    {
        using var request = new HttpRequestMessage(method ?? HttpMethod.Post, url) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        return await node.Client.SendAsync(request);
    }

    /// <summary>A shared store whose locks, when armed, hold the next document of a collection written under them until let go.</summary>
    private sealed class StallingStore(StreamStore inner) : DelegatingStore(inner)
    {
        private readonly Lock _lock = new();
        private TaskCompletionSource? _gate;
        private string? _collection;
        private int _refused;

        public TaskCompletionSource Stalled { get; private set; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int RefusedWrites => Volatile.Read(ref _refused);

        public TaskCompletionSource StallNextWrite(string collection)
        {
            lock (_lock)
            {
                _collection = collection;
                Stalled = new(TaskCreationOptions.RunContinuationsAsynchronously);
                return _gate = new(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }

        public override async ValueTask<StoreLock> AcquireLockAsync(string name, TimeSpan lease, CancellationToken cancellationToken = default)
            => new Stalling(this, await base.AcquireLockAsync(name, lease, cancellationToken));

        private sealed class Stalling(StallingStore store, StoreLock held) : StoreLock
        {
            public override async ValueTask PutDocumentAsync(string collection, string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken = default)
            {
                Task? gate = null;
                lock (store._lock)
                {
                    if (collection == store._collection && store._gate is { } armed)
                    {
                        store._gate = null;
                        gate = armed.Task;
                        store.Stalled.TrySetResult();
                    }
                }

                if (gate is not null)
                {
                    await gate;
                }

                try
                {
                    await held.PutDocumentAsync(collection, key, value, cancellationToken);
                }
                catch (StreamStoreUnavailableException)
                {
                    Interlocked.Increment(ref store._refused);
                    throw;
                }
            }

            public override ValueTask DeleteDocumentAsync(string collection, string key, CancellationToken cancellationToken = default)
                => held.DeleteDocumentAsync(collection, key, cancellationToken);

            public override ValueTask DisposeAsync() => held.DisposeAsync();
        }
    }
}
