using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.AspNetCore.Subscriptions;
using Microsoft.Extensions.DependencyInjection;

namespace DurableSessions.FunctionalTests;

/// <summary>A wake whose own write fails is undone, so the subscription wakes again instead of waiting forever.</summary>
public sealed class SubscriptionWakeFailureTests : IAsyncLifetime
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private WakeFailingStore _store = null!;
    private InProcessServer _server = null!;

    public async ValueTask InitializeAsync()
        => _server = await InProcessServer.StartAsync(services: services =>
        {
            services.WrapStore(inner => _store = new WakeFailingStore(inner));
        });

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    [Fact]
    public async Task A_pull_wake_whose_wake_event_failed_to_append_is_woken_again_as_the_next_generation()
    {
        foreach (var path in new[] { "jobs/x", "wake/x" })
        {
            Assert.Equal(HttpStatusCode.Created, (await _server.Client.PutAsync($"/v1/stream/{path}", Json("[]"))).StatusCode);
        }

        var subscription = new JsonObject { ["type"] = "pull-wake", ["streams"] = new JsonArray("jobs/x"), ["wake_stream"] = "wake/x" };
        Assert.Equal(HttpStatusCode.Created, (await _server.Client.PutAsync("/v1/stream/__ds/subscriptions/x", Json(subscription.ToJsonString()))).StatusCode);

        // The first wake's event cannot be written (the store is unavailable for that one append).
        _store.FailNextAppendTo("wake/x");
        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.PostAsync("/v1/stream/jobs/x", Json("{\"job\":1}"))).StatusCode);
        await _store.Failed.WaitAsync(Timeout);

        // The pass that failed is tried again and wakes the subscription anew: workers following the wake stream hear of it.
        var events = await WaitForWakeEventsAsync("wake/x");
        var wake = Assert.Single(events);
        Assert.Equal("jobs/x", wake!["stream"]!.GetValue<string>());
        Assert.Equal(2, wake["generation"]!.GetValue<long>());

        // And a worker can claim it.
        using var claim = await _server.Client.PostAsync("/v1/stream/__ds/subscriptions/x/claim", Json(new JsonObject { ["worker"] = "w1" }.ToJsonString()));
        Assert.Equal(HttpStatusCode.OK, claim.StatusCode);
        Assert.Equal(2, JsonNode.Parse(await claim.Content.ReadAsStringAsync())!["generation"]!.GetValue<long>());
    }

    private async Task<JsonArray> WaitForWakeEventsAsync(string path)
    {
        using var cancel = new CancellationTokenSource(Timeout);
        while (true)
        {
            var events = JsonNode.Parse(await _server.Client.GetStringAsync($"/v1/stream/{path}?offset=-1", cancel.Token))!.AsArray();
            if (events.Count > 0)
            {
                return events;
            }

            await Task.Delay(20, cancel.Token);
        }
    }

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    private sealed class WakeFailingStore(StreamStore inner) : DelegatingStore(inner)
    {
        private readonly TaskCompletionSource _failed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private string? _failAppendTo;

        public Task Failed => _failed.Task;

        public void FailNextAppendTo(string path) => Volatile.Write(ref _failAppendTo, path);

        public override ValueTask<AppendResult> AppendAsync(AppendRequest request, CancellationToken cancellationToken = default)
        {
            var armed = Volatile.Read(ref _failAppendTo);
            if (armed is not null && request.Path == armed && ReferenceEquals(Interlocked.CompareExchange(ref _failAppendTo, null, armed), armed))
            {
                _failed.TrySetResult();
                return ValueTask.FromException<AppendResult>(new StreamStoreUnavailableException("The store failed this append (test)."));
            }

            return Inner.AppendAsync(request, cancellationToken);
        }
    }
}
