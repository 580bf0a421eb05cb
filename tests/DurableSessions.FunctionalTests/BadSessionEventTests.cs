using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.AspNetCore.Sessions;
using Microsoft.Extensions.DependencyInjection;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// One bad event never breaks a session (issue 9, finding 9): every event is validated before it is committed, and
/// whatever a stream already holds is read without a 500.
/// </summary>
public sealed class BadSessionEventTests : IAsyncLifetime
{
    private InProcessServer _server = null!;

    public async ValueTask InitializeAsync() => _server = await InProcessServer.StartAsync();

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    private HttpClient Client => _server.Client;

    private static string Nested(int depth) => string.Concat(Enumerable.Repeat("{\"a\":", depth)) + "1" + new string('}', depth);

    /// <summary>Bad events, as raw UTF-8 bodies (some are not valid UTF-8 at all).</summary>
    public static TheoryData<string, byte[]> BadEvents => new()
    {
        { "run status a number", Bytes("""{"type":"run","key":"r1","value":{"id":"r1","status":5},"headers":{"operation":"update"}}""") },
        { "run status unknown", Bytes("""{"type":"run","key":"r1","value":{"id":"r1","agent":"agent:test","status":"exploded"},"headers":{"operation":"update"}}""") },
        { "run agent an object", Bytes("""{"type":"run","key":"r9","value":{"id":"r9","agent":{"x":1},"status":"started"},"headers":{"operation":"insert"}}""") },
        { "policy a number", Bytes("""{"type":"session","key":"session","value":{"id":"s","newMessagePolicy":5,"handoffPolicy":"cancel"},"headers":{"operation":"update"}}""") },
        { "lease holder a number", Bytes("""{"type":"handoff","key":"lease","value":{"holder":5,"kind":"human"},"headers":{"operation":"update"}}""") },
        { "lease kind an array", Bytes("""{"type":"handoff","key":"lease","value":{"holder":"h","kind":["human"]},"headers":{"operation":"update"}}""") },
        { "message role a number", Bytes("""{"type":"message","key":"mx","value":{"id":"mx","role":1,"parts":[]},"headers":{"operation":"insert"}}""") },
        { "message parts not objects", Bytes("""{"type":"message","key":"mx","value":{"id":"mx","role":"user","parts":[1,2]},"headers":{"operation":"insert"}}""") },
        { "delta text a number", Bytes("""{"type":"delta","key":"d","value":{"messageId":"m1","text":7},"headers":{"operation":"insert"}}""") },
        { "value a string", Bytes("""{"type":"message","key":"mx","value":"hello","headers":{"operation":"insert"}}""") },
        { "key a number", Bytes("""{"type":"message","key":5,"value":{},"headers":{"operation":"insert"}}""") },
        { "key too long", Bytes("{\"type\":\"x\",\"key\":\"" + new string('k', 300) + "\",\"value\":{},\"headers\":{\"operation\":\"insert\"}}") },
        { "no operation", Bytes("""{"type":"x","key":"k","value":{}}""") },
        { "a reset control message", Bytes("""{"headers":{"control":"reset"}}""") },
        { "nested 70 deep", Bytes("{\"type\":\"x\",\"key\":\"k\",\"value\":" + Nested(70) + ",\"headers\":{\"operation\":\"insert\"}}") },
        { "nested 40 deep", Bytes("{\"type\":\"x\",\"key\":\"k\",\"value\":" + Nested(40) + ",\"headers\":{\"operation\":\"insert\"}}") },
        { "invalid UTF-8 in a key", [.. Bytes("{\"type\":\"x\",\"key\":\"k"), 0xFF, 0xFE, .. Bytes("\",\"value\":{},\"headers\":{\"operation\":\"insert\"}}")] },
        { "a lone surrogate in a key", Bytes("""{"type":"x","key":"k\ud800","value":{},"headers":{"operation":"insert"}}""") },
        { "a lone surrogate in a run status", Bytes("""{"type":"run","key":"r1","value":{"id":"r1","status":"\udc00"},"headers":{"operation":"update"}}""") },
    };

