using System.Net;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// On a store several nodes share, changes to agents and subscriptions are made under the store's lock. A store that
/// fails to release that lock once the change is saved (a dropped connection) must not turn the saved change into a
/// failed request, which a client would then retry.
/// </summary>
public sealed class SharedLockReleaseFailureTests
{
    [Fact]
    public async Task A_change_saved_under_the_shared_lock_is_answered_as_saved_when_the_lock_cannot_be_released()
    {
        ReleaseFailingStore store = null!;
        var log = new LogCapture();
        await using var server = await InProcessServer.StartAsync(services: services =>
        {
            services.AddSingleton<ILoggerProvider>(log);
            services.WrapStore(inner => store = new ReleaseFailingStore(inner));
        });

        foreach (var path in new[] { "chats/a", "wakes/s1" })
        {
            Assert.Equal(HttpStatusCode.Created, (await server.Client.PutAsync($"/v1/stream/{path}", new StringContent("[]", Encoding.UTF8, "application/json"))).StatusCode);
        }

        store.FailReleases = true;
        using var register = await server.Client.PutAsync("/v1/agents/agent:a", new StringContent("{\"lease_ttl_ms\":60000}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, register.StatusCode);
        Assert.True(store.FailedReleases > 0);

        using var subscribe = await server.Client.PutAsync(
            "/v1/stream/__ds/subscriptions/s1",
            new StringContent("{\"type\":\"pull-wake\",\"streams\":[\"chats/a\"],\"wake_stream\":\"wakes/s1\"}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, subscribe.StatusCode);

        // Said in the log (every node's next change waits for the lock's lease), and both were saved: read back with the
        // lock released normally.
        Assert.Contains(1310, log.EventIds);
        store.FailReleases = false;
        Assert.Equal(HttpStatusCode.OK, (await server.Client.GetAsync("/v1/agents/agent:a")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Client.GetAsync("/v1/stream/__ds/subscriptions/s1")).StatusCode);
    }

    /// <summary>A store that says it is shared and, while armed, fails to release its locks (after the work inside is done).</summary>
    private sealed class ReleaseFailingStore(StreamStore inner) : DelegatingStore(inner)
    {
        private int _failed;

        public volatile bool FailReleases;

        public int FailedReleases => Volatile.Read(ref _failed);

        public override bool IsShared => true;

        public override async ValueTask<StoreLock> AcquireLockAsync(string name, TimeSpan lease, CancellationToken cancellationToken = default)
            => new Release(this, await base.AcquireLockAsync(name, lease, cancellationToken));

        private sealed class Release(ReleaseFailingStore store, StoreLock held) : StoreLock
        {
            public override ValueTask PutDocumentAsync(string collection, string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken = default)
                => held.PutDocumentAsync(collection, key, value, cancellationToken);

            public override ValueTask DeleteDocumentAsync(string collection, string key, CancellationToken cancellationToken = default)
                => held.DeleteDocumentAsync(collection, key, cancellationToken);

            public override async ValueTask DisposeAsync()
            {
                await held.DisposeAsync();
                if (store.FailReleases)
                {
                    Interlocked.Increment(ref store._failed);
                    throw new StreamStoreUnavailableException("The store dropped the connection (test).");
                }
            }
        }
    }
}
