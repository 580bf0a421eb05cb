using System.Net;
using System.Net.Sockets;
using System.Text;
using DurableSessions.AspNetCore.Connections;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// Bounded resources against a real server process: connections (and so descriptors), request bodies read before
/// authentication, and the memory a reader that never reads can hold.
/// </summary>
[Collection(HeavyTests.Name)]
public sealed class ResourceLimitTests
{
    private const long MiB = 1024 * 1024;
    private const string SigningKey = "resource-limit-test-key-of-32-bytes!!";
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Past_the_connection_limit_new_connections_get_503_while_health_and_existing_readers_keep_working()
    {
        await using var server = await ServerProcess.StartAsync(null, "--Limits:MaxConnections=50", "--Limits:LoopbackReserve=0");
        using var writer = KeepAliveClient(server);
        Assert.Equal(HttpStatusCode.Created, (await writer.PutAsync("/v1/stream/t", Text(""))).StatusCode);

        // One live reader and the writer's connection are open before the server fills up.
        using var readerClient = KeepAliveClient(server);
        using var live = await readerClient.GetAsync("/v1/stream/t?offset=-1&live=sse", HttpCompletionOption.ResponseHeadersRead).WaitAsync(Timeout);
        await using var liveBody = await live.Content.ReadAsStreamAsync();
        await using var events = SseClient.ReadEventsAsync(liveBody).GetAsyncEnumerator();
        Assert.True(await events.MoveNextAsync().AsTask().WaitAsync(Timeout));
        var descriptorsBefore = server.OpenDescriptors;

        var sockets = new List<Socket>();
        try
        {
            var served = 0;
            var refused = 0;
            for (var i = 0; i < 60; i++)
            {
                var socket = await ConnectAsync(server.Port);
                sockets.Add(socket);
                var head = await RequestAsync(socket, "GET /v1/stream/t?offset=-1 HTTP/1.1\r\nHost: test\r\n\r\n");
                if (head.StartsWith("HTTP/1.1 200", StringComparison.Ordinal))
                {
                    served++;
                }
                else
                {
                    Assert.StartsWith("HTTP/1.1 503", head);
                    Assert.Contains("Retry-After: ", head);
                    Assert.Contains("Connection: close", head);
                    refused++;
                }
            }

            // 50 in total: the writer, the reader and 48 more (47 while the start-up health check's connection closes).
            Assert.InRange(served, 47, 48);
            Assert.Equal(60 - served, refused);

            using (var health = await ConnectAsync(server.Port))
            {
                var answer = await RequestAsync(health, "GET /health HTTP/1.1\r\nHost: test\r\n\r\n", readBody: true);
                Assert.StartsWith("HTTP/1.1 200", answer);
                Assert.EndsWith("ok", answer);
            }

            // The existing connections keep working: an append reaches the live reader.
            Assert.Equal(HttpStatusCode.NoContent, (await writer.PostAsync("/v1/stream/t", Text("still-here"))).StatusCode);
            Assert.Equal("still-here", await NextDataAsync(events));

            // Descriptors grew by the admitted connections only, not by the refused ones.
            Assert.InRange(server.OpenDescriptors, 0, descriptorsBefore + 48 + 16);
        }
        finally
        {
            foreach (var socket in sockets)
            {
                socket.Dispose();
            }
        }

        // Once connections close, new ones are served again.
        await WaitUntilAsync(async () =>
        {
            using var socket = await ConnectAsync(server.Port);
            return (await RequestAsync(socket, "GET /v1/stream/t?offset=-1 HTTP/1.1\r\nHost: test\r\n\r\n")).StartsWith("HTTP/1.1 200", StringComparison.Ordinal);
        });
    }

