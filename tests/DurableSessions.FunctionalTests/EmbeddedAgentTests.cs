using System.Net;
using System.Text;
using System.Text.Json.Nodes;

namespace DurableSessions.FunctionalTests;

/// <summary>The agent the server hosts: woken by turns, with bounded concurrency.</summary>
public sealed class EmbeddedAgentTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task More_sessions_than_concurrent_runs_are_all_answered_once_and_the_agent_leaves_each(bool overWebSocket)
    {
        // In process, the agent's appends go straight to the append path by default, or pipelined on one in-memory
        // WebSocket.
        await using var server = await ServerProcess.StartAsync(null,
            "--Agent:Enabled=true", "--Agent:MaxConcurrentRuns=2", "--Agent:TokensPerSecond=500", $"--Agent:UseWebSocket={overWebSocket}");
        using var client = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        var ids = Enumerable.Range(1, 5).Select(i => $"s{i}").ToArray();
        foreach (var id in ids)
        {
            Assert.Equal(HttpStatusCode.Created, (await client.PutAsync($"/v1/sessions/{id}", Json("{}"))).StatusCode);
            Assert.Equal(HttpStatusCode.Created, (await client.PostAsync($"/v1/sessions/{id}/messages", Json("{\"text\":\"hello\"}"))).StatusCode);
        }

        foreach (var id in ids)
        {
            await WaitForFinishedRunsAsync(client, id, 1);
        }

        // Exactly one answer each, and the agent is present only while it answers: it has left every session.
        foreach (var id in ids)
        {
            var snapshot = JsonNode.Parse(await client.GetStringAsync($"/v1/sessions/{id}"))!.AsArray();
            Assert.Single(snapshot, e => e?["type"]?.GetValue<string>() == "message" && e["value"]?["role"]?.GetValue<string>() == "assistant");
            await WaitForAsync(client, id, s => s.Any(e => e?["type"]?.GetValue<string>() == "presence" && e["value"]?["status"]?.GetValue<string>() == "left"), "the agent marked left");
        }
    }

    [Fact]
    public async Task A_reply_asked_to_be_written_again_wakes_the_agent_after_it_left_and_is_written_again_in_the_same_message()
    {
        await using var server = await ServerProcess.StartAsync(null, "--Agent:Enabled=true", "--Agent:TokensPerSecond=500");
        using var client = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/sessions/again", Json("{}"))).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await client.PostAsync("/v1/sessions/again/messages", Json("{\"text\":\"hello\"}"))).StatusCode);
        await WaitForFinishedRunsAsync(client, "again", 1);
        await WaitForAsync(client, "again", s => s.Any(e => e?["type"]?.GetValue<string>() == "presence" && e["value"]?["status"]?.GetValue<string>() == "left"), "the agent marked left");
        var before = JsonNode.Parse(await client.GetStringAsync("/v1/sessions/again"))!.AsArray();
        var reply = before.Single(e => e?["type"]?.GetValue<string>() == "message" && e["value"]?["role"]?.GetValue<string>() == "assistant")!["value"]!;
        var replyId = reply["id"]!.GetValue<string>();

        // Nothing serves the session now: the request alone must bring an agent back.
        using var regenerate = await client.PostAsync($"/v1/sessions/again/messages/{replyId}/regenerate", Json("{}"));
        Assert.Equal(HttpStatusCode.OK, regenerate.StatusCode);
        var controlId = JsonNode.Parse(await regenerate.Content.ReadAsStringAsync())!["controlId"]!.GetValue<string>();
        await WaitForFinishedRunsAsync(client, "again", 2);

        var after = JsonNode.Parse(await client.GetStringAsync("/v1/sessions/again"))!.AsArray();
        var replies = after.Where(e => e?["type"]?.GetValue<string>() == "message" && e["value"]?["role"]?.GetValue<string>() == "assistant").Select(e => e!["value"]!).ToList();
        var rewritten = Assert.Single(replies);
        Assert.Equal(replyId, rewritten["id"]!.GetValue<string>());
        Assert.Equal("complete", rewritten["status"]!.GetValue<string>());
        Assert.Equal(reply["parts"]!.ToJsonString(), rewritten["parts"]!.ToJsonString());
        Assert.NotEqual(reply["runId"]!.GetValue<string>(), rewritten["runId"]!.GetValue<string>());
        var control = after.Single(e => e?["type"]?.GetValue<string>() == "control")!["value"]!;
        Assert.Equal((controlId, "regenerate", reply["runId"]!.GetValue<string>()), (control["id"]!.GetValue<string>(), control["action"]!.GetValue<string>(), control["runId"]!.GetValue<string>()));
    }

    private static async Task WaitForAsync(HttpClient client, string id, Func<JsonArray, bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!condition(JsonNode.Parse(await client.GetStringAsync($"/v1/sessions/{id}"))!.AsArray()))
        {
            Assert.True(DateTime.UtcNow < deadline, $"Session {id}: timed out waiting for {what}.");
            await Task.Delay(50);
        }
    }

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    private static async Task WaitForFinishedRunsAsync(HttpClient client, string id, int count)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            var snapshot = JsonNode.Parse(await client.GetStringAsync($"/v1/sessions/{id}"))!.AsArray();
            var finished = snapshot.Count(e => e?["type"]?.GetValue<string>() == "run" && e["value"]?["status"]?.GetValue<string>() == "finished");
            if (finished >= count)
            {
                return;
            }

            Assert.True(DateTime.UtcNow < deadline, $"Session {id} has {finished} finished runs, expected {count}.");
            await Task.Delay(100);
        }
    }
}