    private static byte[] Bytes(string text) => Encoding.UTF8.GetBytes(text);

    /// <summary>
    /// The bad events as they may sit in a stream written before validation. An unknown run status is left out: it is
    /// readable (readers only compare it), so it would legitimately end the run for readers.
    /// </summary>
    private static IEnumerable<byte[]> StoredBadEvents()
        => BadEvents.Select(row => row.Data).Where(row => row.Item1 != "run status unknown").Select(row => row.Item2);

    private async Task<HttpResponseMessage> PostRaw(string session, byte[] body)
    {
        using var content = new ByteArrayContent(body);
        content.Headers.ContentType = new("application/json");
        return await Client.PostAsync($"/v1/stream/sessions/{session}", content, TestContext.Current.CancellationToken);
    }

    private async Task<FakeAgent> SessionWithActiveRun(string id)
    {
        Assert.Equal(HttpStatusCode.Created, (await Client.PutAsync($"/v1/sessions/{id}", new StringContent("{}", Encoding.UTF8, "application/json"), TestContext.Current.CancellationToken)).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Client.PostAsync($"/v1/sessions/{id}/messages", new StringContent("{\"text\":\"hi\"}", Encoding.UTF8, "application/json"), TestContext.Current.CancellationToken)).StatusCode);
        var agent = new FakeAgent(Client, id, "r1", "m1");
        Assert.True((await agent.StartAsync()).IsSuccessStatusCode);
        Assert.True((await agent.DeltaAsync("Hel", "lo")).IsSuccessStatusCode);
        return agent;
    }

    /// <summary>Every session operation answers as it should, never 500.</summary>
    private async Task AssertSessionWorks(string id, FakeAgent agent)
    {
        async Task<HttpStatusCode> Post(string url, string body)
            => (await Client.PostAsync(url, new StringContent(body, Encoding.UTF8, "application/json"), TestContext.Current.CancellationToken)).StatusCode;

        Assert.Equal(HttpStatusCode.Created, await Post($"/v1/sessions/{id}/messages", "{\"text\":\"still there?\"}"));
        var snapshot = await Client.GetAsync($"/v1/sessions/{id}", TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, snapshot.StatusCode);
        var entities = JsonNode.Parse(await snapshot.Content.ReadAsStringAsync(TestContext.Current.CancellationToken))!.AsArray();
        var run = entities.Single(e => e!["type"]?.GetValue<string>() == "run" && e["key"]?.GetValue<string>() == "r1")!["value"]!;
        Assert.Equal("started", run["status"]!.GetValue<string>());
        Assert.True((await agent.DeltaAsync(" again")).IsSuccessStatusCode);
        Assert.Equal(HttpStatusCode.OK, await Post($"/v1/sessions/{id}/runs/r1/steer", "{\"text\":\"shorter\"}"));
        Assert.Equal(HttpStatusCode.OK, await Post($"/api/chat/{id}/stop", "{}"));
        Assert.Equal(HttpStatusCode.NoContent, (await Client.GetAsync($"/api/chat/{id}/stream", TestContext.Current.CancellationToken)).StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, await Post($"/v1/sessions/{id}/runs/r1/cancel", "{}"));
        Assert.Equal(HttpStatusCode.OK, await Post($"/v1/sessions/{id}/handoff", "{\"holder\":\"human:bob\"}"));
        Assert.Equal(HttpStatusCode.OK, (await Client.GetAsync($"/v1/stream/sessions/{id}?offset=-1", TestContext.Current.CancellationToken)).StatusCode);
    }

    [Theory]
    [MemberData(nameof(BadEvents))]
    public async Task A_bad_event_is_refused_with_a_4xx_and_the_session_keeps_working(string name, byte[] body)
    {
        var id = "bad-" + Guid.NewGuid().ToString("N")[..8];
        var agent = await SessionWithActiveRun(id);
        var response = await PostRaw(id, body);
        var text = await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
        Assert.True((int)response.StatusCode is >= 400 and < 500, $"{name}: {(int)response.StatusCode} {text}");
        Assert.Contains("\"code\"", text, StringComparison.Ordinal);
        await AssertSessionWorks(id, agent);
    }

    [Fact]
    public async Task A_session_whose_stream_already_holds_bad_events_serves_every_operation_without_a_500()
    {
        var id = "legacy";
        var agent = await SessionWithActiveRun(id);

        // Written straight to the store, as data from before events were validated would be.
        var store = _server.Services.GetRequiredService<StreamStore>();
        foreach (var body in StoredBadEvents())
        {
            var result = await store.AppendAsync(new AppendRequest { Path = "sessions/" + id, ContentType = "application/json", Data = new StreamPayload(body, 1) }, TestContext.Current.CancellationToken);
            Assert.Equal(AppendStatus.Appended, result.Status);
        }

        await AssertSessionWorks(id, agent);
    }

    [Fact]
    public async Task An_ai_sdk_reader_skips_bad_events_stored_while_it_follows_the_reply()
    {
        var id = "legacy-feed";
        var agent = await SessionWithActiveRun(id);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(TimeSpan.FromSeconds(30));
        using var response = await Client.GetAsync($"/api/chat/{id}/stream", HttpCompletionOption.ResponseHeadersRead, cts.Token);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);

        var store = _server.Services.GetRequiredService<StreamStore>();
        foreach (var body in StoredBadEvents())
        {
            await store.AppendAsync(new AppendRequest { Path = "sessions/" + id, ContentType = "application/json", Data = new StreamPayload(body, 1) }, cts.Token);
        }

        Assert.True((await agent.FinishAsync("Hello world")).IsSuccessStatusCode);
        var stream = await response.Content.ReadAsStringAsync(cts.Token);
        Assert.Contains("\"type\":\"finish\"", stream, StringComparison.Ordinal);
        Assert.EndsWith("data: [DONE]\n\n", stream, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_ai_sdk_reader_of_a_run_without_a_message_id_skips_a_message_delete_without_a_value()
    {
        var id = "idless-reply";
        Assert.Equal(HttpStatusCode.Created, (await Client.PutAsync($"/v1/sessions/{id}", new StringContent("{}", Encoding.UTF8, "application/json"), TestContext.Current.CancellationToken)).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await PostRaw(id, Bytes("""[{"type":"run","key":"rX","value":{"id":"rX","agent":"agent:x","status":"started","trigger":"m0"},"headers":{"operation":"insert"}}]"""))).StatusCode);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(TimeSpan.FromSeconds(30));
        using var response = await Client.GetAsync($"/api/chat/{id}/stream", HttpCompletionOption.ResponseHeadersRead, cts.Token);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);

        // The run names no reply message, and a delete carries no value: neither is the reply's, and the feed goes on.
        Assert.Equal(HttpStatusCode.NoContent, (await PostRaw(id, Bytes("""[{"type":"message","key":"zz","headers":{"operation":"delete"}}]"""))).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await PostRaw(id, Bytes("""[{"type":"run","key":"rX","value":{"id":"rX","agent":"agent:x","status":"finished","trigger":"m0"},"headers":{"operation":"update"}}]"""))).StatusCode);
        var stream = await response.Content.ReadAsStringAsync(cts.Token);
        Assert.Contains("\"type\":\"finish\"", stream, StringComparison.Ordinal);
        Assert.EndsWith("data: [DONE]\n\n", stream, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_posted_message_whose_parts_break_the_event_rules_is_refused_and_the_session_keeps_working()
    {
        var agent = await SessionWithActiveRun("parts");
        foreach (var parts in new[] { "[{\"type\":5}]", "[{\"type\":\"text\",\"text\":{\"a\":1}}]", "[{\"type\":\"data\",\"data\":" + Nested(40) + "}]" })
        {
            var response = await Client.PostAsync("/v1/sessions/parts/messages", new StringContent($"{{\"parts\":{parts}}}", Encoding.UTF8, "application/json"), TestContext.Current.CancellationToken);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        }

        await AssertSessionWorks("parts", agent);
    }
}