    [Fact]
    public async Task One_client_past_its_connection_limit_gets_503_while_another_client_is_served()
    {
        await using var server = await ServerProcess.StartAsync(null, "--Limits:MaxConnectionsPerClient=10", "--Limits:ExemptLoopback=false");
        var sockets = new List<Socket>();
        try
        {
            var served = 0;
            for (var i = 0; i < 12; i++)
            {
                sockets.Add(await ConnectAsync(server.Port));
                var head = await RequestAsync(sockets[^1], "GET /v1/stream/t HTTP/1.1\r\nHost: test\r\n\r\n");
                if (head.StartsWith("HTTP/1.1 404", StringComparison.Ordinal))
                {
                    served++;
                }
                else
                {
                    Assert.StartsWith("HTTP/1.1 503", head);
                    Assert.Contains("Retry-After: 5", head);
                }
            }

            // 10 (9 while the start-up health check's connection closes).
            Assert.InRange(served, 9, 10);

            using var other = await ConnectAsync(server.Port, from: IPAddress.Parse("127.0.0.2"));
            Assert.StartsWith("HTTP/1.1 404", await RequestAsync(other, "GET /v1/stream/t HTTP/1.1\r\nHost: test\r\n\r\n"));
        }
        finally
        {
            foreach (var socket in sockets)
            {
                socket.Dispose();
            }
        }
    }

    [Fact]
    public async Task The_default_connection_limit_keeps_descriptor_headroom_below_the_open_file_limit()
    {
        // An open-file limit of 1,200 leaves 600 connections (the headroom is at most half of the limit).
        Assert.Equal(600, new ConnectionLimitOptions().EffectiveMaxConnections(1200));
        Assert.Equal(19_000, new ConnectionLimitOptions().EffectiveMaxConnections(20_000));
        Assert.Equal(50, new ConnectionLimitOptions { MaxConnections = 50 }.EffectiveMaxConnections(20_000));
        Assert.Equal(19_000, new ConnectionLimitOptions { MaxConnections = 50_000 }.EffectiveMaxConnections(20_000));

        await using var server = await ServerProcess.StartWithDescriptorLimitAsync(1200);
        var idle = server.OpenDescriptors;
        var sockets = new List<Socket>();
        try
        {
            var served = 0;
            var refused = 0;
            for (var i = 0; i < 900; i++)
            {
                Socket socket;
                try
                {
                    socket = await ConnectAsync(server.Port);
                }
                catch (SocketException)
                {
                    refused++;
                    continue;
                }

                sockets.Add(socket);
                var head = await RequestAsync(socket, "GET /v1/stream/missing HTTP/1.1\r\nHost: test\r\n\r\n", readBody: true);
                if (head.StartsWith("HTTP/1.1 404", StringComparison.Ordinal))
                {
                    served++;
                }
                else
                {
                    Assert.StartsWith("HTTP/1.1 503", head);
                    refused++;
                }
            }

            Assert.InRange(served, 590, 600);
            Assert.Equal(900 - served, refused);

            // The server keeps its descriptor headroom and stays healthy, with storage working.
            TestContext.Current.TestOutputHelper?.WriteLine($"{served} served, {refused} refused, {server.OpenDescriptors} descriptors open ({idle} before)");
            // One descriptor per connection served, none for the refused ones, and room left for the store's files.
            Assert.InRange(server.OpenDescriptors, 0, idle + 600 + 16);
            Assert.InRange(server.OpenDescriptors, 0, 1200 - 200);
            using var health = await ConnectAsync(server.Port);
            Assert.StartsWith("HTTP/1.1 200", await RequestAsync(health, "GET /health HTTP/1.1\r\nHost: test\r\n\r\n"));
            using var write = await ConnectAsync(server.Port);
            Assert.StartsWith("HTTP/1.1 503", await RequestAsync(write, "PUT /v1/stream/x HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n"));
            var reused = sockets[0];
            Assert.StartsWith("HTTP/1.1 201", await RequestAsync(reused, "PUT /v1/stream/x HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"));
        }
        finally
        {
            foreach (var socket in sockets)
            {
                socket.Dispose();
            }
        }
    }

