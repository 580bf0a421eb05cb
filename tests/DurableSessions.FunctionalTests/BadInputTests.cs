using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace DurableSessions.FunctionalTests;

/// <summary>Every malformed request gets a 4xx with a short, clear message, and nothing already stored changes.</summary>
public sealed class BadInputTests : IAsyncLifetime
{
    private InProcessServer _server = null!;

    public async ValueTask InitializeAsync()
        => _server = await InProcessServer.StartAsync(configure: o =>
        {
            o.MaxAppendBytes = 1024;
            o.MaxPathLength = 64;
        });

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    public static TheoryData<string, string, string?, string?, string[]> Cases => new()
    {
        // method, path+query, content type, body, headers as "Name: value"
        { "GET", "/v1/stream/bad/json?offset=abc", null, null, [] },
        { "GET", "/v1/stream/bad/json?offset=", null, null, [] },
        { "GET", "/v1/stream/bad/json?offset=-1%20", null, null, [] },
        { "GET", "/v1/stream/bad/json?offset=-1&offset=now", null, null, [] },
        { "GET", "/v1/stream/bad/json?offset=9999999999999999_9999999999999999", null, null, [] },
        { "GET", "/v1/stream/bad/json?offset=0000000000000000_0000000000000099", null, null, [] },
        { "GET", "/v1/stream/bad/json?live=long-poll", null, null, [] },
        { "GET", "/v1/stream/bad/json?offset=-1&live=websocket", null, null, [] },
        { "POST", "/v1/stream/bad/json", "application/json", "{ not json", [] },
        { "POST", "/v1/stream/bad/json", "application/json", "[]", [] },
        { "POST", "/v1/stream/bad/json", "application/json", "", [] },
        { "POST", "/v1/stream/bad/json", null, "{\"a\":1}", [] },
        { "POST", "/v1/stream/bad/json", "text/plain", "hello", [] },
        { "POST", "/v1/stream/bad/json", "not a media type", "{}", [] },
        { "POST", "/v1/stream/bad/json", "application/json", "{\"big\":\"" + new string('x', 2000) + "\"}", [] },
        { "POST", "/v1/stream/bad/json", "application/json", "{\"a\":\"\\ud800\"}", [] },
        { "POST", "/v1/stream/bad/json", "application/json", "[{\"ok\":1},{\"b\\udc00\":2}]", [] },
        { "POST", "/v1/stream/bad/json", "application/json", string.Concat(Enumerable.Repeat("[", 70)) + string.Concat(Enumerable.Repeat("]", 70)), [] },
        { "PUT", "/v1/stream/bad/other", "text/plain", null, ["Stream-TTL: 300000000000"] },
        { "PUT", "/v1/stream/bad/other", "text/plain", null, ["Stream-TTL: 9007199254740"] },
        { "POST", "/v1/stream/bad/json", "application/json", "{}", ["Producer-Id: p"] },
        { "POST", "/v1/stream/bad/json", "application/json", "{}", ["Producer-Id: p", "Producer-Epoch: 0", "Producer-Seq: -1"] },
        { "POST", "/v1/stream/bad/json", "application/json", "{}", ["Producer-Id: p", "Producer-Epoch: 1e3", "Producer-Seq: 0"] },
        { "POST", "/v1/stream/bad/json", "application/json", "{}", ["Producer-Id: p", "Producer-Epoch: 9007199254740992", "Producer-Seq: 0"] },
        { "POST", "/v1/stream/bad/missing", "application/json", "{}", [] },
        { "PUT", "/v1/stream/bad/other", "text/plain", null, ["Stream-TTL: 01"] },
        { "PUT", "/v1/stream/bad/other", "text/plain", null, ["Stream-TTL: 1.5"] },
        { "PUT", "/v1/stream/bad/other", "text/plain", null, ["Stream-TTL: 10", "Stream-Expires-At: 2030-01-01T00:00:00Z"] },
        { "PUT", "/v1/stream/bad/other", "text/plain", null, ["Stream-Expires-At: tomorrow"] },
        { "PUT", "/v1/stream/bad/other", "application/json", "{oops", [] },
        { "PUT", "/v1/stream/bad/json", "text/plain", null, [] },
        { "PUT", "/v1/stream/bad/other", "text/plain", null, ["Stream-Fork-Offset: 0000000000000000_0000000000000000"] },
        { "PUT", "/v1/stream/bad/other", "text/plain", null, ["Stream-Forked-From: /v1/stream/bad/json", "Stream-Fork-Sub-Offset: +1"] },
        { "PUT", "/v1/stream/bad/other", "text/plain", null, ["Stream-Forked-From: /v1/stream/bad/nothing"] },
        { "PUT", "/v1/stream/bad/other", "application/json", null, ["Stream-Forked-From: http://elsewhere.example/v1/stream/bad/json"] },
        { "PUT", "/v1/stream/bad/other", null, null, ["Stream-Forked-From: /v1/stream/bad/json", "Stream-Fork-Offset: 0000000000000000_0000000000000999"] },
        { "PUT", "/v1/stream/bad/%01control", "text/plain", null, [] },
        { "PUT", "/v1/stream/bad//double", "text/plain", null, [] },
        { "PUT", "/v1/stream/" + new string('p', 65), "text/plain", null, [] },
        { "PATCH", "/v1/stream/bad/json", "application/json", "{}", [] },
        { "PUT", "/v1/stream/__ds/subscriptions/s1", "application/json", "{\"type\":\"carrier-pigeon\",\"pattern\":\"x/*\"}", [] },
        { "PUT", "/v1/stream/__ds/subscriptions/s1", "application/json", "not json", [] },
        { "PUT", "/v1/stream/__ds/subscriptions/s1", "application/json", "{\"type\":\"pull-wake\",\"pattern\":\"x/*\",\"wake_stream\":\"sessions/victim\"}", [] },
        { "PUT", "/v1/stream/__ds/subscriptions/s1", "application/json", "{\"type\":\"pull-wake\",\"pattern\":\"x/*\",\"wake_stream\":\"w\",\"pattern\":\"y/*\"}", [] },
        { "PUT", "/v1/stream/__ds/subscriptions/s1", "application/json", "{\"type\":\"webhook\",\"pattern\":\"x/*\",\"webhook\":{\"url\":\"http://169.254.169.254/\"}}", [] },
        { "PUT", "/v1/stream/__ds/subscriptions/bad%20id", "application/json", "{}", [] },
        { "POST", "/v1/stream/__ds/subscriptions/none/callback", "application/json", "{}", [] },
        { "GET", "/v1/stream/__ds/unknown", null, null, [] },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Malformed_requests_get_a_clear_4xx_and_change_nothing(string method, string target, string? contentType, string? body, string[] headers)
    {
        var client = _server.Client;
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/bad/json", new StringContent("[{\"keep\":1}]", Encoding.UTF8, "application/json"))).StatusCode);

