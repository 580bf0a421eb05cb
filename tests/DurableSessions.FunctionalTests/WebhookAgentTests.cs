using System.Buffers.Text;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.WebhookAgent;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// A serverless agent (samples/DurableSessions.WebhookAgent, hosted in the test on 127.0.0.1:0): the real server wakes
/// it by a signed webhook on the agent's wake stream, and each wake serves every waiting turn.
/// </summary>
public sealed class WebhookAgentTests : IAsyncLifetime
{
    private const string Agent = "agent:hook";
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private ServerProcess _server = null!;
    private HttpClient _client = null!;
    private WebApplication _agent = null!;

    public async ValueTask InitializeAsync()
    {
        _server = await ServerProcess.StartAsync();
        _client = new HttpClient { BaseAddress = _server.BaseAddress, Timeout = Timeout };
        _agent = WebhookAgentApp.Build(
        [
            "--urls=http://127.0.0.1:0", $"--Server={_server.BaseAddress}", $"--Agent={Agent}",
            "--TokensPerSecond=1000", "--MaxConcurrentRuns=2", "--Logging:LogLevel:Default=Warning",
        ]);
        await _agent.StartAsync();
        await WebhookAgentApp.RegisterAsync(_agent).WaitAsync(Timeout);
    }

    public async ValueTask DisposeAsync()
    {
        await _agent.StopAsync();
        await _agent.DisposeAsync();
        _client.Dispose();
        await _server.DisposeAsync();
    }

    private string WakeUrl => _agent.Urls.First() + WebhookAgentApp.WakeRoute;

    [Fact]
    public async Task Every_message_is_answered_once_by_the_agent_its_webhook_wakes()
    {
        // More sessions than the agent serves at once (2): one wake serves them all, in turns.
        var ids = Enumerable.Range(1, 5).Select(i => $"hook-{i}").ToArray();
        foreach (var id in ids)
        {
            Assert.Equal(HttpStatusCode.Created, (await _client.PutAsync($"/v1/sessions/{id}", Json("{}"))).StatusCode);
            Assert.Equal(HttpStatusCode.Created, (await _client.PostAsync($"/v1/sessions/{id}/messages", Json("{\"text\":\"hello\"}"))).StatusCode);
        }

        foreach (var id in ids)
        {
            await WaitForAsync(async () => (await AnswersAsync(id)).Count(m => (string?)m["status"] == "complete") == 1, $"the answer in {id}");
        }

        // A session answered before wakes the agent again for its next message.
        Assert.Equal(HttpStatusCode.Created, (await _client.PostAsync($"/v1/sessions/{ids[0]}/messages", Json("{\"text\":\"again\"}"))).StatusCode);
        await WaitForAsync(async () => (await AnswersAsync(ids[0])).Count(m => (string?)m["status"] == "complete") == 2, "the second answer");

        // Every wake was answered done (the subscription acked its wake stream to the tail) and no turn is left waiting:
        // nothing more will be written, so the counts below are final.
        await WaitForAsync(WakeStreamAckedAsync, "the wake stream acked to its tail");
        Assert.Equal(HttpStatusCode.NoContent, (await _client.PostAsync($"/v1/agents/{Agent}/claim", Json("{\"worker\":\"probe\"}"))).StatusCode);
        foreach (var id in ids)
        {
            var answers = await AnswersAsync(id);
            Assert.Equal(id == ids[0] ? 2 : 1, answers.Count);
            Assert.All(answers, m =>
            {
                Assert.Equal("complete", (string?)m["status"]);
                Assert.Equal(Agent, (string?)m["author"]);
                Assert.False(string.IsNullOrEmpty((string?)m["parts"]![0]!["text"]));
            });
        }
    }

