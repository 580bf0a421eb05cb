using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace DurableSessions.FunctionalTests;

/// <summary>Live fan-out: slow readers never hold back the writer or other readers; readers resume across restarts.</summary>
public sealed class LiveReaderTests
{
    [Fact]
    public async Task A_reader_that_stops_reading_does_not_slow_the_writer_or_other_readers()
    {
        // 24 MB in all, against a 1 MiB reader queue: more than the queue and loopback's socket buffers (which Linux
        // grows to several MB each way) can hold, so the stuck reader is always cut off before the end.
        await using var server = await InProcessServer.StartAsync(configure: o => o.MaxReaderQueueBytes = 1024 * 1024);
        var client = server.Client;
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/slow", new StringContent("[]", Encoding.UTF8, "application/json"))).StatusCode);

        // A reader that sends its request and then never reads a byte.
        using var stuck = new TcpClient();
        await stuck.ConnectAsync(IPAddress.Loopback, server.BaseAddress.Port);
        var stuckStream = stuck.GetStream();
        await stuckStream.WriteAsync(Encoding.ASCII.GetBytes($"GET /v1/stream/slow?offset=-1&live=sse HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));

        using var fastResponse = await client.GetAsync("/v1/stream/slow?offset=-1&live=sse", HttpCompletionOption.ResponseHeadersRead);
        var fastDone = ReadUntilCount(await fastResponse.Content.ReadAsStreamAsync(), Total);

        var payload = new string('x', 8192);
        var writers = Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
        {
            for (var i = w; i < Total; i += 8)
            {
                using var response = await client.PostAsync("/v1/stream/slow", new StringContent($"{{\"i\":{i},\"pad\":\"{payload}\"}}", Encoding.UTF8, "application/json"));
                Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
            }
        }));
        await Task.WhenAll(writers).WaitAsync(TimeSpan.FromSeconds(60));

        var fastSeen = await fastDone.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(Total, fastSeen.Count);
        Assert.Equal(Enumerable.Range(0, Total).Order(), fastSeen.Order());

        // The stuck reader is cut off rather than buffered forever: draining its socket reaches the end of the response.
        var drained = await DrainToEndAsync(stuckStream).WaitAsync(TimeSpan.FromSeconds(60));
        var lastOffset = drained.LastOffset;
        Assert.NotNull(lastOffset);
        Assert.True(drained.Messages < Total, "the stuck reader should have been disconnected before receiving everything");

        // ... and resumes from its last offset with nothing missing (catch-up reads come in bounded pages).
        var resumed = 0;
        for (var offset = lastOffset; ;)
        {
            using var resume = await client.GetAsync($"/v1/stream/slow?offset={offset}");
            using var rest = JsonDocument.Parse(await resume.Content.ReadAsStringAsync());
            resumed += rest.RootElement.GetArrayLength();
            offset = resume.Headers.GetValues("Stream-Next-Offset").Single();
            if (resume.Headers.TryGetValues("Stream-Up-To-Date", out var upToDate) && upToDate.Single() == "true")
            {
                break;
            }
        }

        Assert.Equal(Total, drained.Messages + resumed);
    }

    private const int Total = 3000;

    [Fact]
    public async Task A_stopping_server_ends_live_responses_and_exits_promptly()
    {
        // The hosted agent on, so its own live reads of the session are open too.
        await using var server = await ServerProcess.StartAsync(null, "--Agent:Enabled=true", "--Agent:TokensPerSecond=2", "--long-poll-timeout-ms", "60000");
        using var client = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(90) };
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/sessions/stopping", new StringContent("{}", Encoding.UTF8, "application/json"))).StatusCode);
        Assert.True((await client.PostAsync("/v1/sessions/stopping/messages", new StringContent("""{"text":"hello","role":"user"}""", Encoding.UTF8, "application/json"))).IsSuccessStatusCode);
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/idle", new StringContent("[]", Encoding.UTF8, "application/json"))).StatusCode);

        using var sse = await client.GetAsync("/v1/stream/sessions/stopping?offset=-1&live=sse", HttpCompletionOption.ResponseHeadersRead);
        var sseEnded = new StreamReader(await sse.Content.ReadAsStreamAsync()).ReadToEndAsync();
        var longPoll = client.GetAsync("/v1/stream/idle?offset=now&live=long-poll");
        HttpResponseMessage chat;
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while ((chat = await client.GetAsync("/api/chat/stopping/stream", HttpCompletionOption.ResponseHeadersRead)).StatusCode != HttpStatusCode.OK && DateTime.UtcNow < deadline)
        {
            chat.Dispose();
            await Task.Delay(50); // until the agent has started its reply
        }

        using var chatStream = chat;
        Assert.Equal(HttpStatusCode.OK, chat.StatusCode);
        var chatEnded = chat.Content.ReadAsStringAsync();
        await Task.Delay(300);

        var (exitCode, elapsed) = await server.StopAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(0, exitCode);
        // Well under the host's 30 s shutdown timeout and the 60 s long-poll: nothing waited for either.
        Assert.True(elapsed < TimeSpan.FromSeconds(10), $"the server took {elapsed} to stop");
        Assert.Contains("event: control", await sseEnded.WaitAsync(TimeSpan.FromSeconds(5)));
        var polled = await longPoll.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(HttpStatusCode.NoContent, polled.StatusCode);

