using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using DurableSessions.AspNetCore.Subscriptions;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// The bounds of subscriptions over HTTP: how many a server holds, how many streams one links, acks that name offsets
/// past a stream's tail or no offset at all, and the public base URL that webhook callbacks name.
/// </summary>
public sealed class SubscriptionLimitTests : IAsyncLifetime
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private InProcessServer _server = null!;

    public async ValueTask InitializeAsync()
        => _server = await InProcessServer.StartAsync(services: services => services.Configure<SubscriptionOptions>(options =>
        {
            options.MaxSubscriptions = 3;
            options.MaxStreamsPerSubscription = 3;
            options.PublicBaseUrl = "https://streams.example.com/base/";
        }));

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    [Fact]
    public async Task An_ack_past_its_streams_tail_or_of_no_offset_is_refused_and_moves_no_cursor()
    {
        await CreateStream("jobs/a");
        await CreateStream("jobs/b");
        await CreateStream("wake/a");
        await Put("acks", new JsonObject { ["type"] = "pull-wake", ["streams"] = new JsonArray("jobs/a", "jobs/b"), ["wake_stream"] = "wake/a" });
        await Append("jobs/a");
        await Append("jobs/b");
        await Append("jobs/b");
        var claim = await ClaimWhenWoken("acks");
        var tailA = TailOf(claim, "jobs/a");
        var tailB = TailOf(claim, "jobs/b");
        Assert.NotEqual(tailA, tailB);
        Assert.True(StreamOffset.TryParse(tailA, out var positionA));

        // Past the tail of jobs/a, beside a valid ack of jobs/b: refused as a whole, and neither cursor moves.
        var (status, body) = await Ack(claim, ("jobs/b", tailB), ("jobs/a", StreamOffset.Format(positionA + 1)));
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("OFFSET_BEYOND_TAIL", body["error"]!["code"]!.GetValue<string>());
        (status, body) = await Ack(claim, ("jobs/a", "not-an-offset"));
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("INVALID_OFFSET", body["error"]!["code"]!.GetValue<string>());
        var described = await Get("acks");
        Assert.All(described["streams"]!.AsArray(), stream => Assert.NotEqual(tailA, stream!["acked_offset"]!.GetValue<string>()));
        Assert.All(described["streams"]!.AsArray(), stream => Assert.NotEqual(tailB, stream!["acked_offset"]!.GetValue<string>()));

        // A bad offset in an ack of a wake that is not current is fenced first, as any stale ack is.
        var stale = new JsonObject { ["wake_id"] = "w_stale", ["generation"] = claim["generation"]!.GetValue<long>(), ["token"] = claim["token"]!.GetValue<string>() };
        (status, body) = await Ack(stale, ("jobs/a", "not-an-offset"));
        Assert.Equal(HttpStatusCode.Conflict, status);
        Assert.Equal("FENCED", body["error"]!["code"]!.GetValue<string>());

        // Data appended since the claim may be acked: the ack is judged against the stream's tail, not the wake's.
        await Append("jobs/a");
        var newTailA = await TailOfStream("jobs/a");
        (status, body) = await Ack(claim, ("jobs/a", newTailA), ("jobs/b", tailB));
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.False(body["next_wake"]!.GetValue<bool>());
        described = await Get("acks");
        Assert.Equal(newTailA, described["streams"]!.AsArray().Single(s => s!["path"]!.GetValue<string>() == "jobs/a")!["acked_offset"]!.GetValue<string>());

        // The next append wakes the subscription again: nothing past the tail was marked processed.
        await Append("jobs/a");
        var next = await ClaimWhenWoken("acks");
        Assert.Equal(newTailA, next["streams"]!.AsArray().Single(s => s!["path"]!.GetValue<string>() == "jobs/a")!["acked_offset"]!.GetValue<string>());
    }

    [Fact]
    public async Task An_ack_of_a_stream_deleted_and_recreated_since_the_wake_leaves_the_new_streams_data_pending()
    {
        await CreateStream("jobs/r");
        await CreateStream("wake/r");
        await Put("acks", new JsonObject { ["type"] = "pull-wake", ["streams"] = new JsonArray("jobs/r"), ["wake_stream"] = "wake/r" });
        for (var i = 0; i < 5; i++)
        {
            await Append("jobs/r");
        }

        var claim = await ClaimWhenWoken("acks");
        var oldTail = TailOf(claim, "jobs/r");

        // The stream goes and comes back with less data than the wake named; its explicit link starts it from its start.
        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.DeleteAsync("/v1/stream/jobs/r")).StatusCode);
        await CreateStream("jobs/r");
        await Append("jobs/r");
        var newTail = await TailOfStream("jobs/r");
        Assert.True(string.CompareOrdinal(newTail, oldTail) < 0, $"{newTail} < {oldTail}");

        // The worker acks what the wake named, for a stream that is gone: that moves no cursor of the new stream.
        var (status, body) = await Ack(claim, ("jobs/r", oldTail));
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.True(body["next_wake"]!.GetValue<bool>());
        var next = await ClaimWhenWoken("acks");
        var link = next["streams"]!.AsArray().Single(s => s!["path"]!.GetValue<string>() == "jobs/r")!;
        Assert.Equal(newTail, link["tail_offset"]!.GetValue<string>());
        Assert.True(link["has_pending"]!.GetValue<bool>());
        Assert.True(string.CompareOrdinal(link["acked_offset"]!.GetValue<string>(), newTail) < 0);
    }

    [Fact]
    public async Task A_webhooks_done_for_a_stream_deleted_and_recreated_meanwhile_leaves_the_new_streams_data_pending()
    {
        // The receiver answers its first POST only when the test lets it, and every later one at once.
        var firstAnswer = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var (receiver, posts) = await StartReceiverAsync(post => post == 1 ? firstAnswer.Task : Task.CompletedTask);
        await using var _ = receiver;

        await CreateStream("jobs/w");
        await Put("recreated", new JsonObject { ["type"] = "webhook", ["streams"] = new JsonArray("jobs/w"), ["webhook"] = new JsonObject { ["url"] = receiver.Urls.First() + "/hook" } });
        for (var i = 0; i < 5; i++)
        {
            await Append("jobs/w");
        }

        using var cancel = new CancellationTokenSource(Timeout);
        var first = await posts.Reader.ReadAsync(cancel.Token);
        var oldTail = first["streams"]!.AsArray().Single()!["tail_offset"]!.GetValue<string>();

        // While the wake is out, the stream goes and comes back with one append: the "done" of the old wake must not
        // mark it processed.
        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.DeleteAsync("/v1/stream/jobs/w")).StatusCode);
        await CreateStream("jobs/w");
        await Append("jobs/w");
        var newTail = await TailOfStream("jobs/w");
        firstAnswer.SetResult();

        var next = await posts.Reader.ReadAsync(cancel.Token);
        var link = next["streams"]!.AsArray().Single()!;
        Assert.Equal(newTail, link["tail_offset"]!.GetValue<string>());
        Assert.True(link["has_pending"]!.GetValue<bool>());
        Assert.True(string.CompareOrdinal(link["acked_offset"]!.GetValue<string>(), newTail) < 0, $"{link["acked_offset"]} < {newTail} (old tail {oldTail})");
    }

    [Fact]
    public async Task A_linked_stream_deleted_while_its_forks_still_read_it_has_nothing_pending()
    {
        await CreateStream("jobs/g");
        await CreateStream("jobs/h");
        await CreateStream("wake/g");
        await Put("acks", new JsonObject { ["type"] = "pull-wake", ["streams"] = new JsonArray("jobs/g", "jobs/h"), ["wake_stream"] = "wake/g" });
        for (var i = 0; i < 3; i++)
        {
            await Append("jobs/g");
        }

        var claim = await ClaimWhenWoken("acks");
        var (status, _) = await Ack(claim, ("jobs/g", TailOf(claim, "jobs/g")));
        Assert.Equal(HttpStatusCode.OK, status);

        // A fork keeps the stream's data readable for itself; the stream itself is gone (410 to its readers).
        using (var fork = new HttpRequestMessage(HttpMethod.Put, "/v1/stream/jobs/g-fork") { Content = new StringContent(string.Empty, Encoding.UTF8, "application/json") })
        {
            fork.Headers.Add("Stream-Forked-From", "jobs/g");
            Assert.Equal(HttpStatusCode.Created, (await _server.Client.SendAsync(fork)).StatusCode);
        }

        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.DeleteAsync("/v1/stream/jobs/g")).StatusCode);

        // Once the delete is processed, the explicit link starts again from 0, while the old stream's tail is past it.
        var zero = StreamOffset.Format(0);
        using (var cancel = new CancellationTokenSource(Timeout))
        {
            while ((await Get("acks"))["streams"]!.AsArray().Single(s => s!["path"]!.GetValue<string>() == "jobs/g")!["acked_offset"]!.GetValue<string>() != zero)
            {
                await Task.Delay(20, cancel.Token);
            }
        }

        await Append("jobs/h");

        // The next wake is for jobs/h: the deleted stream, whose explicit link starts again from 0, has nothing to read.
        var next = await ClaimWhenWoken("acks");
        var gone = next["streams"]!.AsArray().Single(s => s!["path"]!.GetValue<string>() == "jobs/g")!;
        Assert.Equal(zero, gone["acked_offset"]!.GetValue<string>());
        Assert.False(gone["has_pending"]!.GetValue<bool>());
        Assert.True(next["streams"]!.AsArray().Single(s => s!["path"]!.GetValue<string>() == "jobs/h")!["has_pending"]!.GetValue<bool>());
    }

    [Fact]
    public async Task A_server_holds_at_most_its_limit_of_subscriptions()
    {
        await CreateStream("wake/n");
        for (var i = 0; i < 3; i++)
        {
            await Put($"n{i}", PullWake($"n{i}/*", "wake/n"));
        }

        using (var refused = await PutRaw("n3", PullWake("n3/*", "wake/n")))
        {
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
            Assert.Contains("SUBSCRIPTION_LIMIT_REACHED", await refused.Content.ReadAsStringAsync());
        }

        Assert.Equal(HttpStatusCode.NotFound, (await _server.Client.GetAsync("/v1/stream/__ds/subscriptions/n3")).StatusCode);

        // Confirming one that exists is not a new one; once one is deleted, there is room again.
        using (var confirmed = await PutRaw("n0", PullWake("n0/*", "wake/n")))
        {
            Assert.Equal(HttpStatusCode.OK, confirmed.StatusCode);
        }

        Assert.Equal(HttpStatusCode.NoContent, (await _server.Client.DeleteAsync("/v1/stream/__ds/subscriptions/n1")).StatusCode);
        await Put("n3", PullWake("n3/*", "wake/n"));
    }

    [Fact]
    public async Task A_subscription_links_at_most_its_limit_of_streams_and_says_when_its_pattern_matched_more()
    {
        await CreateStream("wake/s");
        foreach (var path in new[] { "big/1", "big/2", "big/3", "big/4", "few/1", "few/2", "x/1", "x/2" })
        {
            await CreateStream(path);
        }

        // Four existing streams match: refused, and nothing is left behind.
        using (var refused = await PutRaw("big", PullWake("big/*", "wake/s")))
        {
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
            Assert.Contains("SUBSCRIPTION_STREAM_LIMIT", await refused.Content.ReadAsStringAsync());
        }

        Assert.Equal(HttpStatusCode.NotFound, (await _server.Client.GetAsync("/v1/stream/__ds/subscriptions/big")).StatusCode);

        // Two by pattern and one explicit is the limit; one more explicit is refused, changing nothing.
        var config = PullWake("few/*", "wake/s");
        config["streams"] = new JsonArray("x/1");
        await Put("few", config);
        using (var added = await _server.Client.PostAsync("/v1/stream/__ds/subscriptions/few/streams", Json(new JsonObject { ["streams"] = new JsonArray("x/2") })))
        {
            Assert.Equal(HttpStatusCode.Forbidden, added.StatusCode);
            Assert.Contains("SUBSCRIPTION_STREAM_LIMIT", await added.Content.ReadAsStringAsync());
        }

        var described = await Get("few");
        Assert.Equal(["few/1", "few/2", "x/1"], described["streams"]!.AsArray().Select(s => s!["path"]!.GetValue<string>()).Order(StringComparer.Ordinal));
        Assert.Null(described["stream_limit_reached"]);

        // A new stream the pattern matches is not linked, and the subscription says so.
        await CreateStream("few/3");
        await Append("few/3");
        using var cancel = new CancellationTokenSource(Timeout);
        while ((described = await Get("few"))["stream_limit_reached"] is null)
        {
            await Task.Delay(20, cancel.Token);
        }

        Assert.True(described["stream_limit_reached"]!.GetValue<bool>());
        Assert.Equal(3, described["streams"]!.AsArray().Count);
    }

    [Fact]
    public async Task A_list_of_streams_past_the_limit_is_refused_whole_and_one_path_named_many_times_counts_once()
    {
        await CreateStream("wake/l");
        await CreateStream("listed/1");

        // A long list (of streams that do not even exist) is refused at once, creating nothing.
        var many = PullWake(null, "wake/l");
        many["streams"] = new JsonArray([.. Enumerable.Range(0, 5_000).Select(i => (JsonNode)$"listed/n{i}")]);
        using (var refused = await PutRaw("many", many))
        {
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
            Assert.Contains("SUBSCRIPTION_STREAM_LIMIT", await refused.Content.ReadAsStringAsync());
        }

        Assert.Equal(HttpStatusCode.NotFound, (await _server.Client.GetAsync("/v1/stream/__ds/subscriptions/many")).StatusCode);

        // The same path 5,000 times is one stream.
        var repeated = PullWake(null, "wake/l");
        repeated["streams"] = new JsonArray([.. Enumerable.Repeat(0, 5_000).Select(_ => (JsonNode)"listed/1")]);
        await Put("repeated", repeated);
        Assert.Equal(["listed/1"], (await Get("repeated"))["streams"]!.AsArray().Select(s => s!["path"]!.GetValue<string>()));
        using (var added = await _server.Client.PostAsync("/v1/stream/__ds/subscriptions/repeated/streams", Json(new JsonObject { ["streams"] = new JsonArray([.. Enumerable.Range(0, 5_000).Select(i => (JsonNode)$"listed/n{i}")]) })))
        {
            Assert.Equal(HttpStatusCode.Forbidden, added.StatusCode);
            Assert.Contains("SUBSCRIPTION_STREAM_LIMIT", await added.Content.ReadAsStringAsync());
        }

        // The id's own answers come first: an existing subscription under another configuration is a conflict, and
        // streams added to one that does not exist are not found.
        using (var conflict = await PutRaw("repeated", many))
        {
            Assert.Equal(HttpStatusCode.Conflict, conflict.StatusCode);
        }

        using (var missing = await _server.Client.PostAsync("/v1/stream/__ds/subscriptions/nobody/streams", Json(new JsonObject { ["streams"] = new JsonArray([.. Enumerable.Range(0, 5_000).Select(i => (JsonNode)$"listed/n{i}")]) })))
        {
            Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        }
    }

    [Fact]
    public async Task A_webhooks_callback_url_and_the_jwks_url_start_with_the_public_base_url()
    {
        var (receiver, posts) = await StartReceiverAsync(_ => Task.CompletedTask);
        await using var _ = receiver;

        await CreateStream("hooked/1");
        await Put("hooked", new JsonObject { ["type"] = "webhook", ["streams"] = new JsonArray("hooked/1"), ["webhook"] = new JsonObject { ["url"] = receiver.Urls.First() + "/hook" } });
        var described = await Get("hooked");
        Assert.Equal("https://streams.example.com/base/v1/stream/__ds/jwks.json", described["webhook"]!["signing"]!["jwks_url"]!.GetValue<string>());

        await Append("hooked/1");
        using var cancel = new CancellationTokenSource(Timeout);
        var wake = await posts.Reader.ReadAsync(cancel.Token);
        Assert.Equal("https://streams.example.com/base/v1/stream/__ds/subscriptions/hooked/callback", wake["callback_url"]!.GetValue<string>());
    }

    [Fact]
    public void A_public_base_url_that_is_not_an_absolute_http_url_is_refused_at_start()
    {
        foreach (var url in new[] { "streams.example.com", "ftp://streams.example.com", "https://streams.example.com/?a=1", "https://user:secret@streams.example.com" })
        {
            Assert.NotEmpty(new SubscriptionOptions { PublicBaseUrl = url }.Validate());
        }

        Assert.Empty(new SubscriptionOptions { PublicBaseUrl = "https://streams.example.com/base" }.Validate());
    }

    /// <summary>
    /// A webhook receiver at <c>/hook</c> that hands each POST's body to the test, then answers <c>{"done": true}</c> once
    /// <paramref name="beforeAnswer"/> (given the POST's number, from 1) completes.
    /// </summary>
    private static async Task<(WebApplication Receiver, Channel<JsonObject> Posts)> StartReceiverAsync(Func<int, Task> beforeAnswer)
    {
        var posts = Channel.CreateUnbounded<JsonObject>();
        var count = 0;
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        var receiver = builder.Build();
        receiver.MapPost("/hook", async (HttpRequest request) =>
        {
            await posts.Writer.WriteAsync((await JsonNode.ParseAsync(request.Body))!.AsObject());
            await beforeAnswer(Interlocked.Increment(ref count));
            return Results.Json(new { done = true });
        });
        await receiver.StartAsync();
        return (receiver, posts);
    }

    private static JsonObject PullWake(string? pattern, string wakeStream) => pattern is null
        ? new() { ["type"] = "pull-wake", ["wake_stream"] = wakeStream }
        : new() { ["type"] = "pull-wake", ["pattern"] = pattern, ["wake_stream"] = wakeStream };

    private static StringContent Json(JsonObject body) => new(body.ToJsonString(), Encoding.UTF8, "application/json");

    private static string TailOf(JsonObject claim, string path)
        => claim["streams"]!.AsArray().Single(s => s!["path"]!.GetValue<string>() == path)!["tail_offset"]!.GetValue<string>();

    private async Task<string> TailOfStream(string path)
    {
        using var response = await _server.Client.SendAsync(new HttpRequestMessage(HttpMethod.Head, $"/v1/stream/{path}"));
        return response.Headers.GetValues("Stream-Next-Offset").Single();
    }

    private Task<HttpResponseMessage> PutRaw(string id, JsonObject body) => _server.Client.PutAsync($"/v1/stream/__ds/subscriptions/{id}", Json(body));

    private async Task Put(string id, JsonObject body)
    {
        using var response = await PutRaw(id, body);
        Assert.True(response.StatusCode == HttpStatusCode.Created, $"{id}: {response.StatusCode} {await response.Content.ReadAsStringAsync()}");
    }

    private async Task<JsonObject> Get(string id) => JsonNode.Parse(await _server.Client.GetStringAsync($"/v1/stream/__ds/subscriptions/{id}"))!.AsObject();

    /// <summary>Claims the subscription once it has pending work (its wake may still be on its way).</summary>
    private async Task<JsonObject> ClaimWhenWoken(string id)
    {
        using var cancel = new CancellationTokenSource(Timeout);
        while (true)
        {
            using var response = await _server.Client.PostAsync($"/v1/stream/__ds/subscriptions/{id}/claim", Json(new JsonObject { ["worker"] = "w" }), cancel.Token);
            var body = JsonNode.Parse(await response.Content.ReadAsStringAsync(cancel.Token))!.AsObject();
            if (response.StatusCode == HttpStatusCode.OK)
            {
                return body;
            }

            Assert.Equal("NOTHING_PENDING", body["error"]!["code"]!.GetValue<string>());
            await Task.Delay(20, cancel.Token);
        }
    }

    private async Task<(HttpStatusCode Status, JsonObject Body)> Ack(JsonObject claim, params (string Stream, string Offset)[] acks)
    {
        var body = new JsonObject
        {
            ["wake_id"] = claim["wake_id"]!.GetValue<string>(),
            ["generation"] = claim["generation"]!.GetValue<long>(),
            ["acks"] = new JsonArray([.. acks.Select(a => (JsonNode)new JsonObject { ["stream"] = a.Stream, ["offset"] = a.Offset })]),
            ["done"] = true,
        };
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/stream/__ds/subscriptions/acks/ack") { Content = Json(body) };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", claim["token"]!.GetValue<string>());
        using var response = await _server.Client.SendAsync(request);
        return (response.StatusCode, JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject());
    }

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
}
