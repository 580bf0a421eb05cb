using System.Net;
using System.Text;
using System.Text.Json;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// A child server is killed with SIGKILL while writers stream acknowledged appends; after restart every acknowledged
/// append is present exactly once, in order, and producer retries of unacknowledged requests never duplicate.
/// </summary>
public sealed class CrashSafetyTests
{
    private const int Writers = 6;

    [Fact]
    public async Task Acknowledged_appends_survive_kill_9_exactly_once_and_in_order()
    {
        await using var server = await ServerProcess.StartAsync();
        var random = new Random(20261123);
        for (var round = 0; round < 3; round++)
        {
            var path = $"/v1/stream/crash/round-{round}";
            using var admin = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
            Assert.Equal(HttpStatusCode.Created, (await admin.PutAsync(path, Json("[]"))).StatusCode);

            var acknowledged = new List<int>[Writers];
            var attempted = new int[Writers];
            using var stop = new CancellationTokenSource();
            var writers = Enumerable.Range(0, Writers).Select(w => Task.Run(async () =>
            {
                acknowledged[w] = [];
                using var client = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(5) };
                for (var seq = 0; !stop.IsCancellationRequested; seq++)
                {
                    attempted[w] = seq;
                    try
                    {
                        using var response = await client.SendAsync(Post(path, w, seq), stop.Token);
                        if (response.StatusCode != HttpStatusCode.OK)
                        {
                            return;
                        }

                        acknowledged[w].Add(seq);
                    }
                    catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or OperationCanceledException)
                    {
                        return;
                    }
                }
            })).ToList();

            await Task.Delay(random.Next(400, 1500));
            await server.KillAsync();
            await stop.CancelAsync();
            await Task.WhenAll(writers).WaitAsync(TimeSpan.FromSeconds(30));
            await server.StartAsync();

            using var client = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };

            // Retry each writer's in-flight request with the same producer stamp: committed ones must dedupe.
            for (var w = 0; w < Writers; w++)
            {
                var retry = attempted[w];
                using var response = await client.SendAsync(Post(path, w, retry));
                Assert.True(response.StatusCode is HttpStatusCode.OK or HttpStatusCode.NoContent, $"retry of writer {w} seq {retry} answered {response.StatusCode}");
            }

            var messages = await ReadAll(client, path);
            var acknowledgedTotal = acknowledged.Sum(a => a.Count);
            Assert.True(acknowledgedTotal > Writers, $"round {round}: only {acknowledgedTotal} appends were acknowledged before the kill");
            for (var w = 0; w < Writers; w++)
            {
                var seen = messages.Where(m => m.Writer == w).Select(m => m.Seq).ToList();
                Assert.Equal(Enumerable.Range(0, seen.Count), seen);
                Assert.True(seen.Count >= acknowledged[w].Count, $"writer {w}: {acknowledged[w].Count} acknowledged, {seen.Count} stored");
                Assert.Contains(attempted[w], seen);
            }
        }
    }

    private static HttpRequestMessage Post(string path, int writer, int seq)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = Json($"{{\"w\":{writer},\"n\":{seq},\"pad\":\"{new string('x', 200)}\"}}") };
        request.Headers.Add("Producer-Id", $"writer-{writer}");
        request.Headers.Add("Producer-Epoch", "0");
        request.Headers.Add("Producer-Seq", seq.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return request;
    }

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    private static async Task<List<(int Writer, int Seq)>> ReadAll(HttpClient client, string path)
    {
        var result = new List<(int, int)>();
        var offset = "-1";
        while (true)
        {
            using var response = await client.GetAsync($"{path}?offset={offset}");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            foreach (var message in json.RootElement.EnumerateArray())
            {
                result.Add((message.GetProperty("w").GetInt32(), message.GetProperty("n").GetInt32()));
            }

            offset = response.Headers.GetValues("Stream-Next-Offset").Single();
            if (response.Headers.Contains("Stream-Up-To-Date"))
            {
                return result;
            }
        }
    }
}
