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
