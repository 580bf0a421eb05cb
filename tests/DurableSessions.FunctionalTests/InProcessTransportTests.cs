using System.Net;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.AspNetCore.InProcess;
using DurableSessions.Client;
using Microsoft.Extensions.DependencyInjection;

namespace DurableSessions.FunctionalTests;

/// <summary>The in-process transport the hosted agent uses: requests and WebSockets that skip the network.</summary>
public sealed class InProcessTransportTests
{
    [Fact]
    public async Task A_client_in_process_appends_over_one_websocket_in_order_and_readers_over_the_network_see_every_append()
    {
        await using var server = await InProcessServer.StartAsync(services: InProcessTransport.AddTo);
        var transport = server.Services.GetRequiredService<InProcessTransport>();
        Assert.True(transport.IsReady);
        await server.Client.PutAsync(new Uri("/v1/stream/inproc/ws", UriKind.Relative), Json("[]"));

        using var http = new HttpClient(transport.CreateHandler());
        using var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, UseWebSocket = true }, http);
        await Task.WhenAll(Enumerable.Range(0, 4).Select(p => Task.Run(async () =>
        {
            using var producer = new StreamProducer(client, "inproc/ws", $"producer-{p}");
            for (var i = 0; i < 50; i++)
            {
                await producer.AppendAsync(new JsonArray(new JsonObject { ["p"] = p, ["i"] = i }));
            }
        })));

        // Every append went over the socket (none fell back to a request each), and each producer's order held.
        Assert.False(client.Sockets!.Unavailable);
        Assert.Equal(200, client.Sockets.Appended);
        var stored = JsonNode.Parse(await server.Client.GetStringAsync(new Uri("/v1/stream/inproc/ws?offset=-1", UriKind.Relative)))!.AsArray();
        Assert.Equal(200, stored.Count);
        for (var p = 0; p < 4; p++)
        {
            Assert.Equal(Enumerable.Range(0, 50), stored.Where(m => m!["p"]!.GetValue<int>() == p).Select(m => m!["i"]!.GetValue<int>()));
        }
    }

    [Fact]
    public async Task An_in_process_websocket_carries_subscriptions_and_closing_it_ends_the_servers_side()
    {
        await using var server = await InProcessServer.StartAsync(services: InProcessTransport.AddTo);
        var transport = server.Services.GetRequiredService<InProcessTransport>();
        await server.Client.PutAsync(new Uri("/v1/stream/inproc/sub", UriKind.Relative), Json("[{\"n\":1}]"));

        using var invoker = new HttpMessageInvoker(transport.CreateHandler());
        using var socket = new ClientWebSocket();
        socket.Options.AddSubProtocol("durable-streams.v1");
        await socket.ConnectAsync(new UriBuilder(server.BaseAddress) { Scheme = "ws", Path = "/v1/ws" }.Uri, invoker, CancellationToken.None);
        Assert.Equal(WebSocketState.Open, socket.State);
        Assert.Equal("durable-streams.v1", socket.SubProtocol);

        await Send(socket, "{\"op\":\"subscribe\",\"sub\":\"s\",\"path\":\"inproc/sub\",\"offset\":\"-1\"}");
        var received = new StringBuilder();
        while (!received.ToString().Contains("\"n\":1", StringComparison.Ordinal))
        {
            received.Append(await Receive(socket));
        }

        // The client closes; the server answers the close handshake, which only a live server side can do.
        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", new CancellationTokenSource(TimeSpan.FromSeconds(10)).Token);
        Assert.Equal(WebSocketState.Closed, socket.State);
        Assert.Equal(WebSocketCloseStatus.NormalClosure, socket.CloseStatus);
    }

    [Fact]
    public async Task An_ordinary_request_in_process_is_not_upgraded()
    {
        await using var server = await InProcessServer.StartAsync(services: InProcessTransport.AddTo);
        var transport = server.Services.GetRequiredService<InProcessTransport>();
        using var http = new HttpClient(transport.CreateHandler()) { BaseAddress = server.BaseAddress };

        // A plain GET of the WebSocket endpoint is refused as over the network, not handed a socket.
        var answer = await http.GetAsync(new Uri("/v1/ws", UriKind.Relative));
        Assert.NotEqual(HttpStatusCode.SwitchingProtocols, answer.StatusCode);
        Assert.True((int)answer.StatusCode is >= 400 and < 500, $"got {(int)answer.StatusCode}");
    }

    [Fact]
    public async Task A_read_of_a_disposed_in_process_response_fails_as_a_dropped_connection()
    {
        await using var server = await InProcessServer.StartAsync(services: InProcessTransport.AddTo);
        var transport = server.Services.GetRequiredService<InProcessTransport>();
        await server.Client.PutAsync(new Uri("/v1/stream/inproc/cut", UriKind.Relative), Json("[]"));
        using var http = new HttpClient(transport.CreateHandler()) { BaseAddress = server.BaseAddress };

        // HttpClient disposes a response whose read it cancels while its buffering loop may still read the body (an
        // agent's long-poll claim when the server stops): that read fails as a read from a closed connection, which
        // clients treat as a dropped connection, not as a misuse of the in-memory pipe.
        var response = await http.GetAsync(new Uri("/v1/stream/inproc/cut?offset=-1&live=sse", UriKind.Relative), HttpCompletionOption.ResponseHeadersRead);
        var body = await response.Content.ReadAsStreamAsync();
        response.Dispose();
        await Assert.ThrowsAsync<IOException>(async () => _ = await body.ReadAsync(new byte[4096]));
        Assert.Throws<IOException>(() => body.ReadByte());
    }

    [Fact]
    public async Task An_in_process_appender_stores_each_producer_seq_once_and_answers_refusals_as_the_protocol_does()
    {
        await using var server = await InProcessServer.StartAsync(configure: o => o.MaxAppendBytes = 4096, services: InProcessTransport.AddTo);
        var transport = server.Services.GetRequiredService<InProcessTransport>();
        await server.Client.PutAsync(new Uri("/v1/stream/inproc/direct", UriKind.Relative), Json("[]"));
        var appender = await transport.CreateAppenderAsync(accessToken: null);

        var first = await appender.AppendAsync("inproc/direct", "[{\"n\":0}]"u8.ToArray(), "p", 0, 0, CancellationToken.None);
        var second = await appender.AppendAsync("inproc/direct", "[{\"n\":1},{\"n\":2}]"u8.ToArray(), "p", 0, 1, CancellationToken.None);
        Assert.True(first.Succeeded && second.Succeeded, $"{first} {second}");
        Assert.NotEqual(first.Offset, second.Offset);

        // A retried sequence number is answered as stored and kept once.
        var retried = await appender.AppendAsync("inproc/direct", "[{\"n\":1},{\"n\":2}]"u8.ToArray(), "p", 0, 1, CancellationToken.None);
        Assert.True(retried.Succeeded, retried.ToString());

        // Refusals carry the status and code an HTTP append gets, and store nothing.
        var gap = await appender.AppendAsync("inproc/direct", "[{\"n\":9}]"u8.ToArray(), "p", 0, 5, CancellationToken.None);
        Assert.Equal((409, "PRODUCER_SEQ_GAP"), (gap.Status, gap.Code));
        var next = await appender.AppendAsync("inproc/direct", "[{\"n\":9}]"u8.ToArray(), "p", 0, 2, CancellationToken.None);
        var other = await appender.AppendAsync("inproc/direct", "[{\"n\":10}]"u8.ToArray(), "q", 3, 0, CancellationToken.None);
        Assert.True(next.Succeeded && other.Succeeded, $"{next} {other}");
        var stale = await appender.AppendAsync("inproc/direct", "[{\"n\":11}]"u8.ToArray(), "q", 2, 0, CancellationToken.None);
        Assert.Equal((403, "STALE_PRODUCER_EPOCH"), (stale.Status, stale.Code));
        var notJson = await appender.AppendAsync("inproc/direct", "[{\"n\":"u8.ToArray(), "p", 0, 3, CancellationToken.None);
        Assert.Equal((400, "INVALID_JSON"), (notJson.Status, notJson.Code));
        var missing = await appender.AppendAsync("inproc/nowhere", "[{\"n\":1}]"u8.ToArray(), "p", 0, 0, CancellationToken.None);
        Assert.Equal(404, missing.Status);
        Assert.False(missing.Succeeded);

        // What a request or a WebSocket message is refused for before it reaches a stream: its path, its size, its producer.
        Assert.Equal((400, "INVALID_PATH"), Refusal(await appender.AppendAsync("inproc//direct", "[{\"n\":1}]"u8.ToArray(), "p", 0, 6, CancellationToken.None)));
        foreach (var bad in new[] { "inproc/./direct", "inproc/..", "inproc/direct/", "/inproc" })
        {
            Assert.Equal((400, "INVALID_PATH"), Refusal(await appender.AppendAsync(bad, "[{\"n\":1}]"u8.ToArray(), "p", 0, 6, CancellationToken.None)));
        }

        Assert.Equal((400, "INVALID_PATH"), Refusal(await appender.AppendAsync(DurableSessions.AspNetCore.Streams.StreamPaths.Reserved + "/x", "[{\"n\":1}]"u8.ToArray(), "p", 0, 6, CancellationToken.None)));
        Assert.Equal((400, "INVALID_PRODUCER"), Refusal(await appender.AppendAsync("inproc/direct", "[{\"n\":1}]"u8.ToArray(), new string('p', 257), 0, 0, CancellationToken.None)));
        Assert.Equal((400, "INVALID_PRODUCER"), Refusal(await appender.AppendAsync("inproc/direct", "[{\"n\":1}]"u8.ToArray(), "p", 0, -1, CancellationToken.None)));
        Assert.Equal((400, "INVALID_PRODUCER"), Refusal(await appender.AppendAsync("inproc/direct", "[{\"n\":1}]"u8.ToArray(), "p", 1L << 53, 0, CancellationToken.None)));
        var tooLarge = "[{\"pad\":\"" + new string('x', 4096) + "\"}]";
        Assert.Equal((413, "PAYLOAD_TOO_LARGE"), Refusal(await appender.AppendAsync("inproc/direct", Encoding.UTF8.GetBytes(tooLarge), "p", 0, 6, CancellationToken.None)));

        var stored = JsonNode.Parse(await server.Client.GetStringAsync(new Uri("/v1/stream/inproc/direct?offset=-1", UriKind.Relative)))!.AsArray();
        Assert.Equal([0, 1, 2, 9, 10], stored.Select(m => m!["n"]!.GetValue<int>()));
    }

    [Fact]
    public async Task An_in_process_appender_keeps_what_it_stored_and_handed_to_live_readers_when_the_caller_reuses_its_buffer()
    {
        await using var server = await InProcessServer.StartAsync(services: InProcessTransport.AddTo);
        var transport = server.Services.GetRequiredService<InProcessTransport>();
        await server.Client.PutAsync(new Uri("/v1/stream/inproc/reuse", UriKind.Relative), Json("[]"));

        // What live readers are handed, kept to be read after the caller has reused its buffer (an SSE reader may encode a
        // change only then).
        var handed = new System.Collections.Concurrent.ConcurrentQueue<DurableSessions.Live.LiveAppend>();
        server.Services.GetRequiredService<StreamStore>().Fanout.AddObserver(change =>
        {
            if (change.Path == "inproc/reuse")
            {
                handed.Enqueue(change);
            }
        });
        await using var appender = await transport.CreateAppenderAsync(accessToken: null);

        // One buffer for every append, overwritten as soon as each returns, as a producer reusing a pooled buffer does:
        // an array of messages and a single message (which framing would otherwise keep as the caller's own bytes).
        var buffer = new byte[64];
        var seq = 0;
        foreach (var json in new[] { "[{\"n\":1},{\"n\":2}]", "{\"n\":3}", "  [{\"n\":4}]" })
        {
            var length = Encoding.UTF8.GetBytes(json, buffer);
            var result = await appender.AppendAsync("inproc/reuse", buffer.AsMemory(0, length), "p", 0, seq++, CancellationToken.None);
            Assert.True(result.Succeeded, result.ToString());
            Array.Fill(buffer, (byte)'x');
        }

        var stored = JsonNode.Parse(await server.Client.GetStringAsync(new Uri("/v1/stream/inproc/reuse?offset=-1", UriKind.Relative)))!.AsArray();
        Assert.Equal([1, 2, 3, 4], stored.Select(m => m!["n"]!.GetValue<int>()));
        var live = handed.Select(change => Encoding.UTF8.GetString(change.Chunk.Data.Span));
        Assert.Equal(["{\"n\":1},{\"n\":2}", "{\"n\":3}", "{\"n\":4}"], live);
    }

    [Fact]
    public async Task An_in_process_appender_holds_its_token_to_its_grants()
    {
        await using var server = await InProcessServer.StartAsync(services: s =>
        {
            InProcessTransport.AddTo(s);
            s.Configure<DurableSessions.AspNetCore.Auth.AccessOptions>(o => o.SigningKey = "in-process-appender-test-key-of-32-bytes");
        });
        var transport = server.Services.GetRequiredService<InProcessTransport>();
        var tokens = server.Services.GetRequiredService<DurableSessions.AspNetCore.Auth.AccessTokens>();
        var admin = tokens.Issue("admin", new Dictionary<string, DurableSessions.AspNetCore.Auth.Capability[]> { ["**"] = [DurableSessions.AspNetCore.Auth.Capability.Read, DurableSessions.AspNetCore.Auth.Capability.Write] }, TimeSpan.FromMinutes(5));
        using var adminClient = new HttpClient { BaseAddress = server.BaseAddress };
        adminClient.DefaultRequestHeaders.Authorization = new("Bearer", admin);
        foreach (var path in new[] { "granted/a", "other/b" })
        {
            Assert.Equal(HttpStatusCode.Created, (await adminClient.PutAsync(new Uri($"/v1/stream/{path}", UriKind.Relative), Json("[]"))).StatusCode);
        }

        // No token, or one the server did not sign: no appender at all.
        await Assert.ThrowsAsync<UnauthorizedAccessException>(() => transport.CreateAppenderAsync(null));
        await Assert.ThrowsAsync<UnauthorizedAccessException>(() => transport.CreateAppenderAsync(admin[..^4] + "AAAA"));

        var writer = tokens.Issue("writer", new Dictionary<string, DurableSessions.AspNetCore.Auth.Capability[]> { ["granted/**"] = [DurableSessions.AspNetCore.Auth.Capability.Write] }, TimeSpan.FromMinutes(5));
        var appender = await transport.CreateAppenderAsync(writer);
        var allowed = await appender.AppendAsync("granted/a", "[{\"n\":1}]"u8.ToArray(), "p", 0, 0, CancellationToken.None);
        Assert.True(allowed.Succeeded, allowed.ToString());
        var refused = await appender.AppendAsync("other/b", "[{\"n\":1}]"u8.ToArray(), "p", 0, 0, CancellationToken.None);
        Assert.Equal((403, "FORBIDDEN"), (refused.Status, refused.Code));

        Assert.Equal("[{\"n\":1}]", await adminClient.GetStringAsync(new Uri("/v1/stream/granted/a?offset=-1", UriKind.Relative)));
        Assert.Equal("[]", await adminClient.GetStringAsync(new Uri("/v1/stream/other/b?offset=-1", UriKind.Relative)));
    }

    private static (int, string?) Refusal(InProcessAppendResult result) => (result.Status, result.Code);

    private static async Task Send(ClientWebSocket socket, string text)
        => await socket.SendAsync(Encoding.UTF8.GetBytes(text), WebSocketMessageType.Text, endOfMessage: true, CancellationToken.None);

    private static async Task<string> Receive(ClientWebSocket socket)
    {
        var buffer = new byte[64 * 1024];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var message = new StringBuilder();
        WebSocketReceiveResult result;
        do
        {
            result = await socket.ReceiveAsync(buffer, timeout.Token);
            message.Append(Encoding.UTF8.GetString(buffer, 0, result.Count));
        }
        while (!result.EndOfMessage);
        return message.ToString();
    }

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");
}