    [Fact]
    public async Task A_wake_the_server_did_not_sign_is_refused()
    {
        // A real signed wake, caught by a receiver of another subscription, is accepted as it is and refused once altered.
        var (body, signature) = await CatchSignedWakeAsync();
        Assert.Equal(HttpStatusCode.OK, (await PostWake(body, signature)).StatusCode);
        var altered = Encoding.UTF8.GetBytes(Encoding.UTF8.GetString(body).Replace("\"generation\":", "\"generation\":1", StringComparison.Ordinal));
        Assert.Equal(HttpStatusCode.Unauthorized, (await PostWake(altered, signature)).StatusCode);

        var kid = (string?)JsonNode.Parse(await _client.GetStringAsync("/v1/stream/__ds/jwks.json"))!["keys"]![0]!["kid"];
        var forged = Base64Url.EncodeToString(RandomNumberGenerator.GetBytes(64));
        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var stamp = signature.Split(',')[0];
        string?[] refused =
        [
            null,
            "not a signature",
            $"t={now},kid={kid},ed25519={forged}",
            signature.Replace(kid!, "ds_someone_else", StringComparison.Ordinal),
            signature.Replace(stamp, $"t={now - 3600}", StringComparison.Ordinal),
        ];
        foreach (var header in refused)
        {
            var response = await PostWake(body, header);
            Assert.True(response.StatusCode == HttpStatusCode.Unauthorized, $"{header ?? "no header"}: {response.StatusCode}");
        }
    }

    /// <summary>Subscribes a receiver in the test to <c>probe/*</c>, appends there, and returns the wake the server POSTed.</summary>
    private async Task<(byte[] Body, string Signature)> CatchSignedWakeAsync()
    {
        var caught = new TaskCompletionSource<(byte[], string)>(TaskCreationOptions.RunContinuationsAsynchronously);
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        await using var receiver = builder.Build();
        receiver.MapPost("/hook", async (HttpRequest request) =>
        {
            using var body = new MemoryStream();
            await request.Body.CopyToAsync(body);
            caught.TrySetResult((body.ToArray(), request.Headers["Webhook-Signature"].ToString()));
            return Results.Json(new { done = true });
        });
        await receiver.StartAsync();

        var subscription = new JsonObject { ["type"] = "webhook", ["pattern"] = "probe/*", ["webhook"] = new JsonObject { ["url"] = receiver.Urls.First() + "/hook" } };
        Assert.Equal(HttpStatusCode.Created, (await _client.PutAsync("/v1/stream/__ds/subscriptions/probe", Json(subscription.ToJsonString()))).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await _client.PutAsync("/v1/stream/probe/1", Json("[]"))).StatusCode);
        Assert.True((await _client.PostAsync("/v1/stream/probe/1", Json("[{\"n\":1}]"))).IsSuccessStatusCode);
        return await caught.Task.WaitAsync(Timeout);
    }

    private async Task<HttpResponseMessage> PostWake(byte[] body, string? signature)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, WakeUrl) { Content = new ByteArrayContent(body) };
        request.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        if (signature is not null)
        {
            request.Headers.TryAddWithoutValidation("Webhook-Signature", signature);
        }

        return await _client.SendAsync(request);
    }

    /// <summary>The assistant messages of session <paramref name="id"/>.</summary>
    private async Task<List<JsonObject>> AnswersAsync(string id)
        => JsonNode.Parse(await _client.GetStringAsync($"/v1/sessions/{id}"))!.AsArray()
            .Where(e => (string?)e?["type"] == "message" && (string?)e!["value"]?["role"] == "assistant")
            .Select(e => e!["value"]!.AsObject())
            .ToList();

    private async Task<bool> WakeStreamAckedAsync()
    {
        var subscription = JsonNode.Parse(await _client.GetStringAsync($"/v1/stream/__ds/subscriptions/{WebhookAgentApp.SubscriptionId(Agent)}"))!;
        var acked = (string?)subscription["streams"]![0]!["acked_offset"];
        using var head = await _client.SendAsync(new HttpRequestMessage(HttpMethod.Head, $"/v1/stream/agents/{Agent}/wake"));
        return acked == head.Headers.GetValues("Stream-Next-Offset").Single();
    }

    private static async Task WaitForAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + Timeout;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"Timed out waiting for {what}.");
            await Task.Delay(50);
        }
    }

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");
}
