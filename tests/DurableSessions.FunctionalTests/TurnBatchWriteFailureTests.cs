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
            services.WrapStore(inner => _store = new FaultyStore(inner));
        });
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Put, $"/v1/agents/{Agent}", "{\"lease_ttl_ms\":60000}")).StatusCode);
    }

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    [Fact]
    public async Task A_claim_whose_save_failed_leaves_the_turn_to_the_next_claim_in_the_same_batch()
    {
        await Ask("s1");
        var batch = await HoldBatchAsync(failSaveOf: "sessions/s1");
        var first = Claim("w1", "sessions/s1");
        await batch.Queued(1);
        var second = Claim("w2", "sessions/s1");
        await batch.Queued(2);
        var answers = await batch.RunAsync(first, second);

        // The first claim heard that its save failed; the second, in the same batch, was given the turn the store still
        // held as waiting (not told that the failed claim holds it).
        Assert.Equal(HttpStatusCode.ServiceUnavailable, answers[0].StatusCode);
        Assert.Equal(HttpStatusCode.OK, answers[1].StatusCode);
        await AnswerAsync(answers[1]);
    }

    [Fact]
    public async Task A_message_marked_after_a_claim_whose_save_failed_does_not_save_that_claim()
    {
        await Ask("s2");
        var batch = await HoldBatchAsync(failSaveOf: "sessions/s2");
        var claim = Claim("w1", "sessions/s2");
        await batch.Queued(1);
        var asked = Send(HttpMethod.Post, "/v1/sessions/s2/messages", "{\"text\":\"and another thing\"}");
        await batch.Queued(2);
        var answers = await batch.RunAsync(claim, asked);

        // The claim failed; the message marked on the same turn right after it is stored with the turn as the store has
        // it (waiting), not with the claim nobody was given: the next claim gets the turn at once.
        Assert.Equal(HttpStatusCode.ServiceUnavailable, answers[0].StatusCode);
        Assert.Equal(HttpStatusCode.Created, answers[1].StatusCode);
        var next = await Claim("w2", "sessions/s2");
        Assert.Equal(HttpStatusCode.OK, next.StatusCode);
        await AnswerAsync(next);
    }

    private async Task Ask(string session)
    {
        await Send(HttpMethod.Put, $"/v1/sessions/{session}", "{}");
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Post, $"/v1/sessions/{session}/messages", "{\"text\":\"hello\"}")).StatusCode);
    }

    private Task<HttpResponseMessage> Claim(string worker, string stream)
        => Send(HttpMethod.Post, $"/v1/agents/{Agent}/claim", $"{{\"worker\":\"{worker}\",\"stream\":\"{stream}\"}}");

    /// <summary>
    /// Holds the next entry into the turns' lock with a call that finds nothing (so that the calls made next queue up
    /// behind it and run as one batch), and arms the first save of <paramref name="failSaveOf"/>'s turn to fail.
    /// </summary>
    private async Task<HeldBatch> HoldBatchAsync(string failSaveOf)
    {
        var gate = _store.HoldNextTurnLock();
        _store.FailNextPut(TurnKey(failSaveOf));
        var blocker = Claim("w0", "sessions/other");
        await _store.TurnLockRequested.WaitAsync(TimeSpan.FromSeconds(30));
        return new HeldBatch(_server.Services.GetRequiredService<AgentTurnService>(), gate, blocker);
    }

    /// <summary>Answers a granted claim with its turn done; then nothing is left to claim.</summary>
    private async Task AnswerAsync(HttpResponseMessage granted)
    {
        var claim = JsonNode.Parse(await granted.Content.ReadAsStringAsync())!.AsObject();
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Post, $"/v1/agents/{Agent}/ack", AgentTurnBodies.Ack(claim, done: true))).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Send(HttpMethod.Post, $"/v1/agents/{Agent}/claim", "{\"worker\":\"w3\"}")).StatusCode);
    }

    private sealed class HeldBatch(AgentTurnService turns, TaskCompletionSource gate, Task<HttpResponseMessage> blocker)
    {
        /// <summary>Waits until <paramref name="count"/> calls wait behind the held entry.</summary>
        public async Task Queued(int count)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (turns.PendingCount < count)
            {
                Assert.True(DateTime.UtcNow < deadline, $"{count} calls never queued behind the held entry.");
                await Task.Delay(5);
            }
        }

        /// <summary>Lets the held entry go; the calls queued behind it run as one batch. Returns their answers.</summary>
        public async Task<HttpResponseMessage[]> RunAsync(params Task<HttpResponseMessage>[] calls)
        {
            // The blocker's batch is counted already.
            var before = turns.BatchCount;
            gate.SetResult();
            Assert.Equal(HttpStatusCode.NotFound, (await blocker).StatusCode);
            var answers = await Task.WhenAll(calls);
            Assert.Equal(before + 1, turns.BatchCount);
            return answers;
        }
    }

    private static string TurnKey(string stream) => Agent + "\n" + stream;

    private async Task<HttpResponseMessage> Send(HttpMethod method, string url, string body)
    {
        using var request = new HttpRequestMessage(method, url) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        return await _server.Client.SendAsync(request);
    }

    /// <summary>A store that passes everything to another, says it is shared, and fails or holds what a test arms.</summary>
    private sealed class FaultyStore(StreamStore inner) : DelegatingStore(inner)
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

        public override async ValueTask<StoreLock> AcquireLockAsync(string name, TimeSpan lease, CancellationToken cancellationToken = default)
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

            return await base.AcquireLockAsync(name, lease, cancellationToken);
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

            return Inner.PutDocumentAsync(collection, key, value, cancellationToken);
        }
    }
}
