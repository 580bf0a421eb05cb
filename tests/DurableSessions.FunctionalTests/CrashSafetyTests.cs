using System.Globalization;
using System.Net;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// A child server is killed with SIGKILL while writers stream acknowledged appends; after restart every acknowledged
/// append is present exactly once, in order, and producer retries of unacknowledged requests never duplicate. Over HTTP
/// and over the WebSocket transport.
/// </summary>
public sealed class CrashSafetyTests
{
    private const int Writers = 6;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Acknowledged_appends_survive_kill_9_exactly_once_and_in_order(bool smallWal)
    {
        // With a 1 MiB WAL limit the writer's checkpoints, the WAL starting over and its truncation happen while the
        // writers run, so the kill can land amid them.
        await using var server = smallWal
            ? await ServerProcess.StartAsync(null, "--Storage:Sqlite:MaxWalBytes=1048576")
            : await ServerProcess.StartAsync();
        var wal = Path.Combine(server.DataDirectory, "streams.db-wal");
        var walStartedOver = false;
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

            // While the writers run: did the WAL file ever get smaller (start over)?
            var watching = Task.Run(async () =>
            {
                long largest = 0;
                while (!stop.IsCancellationRequested)
                {
                    var length = File.Exists(wal) ? new FileInfo(wal).Length : 0;
                    walStartedOver |= length < largest;
                    largest = Math.Max(largest, length);
                    await Task.Delay(5, CancellationToken.None);
                }
            });

            // The kill lands at a random point once the writers are under way (and, in the last round with the small
            // WAL, once it has started over), however slowly a loaded machine gets them there.
            var underWay = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while ((acknowledged.Sum(a => a?.Count ?? 0) <= Writers * 2 || (smallWal && round == 2 && !walStartedOver)) && DateTime.UtcNow < underWay)
            {
                await Task.Delay(10);
            }

            await Task.Delay(random.Next(0, 1100));
            await server.KillAsync();
            await stop.CancelAsync();
            await Task.WhenAll(writers).WaitAsync(TimeSpan.FromSeconds(30));
            await watching;
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

        Assert.True(walStartedOver || !smallWal, "the WAL never started over while the writers ran");
    }

    [Fact]
    public async Task Appends_acknowledged_over_a_websocket_survive_kill_9_and_a_resend_stores_each_once()
    {
        const int Streams = 4;
        const int PerStream = 5_000;
        await using var server = await ServerProcess.StartAsync();
        using var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
        for (var i = 0; i < Streams; i++)
        {
            Assert.Equal(HttpStatusCode.Created, (await http.PutAsync($"/v1/stream/crash-ws/{i}", Json("[]"))).StatusCode);
        }

        // One connection pipelines appends to four streams without waiting for answers, until the server dies.
        var socket = await SocketClient.ConnectAsync(server.BaseAddress);
        var sent = new int[Streams];
        var sender = Task.Run(async () =>
        {
            try
            {
                for (var seq = 0; seq < PerStream; seq++)
                {
                    for (var i = 0; i < Streams; i++)
                    {
                        await socket.SendAsync(SocketAppend(i, seq));
                        sent[i] = seq + 1;
                    }
                }
            }
            catch (Exception ex) when (ex is WebSocketException or ObjectDisposedException or IOException or OperationCanceledException)
            {
            }
        });

        var early = await socket.NextAsync(m => m["id"]?.GetValue<string>() == "0-100");
        await Task.Delay(new Random(20261202).Next(50, 300));
        await server.KillAsync();
        await sender.WaitAsync(TimeSpan.FromSeconds(30));
        var answers = await socket.DrainUntilClosedAsync();
        answers.Add(early);
        await socket.DisposeAsync();
        var acknowledged = answers.Where(m => m["type"]?.GetValue<string>() == "ack")
            .Select(m => m["id"]!.GetValue<string>().Split('-'))
            .Select(parts => (Stream: int.Parse(parts[0], CultureInfo.InvariantCulture), Seq: int.Parse(parts[1], CultureInfo.InvariantCulture)))
            .ToList();
        Assert.DoesNotContain(answers, m => m["type"]?.GetValue<string>() == "error");
        Assert.True(acknowledged.Count > Streams * 100, $"only {acknowledged.Count} appends were acknowledged before the kill");
        Assert.True(sent.Sum() > acknowledged.Count, $"the kill came after all {sent.Sum()} appends were answered");

        await server.StartAsync();
        using var client = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
        for (var i = 0; i < Streams; i++)
        {
            // Everything acknowledged is there: a prefix of what was sent, with no gap and nothing twice.
            var stored = (await ReadAll(client, $"/v1/stream/crash-ws/{i}")).Select(m => m.Seq).ToList();
            Assert.Equal(Enumerable.Range(0, stored.Count), stored);
            var highest = acknowledged.Where(a => a.Stream == i).Max(a => a.Seq);
            Assert.True(stored.Count > highest, $"stream {i}: seq {highest} was acknowledged, {stored.Count} stored");
        }

        // The producer sends everything again on a new connection: what is stored is acknowledged again, not stored twice.
        await using (var again = await SocketClient.ConnectAsync(server.BaseAddress))
        {
            for (var seq = 0; seq < PerStream; seq++)
            {
                for (var i = 0; i < Streams; i++)
                {
                    if (seq < sent[i])
                    {
                        await again.SendAsync(SocketAppend(i, seq));
                    }
                }
            }

            for (var n = sent.Sum(); n > 0; n--)
            {
                var answer = await again.NextAsync(m => m["type"]?.GetValue<string>() is "ack" or "error");
                Assert.Equal("ack", answer["type"]!.GetValue<string>());
            }
        }

        for (var i = 0; i < Streams; i++)
        {
            var stored = (await ReadAll(client, $"/v1/stream/crash-ws/{i}")).Select(m => m.Seq).ToList();
            Assert.Equal(Enumerable.Range(0, sent[i]), stored);
        }
    }

    private static JsonObject SocketAppend(int stream, int seq) => new()
    {
        ["op"] = "append",
        ["id"] = $"{stream}-{seq}",
        ["path"] = $"crash-ws/{stream}",
        ["data"] = new JsonObject { ["w"] = stream, ["n"] = seq, ["pad"] = new string('x', 200) },
        ["producer"] = new JsonObject { ["id"] = "ws-writer", ["epoch"] = 0, ["seq"] = seq },
    };

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
