using System.Net;
using System.Text;
using System.Text.Json.Nodes;

namespace DurableSessions.FunctionalTests;

/// <summary>The agent the server hosts, past the number of sessions it follows live.</summary>
public sealed class EmbeddedAgentTests
{
    [Fact]
    public async Task A_session_past_the_live_cap_is_answered_by_taking_the_place_of_the_quietest()
    {
        await using var server = await ServerProcess.StartAsync(null,
            "--Agent:Enabled=true", "--Agent:MaxLiveSessions=2", "--Agent:YieldAfterIdle=00:00:00.300", "--Agent:TokensPerSecond=500");
        using var client = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        foreach (var id in new[] { "s1", "s2", "s3" })
        {
            Assert.Equal(HttpStatusCode.Created, (await client.PutAsync($"/v1/sessions/{id}", Json("{}"))).StatusCode);
        }

        // Two sessions fill the cap; the third is answered once one of them has been quiet, and so is the first again.
        foreach (var (id, answers) in new[] { ("s1", 1), ("s2", 1), ("s3", 1), ("s1", 2) })
        {
            Assert.Equal(HttpStatusCode.Created, (await client.PostAsync($"/v1/sessions/{id}/messages", Json("{\"text\":\"hello\"}"))).StatusCode);
            await WaitForFinishedRunsAsync(client, id, answers);
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
