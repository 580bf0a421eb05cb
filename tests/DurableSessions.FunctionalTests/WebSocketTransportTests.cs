using System.Net;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.AspNetCore.Auth;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace DurableSessions.FunctionalTests;

/// <summary>The WebSocket transport (docs/websocket.md) against a real Kestrel server.</summary>
public sealed class WebSocketTransportTests
{
    private const string Key = "websocket-tests-signing-key-0123456789abcdef";

    [Fact]
    public async Task One_connection_follows_many_streams_and_resumes_from_an_offset_exactly_as_http_does()
    {
        await using var server = await InProcessServer.StartAsync();
        var http = server.Client;
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.Created, (await http.PutAsync(new Uri($"/v1/stream/ws/s{i}", UriKind.Relative), Json("[]"))).StatusCode);
            Assert.Equal(HttpStatusCode.NoContent, (await http.PostAsync(new Uri($"/v1/stream/ws/s{i}", UriKind.Relative), Json($"{{\"n\":0,\"s\":{i}}}"))).StatusCode);
        }

        await using var socket = await SocketClient.ConnectAsync(server.BaseAddress);
        for (var i = 0; i < 3; i++)
        {
            await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = $"s{i}", ["path"] = $"ws/s{i}", ["offset"] = "-1" });
        }

        // Catch-up for each stream: its data, which says it reached the tail.
        for (var i = 0; i < 3; i++)
        {
            var sub = $"s{i}";
            var data = await socket.NextAsync(m => Type(m) == "data" && Sub(m) == sub);
            Assert.Equal($"[{{\"n\":0,\"s\":{i}}}]", data["data"]!.ToJsonString());
            Assert.True(data["upToDate"]?.GetValue<bool>());
        }

        // Subscribed at the tail, nothing to send: up-to-date on its own.
        await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "tail", ["path"] = "ws/s0", ["offset"] = "now" });
        await socket.NextAsync(m => Type(m) == "up-to-date" && Sub(m) == "tail");

        // Live: an HTTP append reaches the WebSocket subscriber; a WebSocket append reaches an HTTP reader.
        await http.PostAsync(new Uri("/v1/stream/ws/s1", UriKind.Relative), Json("{\"n\":1}"));
        var live = await socket.NextAsync(m => Type(m) == "data" && Sub(m) == "s1");
        Assert.Equal("[{\"n\":1}]", live["data"]!.ToJsonString());
        var resumeAt = live["offset"]!.GetValue<string>();

        await socket.SendAsync(new JsonObject { ["op"] = "append", ["id"] = "a1", ["path"] = "ws/s1", ["data"] = new JsonObject { ["n"] = 2 } });
        var ack = await socket.NextAsync(m => Type(m) == "ack" && m["id"]!.GetValue<string>() == "a1");
        Assert.Equal(204, ack["status"]!.GetValue<int>());
        await socket.NextAsync(m => Type(m) == "data" && Sub(m) == "s1" && m["data"]!.ToJsonString() == "[{\"n\":2}]");
        var read = await http.GetStringAsync(new Uri("/v1/stream/ws/s1?offset=-1", UriKind.Relative));
        Assert.Equal("[{\"n\":0,\"s\":1},{\"n\":1},{\"n\":2}]", read);

        // A second connection resumes from the offset the first had reached and gets exactly what came after.
        await using var second = await SocketClient.ConnectAsync(server.BaseAddress);
        await second.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "again", ["path"] = "ws/s1", ["offset"] = resumeAt });
        var resumed = await second.NextAsync(m => Type(m) == "data");
        Assert.Equal("[{\"n\":2}]", resumed["data"]!.ToJsonString());
        var fromHttp = await http.GetAsync(new Uri($"/v1/stream/ws/s1?offset={resumeAt}", UriKind.Relative));
        Assert.Equal(fromHttp.Headers.GetValues("Stream-Next-Offset").Single(), resumed["offset"]!.GetValue<string>());

        // A message far larger than the connection's idle receive buffer, and a small one after it.
        var large = new string('L', 200_000);
        await socket.SendAsync(new JsonObject { ["op"] = "append", ["id"] = "large", ["path"] = "ws/s0", ["data"] = new JsonObject { ["large"] = large } });
        Assert.Equal("ack", Type(await socket.NextAsync(m => m["id"]?.GetValue<string>() == "large")));
        await socket.SendAsync(new JsonObject { ["op"] = "append", ["id"] = "small", ["path"] = "ws/s0", ["data"] = new JsonObject { ["small"] = 1 } });
        Assert.Equal("ack", Type(await socket.NextAsync(m => m["id"]?.GetValue<string>() == "small")));
        Assert.Equal($"[{{\"n\":0,\"s\":0}},{{\"large\":\"{large}\"}},{{\"small\":1}}]", await http.GetStringAsync(new Uri("/v1/stream/ws/s0?offset=-1", UriKind.Relative)));

        // Closing the stream ends the subscription with "closed"; unsubscribing answers "unsubscribed".
        await socket.SendAsync(new JsonObject { ["op"] = "append", ["id"] = "close", ["path"] = "ws/s2", ["close"] = true });
        await socket.NextAsync(m => Type(m) == "closed" && Sub(m) == "s2");
        await socket.SendAsync(new JsonObject { ["op"] = "unsubscribe", ["sub"] = "s0" });
        await socket.NextAsync(m => Type(m) == "unsubscribed" && Sub(m) == "s0");
    }

    [Fact]
    public async Task A_subscriber_cut_at_100_random_points_resumes_each_time_and_ends_byte_identical_to_an_uncut_reader()
    {
        await using var server = await InProcessServer.StartAsync();
        await server.Client.PutAsync(new Uri("/v1/stream/chaos/ws", UriKind.Relative), Json("[]"));
        await using var proxy = new ChaosProxy(server.BaseAddress, maxCuts: 100, seed: 12, maxBytesBeforeCut: 3000);

        // A writer appends events of varied sizes while the subscriber reads, then closes the stream.
        var random = new Random(5);
        var writer = Task.Run(async () =>
        {
            for (var i = 0; i < 400; i++)
            {
                var pad = new string((char)('a' + (i % 26)), random.Next(0, 2000));
                var response = await server.Client.PostAsync(new Uri("/v1/stream/chaos/ws", UriKind.Relative), Json($"{{\"i\":{i},\"pad\":\"{pad}\"}}"));
                Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
            }

            using var close = new HttpRequestMessage(HttpMethod.Post, "/v1/stream/chaos/ws");
            close.Headers.Add("Stream-Closed", "true");
            Assert.Equal(HttpStatusCode.NoContent, (await server.Client.SendAsync(close)).StatusCode);
        });

        var items = new List<string>();
        var offset = "-1";
        var closed = false;
        for (var attempt = 0; !closed; attempt++)
        {
            Assert.True(attempt < 2000, "the subscriber never finished");
            try
            {
                await using var socket = await SocketClient.ConnectAsync(proxy.Address);
                await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "r", ["path"] = "chaos/ws", ["offset"] = offset });
                while (true)
                {
                    var message = await socket.NextAsync(m => Type(m) is "data" or "closed" or "error", TimeSpan.FromSeconds(20));
                    Assert.NotEqual("error", Type(message));
                    if (Type(message) == "closed")
                    {
                        closed = true;
                        break;
                    }

                    items.AddRange(message["data"]!.AsArray().Select(item => item!.ToJsonString()));
                    offset = message["offset"]!.GetValue<string>();
                }
            }
            catch (Exception ex) when (ex is WebSocketException or InvalidOperationException or IOException or HttpRequestException)
            {
                // Cut by the proxy: connect again and resume from the last offset received.
            }
        }

        await writer;
        Assert.Equal(100, proxy.Cuts);
        var uncut = await server.Client.GetStringAsync(new Uri("/v1/stream/chaos/ws?offset=-1", UriKind.Relative));
        Assert.Equal(uncut, "[" + string.Join(",", items) + "]");
        Assert.Equal(400, items.Count);
    }

    [Fact]
    public async Task The_dotnet_clients_producers_append_over_one_websocket_exactly_once_through_cut_connections()
    {
        await using var server = await InProcessServer.StartAsync();
        await CreateStreamAsync(server, "client/ws");
        await using var proxy = new ChaosProxy(server.BaseAddress, maxCuts: 30, seed: 3, maxBytesBeforeCut: 2000);
        using var client = new DurableSessions.Client.DurableSessionsClient(DurableSessions.Client.DurableSessionsClientOptions.Default with
        {
            BaseAddress = proxy.Address,
            ReconnectDelay = TimeSpan.FromMilliseconds(10),
        });

        // Four producers write side by side on the client's one socket.
        await Task.WhenAll(Enumerable.Range(0, 4).Select(p => Task.Run(async () =>
        {
            using var producer = new DurableSessions.Client.StreamProducer(client, "client/ws", $"producer-{p}");
            for (var i = 0; i < 50; i++)
            {
                await producer.AppendAsync(new JsonArray(new JsonObject { ["p"] = p, ["i"] = i }));
            }
        })));

        Assert.True(client.Sockets!.Appended > 0, "no append went over the WebSocket");
        Assert.False(client.Sockets.Unavailable);
        var stored = JsonNode.Parse(await server.Client.GetStringAsync(new Uri("/v1/stream/client/ws?offset=-1", UriKind.Relative)))!.AsArray();
        Assert.Equal(200, stored.Count);
        for (var p = 0; p < 4; p++)
        {
            Assert.Equal(Enumerable.Range(0, 50), stored.Where(m => m!["p"]!.GetValue<int>() == p).Select(m => m!["i"]!.GetValue<int>()));
        }

        Assert.Equal(30, proxy.Cuts);
    }

    [Fact]
    public async Task Appends_in_flight_on_a_websocket_the_network_dropped_silently_are_sent_again_on_a_new_one_once_each()
    {
        await using var server = await InProcessServer.StartAsync();
        await CreateStreamAsync(server, "client/silent");
        await using var proxy = new ChaosProxy(server.BaseAddress, maxCuts: 0, seed: 1);
        using var client = new DurableSessions.Client.DurableSessionsClient(DurableSessions.Client.DurableSessionsClientOptions.Default with
        {
            BaseAddress = proxy.Address,
            WebSocketKeepAlive = TimeSpan.FromSeconds(2),
        });
        using var producer = new DurableSessions.Client.StreamProducer(client, "client/silent", "p");
        await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 1 }));
        Assert.True(client.Sockets!.Appended > 0, "the first append did not go over the WebSocket");
        var connects = client.Sockets.Connects;

        // The network drops the socket's traffic with no reset: the next append waits on it until the unanswered ping
        // gives the socket up, then goes out on a new one.
        proxy.Freeze();
        var second = producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 2 }));
        await second.WaitAsync(TimeSpan.FromSeconds(30));
        await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 3 }));
        Assert.True(client.Sockets.Connects > connects, "the silent socket was never given up");
        var stored = JsonNode.Parse(await server.Client.GetStringAsync(new Uri("/v1/stream/client/silent?offset=-1", UriKind.Relative)))!.AsArray();
        Assert.Equal([1, 2, 3], stored.Select(m => m!["n"]!.GetValue<int>()));
    }

    [Fact]
    public async Task A_websocket_upgrade_nobody_answers_is_given_up_and_appends_go_over_http_without_another_try_for_a_while()
    {
        await using var server = await InProcessServer.StartAsync();
        await CreateStreamAsync(server, "client/unanswered");
        await using var proxy = new ChaosProxy(server.BaseAddress, maxCuts: 0, seed: 1) { SwallowUpgrades = true };
        using var client = new DurableSessions.Client.DurableSessionsClient(DurableSessions.Client.DurableSessionsClientOptions.Default with { BaseAddress = proxy.Address });
        using var producer = new DurableSessions.Client.StreamProducer(client, "client/unanswered", "p");

        // The first append waits for the connect timeout (10 s), then goes over HTTP; the next ones go over HTTP at once,
        // with no second upgrade while the retry delay (30 s) runs.
        await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 1 })).WaitAsync(TimeSpan.FromSeconds(30));
        await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 2 })).WaitAsync(TimeSpan.FromSeconds(30));
        await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 3 })).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1, proxy.UpgradesSwallowed);
        Assert.Equal(0, client.Sockets!.Appended);
        var stored = JsonNode.Parse(await server.Client.GetStringAsync(new Uri("/v1/stream/client/unanswered?offset=-1", UriKind.Relative)))!.AsArray();
        Assert.Equal([1, 2, 3], stored.Select(m => m!["n"]!.GetValue<int>()));
    }

    [Fact]
    public async Task An_upgrade_answered_without_one_sends_appends_over_http_for_a_while_then_the_websocket_is_tried_again()
    {
        await using var server = await InProcessServer.StartAsync();
        await CreateStreamAsync(server, "client/refused");
        using var upgrades = new UpgradeRefusal(new SocketsHttpHandler()) { Refuse = true };
        using var http = new HttpClient(upgrades) { BaseAddress = server.BaseAddress };
        using var client = new DurableSessions.Client.DurableSessionsClient(DurableSessions.Client.DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress }, http);
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        client.Sockets!.Time = clock;
        using var producer = new DurableSessions.Client.StreamProducer(client, "client/refused", "p");

        // A proxy answers the upgrade 404 (as during a deployment): the append goes over HTTP, and so does the next one,
        // without another upgrade.
        await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 1 }));
        await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 2 }));
        Assert.Equal(1, upgrades.Refused);
        Assert.True(client.Sockets.Unavailable);

        // The proxy passes upgrades again: still over HTTP until the delay is up, then over the WebSocket.
        upgrades.Refuse = false;
        clock.Advance(DurableSessions.Client.SocketAppender.RefusedRetryDelay - TimeSpan.FromSeconds(1));
        await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 3 }));
        Assert.Equal(0, client.Sockets.Appended);
        clock.Advance(TimeSpan.FromSeconds(1));
        await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 4 }));
        Assert.Equal(1, client.Sockets.Appended);
        Assert.False(client.Sockets.Unavailable);

        var stored = JsonNode.Parse(await server.Client.GetStringAsync(new Uri("/v1/stream/client/refused?offset=-1", UriKind.Relative)))!.AsArray();
        Assert.Equal([1, 2, 3, 4], stored.Select(m => m!["n"]!.GetValue<int>()));
    }

    /// <summary>Answers WebSocket upgrades 404 while armed, as a proxy that does not pass them; passes everything else on.</summary>
    private sealed class UpgradeRefusal(HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        private int _refused;

        public volatile bool Refuse;

        public int Refused => Volatile.Read(ref _refused);

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (Refuse && request.Headers.Upgrade.Any(u => string.Equals(u.Name, "websocket", StringComparison.OrdinalIgnoreCase)))
            {
                Interlocked.Increment(ref _refused);
                return Task.FromResult(new HttpResponseMessage(HttpStatusCode.NotFound) { RequestMessage = request });
            }

            return base.SendAsync(request, cancellationToken);
        }
    }

    [Fact]
    public async Task A_batch_after_a_cancelled_append_is_stored_not_taken_for_a_retry_of_it()
    {
        await using var server = await InProcessServer.StartAsync();
        await CreateStreamAsync(server, "client/cancel");
        using var client = ClientOf(server);
        using var producer = new DurableSessions.Client.StreamProducer(client, "client/cancel", "p");
        await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 1 }));
        Assert.True(client.Sockets!.Appended > 0, "the first append did not go over the WebSocket");

        // The second batch goes out on the socket; only its wait is cancelled, so the server may well store it.
        using (var cancel = new CancellationTokenSource())
        {
            var cancelled = producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 2 }), cancel.Token);
            await cancel.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        }

        // The next batch must be stored, whatever became of the cancelled one, and nothing twice.
        await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 3 }));
        var stored = JsonNode.Parse(await server.Client.GetStringAsync(new Uri("/v1/stream/client/cancel?offset=-1", UriKind.Relative)))!.AsArray()
            .Select(m => m!["n"]!.GetValue<int>()).ToList();
        Assert.Equal(3, stored[^1]);
        Assert.Equal(stored.Distinct(), stored);
        Assert.Equal(1, stored[0]);
        Assert.Equal(1, producer.Epoch);
    }

    [Fact]
    public async Task Text_that_is_not_json_is_refused_over_http_and_leaves_the_shared_socket_open()
    {
        await using var server = await InProcessServer.StartAsync();
        await CreateStreamAsync(server, "client/bad");
        using var client = ClientOf(server);
        using var good = new DurableSessions.Client.StreamProducer(client, "client/bad", "good");
        using var bad = new DurableSessions.Client.StreamProducer(client, "client/bad", "bad");
        await good.AppendAsync(new JsonArray(new JsonObject { ["n"] = 1 }));
        var connects = client.Sockets!.Connects;

        byte[] notUtf8 = [.. "[\""u8, 0xC3, 0x28, .. "\"]"u8];
        foreach (var bytes in new[] { "[{\"n\":"u8.ToArray(), "[1] [2]"u8.ToArray(), "{\"n\":1}}"u8.ToArray(), notUtf8 })
        {
            var refused = await Assert.ThrowsAsync<DurableSessions.Client.DurableSessionsException>(() => bad.AppendJsonAsync(bytes));
            Assert.Equal(System.Net.HttpStatusCode.BadRequest, refused.Status);
        }

        await good.AppendAsync(new JsonArray(new JsonObject { ["n"] = 2 }));
        Assert.Equal(connects, client.Sockets.Connects);
        Assert.Equal(2, client.Sockets.Appended);
        var stored = JsonNode.Parse(await server.Client.GetStringAsync(new Uri("/v1/stream/client/bad?offset=-1", UriKind.Relative)))!.AsArray();
        Assert.Equal([1, 2], stored.Select(m => m!["n"]!.GetValue<int>()));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_producer_a_newer_epoch_fenced_stays_fenced_and_takes_none_of_the_newer_ones_places(bool webSocket)
    {
        await using var server = await InProcessServer.StartAsync();
        await CreateStreamAsync(server, "client/fenced");
        using var client = ClientOf(server, webSocket);
        using var old = new DurableSessions.Client.StreamProducer(client, "client/fenced", "p");
        using var restarted = new DurableSessions.Client.StreamProducer(client, "client/fenced", "p", epoch: 1);
        await old.AppendAsync(new JsonArray(new JsonObject { ["n"] = "old 1" }));
        await restarted.AppendAsync(new JsonArray(new JsonObject { ["n"] = "new 1" }));

        // The old instance is refused, and stays refused: it does not move on to the newer one's epoch, where its batch
        // would be answered as a duplicate of the newer one's and dropped, and its next ones take the newer one's places.
        for (var i = 2; i <= 3; i++)
        {
            var refused = await Assert.ThrowsAsync<DurableSessions.Client.DurableSessionsException>(() => old.AppendAsync(new JsonArray(new JsonObject { ["n"] = $"old {i}" })));
            Assert.Equal("STALE_PRODUCER_EPOCH", refused.Code);
        }

        await restarted.AppendAsync(new JsonArray(new JsonObject { ["n"] = "new 2" }));
        await restarted.AppendAsync(new JsonArray(new JsonObject { ["n"] = "new 3" }));
        var stored = JsonNode.Parse(await server.Client.GetStringAsync(new Uri("/v1/stream/client/fenced?offset=-1", UriKind.Relative)))!.AsArray();
        Assert.Equal(["old 1", "new 1", "new 2", "new 3"], stored.Select(m => m!["n"]!.GetValue<string>()));
    }

    [Fact]
    public async Task An_append_larger_than_the_servers_message_limit_goes_over_http_and_leaves_the_socket_open()
    {
        await using var server = await InProcessServer.StartAsync(services: s => s.Configure<DurableSessions.AspNetCore.WebSockets.StreamSocketOptions>(o => o.MaxMessageBytes = 64 * 1024));
        await CreateStreamAsync(server, "client/large");
        using var client = ClientOf(server);
        using var producer = new DurableSessions.Client.StreamProducer(client, "client/large", "p");
        await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 1 }));
        Assert.Equal(1, client.Sockets!.Appended);

        // Larger than the 64 KiB the server's hello announced: over HTTP, with no close of the shared socket.
        await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 2, ["text"] = new string('x', 200_000) }));
        await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = 3 }));
        Assert.Equal(2, client.Sockets.Appended);
        Assert.Equal(1, client.Sockets.Connects);
        var stored = JsonNode.Parse(await server.Client.GetStringAsync(new Uri("/v1/stream/client/large?offset=-1", UriKind.Relative)))!.AsArray();
        Assert.Equal([1, 2, 3], stored.Select(m => m!["n"]!.GetValue<int>()));
    }

    [Fact]
    public async Task A_client_that_stops_reading_and_answering_pings_is_cut_by_the_keep_alive_and_its_connection_ends_cleanly()
    {
        var ended = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await InProcessServer.StartAsync(services: s =>
        {
            s.Configure<DurableSessions.AspNetCore.WebSockets.StreamSocketOptions>(o =>
            {
                o.KeepAliveInterval = TimeSpan.FromMilliseconds(200);
                o.KeepAliveTimeout = TimeSpan.FromMilliseconds(500);
            });
            s.AddSingleton<Microsoft.AspNetCore.Hosting.IStartupFilter>(new WebSocketRequestEnd(ended));
        });
        await server.Client.PutAsync(new Uri("/v1/stream/unread/s", UriKind.Relative), new StringContent(string.Empty, Encoding.UTF8, "text/plain"));
        var chunk = new string('x', 1024 * 1024);
        for (var i = 0; i < 24; i++)
        {
            Assert.Equal(HttpStatusCode.NoContent, (await server.Client.PostAsync(new Uri("/v1/stream/unread/s", UriKind.Relative), new StringContent(chunk, Encoding.UTF8, "text/plain"))).StatusCode);
        }

        // The client subscribes to far more than the socket buffers hold, then reads nothing (so it answers no ping):
        // the server's send blocks until the keep-alive gives up on the peer and aborts the socket under it.
        await using var client = await SocketClient.ConnectAsync(server.BaseAddress, pauseAfterHello: true);
        await client.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "all", ["path"] = "unread/s", ["offset"] = "-1" });

        try
        {
            // The connection's request ends by itself, with nothing escaping it, and its subscription is released.
            Assert.Null(await ended.Task.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal(0, server.Services.GetRequiredService<StreamStore>().Fanout.ActiveStreams);
        }
        finally
        {
            // The client's own reading resumes, so it sees the connection gone and can be disposed.
            client.Resume();
        }
    }

    /// <summary>Reports how the WebSocket endpoint's request ended: the exception that escaped it, or null.</summary>
    private sealed class WebSocketRequestEnd(TaskCompletionSource<Exception?> ended) : Microsoft.AspNetCore.Hosting.IStartupFilter
    {
        public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next) => app =>
        {
            app.Use(async (HttpContext context, RequestDelegate inner) =>
            {
                if (!context.Request.Path.StartsWithSegments("/v1/ws", StringComparison.Ordinal))
                {
                    await inner(context);
                    return;
                }

                try
                {
                    await inner(context);
                    ended.TrySetResult(null);
                }
                catch (Exception ex)
                {
                    ended.TrySetResult(ex);
                    throw;
                }
            });
            next(app);
        };
    }

    [Fact]
    public async Task A_subscriber_that_stops_reading_is_told_it_fell_behind_while_another_keeps_up_and_both_end_with_everything()
    {
        await using var server = await InProcessServer.StartAsync(services: s => s.Configure<DurableSessions.AspNetCore.WebSockets.StreamSocketOptions>(o =>
        {
            o.MaxSendQueueBytes = 256 * 1024;

            // The paused reader answers no ping until it reads again.
            o.KeepAliveInterval = TimeSpan.FromMinutes(5);
        }));
        await server.Client.PutAsync(new Uri("/v1/stream/slow/s", UriKind.Relative), new StringContent(string.Empty, Encoding.UTF8, "text/plain"));

        // The slow connection subscribes and then reads nothing; the other reads everything as it comes.
        await using var slow = await SocketClient.ConnectAsync(server.BaseAddress, pauseAfterHello: true);
        await slow.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "slow", ["path"] = "slow/s", ["offset"] = "-1" });
        await using var fast = await SocketClient.ConnectAsync(server.BaseAddress);
        await fast.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "fast", ["path"] = "slow/s", ["offset"] = "-1" });
        await fast.NextAsync(m => Type(m) == "up-to-date");

        // Far more than the slow reader's socket buffers and its 256 KiB send queue can hold.
        const int Appends = 400;
        var chunk = new string('x', 64 * 1024);
        var fastText = new StringBuilder();
        for (var i = 0; i < Appends; i++)
        {
            var response = await server.Client.PostAsync(new Uri("/v1/stream/slow/s", UriKind.Relative), new StringContent(chunk, Encoding.UTF8, "text/plain"));
            Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);

            // The fast subscriber keeps up: each append reaches it before the next one is written.
            while (fastText.Length < (i + 1) * chunk.Length)
            {
                fastText.Append((await fast.NextAsync(m => Type(m) == "data"))["text"]!.GetValue<string>());
            }
        }

        // The slow one reads now: what it was sent, then fell-behind with the offset to resume from.
        slow.Resume();
        var slowText = new StringBuilder();
        JsonObject told;
        while (true)
        {
            told = await slow.NextAsync(m => Type(m) is "data" or "fell-behind");
            if (Type(told) == "fell-behind")
            {
                break;
            }

            slowText.Append(told["text"]!.GetValue<string>());
        }

        Assert.True(slowText.Length < Appends * chunk.Length, "the slow subscriber was never cut off");

        // Resuming from that offset gives exactly the rest.
        await slow.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "again", ["path"] = "slow/s", ["offset"] = told["offset"]!.GetValue<string>() });
        while (slowText.Length < Appends * chunk.Length)
        {
            var next = await slow.NextAsync(m => Sub(m) == "again");
            Assert.True(Type(next) == "data", next.ToJsonString());
            slowText.Append(next["text"]!.GetValue<string>());
        }

        Assert.Equal(Appends * chunk.Length, slowText.Length);
        Assert.Equal(Appends * chunk.Length, fastText.Length);
        Assert.DoesNotContain(slowText.ToString(), c => c != 'x');
    }

    [Fact]
    public async Task Pipelined_appends_are_stored_exactly_once_across_a_reconnect()
    {
        await using var server = await InProcessServer.StartAsync();
        const int Streams = 10;
        const int PerStream = 60;
        for (var i = 0; i < Streams; i++)
        {
            await server.Client.PutAsync(new Uri($"/v1/stream/pipe/{i}", UriKind.Relative), Json("[]"));
        }

        // Everything is sent at once without waiting for acknowledgements; the connection is cut part-way.
        var first = await SocketClient.ConnectAsync(server.BaseAddress);
        for (var seq = 0; seq < PerStream; seq++)
        {
            for (var i = 0; i < Streams; i++)
            {
                await first.SendAsync(Append($"{i}-{seq}", $"pipe/{i}", seq, new JsonObject { ["i"] = i, ["seq"] = seq }));
            }
        }

        await first.NextAsync(m => Type(m) == "ack" && m["id"]!.GetValue<string>() == $"{Streams - 1}-{PerStream / 2}");
        first.Abort();
        await first.DisposeAsync();

        // The producer resends everything on a new connection: what was stored is acknowledged again, not stored twice.
        await using var second = await SocketClient.ConnectAsync(server.BaseAddress);
        for (var seq = 0; seq < PerStream; seq++)
        {
            for (var i = 0; i < Streams; i++)
            {
                await second.SendAsync(Append($"{i}-{seq}", $"pipe/{i}", seq, new JsonObject { ["i"] = i, ["seq"] = seq }));
            }
        }

        var acks = 0;
        while (acks < Streams * PerStream)
        {
            var answer = await second.NextAsync(m => Type(m) is "ack" or "error");
            Assert.Equal("ack", Type(answer));
            Assert.Contains(answer["status"]!.GetValue<int>(), new[] { 200, 204 });
            acks++;
        }

        for (var i = 0; i < Streams; i++)
        {
            var stored = JsonNode.Parse(await server.Client.GetStringAsync(new Uri($"/v1/stream/pipe/{i}?offset=-1", UriKind.Relative)))!.AsArray();
            Assert.Equal(Enumerable.Range(0, PerStream), stored.Select(m => m!["seq"]!.GetValue<int>()));
        }
    }

    [Fact]
    public async Task Appends_read_back_to_back_keep_each_paths_order_around_large_appends_and_refusals_and_answer_each_id()
    {
        await using var server = await InProcessServer.StartAsync();
        await CreateStreamAsync(server, "burst/a");
        await CreateStreamAsync(server, "burst/b");
        const int PerStream = 40;
        static JsonObject Message(string id, string path, string producer, int seq, JsonNode data) => new()
        {
            ["op"] = "append",
            ["id"] = id,
            ["path"] = path,
            ["data"] = data,
            ["producer"] = new JsonObject { ["id"] = producer, ["epoch"] = 0, ["seq"] = seq },
        };

        // Everything is sent before any answer is read, so the server reads the appends back to back and hands the small
        // ones for plain streams to the store together. Among them: appends too large for that (over 64 KiB, appended one
        // by one), which the small ones after them to the same path must follow; a missing stream; a content type
        // the stream does not have (refused by the store); data that is no JSON for a JSON stream (refused before it).
        await using var socket = await SocketClient.ConnectAsync(server.BaseAddress);
        for (var seq = 0; seq < PerStream; seq++)
        {
            var a = new JsonObject { ["n"] = seq };
            if (seq % 10 == 5)
            {
                a["text"] = new string('x', 70_000);
            }

            await socket.SendAsync(Message($"a{seq}", "burst/a", "pa", seq, new JsonArray(a)));
            await socket.SendAsync(Message($"b{seq}", "burst/b", "pb", seq, new JsonArray(new JsonObject { ["n"] = seq })));
            if (seq == 20)
            {
                await socket.SendAsync(new JsonObject { ["op"] = "append", ["id"] = "missing", ["path"] = "burst/none", ["data"] = new JsonArray(1) });
                await socket.SendAsync(new JsonObject { ["op"] = "append", ["id"] = "mismatch", ["path"] = "burst/b", ["contentType"] = "text/plain", ["text"] = "hi" });
                await socket.SendAsync(new JsonObject { ["op"] = "append", ["id"] = "notjson", ["path"] = "burst/b", ["contentType"] = "application/json", ["text"] = "{" });
            }
        }

        var answers = new Dictionary<string, JsonObject>();
        while (answers.Count < 2 * PerStream + 3)
        {
            var answer = await socket.NextAsync(m => Type(m) is "ack" or "error");
            Assert.True(answers.TryAdd(answer["id"]!.GetValue<string>(), answer), $"a second answer to {answer["id"]}");
        }

        for (var seq = 0; seq < PerStream; seq++)
        {
            foreach (var id in new[] { $"a{seq}", $"b{seq}" })
            {
                Assert.Equal("ack", Type(answers[id]));
                Assert.Equal(200, answers[id]["status"]!.GetValue<int>());
                Assert.Equal(seq, answers[id]["producer"]!["seq"]!.GetValue<int>());
            }
        }

        Assert.Equal((404, "STREAM_NOT_FOUND"), (answers["missing"]["status"]!.GetValue<int>(), answers["missing"]["code"]!.GetValue<string>()));
        Assert.Equal((409, "CONTENT_TYPE_MISMATCH"), (answers["mismatch"]["status"]!.GetValue<int>(), answers["mismatch"]["code"]!.GetValue<string>()));
        Assert.Equal((400, "INVALID_JSON"), (answers["notjson"]["status"]!.GetValue<int>(), answers["notjson"]["code"]!.GetValue<string>()));
        foreach (var path in new[] { "burst/a", "burst/b" })
        {
            var stored = JsonNode.Parse(await server.Client.GetStringAsync(new Uri($"/v1/stream/{path}?offset=-1", UriKind.Relative)))!.AsArray();
            Assert.Equal(Enumerable.Range(0, PerStream), stored.Select(m => m!["n"]!.GetValue<int>()));
        }
    }

    [Fact]
    public async Task Session_deltas_read_back_to_back_are_stored_together_in_order_and_a_fenced_run_or_a_moved_tail_is_answered_as_one_by_one()
    {
        InOrderStore store = null!;
        await using var server = await InProcessServer.StartAsync(services: services =>
        {
            services.WrapStore(inner => store = new InOrderStore(inner));
        });

        // Sessions each with a run streaming its reply; the last one's run is cancelled, so its deltas are fenced.
        const int Sessions = 8, PerSession = 12, Pipelined = 4;
        for (var s = 0; s < Sessions; s++)
        {
            Assert.Equal(HttpStatusCode.Created, (await server.Client.PutAsync(new Uri($"/v1/sessions/deltas-{s}", UriKind.Relative), Json("{}"))).StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await new FakeAgent(server.Client, $"deltas-{s}", "r1", "m1").StartAsync()).StatusCode);
        }

        Assert.Equal(HttpStatusCode.OK, (await server.Client.PostAsync(new Uri($"/v1/sessions/deltas-{Sessions - 1}/runs/r1/cancel", UriKind.Relative), Json("{\"by\":\"user:bob\"}"))).StatusCode);

        // The first delta of session 1 that reaches the store in a burst is answered as if another node had appended
        // first: nothing is written, and the server decides it again, as it does one by one.
        store.MoveTailOnce("sessions/deltas-1");

        await using var socket = await SocketClient.ConnectAsync(server.BaseAddress);
        var answers = new Dictionary<string, JsonObject>();
        Task SendDeltaAsync(int s, int seq) => socket.SendAsync(new JsonObject
        {
            ["op"] = "append",
            ["id"] = $"{s}:{seq}",
            ["path"] = $"sessions/deltas-{s}",
            ["data"] = new JsonArray(new JsonObject
            {
                ["type"] = "delta",
                ["key"] = $"m1:{seq + 1}:0",
                ["value"] = new JsonObject { ["messageId"] = "m1", ["part"] = 0, ["partType"] = "text", ["text"] = $"{seq} " },
                ["headers"] = new JsonObject { ["operation"] = "insert" },
            }),
            ["producer"] = new JsonObject { ["id"] = "agent-r1", ["epoch"] = 0, ["seq"] = seq + 1 },
        });
        async Task AnswersAsync(int count)
        {
            while (answers.Count < count)
            {
                var answer = await socket.NextAsync(m => Type(m) is "ack" or "error");
                Assert.True(answers.TryAdd(answer["id"]!.GetValue<string>(), answer), $"a second answer to {answer["id"]}");
            }
        }

        // As agents write: one delta of each session's run in flight at a time, the sessions' sent back to back. Then a
        // few more to each session without waiting, which follow one another to their session.
        for (var seq = 0; seq < PerSession - Pipelined; seq++)
        {
            for (var s = 0; s < Sessions; s++)
            {
                await SendDeltaAsync(s, seq);
            }

            await AnswersAsync((seq + 1) * Sessions);
        }

        for (var seq = PerSession - Pipelined; seq < PerSession; seq++)
        {
            for (var s = 0; s < Sessions; s++)
            {
                await SendDeltaAsync(s, seq);
            }
        }

        await AnswersAsync(PerSession * Sessions);

        var expected = string.Concat(Enumerable.Range(0, PerSession).Select(seq => $"{seq} "));
        for (var s = 0; s < Sessions; s++)
        {
            for (var seq = 0; seq < PerSession; seq++)
            {
                var answer = answers[$"{s}:{seq}"];
                Assert.Equal(s == Sessions - 1 ? (409, "RUN_CANCELLED") : (200, null), (answer["status"]!.GetValue<int>(), answer["code"]?.GetValue<string>()));
            }

            // Stored once each, in the order sent, and applied to the session's state: its snapshot holds the reply so far.
            var stored = JsonNode.Parse(await server.Client.GetStringAsync(new Uri($"/v1/stream/sessions/deltas-{s}?offset=-1", UriKind.Relative)))!.AsArray();
            var texts = stored.Where(e => e!["type"]?.GetValue<string>() == "delta").Select(e => e!["value"]!["text"]!.GetValue<string>());
            Assert.Equal(s == Sessions - 1 ? "" : expected, string.Concat(texts));
            var snapshot = JsonNode.Parse(await server.Client.GetStringAsync(new Uri($"/v1/sessions/deltas-{s}", UriKind.Relative)))!.AsArray();
            var reply = snapshot.Single(e => e!["type"]?.GetValue<string>() == "message" && e["key"]?.GetValue<string>() == "m1")!["value"]!["parts"]!.AsArray();
            Assert.Equal(s == Sessions - 1 ? "" : expected, reply.Count == 0 ? "" : reply[0]!["text"]!.GetValue<string>());
        }

        // The deltas went to the store in bursts, decided on the sessions' state in memory, which each one stored kept
        // current (one not applied would leave the next one's expected tail behind, refused and made again one by one):
        // every delta sent in step but the one whose tail moved.
        Assert.True(store.HeldAppendsStored >= (PerSession - Pipelined) * (Sessions - 1) - 1, $"{store.HeldAppendsStored} session appends were stored in bursts");
        Assert.Equal(1, store.TailsMoved);
    }

    [Fact]
    public async Task Deltas_sent_back_to_back_by_another_writer_or_a_reader_are_refused_and_store_nothing_while_the_agents_own_are_stored()
    {
        InOrderStore store = null!;
        await using var server = await InProcessServer.StartAsync(services: services =>
        {
            services.Configure<AccessOptions>(o => o.SigningKey = Key);
            services.WrapStore(inner => store = new InOrderStore(inner));
        });
        var tokens = server.Services.GetRequiredService<AccessTokens>();
        string Issue(string subject, params Capability[] capabilities)
            => tokens.Issue(subject, new Dictionary<string, Capability[]> { ["sessions/**"] = capabilities }, TimeSpan.FromMinutes(5));
        var agent = Issue("agent:real", Capability.Read, Capability.Write);
        async Task<HttpResponseMessage> SendAsync(HttpMethod method, string path, string body)
        {
            using var request = new HttpRequestMessage(method, path) { Content = Json(body) };
            request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", agent);
            return await server.Client.SendAsync(request);
        }

        // The agent's run streams into its own reply.
        Assert.Equal(HttpStatusCode.Created, (await SendAsync(HttpMethod.Put, "/v1/sessions/guarded", "{}")).StatusCode);
        var posted = await SendAsync(HttpMethod.Post, "/v1/sessions/guarded/messages", "{\"text\":\"a question\"}");
        var question = JsonNode.Parse(await posted.Content.ReadAsStringAsync())!["messageId"]!.GetValue<string>();
        var start = new JsonArray(
            new JsonObject { ["type"] = "run", ["key"] = "r1", ["headers"] = new JsonObject { ["operation"] = "insert" }, ["value"] = new JsonObject { ["id"] = "r1", ["agent"] = "agent:real", ["messageId"] = "m1", ["trigger"] = question, ["status"] = "started" } },
            new JsonObject { ["type"] = "message", ["key"] = "m1", ["headers"] = new JsonObject { ["operation"] = "insert" }, ["value"] = new JsonObject { ["id"] = "m1", ["role"] = "assistant", ["author"] = "agent:real", ["runId"] = "r1", ["parts"] = new JsonArray(), ["status"] = "streaming" } });
        Assert.Equal(HttpStatusCode.NoContent, (await SendAsync(HttpMethod.Post, "/v1/stream/sessions/guarded", start.ToJsonString())).StatusCode);

        // Each writer sends its deltas into the agent's reply back to back, without reading an answer: a co-writer who
        // did not write that reply, a reader, and the agent itself.
        const int PerWriter = 6;
        async Task<List<JsonObject>> DeltasAsync(string token, string who)
        {
            await using var socket = await SocketClient.ConnectAsync(server.BaseAddress, token, tokenInQuery: true);
            for (var seq = 0; seq < PerWriter; seq++)
            {
                await socket.SendAsync(new JsonObject
                {
                    ["op"] = "append",
                    ["id"] = $"{who}{seq}",
                    ["path"] = "sessions/guarded",
                    ["data"] = new JsonArray(new JsonObject
                    {
                        ["type"] = "delta",
                        ["key"] = $"m1:{who}:{seq}",
                        ["value"] = new JsonObject { ["messageId"] = "m1", ["part"] = 0, ["partType"] = "text", ["text"] = $"{who}{seq} " },
                        ["headers"] = new JsonObject { ["operation"] = "insert" },
                    }),
                    ["producer"] = new JsonObject { ["id"] = who, ["epoch"] = 0, ["seq"] = seq },
                });
            }

            var answers = new List<JsonObject>();
            while (answers.Count < PerWriter)
            {
                answers.Add(await socket.NextAsync(m => Type(m) is "ack" or "error"));
            }

            return answers;
        }

        foreach (var answer in await DeltasAsync(Issue("user:mallory", Capability.Read, Capability.Write), "mallory"))
        {
            Assert.Equal((403, "NOT_OWNER"), (answer["status"]!.GetValue<int>(), answer["code"]!.GetValue<string>()));
        }

        foreach (var answer in await DeltasAsync(Issue("user:reader", Capability.Read), "reader"))
        {
            Assert.Equal(403, answer["status"]!.GetValue<int>());
        }

        foreach (var answer in await DeltasAsync(agent, "agent"))
        {
            Assert.Equal(200, answer["status"]!.GetValue<int>());
        }

        // Only the agent's text is stored, in order, and some of it went through a burst.
        var stored = JsonNode.Parse(await (await SendAsync(HttpMethod.Get, "/v1/stream/sessions/guarded?offset=-1", "")).Content.ReadAsStringAsync())!.AsArray();
        var texts = stored.Where(e => e!["type"]?.GetValue<string>() == "delta").Select(e => e!["value"]!["text"]!.GetValue<string>());
        Assert.Equal(string.Concat(Enumerable.Range(0, PerWriter).Select(seq => $"agent{seq} ")), string.Concat(texts));
        Assert.True(store.HeldAppendsStored >= 1, "no delta was stored from a burst");
    }

    [Fact]
    public async Task An_appends_answer_does_not_wait_for_the_rest_of_a_message_that_stops_half_way()
    {
        await using var server = await InProcessServer.StartAsync();
        await CreateStreamAsync(server, "half/a");
        using var tcp = new System.Net.Sockets.TcpClient { NoDelay = true };
        await tcp.ConnectAsync(server.BaseAddress.Host, server.BaseAddress.Port);
        var stream = tcp.GetStream();
        using var patience = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var key = Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));
        await stream.WriteAsync(Encoding.ASCII.GetBytes(
            $"GET /v1/ws HTTP/1.1\r\nHost: {server.BaseAddress.Authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
            $"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: durable-streams.v1\r\n\r\n"), patience.Token);
        var head = new StringBuilder();
        while (!head.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal))
        {
            var one = new byte[1];
            await stream.ReadExactlyAsync(one, patience.Token);
            head.Append((char)one[0]);
        }

        Assert.StartsWith("HTTP/1.1 101", head.ToString(), StringComparison.Ordinal);

        // One write: a whole append, then the first part of a message whose rest never comes. The server reads both at
        // once; the append must go to the store and be answered while the server waits for that rest.
        var append = new JsonObject { ["op"] = "append", ["id"] = "whole", ["path"] = "half/a", ["data"] = new JsonArray(1) }.ToJsonString();
        byte[] both = [.. ClientFrame(append, final: true), .. ClientFrame("{\"op\":\"append\",\"id\":\"cut\",", final: false)];
        await stream.WriteAsync(both, patience.Token);
        while (true)
        {
            var message = JsonNode.Parse(await ReadServerFrameAsync(stream, patience.Token))!.AsObject();
            if (Type(message) is "ack" or "error")
            {
                Assert.Equal(("ack", "whole", 204), (Type(message), message["id"]!.GetValue<string>(), message["status"]!.GetValue<int>()));
                break;
            }
        }

        var stored = JsonNode.Parse(await server.Client.GetStringAsync(new Uri("/v1/stream/half/a?offset=-1", UriKind.Relative)))!.AsArray();
        Assert.Equal([1], stored.Select(m => m!.GetValue<int>()));

        static byte[] ClientFrame(string text, bool final)
        {
            var payload = Encoding.UTF8.GetBytes(text);
            Assert.InRange(payload.Length, 0, 125);
            var mask = System.Security.Cryptography.RandomNumberGenerator.GetBytes(4);
            var frame = new byte[2 + 4 + payload.Length];
            frame[0] = (byte)((final ? 0x80 : 0) | 0x1);
            frame[1] = (byte)(0x80 | payload.Length);
            mask.CopyTo(frame, 2);
            for (var i = 0; i < payload.Length; i++)
            {
                frame[6 + i] = (byte)(payload[i] ^ mask[i % 4]);
            }

            return frame;
        }

        static async Task<string> ReadServerFrameAsync(Stream from, CancellationToken cancellationToken)
        {
            var header = new byte[2];
            await from.ReadExactlyAsync(header, cancellationToken);
            long length = header[1] & 0x7F;
            if (length >= 126)
            {
                var extended = new byte[length == 126 ? 2 : 8];
                await from.ReadExactlyAsync(extended, cancellationToken);
                length = 0;
                foreach (var b in extended)
                {
                    length = (length << 8) | b;
                }
            }

            var payload = new byte[length];
            await from.ReadExactlyAsync(payload, cancellationToken);
            return Encoding.UTF8.GetString(payload);
        }
    }

    [Fact]
    public async Task Capabilities_are_checked_per_path_and_a_refreshed_token_keeps_the_subscriptions()
    {
        await using var server = await InProcessServer.StartAsync(services: s => s.Configure<AccessOptions>(o => o.SigningKey = Key));
        var tokens = server.Services.GetRequiredService<AccessTokens>();
        var admin = tokens.Issue("admin", new Dictionary<string, Capability[]> { ["**"] = [Capability.Read, Capability.Write] }, TimeSpan.FromMinutes(5));
        foreach (var path in new[] { "team/a", "team/b", "other/c" })
        {
            using var put = new HttpRequestMessage(HttpMethod.Put, "/v1/stream/" + path) { Content = Json("[]") };
            put.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", admin);
            Assert.Equal(HttpStatusCode.Created, (await server.Client.SendAsync(put)).StatusCode);
        }

        // No token: the upgrade itself is refused with 401.
        var refused = await Assert.ThrowsAsync<WebSocketException>(() => SocketClient.ConnectAsync(server.BaseAddress));
        Assert.Contains("401", refused.Message, StringComparison.Ordinal);

        var grants = new Dictionary<string, Capability[]> { ["team/*"] = [Capability.Read], ["team/b"] = [Capability.Write] };
        var member = tokens.Issue("member", grants, TimeSpan.FromMinutes(5));
        await using var socket = await SocketClient.ConnectAsync(server.BaseAddress, member, tokenInQuery: true);
        await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "c", ["path"] = "other/c", ["offset"] = "-1" });
        Assert.Equal(403, (await socket.NextAsync(m => Type(m) == "error" && Sub(m) == "c"))["status"]!.GetValue<int>());
        await socket.SendAsync(new JsonObject { ["op"] = "append", ["id"] = "w", ["path"] = "team/a", ["data"] = new JsonObject() });
        Assert.Equal(403, (await socket.NextAsync(m => Type(m) == "error" && m["id"]?.GetValue<string>() == "w"))["status"]!.GetValue<int>());

        await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "a", ["path"] = "team/a", ["offset"] = "now" });
        await socket.NextAsync(m => Type(m) == "up-to-date" && Sub(m) == "a");

        // A new token for the same subject replaces the old one; the subscription goes on.
        var refreshed = tokens.Issue("member", grants, TimeSpan.FromMinutes(10));
        await socket.SendAsync(new JsonObject { ["op"] = "auth", ["id"] = "k", ["token"] = refreshed });
        Assert.Equal("ack", Type(await socket.NextAsync(m => m["id"]?.GetValue<string>() == "k")));
        await socket.SendAsync(new JsonObject { ["op"] = "append", ["id"] = "b", ["path"] = "team/b", ["data"] = new JsonObject { ["ok"] = true } });
        Assert.Equal("ack", Type(await socket.NextAsync(m => m["id"]?.GetValue<string>() == "b")));

        using (var post = new HttpRequestMessage(HttpMethod.Post, "/v1/stream/team/a") { Content = Json("{\"after\":\"refresh\"}") })
        {
            post.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", admin);
            await server.Client.SendAsync(post);
        }

        Assert.Equal("[{\"after\":\"refresh\"}]", (await socket.NextAsync(m => Type(m) == "data" && Sub(m) == "a"))["data"]!.ToJsonString());

        // A forged token and another subject's token are refused; the connection keeps its own.
        await socket.SendAsync(new JsonObject { ["op"] = "auth", ["id"] = "bad", ["token"] = refreshed[..^4] + "AAAA" });
        Assert.Equal(401, (await socket.NextAsync(m => m["id"]?.GetValue<string>() == "bad"))["status"]!.GetValue<int>());
        await socket.SendAsync(new JsonObject { ["op"] = "auth", ["id"] = "other", ["token"] = admin });
        Assert.Equal(403, (await socket.NextAsync(m => m["id"]?.GetValue<string>() == "other"))["status"]!.GetValue<int>());
    }

    [Fact]
    public async Task A_refreshed_token_that_no_longer_grants_read_ends_those_subscriptions_with_403_and_their_offset()
    {
        await using var server = await InProcessServer.StartAsync(services: s => s.Configure<AccessOptions>(o => o.SigningKey = Key));
        var tokens = server.Services.GetRequiredService<AccessTokens>();
        var admin = tokens.Issue("admin", new Dictionary<string, Capability[]> { ["**"] = [Capability.Read, Capability.Write] }, TimeSpan.FromMinutes(5));
        async Task PostAsync(string path, string body)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/stream/" + path) { Content = Json(body) };
            request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", admin);
            Assert.Equal(HttpStatusCode.NoContent, (await server.Client.SendAsync(request)).StatusCode);
        }

        foreach (var path in new[] { "team/a", "team/b" })
        {
            using var put = new HttpRequestMessage(HttpMethod.Put, "/v1/stream/" + path) { Content = Json("[]") };
            put.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", admin);
            Assert.Equal(HttpStatusCode.Created, (await server.Client.SendAsync(put)).StatusCode);
        }

        var member = tokens.Issue("member", new Dictionary<string, Capability[]> { ["team/*"] = [Capability.Read] }, TimeSpan.FromMinutes(5));
        await using var socket = await SocketClient.ConnectAsync(server.BaseAddress, member);
        await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "a", ["path"] = "team/a", ["offset"] = "now" });
        await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "b", ["path"] = "team/b", ["offset"] = "now" });
        await socket.NextAsync(m => Type(m) == "up-to-date" && Sub(m) == "a");
        await socket.NextAsync(m => Type(m) == "up-to-date" && Sub(m) == "b");
        await PostAsync("team/b", "{\"n\":1}");
        var seen = await socket.NextAsync(m => Type(m) == "data" && Sub(m) == "b");

        // The same subject, now granted read on team/a alone: the subscription to team/b ends where it stood.
        await socket.SendAsync(new JsonObject { ["op"] = "auth", ["id"] = "k", ["token"] = tokens.Issue("member", new Dictionary<string, Capability[]> { ["team/a"] = [Capability.Read] }, TimeSpan.FromMinutes(5)) });
        Assert.Equal("ack", Type(await socket.NextAsync(m => m["id"]?.GetValue<string>() == "k")));
        var ended = await socket.NextAsync(m => Type(m) == "error" && Sub(m) == "b");
        Assert.Equal(403, ended["status"]!.GetValue<int>());
        Assert.Equal("FORBIDDEN", ended["code"]!.GetValue<string>());
        Assert.Equal(seen["offset"]!.GetValue<string>(), ended["offset"]!.GetValue<string>());

        // Written to b, then to a: the first data to arrive is a's, so nothing of b's reached the connection.
        await PostAsync("team/b", "{\"n\":2}");
        await PostAsync("team/a", "{\"n\":3}");
        var next = await socket.NextAsync(m => Type(m) == "data");
        Assert.Equal("a", Sub(next));
        Assert.Equal("[{\"n\":3}]", next["data"]!.ToJsonString());

        // The ended subscription's sub is free again, and read on team/b is refused now.
        await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "b", ["path"] = "team/b", ["offset"] = ended["offset"]!.GetValue<string>() });
        Assert.Equal(403, (await socket.NextAsync(m => Type(m) == "error" && Sub(m) == "b"))["status"]!.GetValue<int>());
    }

    /// <summary>A server with access control whose tokens expire to the second (no clock skew allowed).</summary>
    private static Task<InProcessServer> StartWithExactExpiryAsync()
        => InProcessServer.StartAsync(services: s => s.Configure<AccessOptions>(o =>
        {
            o.SigningKey = Key;
            o.ClockSkew = TimeSpan.Zero;
        }));

    [Fact]
    public async Task A_token_that_expires_unreplaced_closes_the_connection_with_4401()
    {
        await using var server = await StartWithExactExpiryAsync();
        var tokens = server.Services.GetRequiredService<AccessTokens>();
        var shortLived = tokens.Issue("brief", new Dictionary<string, Capability[]> { ["**"] = [Capability.Read] }, TimeSpan.FromSeconds(5));
        var socket = await SocketClient.ConnectAsync(server.BaseAddress, shortLived);
        await socket.DrainUntilClosedAsync();
        Assert.Equal((WebSocketCloseStatus)4401, socket.CloseStatus);
        await socket.DisposeAsync();
    }

    [Fact]
    public async Task The_dotnet_client_replaces_its_token_on_the_open_socket_before_each_expiry()
    {
        await using var server = await StartWithExactExpiryAsync();
        var tokens = server.Services.GetRequiredService<AccessTokens>();
        var grants = new Dictionary<string, Capability[]> { ["**"] = [Capability.Read, Capability.Write] };
        using (var put = new HttpRequestMessage(HttpMethod.Put, "/v1/stream/client/fresh") { Content = Json("[]") })
        {
            put.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", tokens.Issue("writer", grants, TimeSpan.FromMinutes(1)));
            Assert.Equal(HttpStatusCode.Created, (await server.Client.SendAsync(put)).StatusCode);
        }

        // Tokens of five seconds: without a refresh on the open socket, the server closes it at each expiry (4401).
        var issued = 0;
        using var client = new DurableSessions.Client.DurableSessionsClient(DurableSessions.Client.DurableSessionsClientOptions.Default with
        {
            BaseAddress = server.BaseAddress,
            AccessTokenProvider = _ =>
            {
                Interlocked.Increment(ref issued);
                return ValueTask.FromResult<string?>(tokens.Issue("writer", grants, TimeSpan.FromSeconds(5)));
            },
        });
        using var producer = new DurableSessions.Client.StreamProducer(client, "client/fresh", "p");

        // Appends go on until three tokens after the first have been handed to the socket (about 13 s), at most a minute.
        var appended = 0;
        var deadline = DateTime.UtcNow.AddMinutes(1);
        while (Volatile.Read(ref issued) < 4 && DateTime.UtcNow < deadline)
        {
            await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = appended }));
            appended++;
            await Task.Delay(100, TestContext.Current.CancellationToken);
        }

        await producer.AppendAsync(new JsonArray(new JsonObject { ["n"] = appended }));
        appended++;
        Assert.True(Volatile.Read(ref issued) >= 4, $"only {issued} tokens were asked for");
        Assert.Equal(1, client.Sockets!.Connects);
        Assert.Equal(appended, client.Sockets.Appended);
        using var read = new HttpRequestMessage(HttpMethod.Get, "/v1/stream/client/fresh?offset=-1");
        read.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", tokens.Issue("writer", grants, TimeSpan.FromMinutes(1)));
        using var answer = await server.Client.SendAsync(read);
        var stored = JsonNode.Parse(await answer.Content.ReadAsStringAsync())!.AsArray();
        Assert.Equal(Enumerable.Range(0, appended), stored.Select(m => m!["n"]!.GetValue<int>()));
    }

    [Fact]
    public async Task A_refreshed_token_that_expires_sooner_closes_the_connection_when_it_expires()
    {
        await using var server = await StartWithExactExpiryAsync();
        var tokens = server.Services.GetRequiredService<AccessTokens>();
        var grants = new Dictionary<string, Capability[]> { ["**"] = [Capability.Read] };
        var socket = await SocketClient.ConnectAsync(server.BaseAddress, tokens.Issue("brief", grants, TimeSpan.FromMinutes(10)));
        await socket.SendAsync(new JsonObject { ["op"] = "auth", ["id"] = "k", ["token"] = tokens.Issue("brief", grants, TimeSpan.FromSeconds(5)) });
        Assert.Equal("ack", Type(await socket.NextAsync(m => m["id"]?.GetValue<string>() == "k")));

        // The token in force now expires in five seconds, not ten minutes: that is when the connection closes.
        await socket.DrainUntilClosedAsync(TimeSpan.FromSeconds(60));
        Assert.Equal((WebSocketCloseStatus)4401, socket.CloseStatus);
        await socket.DisposeAsync();
    }

    [Fact]
    public async Task Bad_frames_close_with_their_code_unknown_operations_get_an_error_and_nothing_stored_changes()
    {
        await using var server = await InProcessServer.StartAsync(configure: o => o.MaxAppendBytes = 2048, services: s => s.Configure<DurableSessions.AspNetCore.WebSockets.StreamSocketOptions>(o => o.MaxMessageBytes = 4096));
        await server.Client.PutAsync(new Uri("/v1/stream/bad/s", UriKind.Relative), Json("[{\"kept\":true}]"));

        async Task<WebSocketCloseStatus?> ClosedBy(Func<SocketClient, Task> send)
        {
            var socket = await SocketClient.ConnectAsync(server.BaseAddress);
            await send(socket);
            await socket.DrainUntilClosedAsync();
            var status = socket.CloseStatus;
            await socket.DisposeAsync();
            return status;
        }

        Assert.Equal(WebSocketCloseStatus.InvalidMessageType, await ClosedBy(s => s.SendRawAsync([1, 2, 3], WebSocketMessageType.Binary)));
        Assert.Equal((WebSocketCloseStatus)4400, await ClosedBy(s => s.SendRawAsync(Encoding.UTF8.GetBytes("{not json"))));
        Assert.Equal((WebSocketCloseStatus)4400, await ClosedBy(s => s.SendRawAsync(Encoding.UTF8.GetBytes("[1,2]"))));
        Assert.Equal((WebSocketCloseStatus)4400, await ClosedBy(s => s.SendRawAsync(Encoding.UTF8.GetBytes("{\"op\":7}"))));
        var tooDeepToRead = "{\"op\":\"append\",\"id\":\"d\",\"path\":\"bad/s\",\"data\":" + new string('[', 600) + new string(']', 600) + "}";
        Assert.Equal((WebSocketCloseStatus)4400, await ClosedBy(s => s.SendRawAsync(Encoding.UTF8.GetBytes(tooDeepToRead))));

        // A lone surrogate escaped in a string is valid JSON and UTF-8, but no text: as an op it is a bad frame.
        Assert.Equal((WebSocketCloseStatus)4400, await ClosedBy(s => s.SendRawAsync(Encoding.UTF8.GetBytes("{\"op\":\"\\ud800\"}"))));
        // So is a member name that escapes one: no field of the message could be looked up past it.
        Assert.Equal((WebSocketCloseStatus)4400, await ClosedBy(s => s.SendRawAsync(Encoding.UTF8.GetBytes("{\"op\":\"ping\",\"\\ud800\":0}"))));
        Assert.Equal((WebSocketCloseStatus)4400, await ClosedBy(s => s.SendRawAsync(Encoding.UTF8.GetBytes("{\"\\udc00 and more\":0,\"op\":\"append\",\"id\":\"n\",\"path\":\"bad/s\",\"data\":1}"))));
        // Invalid UTF-8 is caught by .NET's WebSocket itself, which sends 1007 and then aborts the connection at once:
        // on a loaded machine the abort can overtake the close frame, so the peer sees 1007 or a cut, never anything else.
        var invalidUtf8 = await ClosedBy(s => s.SendRawAsync([0xC3, 0x28, 0x7B, 0x7D]));
        Assert.True(invalidUtf8 is WebSocketCloseStatus.InvalidPayloadData or null, $"invalid UTF-8 closed with {invalidUtf8}");
        var oversized = "{\"op\":\"append\",\"id\":\"x\",\"path\":\"bad/s\",\"data\":\"" + new string('a', 5000) + "\"}";
        Assert.Equal(WebSocketCloseStatus.MessageTooBig, await ClosedBy(s => s.SendRawAsync(Encoding.UTF8.GetBytes(oversized))));

        // Operations the server does not know, or with bad fields, are answered and the connection stays open.
        await using var socket = await SocketClient.ConnectAsync(server.BaseAddress);
        JsonNode tooDeepToStore = 1;
        for (var i = 0; i < JsonFraming.MaxDepth + 8; i++)
        {
            tooDeepToStore = new JsonArray(tooDeepToStore);
        }

        var cases = new (JsonObject Message, string Code)[]
        {
            (new JsonObject { ["op"] = "append", ["id"] = "deep", ["path"] = "bad/s", ["data"] = tooDeepToStore }, "INVALID_JSON"),
            (new JsonObject { ["op"] = "launch", ["id"] = "1" }, "UNKNOWN_OP"),
            (new JsonObject { ["op"] = "append", ["path"] = "bad/s", ["data"] = 1 }, "MISSING_ID"),
            (new JsonObject { ["op"] = "append", ["id"] = "3", ["path"] = "../etc", ["data"] = 1 }, "INVALID_PATH"),
            (new JsonObject { ["op"] = "append", ["id"] = "4", ["path"] = "__ds/subscriptions", ["data"] = 1 }, "INVALID_PATH"),
            (new JsonObject { ["op"] = "append", ["id"] = "5", ["path"] = "bad/s", ["text"] = "plain" }, "MISSING_CONTENT_TYPE"),
            (new JsonObject { ["op"] = "append", ["id"] = "5b", ["path"] = "bad/s", ["text"] = "plain", ["contentType"] = "text/plain" }, "CONTENT_TYPE_MISMATCH"),
            (new JsonObject { ["op"] = "append", ["id"] = "6", ["path"] = "bad/s", ["data"] = 1, ["text"] = "x" }, "INVALID_APPEND"),
            (new JsonObject { ["op"] = "append", ["id"] = "7", ["path"] = "bad/s", ["data"] = new JsonArray() }, "INVALID_JSON"),
            (new JsonObject { ["op"] = "append", ["id"] = "8", ["path"] = "bad/s", ["data"] = 1, ["producer"] = new JsonObject { ["id"] = "p", ["epoch"] = -1, ["seq"] = 0 } }, "INVALID_PRODUCER"),
            (new JsonObject { ["op"] = "append", ["id"] = "9", ["path"] = "bad/missing", ["data"] = 1 }, "STREAM_NOT_FOUND"),
            (new JsonObject { ["op"] = "append", ["id"] = new string('i', 200), ["path"] = "bad/s", ["data"] = 1 }, "INVALID_ID"),
            (new JsonObject { ["op"] = "subscribe", ["sub"] = "s", ["path"] = "bad/s", ["offset"] = "banana" }, "INVALID_OFFSET"),
            (new JsonObject { ["op"] = "unsubscribe", ["sub"] = "nobody" }, "SUBSCRIPTION_NOT_FOUND"),
            (new JsonObject { ["op"] = "unsubscribe" }, "INVALID_SUB"),
            (new JsonObject { ["op"] = "unsubscribe", ["sub"] = "" }, "INVALID_SUB"),
            (new JsonObject { ["op"] = "unsubscribe", ["sub"] = new string('s', 200) }, "INVALID_SUB"),
            (new JsonObject { ["op"] = "subscribe", ["path"] = "bad/s" }, "INVALID_SUB"),
            (new JsonObject { ["op"] = "session.cancel", ["id"] = "10", ["session"] = "s-1" }, "INVALID_RUN_ID"),
            (new JsonObject { ["op"] = "subscribe", ["sub"] = "s5", ["path"] = "bad/s", ["offset"] = 5 }, "INVALID_FIELD"),
            (new JsonObject { ["op"] = "append", ["id"] = "11", ["path"] = "bad/s", ["data"] = 1, ["close"] = "yes" }, "INVALID_FIELD"),
            (new JsonObject { ["op"] = "append", ["id"] = 12, ["path"] = "bad/s", ["data"] = 1 }, "INVALID_ID"),
            (new JsonObject { ["op"] = "append", ["id"] = "13", ["path"] = "bad/s", ["data"] = new string('a', 3000) }, "PAYLOAD_TOO_LARGE"),
        };
        foreach (var (message, code) in cases)
        {
            await socket.SendAsync(message);
            var error = await socket.NextAsync(m => Type(m) == "error");
            Assert.Equal(code, error["code"]!.GetValue<string>());

            // A subscription's error names its sub, so a client routing by sub gets it.
            if (message["op"]!.GetValue<string>() is "subscribe" or "unsubscribe" && message["sub"]?.GetValue<string>() is { Length: <= 128 } sub)
            {
                Assert.Equal(sub, error["sub"]?.GetValue<string>());
            }
        }

        // Lone surrogates in any other string are refused like any malformed field, and the connection stays open.
        var surrogates = new (string Message, string Code)[]
        {
            ("{\"op\":\"append\",\"id\":\"\\ud800\",\"path\":\"bad/s\",\"data\":1}", "INVALID_ID"),
            ("{\"op\":\"subscribe\",\"sub\":\"u1\",\"path\":\"bad/\\udc00\"}", "INVALID_FIELD"),
            ("{\"op\":\"append\",\"id\":\"u2\",\"path\":\"bad/s\",\"text\":\"a\\ud800\",\"contentType\":\"text/plain\"}", "INVALID_APPEND"),
            ("{\"op\":\"append\",\"id\":\"u3\",\"path\":\"bad/s\",\"data\":1,\"seq\":\"\\udfff\"}", "INVALID_STREAM_SEQ"),
            ("{\"op\":\"append\",\"id\":\"u4\",\"path\":\"bad/s\",\"data\":1,\"producer\":{\"id\":\"\\ud800\",\"epoch\":0,\"seq\":0}}", "INVALID_PRODUCER"),
            ("{\"op\":\"auth\",\"id\":\"u5\",\"token\":\"\\ud800\"}", "INVALID_FIELD"),
            ("{\"op\":\"session.message\",\"id\":\"u6\",\"session\":\"\\ud800\"}", "INVALID_FIELD"),
            ("{\"op\":\"unsubscribe\",\"sub\":\"\\ud800\"}", "INVALID_FIELD"),
            ("{\"op\":\"append\",\"id\":\"u8\",\"path\":\"bad/s\",\"data\":1,\"producer\":{\"\\ud800\":0,\"id\":\"p\",\"epoch\":0,\"seq\":0}}", "INVALID_PRODUCER"),
            ("{\"op\":\"append\",\"id\":\"u7\",\"path\":\"bad/s\",\"base64\":\"\\ud800\",\"contentType\":\"application/octet-stream\"}", "INVALID_APPEND"),
        };
        foreach (var (message, code) in surrogates)
        {
            await socket.SendRawAsync(Encoding.UTF8.GetBytes(message));
            var error = await socket.NextAsync(m => Type(m) == "error");
            Assert.Equal(code, error["code"]!.GetValue<string>());
        }

        await socket.SendAsync(new JsonObject { ["op"] = "append", ["id"] = "ok", ["path"] = "bad/s", ["data"] = new JsonObject { ["ok"] = true } });
        Assert.Equal("ack", Type(await socket.NextAsync(m => m["id"]?.GetValue<string>() == "ok")));
        Assert.Equal("[{\"kept\":true},{\"ok\":true}]", await server.Client.GetStringAsync(new Uri("/v1/stream/bad/s?offset=-1", UriKind.Relative)));
    }

    [Fact]
    public async Task Every_unsubscribe_is_answered_and_a_sub_subscribed_again_at_once_starts_after_its_old_self_ended()
    {
        await using var server = await InProcessServer.StartAsync();
        await server.Client.PutAsync(new Uri("/v1/stream/churn/s", UriKind.Relative), Json("[{\"n\":0}]"));
        await using var socket = await SocketClient.ConnectAsync(server.BaseAddress);

        // Sent back to back, without waiting for answers: each subscribe names the sub its unsubscribe just ended.
        for (var i = 0; i < 5; i++)
        {
            await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "r", ["path"] = "churn/s", ["offset"] = "now" });
            await socket.SendAsync(new JsonObject { ["op"] = "unsubscribe", ["sub"] = "r" });
        }

        for (var i = 0; i < 5; i++)
        {
            var answer = await socket.NextAsync(m => m["sub"]?.GetValue<string>() == "r" && Type(m) is "unsubscribed" or "error");
            Assert.True(Type(answer) == "unsubscribed", answer.ToJsonString());
        }

        // Two unsubscribes of one subscription: each answered, the second by unsubscribed or, if the first had already
        // ended it, by SUBSCRIPTION_NOT_FOUND.
        await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "twice", ["path"] = "churn/s", ["offset"] = "now" });
        await socket.SendAsync(new JsonObject { ["op"] = "unsubscribe", ["sub"] = "twice" });
        await socket.SendAsync(new JsonObject { ["op"] = "unsubscribe", ["sub"] = "twice" });
        Assert.Equal("unsubscribed", Type(await socket.NextAsync(m => m["sub"]?.GetValue<string>() == "twice" && Type(m) is "unsubscribed" or "error")));
        var second = await socket.NextAsync(m => m["sub"]?.GetValue<string>() == "twice" && Type(m) is "unsubscribed" or "error");
        Assert.True(Type(second) == "unsubscribed" || second["code"]?.GetValue<string>() == "SUBSCRIPTION_NOT_FOUND", second.ToJsonString());

        // The sub is free again, and its last subscription follows live.
        await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "r", ["path"] = "churn/s", ["offset"] = "now" });
        await socket.NextAsync(m => m["sub"]?.GetValue<string>() == "r" && Type(m) == "up-to-date");
        await server.Client.PostAsync(new Uri("/v1/stream/churn/s", UriKind.Relative), Json("{\"n\":1}"));
        var data = await socket.NextAsync(m => m["sub"]?.GetValue<string>() == "r" && Type(m) is "data" or "error");
        Assert.Equal("data", Type(data));

        // A subscription that ends by itself (here: the stream is closed) frees its sub before its last message: a
        // client subscribing again on seeing it is never refused as a duplicate.
        using (var close = new HttpRequestMessage(HttpMethod.Post, new Uri("/v1/stream/churn/s", UriKind.Relative)) { Content = Json("{\"n\":2}") })
        {
            close.Headers.Add("Stream-Closed", "true");
            Assert.True((await server.Client.SendAsync(close)).IsSuccessStatusCode);
        }

        for (var i = 0; i < 20; i++)
        {
            var end = await socket.NextAsync(m => m["sub"]?.GetValue<string>() == "r" && Type(m) is "closed" or "error");
            Assert.True(Type(end) == "closed", end.ToJsonString());
            await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "r", ["path"] = "churn/s", ["offset"] = "-1" });
        }
    }

    [Fact]
    public async Task Session_operations_answer_what_the_http_endpoints_answer()
    {
        await using var server = await InProcessServer.StartAsync();
        Assert.Equal(HttpStatusCode.Created, (await server.Client.PutAsync(new Uri("/v1/sessions/ws-chat", UriKind.Relative), Json("{}"))).StatusCode);
        await using var socket = await SocketClient.ConnectAsync(server.BaseAddress);
        await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "chat", ["path"] = "sessions/ws-chat", ["offset"] = "-1" });
        await socket.SendAsync(new JsonObject
        {
            ["op"] = "session.message",
            ["id"] = "m1",
            ["session"] = "ws-chat",
            ["body"] = new JsonObject { ["messageId"] = "u1", ["text"] = "hello over a socket" },
        });
        var response = await socket.NextAsync(m => Type(m) == "response" && m["id"]!.GetValue<string>() == "m1");
        Assert.InRange(response["status"]!.GetValue<int>(), 200, 201);

        // The message is in the session, as every reader sees it.
        await socket.NextAsync(m => Type(m) == "data" && Sub(m) == "chat" && m["data"]!.ToJsonString().Contains("hello over a socket", StringComparison.Ordinal));
        var snapshot = await server.Client.GetStringAsync(new Uri("/v1/sessions/ws-chat", UriKind.Relative));
        Assert.Contains("hello over a socket", snapshot, StringComparison.Ordinal);

        // A refusal carries the endpoint's own status and body.
        await socket.SendAsync(new JsonObject { ["op"] = "session.message", ["id"] = "m2", ["session"] = "ws-chat", ["body"] = new JsonArray() });
        var refused = await socket.NextAsync(m => Type(m) == "response" && m["id"]!.GetValue<string>() == "m2");
        Assert.Equal(400, refused["status"]!.GetValue<int>());
        Assert.NotNull(refused["body"]!["error"]!["code"]);
    }

    [Fact]
    public async Task A_large_session_operation_takes_its_bytes_from_the_servers_budget_for_large_bodies_and_gives_them_back()
    {
        await using var server = await InProcessServer.StartAsync(configure: o => (o.MaxAppendBytesInFlight, o.MaxAppendBytes) = (100_000, 100_000));
        var budget = server.Services.GetRequiredService<DurableSessions.AspNetCore.Streams.StreamRequestHandler>().AppendBudget;
        Assert.Equal(HttpStatusCode.Created, (await server.Client.PutAsync(new Uri("/v1/sessions/ws-large", UriKind.Relative), Json("{}"))).StatusCode);
        await using var socket = await SocketClient.ConnectAsync(server.BaseAddress);
        JsonObject Message(string id, int length) => new()
        {
            ["op"] = "session.message",
            ["id"] = id,
            ["session"] = "ws-large",
            ["body"] = new JsonObject { ["text"] = new string(id[0], length) },
        };

        // More than the whole budget: refused before the endpoint runs, and nothing of it is in the session.
        await socket.SendAsync(Message("big", 150_000));
        var refused = await socket.NextAsync(m => m["id"]?.GetValue<string>() == "big");
        Assert.Equal("error", Type(refused));
        Assert.Equal("PAYLOAD_TOO_LARGE", refused["code"]!.GetValue<string>());
        Assert.Equal(413, refused["status"]!.GetValue<int>());

        // Within it: taken, answered by the endpoint, and given back.
        await socket.SendAsync(Message("fits", 80_000));
        var answered = await socket.NextAsync(m => m["id"]?.GetValue<string>() == "fits");
        Assert.Equal("response", Type(answered));
        Assert.InRange(answered["status"]!.GetValue<int>(), 200, 201);
        Assert.Equal(0, budget.InUse);
        var snapshot = await server.Client.GetStringAsync(new Uri("/v1/sessions/ws-large", UriKind.Relative));
        Assert.Contains(new string('f', 80_000), snapshot, StringComparison.Ordinal);
        Assert.DoesNotContain(new string('b', 1_000), snapshot, StringComparison.Ordinal);
    }

    [Fact]
    public void An_idle_timeout_or_keep_alive_past_a_day_is_refused_at_start()
    {
        // The connection's watch timer waits at most IdleTimeout: past ~49 days a timer throws on its own thread.
        Assert.Empty(new DurableSessions.AspNetCore.WebSockets.StreamSocketOptions { IdleTimeout = TimeSpan.FromDays(1) }.Validate());
        Assert.NotEmpty(new DurableSessions.AspNetCore.WebSockets.StreamSocketOptions { IdleTimeout = TimeSpan.FromDays(50) }.Validate());
        Assert.NotEmpty(new DurableSessions.AspNetCore.WebSockets.StreamSocketOptions { KeepAliveInterval = TimeSpan.FromDays(2) }.Validate());
        Assert.NotEmpty(new DurableSessions.AspNetCore.WebSockets.StreamSocketOptions { KeepAliveTimeout = TimeSpan.FromDays(2) }.Validate());
    }

    [Fact]
    public async Task An_idle_connection_is_closed_once_its_idle_timeout_since_the_last_message_is_up()
    {
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));
        await using var server = await InProcessServer.StartAsync(clock, services: s => s.Configure<DurableSessions.AspNetCore.WebSockets.StreamSocketOptions>(o => o.IdleTimeout = TimeSpan.FromSeconds(10)));
        await using var socket = await SocketClient.ConnectAsync(server.BaseAddress);

        // A message 6 s in (answered, so the server has it): the idle time counts from it.
        clock.Advance(TimeSpan.FromSeconds(6));
        await socket.SendAsync(new JsonObject { ["op"] = "launch", ["id"] = "still-here" });
        await socket.NextAsync(m => Type(m) == "error");

        // 10 s after the connect the connection is checked and is not idle (its last message was 4 s ago); 10 s after the
        // message it is, and it is closed then, not a whole idle timeout after that check.
        clock.Advance(TimeSpan.FromSeconds(4));
        clock.Advance(TimeSpan.FromSeconds(6));
        await socket.DrainUntilClosedAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(WebSocketCloseStatus.NormalClosure, socket.CloseStatus);
    }

    [Fact]
    public async Task A_ping_is_answered_with_a_pong_that_repeats_its_id_and_the_connection_stays_open()
    {
        await using var server = await InProcessServer.StartAsync();
        await using var socket = await SocketClient.ConnectAsync(server.BaseAddress);
        await socket.SendAsync(new JsonObject { ["op"] = "ping", ["id"] = "k1" });
        Assert.Equal("k1", (await socket.NextAsync(m => Type(m) == "pong"))["id"]!.GetValue<string>());

        // The id is optional; a malformed one is refused as for any operation, and the connection stays open.
        await socket.SendAsync(new JsonObject { ["op"] = "ping" });
        Assert.Null((await socket.NextAsync(m => Type(m) == "pong"))["id"]);
        await socket.SendAsync(new JsonObject { ["op"] = "ping", ["id"] = 7 });
        Assert.Equal("INVALID_ID", (await socket.NextAsync(m => Type(m) == "error"))["code"]!.GetValue<string>());
        await socket.SendAsync(new JsonObject { ["op"] = "ping", ["id"] = "k2" });
        Assert.Equal("k2", (await socket.NextAsync(m => Type(m) == "pong"))["id"]!.GetValue<string>());
    }

    private static JsonObject Append(string id, string path, int seq, JsonNode data) => new()
    {
        ["op"] = "append",
        ["id"] = id,
        ["path"] = path,
        ["data"] = data,
        ["producer"] = new JsonObject { ["id"] = "pipeline", ["epoch"] = 0, ["seq"] = seq },
    };

    /// <summary>
    /// A store that takes bursts of appends as its inner store does, counting the session appends decided on a session's
    /// state (those naming the tail they expect) that it stored in a burst; it can answer one as if another node had moved the tail.
    /// </summary>
    private sealed class InOrderStore(StreamStore inner) : DelegatingStore(inner)
    {
        private string? _moveTailOf;
        private int _heldAppended;
        private int _tailsMoved;

        public int HeldAppendsStored => Volatile.Read(ref _heldAppended);

        public int TailsMoved => Volatile.Read(ref _tailsMoved);

        public void MoveTailOnce(string path) => Volatile.Write(ref _moveTailOf, path);

        public override bool TakesAppendsInOrder => Inner.TakesAppendsInOrder;

        public override bool TryAppendInOrder(IReadOnlyList<AppendRequest> requests, out Task<AppendResult[]> results)
        {
            var moved = -1;
            var passed = new List<AppendRequest>(requests.Count);
            for (var i = 0; i < requests.Count; i++)
            {
                if (moved < 0 && requests[i].Path == Volatile.Read(ref _moveTailOf) && requests[i].ExpectedTail is not null && Interlocked.Exchange(ref _moveTailOf, null) is not null)
                {
                    moved = i;
                    continue;
                }

                passed.Add(requests[i]);
            }

            var taken = Task.FromResult<AppendResult[]>([]);
            if (passed.Count > 0 && !Inner.TryAppendInOrder(passed, out taken))
            {
                results = null!;
                return false;
            }

            results = MergeAsync(passed, taken, moved);
            return true;
        }

        private async Task<AppendResult[]> MergeAsync(List<AppendRequest> passed, Task<AppendResult[]> taken, int moved)
        {
            var results = (await taken).ToList();
            Interlocked.Add(ref _heldAppended, passed.Where((r, i) => r.ExpectedTail is not null && results[i].Status == AppendStatus.Appended).Count());
            if (moved >= 0)
            {
                results.Insert(moved, new AppendResult { Status = AppendStatus.TailMoved });
                Interlocked.Increment(ref _tailsMoved);
            }

            return [.. results];
        }
    }

    private static string? Type(JsonObject message) => message["type"]?.GetValue<string>();

    private static string? Sub(JsonObject message) => message["sub"]?.GetValue<string>();

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    private static DurableSessions.Client.DurableSessionsClient ClientOf(InProcessServer server, bool webSocket = true)
        => new(DurableSessions.Client.DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, UseWebSocket = webSocket });

    private static Task<HttpResponseMessage> CreateStreamAsync(InProcessServer server, string path)
        => server.Client.PutAsync(new Uri("/v1/stream/" + path, UriKind.Relative), Json("[]"));
}