        // The AI SDK stream ends with an error, not a finish: the client must not take a partial reply for a whole one.
        var chatText = await chatEnded.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Contains("\"type\":\"error\"", chatText);
        Assert.DoesNotContain("\"type\":\"finish\"", chatText);
    }

    private static async Task<List<int>> ReadUntilCount(Stream body, int count)
    {
        var seen = new List<int>();
        await foreach (var (type, data) in SseClient.ReadEventsAsync(body))
        {
            if (type == "data")
            {
                using var json = JsonDocument.Parse(data);
                seen.AddRange(json.RootElement.EnumerateArray().Select(e => e.GetProperty("i").GetInt32()));
                if (seen.Count >= count)
                {
                    break;
                }
            }
        }

        return seen;
    }

    private static async Task<(int Messages, string? LastOffset)> DrainToEndAsync(NetworkStream stream)
    {
        var all = new MemoryStream();
        var buffer = new byte[64 * 1024];
        int read;
        while ((read = await stream.ReadAsync(buffer)) > 0)
        {
            all.Write(buffer, 0, read);
            var text = Encoding.UTF8.GetString(all.GetBuffer(), 0, (int)all.Length);
            if (text.EndsWith("0\r\n\r\n", StringComparison.Ordinal))
            {
                break;
            }
        }

        var raw = Encoding.UTF8.GetString(all.ToArray());
        var body = raw[(raw.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..];
        var unchunked = Unchunk(body);
        var messages = 0;
        string? lastOffset = null;
        string? pendingData = null;
        await foreach (var (type, data) in SseClient.ReadEventsAsync(new MemoryStream(Encoding.UTF8.GetBytes(unchunked))))
        {
            if (type == "data")
            {
                pendingData = data;
            }
            else if (type == "control" && data.EndsWith('}'))
            {
                // Count a data event only once its control event (and so its offset) has fully arrived.
                if (pendingData is not null)
                {
                    using var json = JsonDocument.Parse(pendingData);
                    messages += json.RootElement.GetArrayLength();
                    pendingData = null;
                }

                lastOffset = SseClient.ParseControl(data).NextOffset;
            }
        }

        return (messages, lastOffset);
    }

    private static string Unchunk(string chunked)
    {
        var output = new StringBuilder();
        var at = 0;
        while (at < chunked.Length)
        {
            var lineEnd = chunked.IndexOf("\r\n", at, StringComparison.Ordinal);
            if (lineEnd < 0)
            {
                break;
            }

            var size = Convert.ToInt32(chunked[at..lineEnd], 16);
            if (size == 0 || lineEnd + 2 + size > chunked.Length)
            {
                break;
            }

            output.Append(chunked, lineEnd + 2, size);
            at = lineEnd + 2 + size + 2;
        }

        // A cut-off response may end inside an event; drop the incomplete tail.
        var text = output.ToString();
        var lastEvent = text.LastIndexOf("\n\n", StringComparison.Ordinal);
        return lastEvent < 0 ? string.Empty : text[..(lastEvent + 2)];
    }

    [Fact]
    public async Task A_live_reader_resumes_across_a_server_kill_with_no_gap_or_duplicate()
    {
        await using var server = await ServerProcess.StartAsync();
        using var client = new HttpClient { BaseAddress = server.BaseAddress, Timeout = Timeout.InfiniteTimeSpan };
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/restart", new StringContent("[]", Encoding.UTF8, "application/json"))).StatusCode);
        const int Count = 300;
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        var received = new List<int>();
        var reconnects = 0;
        var reader = Task.Run(async () =>
        {
            var offset = "-1";
            while (received.Count < Count)
            {
                try
                {
                    using var response = await client.GetAsync($"/v1/stream/restart?offset={offset}&live=sse", HttpCompletionOption.ResponseHeadersRead, cancel.Token);
                    await foreach (var (type, data) in SseClient.ReadEventsAsync(await response.Content.ReadAsStreamAsync(cancel.Token), cancel.Token))
                    {
                        if (type == "data")
                        {
                            using var json = JsonDocument.Parse(data);
                            received.AddRange(json.RootElement.EnumerateArray().Select(e => e.GetInt32()));
                        }
                        else
                        {
                            offset = SseClient.ParseControl(data).NextOffset;
                            if (received.Count >= Count)
                            {
                                return;
                            }
                        }
                    }
                }
                catch (Exception ex) when (ex is HttpRequestException or IOException)
                {
                }

                reconnects++;
                await Task.Delay(100, cancel.Token);
            }
        });

        for (var i = 0; i < Count; i++)
        {
            if (i == Count / 2)
            {
                await server.KillAsync();
                await server.StartAsync();
            }

            using var response = await client.PostAsync("/v1/stream/restart", new StringContent(i.ToString(System.Globalization.CultureInfo.InvariantCulture), Encoding.UTF8, "application/json"), cancel.Token);
            Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        }

        await reader.WaitAsync(cancel.Token);
        Assert.Equal(Enumerable.Range(0, Count), received);
        Assert.True(reconnects >= 1, "the reader should have had to reconnect after the kill");
    }
}
