using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.AspNetCore.Agents;
using DurableSessions.Live;
using Microsoft.Extensions.DependencyInjection;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// On a store that several nodes share, the agents API runs the calls waiting on a node together, in one batch, and
/// awaits their writes only at the batch's end. A write that fails there must not leave a later call of the same batch
/// acting on the change it never saved.
/// </summary>
public sealed class TurnBatchWriteFailureTests : IAsyncLifetime
{
    private const string Agent = "agent:a";
    private FaultyStore _store = null!;
    private InProcessServer _server = null!;

    public async ValueTask InitializeAsync()
    {
        _server = await InProcessServer.StartAsync(services: services =>
        {
            // The server's own store, wrapped: it says it is shared (so turn calls run in batches) and fails on demand.
            var original = services.Single(d => d.ServiceType == typeof(StreamStore));
            services.Remove(original);
            services.AddSingleton<StreamStore>(sp => _store = new FaultyStore((StreamStore)original.ImplementationFactory!(sp)));
        });
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Put, $"/v1/agents/{Agent}", "{\"lease_ttl_ms\":60000}")).StatusCode);
    }

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    [Fact]
    public async Task A_claim_whose_save_failed_leaves_the_turn_to_the_next_claim_in_the_same_batch()
    {
        await Send(HttpMethod.Put, "/v1/sessions/s1", "{}");
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Post, "/v1/sessions/s1/messages", "{\"text\":\"hello\"}")).StatusCode);
        var turns = _server.Services.GetRequiredService<AgentTurnService>();

        // The next entry into the turns' lock waits, so that the two claims below queue up behind it and run as one batch;
        // the first save of the turn fails.
        var gate = _store.HoldNextTurnLock();
        _store.FailNextPut(TurnKey("sessions/s1"));
        var blocker = Send(HttpMethod.Post, $"/v1/agents/{Agent}/claim", "{\"worker\":\"w0\",\"stream\":\"sessions/other\"}");
        await _store.TurnLockRequested.WaitAsync(TimeSpan.FromSeconds(30));
        var claims = new[] { "w1", "w2" }.Select(worker => Send(HttpMethod.Post, $"/v1/agents/{Agent}/claim", $"{{\"worker\":\"{worker}\",\"stream\":\"sessions/s1\"}}")).ToArray();
        var queued = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (turns.PendingCount < 2)
        {
            Assert.True(DateTime.UtcNow < queued, "The two claims never queued behind the held entry.");
            await Task.Delay(5);
        }

        // The blocker's batch is counted already; the two claims make one more.
        var batches = turns.BatchCount;
        gate.SetResult();
        Assert.Equal(HttpStatusCode.NotFound, (await blocker).StatusCode);
        var answers = await Task.WhenAll(claims);
        Assert.Equal(batches + 1, turns.BatchCount);

        // One claim heard that its save failed; the other, in the same batch, was given the turn the store still held
        // as waiting (not told that the failed claim holds it).
        Assert.Equal([HttpStatusCode.OK, HttpStatusCode.ServiceUnavailable], answers.Select(a => a.StatusCode).Order());
        var granted = JsonNode.Parse(await answers.Single(a => a.StatusCode == HttpStatusCode.OK).Content.ReadAsStringAsync())!.AsObject();
        Assert.Equal("sessions/s1", (string?)granted["stream"]);

        // That claim holds the turn: it is answered with it, and then nothing is left.
        var ack = new JsonObject
        {
            ["stream"] = "sessions/s1",
            ["token"] = (string?)granted["token"],
            ["wake_id"] = (string?)granted["wake_id"],
            ["generation"] = (long)granted["generation"]!,
            ["done"] = true,
        };
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Post, $"/v1/agents/{Agent}/ack", ack.ToJsonString())).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Send(HttpMethod.Post, $"/v1/agents/{Agent}/claim", "{\"worker\":\"w3\"}")).StatusCode);
    }

    private static string TurnKey(string stream) => Agent + "\n" + stream;

    private async Task<HttpResponseMessage> Send(HttpMethod method, string url, string body)
    {
        using var request = new HttpRequestMessage(method, url) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        return await _server.Client.SendAsync(request);
    }

    /// <summary>A store that passes everything to another, says it is shared, and fails or holds what a test arms.</summary>
    private sealed class FaultyStore(StreamStore inner) : StreamStore(inner.TimeProvider, inner.Fanout)
    {
        private readonly Lock _lock = new();
        private TaskCompletionSource? _hold;
        private TaskCompletionSource _lockRequested = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private string? _failPut;

        public override bool IsShared => true;

        /// <summary>Completes when an armed hold has caught an entry into the turns' lock.</summary>
        public Task TurnLockRequested => _lockRequested.Task;

        public TaskCompletionSource HoldNextTurnLock()
        {
            lock (_lock)
            {
                _lockRequested = new(TaskCreationOptions.RunContinuationsAsynchronously);
                return _hold = new(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }

        public void FailNextPut(string key)
        {
            lock (_lock)
            {
                _failPut = key;
            }
        }

        public override async ValueTask<IAsyncDisposable> AcquireLockAsync(string name, TimeSpan lease, CancellationToken cancellationToken = default)
        {
            Task? hold = null;
            lock (_lock)
            {
                if (name == AgentTurnService.TurnsCollection && _hold is { } armed)
                {
                    _hold = null;
                    hold = armed.Task;
                    _lockRequested.TrySetResult();
                }
            }

            if (hold is not null)
            {
                await hold.WaitAsync(cancellationToken);
            }

            return await inner.AcquireLockAsync(name, lease, cancellationToken);
        }

        public override ValueTask PutDocumentAsync(string collection, string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken = default)
        {
            lock (_lock)
            {
                if (collection == AgentTurnService.TurnsCollection && key == _failPut)
                {
                    _failPut = null;
                    return ValueTask.FromException(new StreamStoreUnavailableException("The store failed this write (test)."));
                }
            }

            return inner.PutDocumentAsync(collection, key, value, cancellationToken);
        }

        public override ValueTask<CreateStreamResult> CreateAsync(CreateStreamRequest request, CancellationToken cancellationToken = default) => inner.CreateAsync(request, cancellationToken);

        public override ValueTask<AppendResult> AppendAsync(AppendRequest request, CancellationToken cancellationToken = default) => inner.AppendAsync(request, cancellationToken);

        public override ValueTask<StreamLookup> GetAsync(string path, CancellationToken cancellationToken = default) => inner.GetAsync(path, cancellationToken);

        public override ValueTask<DeleteStreamStatus> DeleteAsync(string path, CancellationToken cancellationToken = default) => inner.DeleteAsync(path, cancellationToken);

        public override ValueTask<ReadResult> ReadAsync(StreamInfo stream, long fromPosition, int maxBytes, CancellationToken cancellationToken = default) => inner.ReadAsync(stream, fromPosition, maxBytes, cancellationToken);

        public override ValueTask TouchAsync(StreamInfo stream, CancellationToken cancellationToken = default) => inner.TouchAsync(stream, cancellationToken);

        public override IAsyncEnumerable<string> ListPathsAsync(CancellationToken cancellationToken = default) => inner.ListPathsAsync(cancellationToken);

        public override ValueTask<byte[]?> GetDocumentAsync(string collection, string key, CancellationToken cancellationToken = default) => inner.GetDocumentAsync(collection, key, cancellationToken);

        public override ValueTask DeleteDocumentAsync(string collection, string key, CancellationToken cancellationToken = default) => inner.DeleteDocumentAsync(collection, key, cancellationToken);

        public override IAsyncEnumerable<KeyValuePair<string, byte[]>> ListDocumentsAsync(string collection, CancellationToken cancellationToken = default) => inner.ListDocumentsAsync(collection, cancellationToken);

        public override ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