    [Fact]
    public async Task The_embedded_agent_holds_nothing_per_idle_session_and_answers_a_burst_within_the_descriptor_limit()
    {
        // An open-file limit of 2,048 caps the agent at 128 replies at once (a sixteenth of it); 1,500 stored sessions
        // cost it nothing while idle, and 300 questions at once wait for a free place instead of opening more.
        await using var server = await ServerProcess.StartWithDescriptorLimitAsync(2048, "--Agent:Enabled=true", "--Agent:TokensPerSecond=200");
        using var client = KeepAliveClient(server);
        for (var i = 0; i < 1500; i++)
        {
            using var created = await client.PutAsync($"/v1/sessions/s{i}", new StringContent("{}", Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        }

        var idle = server.OpenDescriptors;
        TestContext.Current.TestOutputHelper?.WriteLine($"{idle} descriptors open with 1,500 idle sessions");
        Assert.InRange(idle, 0, 400);

        var asked = Enumerable.Range(0, 300).Select(i => $"s{i * 5}").ToList();
        await Parallel.ForEachAsync(asked, new ParallelOptions { MaxDegreeOfParallelism = 32 }, async (id, ct) =>
        {
            using var posted = await client.PostAsync($"/v1/sessions/{id}/messages", new StringContent("{\"text\":\"hello\"}", Encoding.UTF8, "application/json"), ct);
            Assert.Equal(HttpStatusCode.Created, posted.StatusCode);
        });

        var peak = 0;
        foreach (var id in asked)
        {
            await WaitUntilAsync(async () =>
            {
                peak = Math.Max(peak, server.OpenDescriptors);
                return (await client.GetStringAsync($"/v1/sessions/{id}")).Contains("\"status\":\"finished\"", StringComparison.Ordinal);
            });
        }

        TestContext.Current.TestOutputHelper?.WriteLine($"at most {peak} descriptors open while answering 300 questions");
        Assert.InRange(peak, 0, 2048 - 500);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/health")).StatusCode);

        await server.RestartAsync();
        using var again = KeepAliveClient(server);
        Assert.InRange(server.OpenDescriptors, 0, 400);
        Assert.Equal(HttpStatusCode.OK, (await again.GetAsync("/health")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await again.PostAsync("/v1/sessions/s1499/messages", new StringContent("{\"text\":\"hello\"}", Encoding.UTF8, "application/json"))).StatusCode);
        await WaitUntilAsync(async () => (await again.GetStringAsync("/v1/sessions/s1499")).Contains("\"status\":\"finished\"", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Large_appends_past_the_in_flight_budget_get_503_while_small_appends_go_through()
    {
        await using var server = await ServerProcess.StartAsync(null, "--DurableStreams:MaxAppendBytesInFlight=33554432");
        using var client = KeepAliveClient(server);
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/t", Text(""))).StatusCode);

        // Three 16 MB appends of which 12 MB each arrive, and no more: the budget holds what arrived, so two fit the
        // 32 MiB budget and one is refused while its bytes come in. A declared length alone holds nothing.
        var sockets = new List<Socket>();
        var sends = new List<Task>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                sockets.Add(await ConnectAsync(server.Port));
                await sockets[^1].SendAsync(Encoding.ASCII.GetBytes("POST /v1/stream/t HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: 16777216\r\n\r\n"), SocketFlags.None);
            }

            var answers = sockets.Select(s => RequestAsync(s, string.Empty)).ToList();
            sends.AddRange(sockets.Select(SendTwelveMegabytesAsync));
            var first = await Task.WhenAny(answers).WaitAsync(TimeSpan.FromSeconds(30));
            var refused = await first;
            Assert.StartsWith("HTTP/1.1 503", refused);
            Assert.Contains("Retry-After: 1", refused);

            // Small appends are not held to the budget.
            Assert.Equal(HttpStatusCode.NoContent, (await client.PostAsync("/v1/stream/t", Text("small"))).StatusCode);
        }
        finally
        {
            foreach (var socket in sockets)
            {
                socket.Dispose();
            }

            await Task.WhenAll(sends);
        }

        // Once those requests end, the budget is free again.
        await WaitUntilAsync(async () =>
        {
            using var big = new ByteArrayContent(new byte[16 * 1024 * 1024]);
            big.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("text/plain");
            using var response = await client.PostAsync("/v1/stream/t", big);
            return response.StatusCode == HttpStatusCode.NoContent;
        });
    }

    public static TheoryData<string, string, bool> Endpoints => new()
    {
        // Read before authorization (the chat id, the wake token are in the body).
        { "/api/chat", """{"id":"c1","messages":[{"role":"user","parts":[{"type":"text","text":" """, false },
        { "/v1/stream/__ds/subscriptions/s1/callback", """{"token":" """, false },
        { "/v1/sessions/x/messages", """{"text":" """, false },
        { "/v1/stream/t", """[{"type":"x","key":"k","value":" """, false },

        // Read after authorization: a token holder gets no further.
        { "/v1/sessions/x/messages", """{"text":" """, true },
        { "/v1/stream/t", """[{"type":"x","key":"k","value":" """, true },
    };

    [Theory]
    [MemberData(nameof(Endpoints))]
    public async Task A_300_MB_chunked_body_leaves_the_server_memory_within_100_MB(string path, string prefix, bool withToken)
    {
        await using var server = await ServerProcess.StartAsync(null, $"--Auth:SigningKey={SigningKey}");
        using var client = new HttpClient { BaseAddress = server.BaseAddress, Timeout = Timeout };
        if (withToken)
        {
            client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", WriterToken());
            Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/sessions/x", new StringContent("{}", Encoding.UTF8, "application/json"))).StatusCode);
            Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/t", new StringContent("", Encoding.UTF8, "application/json"))).StatusCode);
        }

        var before = server.ResidentBytes;
        using var content = new StreamContent(new GeneratedStream(Encoding.UTF8.GetBytes(prefix), 300 * MiB));
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        HttpStatusCode? status = null;
        try
        {
            using var response = await client.PostAsync(path, content);
            status = response.StatusCode;
        }
        catch (HttpRequestException)
        {
            // The server answered (413 or 401) and closed the connection while the body was still being sent.
        }

        var growth = server.PeakResidentBytes - before;
        TestContext.Current.TestOutputHelper?.WriteLine($"{path}: status {status?.ToString() ?? "connection closed"}, peak RSS +{growth / MiB} MB");
        Assert.True(growth < 100 * MiB, $"The server's peak memory grew by {growth / MiB} MB.");
        Assert.True(status is null or HttpStatusCode.RequestEntityTooLarge or HttpStatusCode.Unauthorized, $"Answered {status}.");
        using var health = await client.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
    }

    private static string WriterToken() => new Microsoft.IdentityModel.JsonWebTokens.JsonWebTokenHandler().CreateToken(new Microsoft.IdentityModel.Tokens.SecurityTokenDescriptor
    {
        Subject = new System.Security.Claims.ClaimsIdentity([new System.Security.Claims.Claim("sub", "user:writer")]),
        Claims = new Dictionary<string, object>
        {
            ["grants"] = new Dictionary<string, object> { ["sessions/**"] = new[] { "read", "write", "control" }, ["t"] = new[] { "read", "write" } },
        },
        Expires = DateTime.UtcNow.AddMinutes(10),
        SigningCredentials = new Microsoft.IdentityModel.Tokens.SigningCredentials(
            new Microsoft.IdentityModel.Tokens.SymmetricSecurityKey(Encoding.UTF8.GetBytes(SigningKey)), Microsoft.IdentityModel.Tokens.SecurityAlgorithms.HmacSha256),
    });

    [Fact]
    public async Task A_reader_that_never_reads_is_cut_off_and_a_server_with_a_192_MiB_heap_takes_320_MB_past_it()
    {
        const int Appends = 40;
        const int AppendBytes = 8 * 1024 * 1024;

        // The heap is capped below what is appended: were the reader's queue to keep the appends, the server would run
        // out of memory and refuse them. The resident size is printed, not asserted: it also counts garbage.
        await using var server = await ServerProcess.StartWithHeapLimitAsync(192L * MiB);
        using var client = new HttpClient { BaseAddress = server.BaseAddress, Timeout = Timeout };
        using (var create = new ByteArrayContent([]))
        {
            create.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/octet-stream");
            Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/big", create)).StatusCode);
        }

        // A reader with a tiny receive window that reads its first control event and then nothing.
        using var stalled = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 4096 };
        await stalled.ConnectAsync(IPAddress.Loopback, server.Port).WaitAsync(Timeout);
        var head = await RequestAsync(stalled, "GET /v1/stream/big?offset=-1&live=sse HTTP/1.1\r\nHost: test\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 200", head);
        var before = server.ResidentBytes;

        var payload = new byte[AppendBytes];
        for (var i = 0; i < Appends; i++)
        {
            payload.AsSpan().Fill((byte)('a' + (i % 26)));
            using var append = new ByteArrayContent(payload);
            append.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/octet-stream");
            Assert.Equal(HttpStatusCode.NoContent, (await client.PostAsync("/v1/stream/big", append)).StatusCode);
        }

        // Without a byte bound the reader's queue would pin all 320 MB; with it the reader holds at most its 4 MiB queue
        // and the two appends in flight, and the rest is garbage the collector reclaims.
        TestContext.Current.TestOutputHelper?.WriteLine($"RSS +{(server.ResidentBytes - before) / MiB} MB with {Appends * AppendBytes / MiB} MB appended");
        Assert.False(server.HasExited, "The server exited.");
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/health")).StatusCode);

        // The stalled reader, once it reads, ends: it was cut off. A reader resuming from its offset gets every byte.
        var received = Dechunk(await ReadToEndAsync(stalled));
        const string Control = "event: control\ndata:";
        var lastControl = received[(received.LastIndexOf(Control, StringComparison.Ordinal) + Control.Length)..].Split('\n')[0];
        var resumeAt = SseClient.ParseControl(lastControl.Trim()).NextOffset;
        Assert.True(DurableSessions.StreamOffset.TryParse(resumeAt, out var position));
        Assert.True(position < (long)Appends * AppendBytes, "The stalled reader was not cut off.");
        Assert.Equal((long)Appends * AppendBytes, position + await CatchUpBytesAsync(client, resumeAt));
    }

    [Fact]
    public async Task One_websocket_with_150_subscriptions_catching_up_on_a_long_stream_holds_a_few_reads_and_each_gets_every_byte()
    {
        const int Subscriptions = 150;
        const int Appends = 2;
        var chunk = new string('s', 1024 * 1024);

        // Each subscription's first store read is 1 MiB: were they all held at once while the connection's send queue
        // is full, 150 MiB would not fit in the 128 MiB heap.
        await using var server = await ServerProcess.StartWithHeapLimitAsync(128L * MiB);
        using var client = new HttpClient { BaseAddress = server.BaseAddress, Timeout = Timeout };
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/long", new StringContent(string.Empty, Encoding.UTF8, "text/plain"))).StatusCode);
        for (var i = 0; i < Appends; i++)
        {
            Assert.Equal(HttpStatusCode.NoContent, (await client.PostAsync("/v1/stream/long", new StringContent(chunk, Encoding.UTF8, "text/plain"))).StatusCode);
        }

        // The client subscribes 150 times and reads nothing for a while, then reads everything.
        await using var socket = await SocketClient.ConnectAsync(server.BaseAddress, pauseAfterHello: true);
        for (var i = 0; i < Subscriptions; i++)
        {
            await socket.SendAsync(new System.Text.Json.Nodes.JsonObject { ["op"] = "subscribe", ["sub"] = $"s{i}", ["path"] = "long", ["offset"] = "-1" });
        }

        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/health")).StatusCode);
        socket.Resume();
        var received = new long[Subscriptions];
        var complete = 0;
        while (complete < Subscriptions)
        {
            var message = await socket.NextAsync(m => m["type"]?.GetValue<string>() is "data" or "error", TimeSpan.FromSeconds(60));
            Assert.Equal("data", message["type"]!.GetValue<string>());
            var sub = int.Parse(message["sub"]!.GetValue<string>()[1..], System.Globalization.CultureInfo.InvariantCulture);
            received[sub] += message["text"]!.GetValue<string>().Length;
            if (received[sub] == (long)Appends * chunk.Length)
            {
                complete++;
            }
        }

        Assert.All(received, bytes => Assert.Equal((long)Appends * chunk.Length, bytes));
        Assert.False(server.HasExited, "The server exited.");
    }

    private static async Task<long> CatchUpBytesAsync(HttpClient client, string offset)
    {
        long total = 0;
        while (true)
        {
            using var response = await client.GetAsync($"/v1/stream/big?offset={offset}");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            total += (await response.Content.ReadAsByteArrayAsync()).Length;
            offset = response.Headers.GetValues("Stream-Next-Offset").Single();
            if (response.Headers.TryGetValues("Stream-Up-To-Date", out var upToDate) && upToDate.Single() == "true")
            {
                return total;
            }
        }
    }

    /// <summary>Reads a chunked response body to its end (the server ended the response) or to the connection's end.</summary>
    private static async Task<byte[]> ReadToEndAsync(Socket socket)
    {
        using var received = new MemoryStream();
        var buffer = new byte[1024 * 1024];
        using var cts = new CancellationTokenSource(Timeout);
        while (true)
        {
            var read = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
            if (read == 0)
            {
                return received.ToArray();
            }

            received.Write(buffer, 0, read);
            if (received.Length >= 5 && received.GetBuffer().AsSpan((int)received.Length - 5, 5).SequenceEqual("0\r\n\r\n"u8))
            {
                return received.ToArray();
            }
        }
    }

    private static string Dechunk(byte[] body)
    {
        var text = new StringBuilder();
        var at = 0;
        while (at < body.Length)
        {
            var lineEnd = body.AsSpan(at).IndexOf("\r\n"u8);
            var size = Convert.ToInt32(Encoding.ASCII.GetString(body, at, lineEnd), 16);
            if (size == 0)
            {
                break;
            }

            text.Append(Encoding.ASCII.GetString(body, at + lineEnd + 2, size));
            at += lineEnd + 2 + size + 2;
        }

        return text.ToString();
    }

    private static HttpClient KeepAliveClient(ServerProcess server)
        => new(new SocketsHttpHandler { MaxConnectionsPerServer = 1 }) { BaseAddress = server.BaseAddress, Timeout = Timeout };

    private static StringContent Text(string text) => new(text, Encoding.UTF8, "text/plain");

    private static async Task<string> NextDataAsync(IAsyncEnumerator<(string Event, string Data)> events)
    {
        while (await events.MoveNextAsync().AsTask().WaitAsync(Timeout))
        {
            if (events.Current.Event == "data")
            {
                return events.Current.Data;
            }
        }

        throw new InvalidOperationException("The live reader ended.");
    }

    /// <summary>Sends 12 MiB of body bytes; a connection the server closes (after refusing it) just ends the sending.</summary>
    private static async Task SendTwelveMegabytesAsync(Socket socket)
    {
        var chunk = new byte[64 * 1024];
        try
        {
            for (var sent = 0; sent < 12 * 1024 * 1024; sent += chunk.Length)
            {
                await socket.SendAsync(chunk, SocketFlags.None).WaitAsync(Timeout);
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or TimeoutException)
        {
        }
    }

    private static async Task<Socket> ConnectAsync(int port, IPAddress? from = null)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (from is not null)
            {
                socket.Bind(new IPEndPoint(from, 0));
            }

            await socket.ConnectAsync(IPAddress.Loopback, port).WaitAsync(Timeout);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Sends a raw request and returns the response head (and, if asked, the body, for Content-Length answers).</summary>
    private static async Task<string> RequestAsync(Socket socket, string request, bool readBody = false)
    {
        using var cts = new CancellationTokenSource(Timeout);
        await socket.SendAsync(Encoding.ASCII.GetBytes(request), SocketFlags.None, cts.Token);
        var received = new List<byte>();
        var buffer = new byte[1];
        while (true)
        {
            if (await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token) == 0)
            {
                return Encoding.ASCII.GetString([.. received]);
            }

            received.Add(buffer[0]);
            if (received.Count >= 4 && received[^4] == '\r' && received[^3] == '\n' && received[^2] == '\r' && received[^1] == '\n')
            {
                break;
            }
        }

        var head = Encoding.ASCII.GetString([.. received]);
        if (!readBody)
        {
            return head;
        }

        var length = int.Parse(head.Split("\r\n").First(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase))[15..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
        var body = new byte[length];
        var offset = 0;
        while (offset < length)
        {
            var read = await socket.ReceiveAsync(body.AsMemory(offset), SocketFlags.None, cts.Token);
            if (read == 0)
            {
                break;
            }

            offset += read;
        }

        return head + Encoding.UTF8.GetString(body, 0, offset);
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition)
    {
        using var cts = new CancellationTokenSource(Timeout);
        while (!await condition())
        {
            await Task.Delay(100, cts.Token);
        }
    }

    /// <summary>A body of <paramref name="length"/> bytes generated as it is sent: a prefix, then the letter a.</summary>
    private sealed class GeneratedStream(byte[] prefix, long length) : Stream
    {
        private long _position;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position
        {
            get => _position;
            set => throw new NotSupportedException();
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            var count = (int)Math.Min(buffer.Length, length - _position);
            for (var i = 0; i < count; i++)
            {
                var at = _position + i;
                buffer[i] = at < prefix.Length ? prefix[at] : (byte)'a';
            }

            _position += count;
            return count;
        }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => new(Read(buffer.Span));

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => Task.FromResult(Read(buffer.AsSpan(offset, count)));

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