        using var request = new HttpRequestMessage(new HttpMethod(method), target);
        if (body is not null)
        {
            request.Content = new ByteArrayContent(Encoding.UTF8.GetBytes(body));
            if (contentType is not null)
            {
                request.Content.Headers.TryAddWithoutValidation("Content-Type", contentType);
            }
        }
        else if (contentType is not null)
        {
            request.Content = new ByteArrayContent([]);
            request.Content.Headers.TryAddWithoutValidation("Content-Type", contentType);
        }

        foreach (var header in headers)
        {
            var colon = header.IndexOf(':', StringComparison.Ordinal);
            request.Headers.TryAddWithoutValidation(header[..colon], header[(colon + 1)..].Trim());
        }

        using var response = await client.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(10));
        var status = (int)response.StatusCode;
        Assert.InRange(status, 400, 499);
        var text = await response.Content.ReadAsStringAsync();
        if (method != "HEAD" && text.Length > 0)
        {
            using var json = JsonDocument.Parse(text);
            var message = json.RootElement.GetProperty("error").GetProperty("message").GetString();
            Assert.False(string.IsNullOrWhiteSpace(message));
            Assert.True(message!.Length < 200, "error messages stay short");
        }

        using var read = await client.GetAsync("/v1/stream/bad/json?offset=-1");
        Assert.Equal("[{\"keep\":1}]", await read.Content.ReadAsStringAsync());
        Assert.Equal("0000000000000000_0000000000000001", read.Headers.GetValues("Stream-Next-Offset").Single());
    }

    [Fact]
    public async Task A_stream_under_sessions_is_json_or_not_created_and_leaves_the_session_id_free()
    {
        foreach (var contentType in new[] { "text/plain", null })
        {
            using var request = new HttpRequestMessage(HttpMethod.Put, "/v1/stream/sessions/typed");
            if (contentType is not null)
            {
                request.Content = new StringContent("{\"type\":\"run\",\"key\":\"r1\",\"headers\":{\"operation\":\"insert\"},\"value\":{\"status\":\"finished\"}}", Encoding.UTF8, contentType);
            }

            var refused = await _server.Client.SendAsync(request);
            Assert.Equal(HttpStatusCode.Conflict, refused.StatusCode);
            Assert.Equal("CONTENT_TYPE_MISMATCH", (string?)System.Text.Json.Nodes.JsonNode.Parse(await refused.Content.ReadAsStringAsync())!["error"]!["code"]);
            Assert.Equal(HttpStatusCode.NotFound, (await _server.Client.GetAsync("/v1/stream/sessions/typed?offset=-1")).StatusCode);
        }

        // The id is still free for the session itself, and a raw JSON create is one.
        Assert.Equal(HttpStatusCode.Created, (await _server.Client.PutAsync("/v1/sessions/typed", new StringContent("{}", Encoding.UTF8, "application/json"))).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await _server.Client.PutAsync("/v1/stream/sessions/raw", new StringContent("[]", Encoding.UTF8, "application/json"))).StatusCode);
    }

    [Fact]
    public async Task Session_operations_refuse_fields_of_the_wrong_kind_and_change_nothing()
    {
        var client = _server.Client;
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/sessions/kinds", new StringContent("{}", Encoding.UTF8, "application/json"))).StatusCode);
        var before = await TailAsync();
        var cases = new (HttpMethod Method, string Operation, string? Body, string Code)[]
        {
            (HttpMethod.Post, "messages", "{\"text\":\"hi\",\"author\":[]}", "INVALID_FIELD"),
            (HttpMethod.Post, "messages", "{\"text\":\"hi\",\"author\":\"\"}", "INVALID_AUTHOR"),
            (HttpMethod.Post, "messages", "{\"text\":\"hi\",\"author\":\"" + new string('a', 200) + "\"}", "INVALID_AUTHOR"),
            (HttpMethod.Post, "messages", "{\"text\":\"hi\",\"parts\":0}", "INVALID_MESSAGE"),
            (HttpMethod.Post, "messages", "{\"text\":\"\"}", "INVALID_MESSAGE"),
            (HttpMethod.Post, "messages", "{\"text\":5}", "INVALID_FIELD"),
            (HttpMethod.Post, "messages", "{\"role\":true,\"text\":\"hi\"}", "INVALID_FIELD"),
            (HttpMethod.Post, "presence", "{\"participantId\":\"client:a\",\"kind\":0}", "INVALID_PRESENCE"),
            (HttpMethod.Post, "presence", "{\"participantId\":\"client:a\",\"name\":{}}", "INVALID_PRESENCE"),
            (HttpMethod.Post, "handoff", "{\"holder\":[\"human:x\"]}", "INVALID_HANDOFF"),
            (HttpMethod.Delete, "handoff", null, "INVALID_HANDOFF"),
            (HttpMethod.Post, "runs/r1/cancel", "{\"by\":5}", "INVALID_FIELD"),
            (HttpMethod.Post, "runs/r1/steer", "{\"text\":{}}", "INVALID_FIELD"),
            (HttpMethod.Post, "messages/m1/regenerate", "{\"by\":5}", "INVALID_FIELD"),
            (HttpMethod.Post, "messages/m1/regenerate", "{\"id\":\"not an id\"}", "INVALID_CONTROL_ID"),
            (HttpMethod.Post, "messages/m1/edit", "{\"text\":7}", "INVALID_FIELD"),
            (HttpMethod.Post, "messages/m1/edit", "{\"text\":\"\"}", "INVALID_MESSAGE"),
            (HttpMethod.Post, "messages/m1/edit", "{\"text\":\"hi\",\"author\":\"\"}", "INVALID_AUTHOR"),
        };
        foreach (var (method, rest, body, code) in cases)
        {
            using var request = new HttpRequestMessage(method, "/v1/sessions/kinds/" + rest);
            if (body is not null)
            {
                request.Content = new StringContent(body, Encoding.UTF8, "application/json");
            }

            using var response = await client.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{method} {rest} {body}: {(int)response.StatusCode} {text}");
            Assert.Equal(code, JsonDocument.Parse(text).RootElement.GetProperty("error").GetProperty("code").GetString());
        }

        Assert.Equal(before, await TailAsync());

        // null counts as absent: text null with parts is a message of those parts.
        using var parts = await client.PostAsync("/v1/sessions/kinds/messages", new StringContent(
            "{\"text\":null,\"parts\":[{\"type\":\"text\",\"text\":\"hi\"}],\"author\":null}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, parts.StatusCode);

        async Task<string> TailAsync()
        {
            using var head = await client.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/v1/stream/sessions/kinds"));
            return head.Headers.GetValues("Stream-Next-Offset").Single();
        }
    }

    [Fact]
    public async Task A_regenerate_or_edit_the_session_cannot_carry_out_is_refused_with_its_reason_and_changes_nothing()
    {
        var client = _server.Client;
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/sessions/regen", new StringContent("{}", Encoding.UTF8, "application/json"))).StatusCode);
        using var posted = await client.PostAsync("/v1/sessions/regen/messages", new StringContent("{\"text\":\"hi\",\"author\":\"user:alice\"}", Encoding.UTF8, "application/json"));
        var question = JsonDocument.Parse(await posted.Content.ReadAsStringAsync()).RootElement.GetProperty("messageId").GetString();
        (await client.PostAsync("/v1/sessions/regen/messages", new StringContent("{\"text\":\"mine\",\"author\":\"user:bob\"}", Encoding.UTF8, "application/json"))).EnsureSuccessStatusCode();
        var before = await client.GetStringAsync("/v1/stream/sessions/regen?offset=-1");
        const string AsAnother = "{\"text\":\"changed\",\"author\":\"user:someone-else\"}";
        var cases = new (string Path, string Body, int Status, string Code)[]
        {
            ("/v1/sessions/regen/messages/m-missing/regenerate", "{}", 409, "MESSAGE_NOT_FOUND"),
            ($"/v1/sessions/regen/messages/{question}/regenerate", "{}", 409, "NOT_A_REPLY"),
            ("/v1/sessions/missing/messages/m1/regenerate", "{}", 404, "SESSION_NOT_FOUND"),
            ("/v1/sessions/regen/messages/not%20an%20id/regenerate", "{}", 404, "NOT_FOUND"),
            ("/v1/sessions/regen/messages/m-missing/edit", AsAnother, 409, "MESSAGE_NOT_FOUND"),
            ($"/v1/sessions/regen/messages/{question}/edit", AsAnother, 409, "NOT_EDITABLE"),

            // Its author's edit would take bob's later message out.
            ($"/v1/sessions/regen/messages/{question}/edit", "{\"text\":\"changed\",\"author\":\"user:alice\"}", 409, "NOT_LATEST_MESSAGE"),
        };
        foreach (var (path, body, status, code) in cases)
        {
            using var response = await client.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"));
            var text = await response.Content.ReadAsStringAsync();
            Assert.True((int)response.StatusCode == status, $"{path}: {(int)response.StatusCode} {text}");
            Assert.Equal(code, JsonDocument.Parse(text).RootElement.GetProperty("error").GetProperty("code").GetString());
        }

        Assert.Equal(before, await client.GetStringAsync("/v1/stream/sessions/regen?offset=-1"));
    }

    [Theory]
    [InlineData("9223372036854775807")]
    [InlineData("9223372036854775700")]
    public async Task A_live_read_echoing_a_cursor_this_server_never_gave_gets_a_cursor_from_now_that_never_overflows(string echoed)
    {
        var client = _server.Client;
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/bad/cursor", new StringContent("[{\"n\":1}]", Encoding.UTF8, "application/json"))).StatusCode);
        using var fresh = await client.GetAsync("/v1/stream/bad/cursor?offset=-1&live=long-poll");
        var now = long.Parse(fresh.Headers.GetValues("Stream-Cursor").Single(), CultureInfo.InvariantCulture);
        using var read = await client.GetAsync($"/v1/stream/bad/cursor?offset=-1&live=long-poll&cursor={echoed}");
        Assert.Equal(HttpStatusCode.OK, read.StatusCode);
        var cursor = long.Parse(read.Headers.GetValues("Stream-Cursor").Single(), CultureInfo.InvariantCulture);
        Assert.InRange(cursor, now, now + 1);

        // One the server may have given, however far ahead echoes pushed it, is still pushed past.
        foreach (var given in new[] { now + 180, now + 10_000_000 })
        {
            using var ahead = await client.GetAsync($"/v1/stream/bad/cursor?offset=-1&live=long-poll&cursor={given}");
            Assert.True(long.Parse(ahead.Headers.GetValues("Stream-Cursor").Single(), CultureInfo.InvariantCulture) > given);
        }
    }

    [Fact]
    public async Task A_fork_source_given_as_a_whole_url_of_this_server_is_forked()
    {
        var client = _server.Client;
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/bad/source", new StringContent("[{\"n\":1}]", Encoding.UTF8, "application/json"))).StatusCode);
        using var request = new HttpRequestMessage(HttpMethod.Put, "/v1/stream/bad/fork") { Content = new ByteArrayContent([]) };
        request.Content.Headers.TryAddWithoutValidation("Content-Type", "application/json");
        request.Headers.TryAddWithoutValidation("Stream-Forked-From", new Uri(_server.BaseAddress, "/v1/stream/bad/source").ToString());
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.Equal("[{\"n\":1}]", await client.GetStringAsync("/v1/stream/bad/fork?offset=-1"));
    }

    [Fact]
    public async Task A_body_with_broken_chunk_framing_gets_a_400_and_is_not_logged_as_a_server_error()
    {
        var errors = new ErrorLog();
        await using var server = await InProcessServer.StartAsync(services: s => s.AddSingleton<ILoggerProvider>(errors));
        Assert.Equal(HttpStatusCode.Created, (await server.Client.PutAsync("/v1/stream/bad/chunks", new StringContent("[{\"keep\":1}]", Encoding.UTF8, "application/json"))).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await server.Client.PutAsync("/v1/sessions/chunks", new StringContent("{}", Encoding.UTF8, "application/json"))).StatusCode);
        // A chunk size that is not hex, and one past what a 64-bit length holds (which Kestrel reports as a plain I/O
        // error rather than a bad request).
        foreach (var size in new[] { "zz", "ffffffffffffffffff" })
        {
            foreach (var target in new[] { "/v1/stream/bad/chunks", "/v1/sessions/chunks/messages", "/v1/stream/__ds/subscriptions/none/ack", "/api/chat" })
            {
                using var tcp = new System.Net.Sockets.TcpClient();
                await tcp.ConnectAsync(server.BaseAddress.Host, server.BaseAddress.Port);
                var stream = tcp.GetStream();
                await stream.WriteAsync(Encoding.ASCII.GetBytes(
                    $"POST {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\n{{\"a\":1}}\r\n0\r\n\r\n"));
                var response = await new StreamReader(stream).ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(10));
                Assert.True(response.StartsWith("HTTP/1.1 400", StringComparison.Ordinal), $"{target}, chunk size {size}: {response}");
                Assert.Contains("BAD_REQUEST_BODY", response, StringComparison.Ordinal);
            }
        }

        Assert.Empty(errors.Entries);
        Assert.Equal("[{\"keep\":1}]", await server.Client.GetStringAsync("/v1/stream/bad/chunks?offset=-1"));
    }

    /// <summary>Collects what the server logs at error level or above.</summary>
    private sealed class ErrorLog : ILoggerProvider, ILogger
    {
        public System.Collections.Concurrent.ConcurrentQueue<string> Entries { get; } = new();

        public ILogger CreateLogger(string categoryName) => this;

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Error;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel >= LogLevel.Error)
            {
                Entries.Enqueue(formatter(state, exception) + " " + exception?.Message);
            }
        }

        public void Dispose()
        {
        }
    }

    [Fact]
    public async Task Invalid_utf8_in_a_json_append_is_refused_and_readers_keep_getting_valid_json()
    {
        var client = _server.Client;
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/bad/utf8", new StringContent("[{\"keep\":1}]", Encoding.UTF8, "application/json"))).StatusCode);
        var content = new ByteArrayContent([.. "{\"a\":\""u8, 0xff, .. "\"}"u8]);
        content.Headers.ContentType = new("application/json");
        using var response = await client.PostAsync("/v1/stream/bad/utf8", content);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("UTF-8", await response.Content.ReadAsStringAsync());

        using var read = await client.GetAsync("/v1/stream/bad/utf8?offset=-1");
        var body = await read.Content.ReadAsByteArrayAsync();
        Assert.True(System.Text.Unicode.Utf8.IsValid(body));
        Assert.Equal("[{\"keep\":1}]", Encoding.UTF8.GetString(body));
    }

    [Theory]
    [InlineData("__ds")]
    [InlineData("__ds/wake")]
    public async Task A_pull_wake_subscription_cannot_name_a_reserved_path_as_its_wake_stream(string wakeStream)
    {
        var body = "{\"type\":\"pull-wake\",\"streams\":[\"bad/jobs\"],\"wake_stream\":\"" + wakeStream + "\"}";
        using var response = await _server.Client.PutAsync("/v1/stream/__ds/subscriptions/reserved-wake", new StringContent(body, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("__ds/", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.NotFound, (await _server.Client.GetAsync("/v1/stream/__ds/subscriptions/reserved-wake")).StatusCode);
    }

    [Fact]
    public async Task A_path_under_the_api_that_names_no_endpoint_gets_a_json_404_and_every_endpoint_still_answers()
    {
        await using var server = await ServerProcess.StartAsync();
        using var client = new HttpClient { BaseAddress = server.BaseAddress };

        // "/v1/stream/%2E%2E" is folded to "/v1/" by the server before routing.
        foreach (var (method, path) in new[] { ("GET", "/v1/"), ("GET", "/v1"), ("POST", "/v1/sesions/a/messages"), ("GET", "/v1/stream/%2E%2E"), ("DELETE", "/v1/nothing/here?x=1") })
        {
            using var response = await client.SendAsync(new HttpRequestMessage(new HttpMethod(method), path));
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
            Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
            Assert.Equal("no-store", response.Headers.CacheControl?.ToString());
            Assert.Equal("nosniff", response.Headers.GetValues("X-Content-Type-Options").Single());
            using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            Assert.Equal("NOT_FOUND", body.RootElement.GetProperty("error").GetProperty("code").GetString());
        }

        // Only paths no endpoint takes: a missing stream is still the stream endpoint's own 404, and the rest answer.
        using (var missing = await client.GetAsync("/v1/stream/missing?offset=-1"))
        {
            Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
            using var body = JsonDocument.Parse(await missing.Content.ReadAsStringAsync());
            Assert.NotEqual("NOT_FOUND", body.RootElement.GetProperty("error").GetProperty("code").GetString());
        }

        // The WebSocket endpoint: a GET that is no WebSocket is told so, another method is 405 (not the fallback's 404).
        using (var plain = await client.GetAsync("/v1/ws"))
        {
            Assert.Equal(HttpStatusCode.BadRequest, plain.StatusCode);
            Assert.Contains("WEBSOCKET_REQUIRED", await plain.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        using (var posted = await client.PostAsync("/v1/ws", new StringContent("{}", Encoding.UTF8, "application/json")))
        {
            Assert.Equal(HttpStatusCode.MethodNotAllowed, posted.StatusCode);
            Assert.Equal("GET", posted.Content.Headers.Allow.Single());
            Assert.Contains("METHOD_NOT_ALLOWED", await posted.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        // A CORS preflight still gets its answer.
        using (var preflight = new HttpRequestMessage(HttpMethod.Options, "/v1/stream/x"))
        {
            preflight.Headers.Add("Origin", "https://app.example");
            preflight.Headers.Add("Access-Control-Request-Method", "POST");
            using var answer = await client.SendAsync(preflight);
            Assert.Equal(HttpStatusCode.NoContent, answer.StatusCode);
        }

        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/sessions/routed", new StringContent("{}", Encoding.UTF8, "application/json"))).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/agents/agent:routed", new StringContent("{}", Encoding.UTF8, "application/json"))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/v1/sessions/routed")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/health")).StatusCode);
    }

    [Fact]
    public async Task An_unknown_store_stops_the_server_at_start_instead_of_falling_back()
    {
        var failure = await Assert.ThrowsAsync<InvalidOperationException>(() => ServerProcess.StartAsync(null, "--store", "postgres"));
        Assert.Contains("exited", failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Oversized_body_without_content_length_is_rejected_with_413()
    {
        await _server.Client.PutAsync("/v1/stream/bad/bytes", new ByteArrayContent([]) { Headers = { { "Content-Type", "application/octet-stream" } } });
        var content = new StreamContent(new MemoryStream(new byte[4096]));
        content.Headers.ContentType = new("application/octet-stream");
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/stream/bad/bytes") { Content = content };
        request.Headers.TransferEncodingChunked = true;
        using var response = await _server.Client.SendAsync(request);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        var head = await _server.Client.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/v1/stream/bad/bytes"));
        Assert.Equal("0000000000000000_0000000000000000", head.Headers.GetValues("Stream-Next-Offset").Single());
    }

    [Theory]
    [InlineData("5")]
    [InlineData("\"bad id\"")]
    [InlineData("{}")]
    public async Task A_chat_message_refused_for_its_message_id_does_not_create_the_chat(string messageId)
    {
        var cancel = TestContext.Current.CancellationToken;
        var id = "refused-" + Guid.NewGuid().ToString("N")[..8];
        var body = $$"""{"id":"{{id}}","messageId":{{messageId}},"messages":[{"role":"user","parts":[{"type":"text","text":"hi"}]}]}""";
        using var response = await _server.Client.PostAsync("/api/chat", new StringContent(body, Encoding.UTF8, "application/json"), cancel);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("INVALID_CHAT_REQUEST", await response.Content.ReadAsStringAsync(cancel), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.NotFound, (await _server.Client.GetAsync($"/v1/sessions/{id}", cancel)).StatusCode);
    }

    [Fact]
    public async Task A_chat_stop_stops_every_agent_answering_not_only_the_latest()
    {
        var cancel = TestContext.Current.CancellationToken;
        const string Id = "two-agents";
        Assert.Equal(HttpStatusCode.Created, (await _server.Client.PutAsync($"/v1/sessions/{Id}", null, cancel)).StatusCode);
        Assert.True((await _server.Client.PostAsync($"/v1/sessions/{Id}/messages", new StringContent("""{"text":"hello","id":"q1"}""", Encoding.UTF8, "application/json"), cancel)).IsSuccessStatusCode);
        foreach (var agent in new[] { "a", "b" })
        {
            var events = $$$"""[{"type":"run","key":"r_{{{agent}}}","value":{"id":"r_{{{agent}}}","agent":"agent:{{{agent}}}","messageId":"m_{{{agent}}}","trigger":"q1","status":"started"},"headers":{"operation":"insert"}},"""
                + $$$"""{"type":"message","key":"m_{{{agent}}}","value":{"id":"m_{{{agent}}}","role":"assistant","author":"agent:{{{agent}}}","runId":"r_{{{agent}}}","parts":[{"type":"text","text":"Hi"}],"status":"streaming"},"headers":{"operation":"insert"}}]""";
            var appended = await _server.Client.PostAsync($"/v1/stream/sessions/{Id}", new StringContent(events, Encoding.UTF8, "application/json"), cancel);
            Assert.True(appended.IsSuccessStatusCode, await appended.Content.ReadAsStringAsync(cancel));
        }

        using var stop = await _server.Client.PostAsync($"/api/chat/{Id}/stop", new StringContent("{}", Encoding.UTF8, "application/json"), cancel);
        Assert.Equal(HttpStatusCode.OK, stop.StatusCode);

        var state = new DurableSessions.Sessions.SessionState();
        foreach (var node in System.Text.Json.Nodes.JsonNode.Parse(await _server.Client.GetStringAsync($"/v1/stream/sessions/{Id}?offset=-1", cancel))!.AsArray())
        {
            state.Apply(node!.AsObject());
        }

        Assert.Equal(DurableSessions.Sessions.RunStatus.Cancelled, state.GetRun("r_a")!.Status);
        Assert.Equal(DurableSessions.Sessions.RunStatus.Cancelled, state.GetRun("r_b")!.Status);

        // Nothing is left running: a second stop has nothing to do.
        using var again = await _server.Client.PostAsync($"/api/chat/{Id}/stop", new StringContent("{}", Encoding.UTF8, "application/json"), cancel);
        Assert.Equal(HttpStatusCode.NoContent, again.StatusCode);
    }

    [Fact]
    public async Task A_chat_stream_whose_reply_is_deleted_before_its_run_ends_follows_the_run_to_its_end()
    {
        var cancel = TestContext.Current.CancellationToken;
        var body = """{"id":"deleted-reply","messages":[{"id":"u1","role":"user","parts":[{"type":"text","text":"hello"}]}]}""";
        using var request = new HttpRequestMessage(HttpMethod.Post, "/api/chat") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        using var chat = await _server.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancel);
        Assert.Equal(HttpStatusCode.OK, chat.StatusCode);

        async Task Append(string events)
        {
            var response = await _server.Client.PostAsync("/v1/stream/sessions/deleted-reply", new StringContent(events, Encoding.UTF8, "application/json"), cancel);
            Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync(cancel));
        }

        // A run answers the chat's question; its reply is deleted (a delete carries no value) before the run finishes.
        await Append("""[{"type":"run","key":"r1","value":{"id":"r1","agent":"agent:x","messageId":"m_r","trigger":"u1","status":"started"},"headers":{"operation":"insert"}}]""");
        await Append("""[{"type":"message","key":"m_r","value":{"id":"m_r","role":"assistant","author":"agent:x","runId":"r1","parts":[{"type":"text","text":"Hi"}],"status":"streaming"},"headers":{"operation":"insert"}}]""");
        await Append("""[{"type":"message","key":"m_r","headers":{"operation":"delete"}}]""");
        await Append("""[{"type":"run","key":"r1","value":{"id":"r1","agent":"agent:x","messageId":"m_r","trigger":"u1","status":"finished"},"headers":{"operation":"update"}}]""");

        var chunks = (await chat.Content.ReadAsStringAsync(cancel)).Split('\n')
            .Where(l => l.StartsWith("data: {", StringComparison.Ordinal)).Select(l => System.Text.Json.Nodes.JsonNode.Parse(l[6..])!["type"]!.GetValue<string>()).ToList();
        Assert.Equal("start", chunks[0]);
        Assert.Equal("finish", chunks[^1]);
    }
}
