using System.Text;
using System.Text.Json.Nodes;

namespace DurableSessions.FunctionalTests;

/// <summary>Plays an agent over plain HTTP: a run, its assistant message, and batched deltas written as a producer to the stream.</summary>
internal sealed class FakeAgent(HttpClient client, string sessionId, string runId, string messageId)
{
    private int _seq;

    public Task<HttpResponseMessage> StartAsync() => WriteAsync(
        Change("run", runId, "insert", new JsonObject { ["id"] = runId, ["agent"] = "agent:test", ["messageId"] = messageId, ["status"] = "started" }),
        Change("message", messageId, "insert", new JsonObject { ["id"] = messageId, ["role"] = "assistant", ["runId"] = runId, ["parts"] = new JsonArray(), ["status"] = "streaming" }));

    public Task<HttpResponseMessage> DeltaAsync(params string[] tokens)
        => WriteAsync([.. tokens.Select((t, i) => Change("delta", $"{messageId}:{_seq}:{i}", "insert", new JsonObject { ["messageId"] = messageId, ["part"] = 0, ["partType"] = "text", ["text"] = t }))]);

    public Task<HttpResponseMessage> FinishAsync(string text) => WriteAsync(
        Change("message", messageId, "update", new JsonObject { ["id"] = messageId, ["role"] = "assistant", ["runId"] = runId, ["parts"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = text }), ["status"] = "complete" }),
        Change("run", runId, "update", new JsonObject { ["id"] = runId, ["agent"] = "agent:test", ["messageId"] = messageId, ["status"] = "finished" }));

    /// <summary>Marks the run and its message interrupted with no run to answer again, as a recovering agent marks a cut run whose message was answered since.</summary>
    public Task<HttpResponseMessage> InterruptedAsync() => WriteAsync(
        Change("message", messageId, "update", new JsonObject { ["id"] = messageId, ["role"] = "assistant", ["runId"] = runId, ["parts"] = new JsonArray(), ["status"] = "interrupted" }),
        Change("run", runId, "update", new JsonObject { ["id"] = runId, ["agent"] = "agent:test", ["messageId"] = messageId, ["status"] = "interrupted" }));

    private async Task<HttpResponseMessage> WriteAsync(params JsonObject[] events)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/v1/stream/sessions/{sessionId}")
        {
            Content = new StringContent(new JsonArray([.. events]).ToJsonString(), Encoding.UTF8, "application/json"),
        };
        request.Headers.Add("Producer-Id", $"agent-{runId}");
        request.Headers.Add("Producer-Epoch", "0");
        request.Headers.Add("Producer-Seq", (_seq++).ToString(System.Globalization.CultureInfo.InvariantCulture));
        return await client.SendAsync(request);
    }

    private static JsonObject Change(string type, string key, string op, JsonObject value) => new()
    {
        ["type"] = type,
        ["key"] = key,
        ["value"] = value,
        ["headers"] = new JsonObject { ["operation"] = op },
    };
}
