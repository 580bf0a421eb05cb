using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.AspNetCore.Subscriptions;
using DurableSessions.Live;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// Subscriptions over HTTP on a fake clock: nothing is scheduled without them, a lease expires on the server's clock and
/// wakes again, and an append concerns only the subscriptions linked to its path or matching it.
/// </summary>
public sealed class SubscriptionSchedulingTests : IAsyncLifetime
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));
    private InProcessServer _server = null!;

    public async ValueTask InitializeAsync() => _server = await InProcessServer.StartAsync(_clock);

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    private WakeScheduler Scheduler => _server.Services.GetRequiredService<WakeScheduler>();

    private SubscriptionRegistry Registry => _server.Services.GetRequiredService<SubscriptionRegistry>();

    [Fact]
    public async Task Without_subscriptions_appends_schedule_nothing()
    {
        await CreateStream("jobs/a");
        await Append("jobs/a");
        Assert.True(Registry.IsEmpty);
        Assert.Null(Scheduler.NextDeadline);
        Assert.Equal(0, Scheduler.ScheduledCount);
    }

    [Fact]
    public async Task An_expired_lease_with_pending_work_wakes_a_new_generation_at_lease_ttl()
    {
        await CreateStream("jobs/a");
        await CreateStream("wake/a");
        await Put("lease", new JsonObject { ["type"] = "pull-wake", ["streams"] = new JsonArray("jobs/a"), ["wake_stream"] = "wake/a", ["lease_ttl_ms"] = 5_000 });

        // An idle subscription has no deadline.
        Assert.Null(Scheduler.NextDeadline);
        await Append("jobs/a");
        await WaitForWakeEvents("wake/a", 1);

        var claim = await Claim("lease", "worker-1");
        Assert.Equal(HttpStatusCode.OK, claim.Status);
        Assert.Equal(1, claim.Body["generation"]!.GetValue<long>());
        Assert.Equal(_clock.GetUtcNow().AddSeconds(5), Scheduler.NextDeadline);
        Assert.Equal(HttpStatusCode.Conflict, (await Claim("lease", "worker-2")).Status);

        _clock.Advance(TimeSpan.FromMilliseconds(4_999));
        Assert.Equal(HttpStatusCode.Conflict, (await Claim("lease", "worker-2")).Status);

        // The worker never acked: at lease_ttl the wake ends and, with the job still pending, a new one starts.
        _clock.Advance(TimeSpan.FromMilliseconds(1));
        var events = await WaitForWakeEvents("wake/a", 2);
        Assert.Equal(2, events[^1]!["generation"]!.GetValue<long>());
        Assert.Null(Scheduler.NextDeadline);

        var second = await Claim("lease", "worker-2");
        Assert.Equal(HttpStatusCode.OK, second.Status);
        Assert.Equal(2, second.Body["generation"]!.GetValue<long>());
    }

    [Fact]
    public async Task An_append_concerns_only_the_subscriptions_linked_to_its_path_or_whose_pattern_matches_it()
    {
        for (var i = 0; i < 20; i++)
        {
            await Put($"explicit-{i}", new JsonObject { ["type"] = "pull-wake", ["streams"] = new JsonArray($"s/{i}"), ["wake_stream"] = $"wake/{i}" });
        }

        await Put("glob", new JsonObject { ["type"] = "pull-wake", ["pattern"] = "g/*", ["wake_stream"] = "wake/g" });

        Assert.Equal(["explicit-7"], Candidates("s/7"));
        Assert.Equal(["glob"], Candidates("g/new"));
        Assert.Empty(Candidates("g/new/deeper"));
        Assert.Empty(Candidates("elsewhere"));

        // A subscription's own wake stream never wakes it.
        Assert.Empty(Candidates("wake/g"));

        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.DeleteAsync("/v1/stream/__ds/subscriptions/explicit-7")).StatusCode);
        Assert.Empty(Candidates("s/7"));
    }

    [Fact]
    public async Task A_claim_after_a_lease_ran_out_is_a_new_generation_and_the_old_holder_is_fenced()
    {
        await CreateStream("jobs/b");
        await CreateStream("wake/b");
        await Put("expiring", new JsonObject { ["type"] = "pull-wake", ["streams"] = new JsonArray("jobs/b"), ["wake_stream"] = "wake/b", ["lease_ttl_ms"] = 5_000 });
        await Append("jobs/b");
        await WaitForWakeEvents("wake/b", 1);
        var first = await Claim("expiring", "worker-1");
        Assert.Equal(1, first.Body["generation"]!.GetValue<long>());

        // The lease runs out; whether or not the deadline pass has ended the wake yet, the next claim is a new generation.
        _clock.Advance(TimeSpan.FromSeconds(6));
        var second = await Claim("expiring", "worker-2");
        Assert.Equal(HttpStatusCode.OK, second.Status);
        Assert.Equal(2, second.Body["generation"]!.GetValue<long>());
        Assert.NotEqual(first.Body["token"]!.GetValue<string>(), second.Body["token"]!.GetValue<string>());

        // The first holder's ack is refused, and the second's work stays claimed.
        using var stale = new HttpRequestMessage(HttpMethod.Post, "/v1/stream/__ds/subscriptions/expiring/ack")
        {
            Content = new StringContent(new JsonObject { ["wake_id"] = first.Body["wake_id"]!.GetValue<string>(), ["generation"] = 1, ["done"] = true }.ToJsonString(), Encoding.UTF8, "application/json"),
        };
        stale.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", first.Body["token"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.Conflict, (await _server.Client.SendAsync(stale)).StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, (await Claim("expiring", "worker-3")).Status);
    }

    [Fact]
    public async Task A_deleted_stream_that_only_a_pattern_linked_leaves_the_subscription()
    {
        await Put("pattern", new JsonObject { ["type"] = "pull-wake", ["pattern"] = "temp/*", ["wake_stream"] = "wake/temp" });
        await CreateStream("temp/one");
        await Append("temp/one");
        await WaitFor(() => Registry.Get("pattern")!.Links.ContainsKey("temp/one"));

        // Deleted: the link goes with it, so a subscription does not keep every stream its pattern ever matched.
        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.DeleteAsync("/v1/stream/temp/one")).StatusCode);
        await WaitFor(() => !Registry.Get("pattern")!.Links.ContainsKey("temp/one"));

        // Created again, it is linked again by its first append.
        await CreateStream("temp/one");
        await Append("temp/one");
        await WaitFor(() => Registry.Get("pattern")!.Links.ContainsKey("temp/one"));
    }

    [Fact]
    public async Task A_webhook_wakes_lease_outlasts_its_post_so_a_receiver_slower_than_lease_ttl_gets_one_post_and_its_answer_counts()
    {
        // The receiver answers each POST only when the test lets it, so the POST is still out when lease_ttl runs out.
        var posts = System.Threading.Channels.Channel.CreateUnbounded<TaskCompletionSource>();
        var builder = Microsoft.AspNetCore.Builder.WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.SetMinimumLevel(Microsoft.Extensions.Logging.LogLevel.Warning);
        await using var receiver = builder.Build();
        var received = 0;
        receiver.MapPost("/hook", async () =>
        {
            Interlocked.Increment(ref received);
            var answer = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            await posts.Writer.WriteAsync(answer);
            await answer.Task;
            return Microsoft.AspNetCore.Http.Results.Json(new { done = true });
        });
        await receiver.StartAsync();

        await CreateStream("jobs/w");
        await Put("slow", new JsonObject { ["type"] = "webhook", ["streams"] = new JsonArray("jobs/w"), ["webhook"] = new JsonObject { ["url"] = receiver.Urls.First() + "/hook" }, ["lease_ttl_ms"] = 1_000 });
        await Append("jobs/w");
        using var cancel = new CancellationTokenSource(Timeout);
        var first = await posts.Reader.ReadAsync(cancel.Token);

        // The lease runs the webhook timeout (10 s) and a margin from the wake, not lease_ttl_ms (1 s).
        var options = _server.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<SubscriptionOptions>>().Value;
        Assert.True(Registry.Get("slow")!.LeaseExpiresAt >= _clock.GetUtcNow() + options.WebhookTimeout, $"lease {Registry.Get("slow")!.LeaseExpiresAt}");

        // Past lease_ttl_ms with the POST still out: the wake stays, and the receiver's answer, when it comes, acks it.
        _clock.Advance(TimeSpan.FromSeconds(3));
        first.SetResult();
        await WaitFor(() => Registry.Get("slow") is { WakeId: null } done && done.Links["jobs/w"].AckedPosition > 0);
        Assert.Equal(1, Volatile.Read(ref received));
        Assert.Equal(1, Registry.Get("slow")!.Generation);
    }

    [Fact]
    public async Task Appends_waiting_for_a_held_pass_are_bounded_and_a_subscription_whose_appends_were_dropped_still_wakes()
    {
        var service = _server.Services.GetRequiredService<SubscriptionService>();
        service.MaxQueuedChanges = 10;
        foreach (var path in new[] { "jobs/held", "jobs/dropped", "jobs/other", "wake/held", "wake/dropped" })
        {
            await CreateStream(path);
        }

        await Put("held", new JsonObject { ["type"] = "pull-wake", ["streams"] = new JsonArray("jobs/held"), ["wake_stream"] = "wake/held" });
        await Put("dropped", new JsonObject { ["type"] = "pull-wake", ["streams"] = new JsonArray("jobs/dropped"), ["wake_stream"] = "wake/dropped" });

        // The subscriptions' lock is held, so the pass for "held"'s append waits, and appends after it queue up.
        await using (await Registry.EnterAsync(CancellationToken.None))
        {
            await Append("jobs/held");
            await WaitFor(() => service.QueuedChanges == 0);
            for (var i = 0; i < 30; i++)
            {
                await Append("jobs/other");
            }

            // Past the bound the rest are dropped, including the only append to "dropped"'s stream.
            await Append("jobs/dropped");
            Assert.Equal(10, service.QueuedChanges);
        }

        // Once the pass can go on, both subscriptions wake: "dropped" because the pass after the overflow looks at all.
        await WaitForWakeEvents("wake/held", 1);
        var woken = await WaitForWakeEvents("wake/dropped", 1);
        Assert.Equal("jobs/dropped", woken[0]!["stream"]!.GetValue<string>());
    }

    [Fact]
    public async Task Data_appended_while_no_server_looked_wakes_its_subscription_when_a_server_starts()
    {
        await OnDataDirectoryAsync(async directory =>
        {
            _server = await InProcessServer.StartAsync(_clock, dataDirectory: directory);
            await CreateStream("jobs/r");
            await CreateStream("wake/r");
            await Put("restart", new JsonObject { ["type"] = "pull-wake", ["streams"] = new JsonArray("jobs/r"), ["wake_stream"] = "wake/r" });
            await StopAsync();

            // Appended with no server running, as a server that crashed before its pass leaves it.
            await using (var store = DurableSessions.Storage.Sqlite.SqliteStreamStore.Open(new DurableSessions.Storage.Sqlite.SqliteStreamStoreOptions { DataDirectory = directory }, _clock))
            {
                Assert.True(JsonFraming.TryFrame(Encoding.UTF8.GetBytes("{\"job\":1}"), allowEmptyArray: false, out var data, out _));
                Assert.Equal(AppendStatus.Appended, (await store.AppendAsync(new AppendRequest { Path = "jobs/r", ContentType = StreamContentType.Json, Data = data })).Status);
            }

            _server = await InProcessServer.StartAsync(_clock, dataDirectory: directory);
            var woken = await WaitForWakeEvents("wake/r", 1);
            Assert.Equal("jobs/r", woken[0]!["stream"]!.GetValue<string>());
        });
    }

    [Fact]
    public async Task A_stream_deleted_and_created_again_while_no_server_looked_is_read_from_its_start()
    {
        await OnDataDirectoryAsync(async directory =>
        {
            _server = await InProcessServer.StartAsync(_clock, dataDirectory: directory);
            await CreateStream("jobs/d");
            await CreateStream("wake/d");
            await Put("recreated", new JsonObject { ["type"] = "pull-wake", ["streams"] = new JsonArray("jobs/d"), ["wake_stream"] = "wake/d" });
            for (var i = 0; i < 5; i++)
            {
                await Append("jobs/d");
            }

            // Everything of the first stream is processed.
            await WaitForWakeEvents("wake/d", 1);
            var claim = await Claim("recreated", "worker-1");
            var tail = claim.Body["streams"]![0]!["tail_offset"]!.GetValue<string>();
            using (var ack = new HttpRequestMessage(HttpMethod.Post, "/v1/stream/__ds/subscriptions/recreated/ack")
            {
                Content = new StringContent(new JsonObject { ["wake_id"] = claim.Body["wake_id"]!.GetValue<string>(), ["generation"] = claim.Body["generation"]!.GetValue<long>(), ["acks"] = new JsonArray(new JsonObject { ["stream"] = "jobs/d", ["offset"] = tail }), ["done"] = true }.ToJsonString(), Encoding.UTF8, "application/json"),
            })
            {
                ack.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", claim.Body["token"]!.GetValue<string>());
                Assert.Equal(HttpStatusCode.OK, (await _server.Client.SendAsync(ack)).StatusCode);
            }

            await StopAsync();

            // Deleted and created again with one append, with no server running: no node ever saw the delete.
            await using (var store = DurableSessions.Storage.Sqlite.SqliteStreamStore.Open(new DurableSessions.Storage.Sqlite.SqliteStreamStoreOptions { DataDirectory = directory }, _clock))
            {
                Assert.Equal(DeleteStreamStatus.Deleted, await store.DeleteAsync("jobs/d"));
                await store.CreateAsync(new CreateStreamRequest { Path = "jobs/d", ContentType = StreamContentType.Json });
                Assert.True(JsonFraming.TryFrame(Encoding.UTF8.GetBytes("{\"job\":2}"), allowEmptyArray: false, out var data, out _));
                Assert.Equal(AppendStatus.Appended, (await store.AppendAsync(new AppendRequest { Path = "jobs/d", ContentType = StreamContentType.Json, Data = data })).Status);
            }

            // The new stream's one append is pending from its start, though it ends before what was acked of the old one.
            _server = await InProcessServer.StartAsync(_clock, dataDirectory: directory);
            await WaitForWakeEvents("wake/d", 2);
            var next = await Claim("recreated", "worker-2");
            Assert.Equal(HttpStatusCode.OK, next.Status);
            var link = next.Body["streams"]![0]!;
            Assert.True(link["has_pending"]!.GetValue<bool>());
            Assert.True(string.CompareOrdinal(link["tail_offset"]!.GetValue<string>(), tail) < 0);
        });
    }

    [Fact]
    public async Task A_claim_gets_a_wake_it_can_ack_even_when_the_wake_stream_refuses_its_event()
    {
        await CreateStream("jobs/c");
        await Put("claimed", new JsonObject { ["type"] = "pull-wake", ["streams"] = new JsonArray("jobs/c"), ["wake_stream"] = "wake/c" });
        await Append("jobs/c");

        var claim = await Claim("claimed", "worker-1");
        Assert.Equal(HttpStatusCode.OK, claim.Status);
        Assert.StartsWith("w_", claim.Body["wake_id"]!.GetValue<string>(), StringComparison.Ordinal);
        var tail = claim.Body["streams"]![0]!["tail_offset"]!.GetValue<string>();
        using var ack = new HttpRequestMessage(HttpMethod.Post, "/v1/stream/__ds/subscriptions/claimed/ack")
        {
            Content = new StringContent(new JsonObject { ["wake_id"] = claim.Body["wake_id"]!.GetValue<string>(), ["generation"] = claim.Body["generation"]!.GetValue<long>(), ["acks"] = new JsonArray(new JsonObject { ["stream"] = "jobs/c", ["offset"] = tail }), ["done"] = true }.ToJsonString(), Encoding.UTF8, "application/json"),
        };
        ack.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", claim.Body["token"]!.GetValue<string>());
        using var acked = await _server.Client.SendAsync(ack);
        Assert.Equal(HttpStatusCode.OK, acked.StatusCode);
        Assert.Equal("active", (string?)JsonNode.Parse(await _server.Client.GetStringAsync("/v1/stream/__ds/subscriptions/claimed"))!["status"]);
    }

    [Fact]
    public async Task A_wake_its_wake_stream_refuses_is_tried_again_after_a_backoff_not_left_in_flight()
    {
        await CreateStream("jobs/w");
        await Put("refused", new JsonObject { ["type"] = "pull-wake", ["streams"] = new JsonArray("jobs/w"), ["wake_stream"] = "wake/w" });
        await Append("jobs/w");

        // The wake stream is not there: the wake fails, and the subscription says so.
        using (var cancel = new CancellationTokenSource(Timeout))
        {
            while ((string?)JsonNode.Parse(await _server.Client.GetStringAsync("/v1/stream/__ds/subscriptions/refused", cancel.Token))!["status"] != "failed")
            {
                await Task.Delay(20, cancel.Token);
            }
        }

        // Once it is there, the next attempt (after at most 1.2 s of backoff on the server's clock) writes the wake.
        await CreateStream("wake/w");
        _clock.Advance(TimeSpan.FromSeconds(2));
        var woken = await WaitForWakeEvents("wake/w", 1);
        Assert.Equal("jobs/w", woken[0]!["stream"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.OK, (await Claim("refused", "worker-1")).Status);
    }

    [Fact]
    public async Task An_ack_whose_token_proves_nothing_is_refused_without_waiting_for_the_subscriptions_lock()
    {
        await CreateStream("jobs/l");
        await CreateStream("wake/l");
        await Put("locked", new JsonObject { ["type"] = "pull-wake", ["streams"] = new JsonArray("jobs/l"), ["wake_stream"] = "wake/l" });
        var body = new JsonObject { ["wake_id"] = "w_forged", ["generation"] = 1, ["acks"] = new JsonArray() }.ToJsonString();

        // The lock is held (a long pass, another node's batch): requests anyone can send are still answered at once.
        await using (await Registry.EnterAsync(CancellationToken.None))
        {
            using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            foreach (var route in new[] { "ack", "release", "callback" })
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, $"/v1/stream/__ds/subscriptions/locked/{route}") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
                request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", "not-a-wake-token");
                using var response = await _server.Client.SendAsync(request, cancel.Token);
                Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
            }
        }
    }

    /// <summary>
    /// Runs <paramref name="body"/> with a data directory of its own, on which it starts servers (and stops them with
    /// <see cref="StopAsync"/>); then the other tests' server is put back, and the directory removed.
    /// </summary>
    private async Task OnDataDirectoryAsync(Func<string, Task> body)
    {
        var directory = ServerProcess.TempDirectory();
        await StopAsync();
        try
        {
            await body(directory);
        }
        finally
        {
            await StopAsync();
            _server = await InProcessServer.StartAsync(_clock);
            Directory.Delete(directory, recursive: true);
        }
    }

    private async Task StopAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
            _server = null!;
        }
    }

    private static async Task WaitFor(Func<bool> condition)
    {
        using var cancel = new CancellationTokenSource(Timeout);
        while (!condition())
        {
            await Task.Delay(20, cancel.Token);
        }
    }

    private string[] Candidates(string path)
        => [.. Registry.Candidates(new LiveAppend(1, path, default, closed: false)).Select(s => s.Id).Order(StringComparer.Ordinal)];

    private async Task CreateStream(string path)
    {
        using var response = await _server.Client.PutAsync($"/v1/stream/{path}", new StringContent("[]", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
    }

    private async Task Append(string path)
    {
        using var response = await _server.Client.PostAsync($"/v1/stream/{path}", new StringContent("{\"job\":1}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
    }

    private async Task Put(string id, JsonObject body)
    {
        using var response = await _server.Client.PutAsync($"/v1/stream/__ds/subscriptions/{id}", new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.True(response.StatusCode == HttpStatusCode.Created, $"{id}: {response.StatusCode} {await response.Content.ReadAsStringAsync()}");
    }

    private async Task<(HttpStatusCode Status, JsonObject Body)> Claim(string id, string worker)
    {
        using var response = await _server.Client.PostAsync($"/v1/stream/__ds/subscriptions/{id}/claim", new StringContent(new JsonObject { ["worker"] = worker }.ToJsonString(), Encoding.UTF8, "application/json"));
        return (response.StatusCode, JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject());
    }

    private async Task<JsonArray> WaitForWakeEvents(string path, int count)
    {
        using var cancel = new CancellationTokenSource(Timeout);
        while (true)
        {
            var events = JsonNode.Parse(await _server.Client.GetStringAsync($"/v1/stream/{path}?offset=-1", cancel.Token))!.AsArray();
            if (events.Count >= count)
            {
                return events;
            }

            await Task.Delay(20, cancel.Token);
        }
    }
}
