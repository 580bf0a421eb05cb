using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;

namespace DurableSessions.FunctionalTests;

/// <summary>Session operations while other writers keep moving the session's tail, on a closed session, and ids a path cannot hold.</summary>
public sealed class SessionContentionTests
{
    [Fact]
    public async Task A_session_operation_that_other_nodes_keep_outrunning_is_a_503_to_retry_that_writes_nothing()
    {
        ContendedStore store = null!;
        await using var server = await InProcessServer.StartAsync(services: services =>
        {
            services.WrapStore(inner => store = new ContendedStore(inner));
        });
        static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");
        Assert.Equal(HttpStatusCode.Created, (await server.Client.PutAsync(new Uri("/v1/sessions/contended", UriKind.Relative), Json("{}"))).StatusCode);

        // Every conditional append is answered as if another node had appended first, as a shared store may under load.
        store.Contended = true;
        var refused = await server.Client.PostAsync(new Uri("/v1/sessions/contended/messages", UriKind.Relative), Json("{\"text\":\"first\"}"));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Equal("1", refused.Headers.RetryAfter?.ToString());
        Assert.Contains("\"SESSION_BUSY\"", await refused.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.True(store.Refusals >= 2, "the operation was not decided again on the caught-up state");

        store.Contended = false;
        Assert.Equal(HttpStatusCode.Created, (await server.Client.PostAsync(new Uri("/v1/sessions/contended/messages", UriKind.Relative), Json("{\"text\":\"second\"}"))).StatusCode);
        var stream = await server.Client.GetStringAsync(new Uri("/v1/stream/sessions/contended?offset=-1", UriKind.Relative));
        Assert.Contains("\"second\"", stream, StringComparison.Ordinal);
        Assert.DoesNotContain("\"first\"", stream, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_operation_on_a_closed_session_is_409_stream_closed_not_404()
    {
        await using var server = await InProcessServer.StartAsync();
        static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");
        Assert.Equal(HttpStatusCode.Created, (await server.Client.PutAsync(new Uri("/v1/sessions/closed-one", UriKind.Relative), Json("{}"))).StatusCode);
        var close = new HttpRequestMessage(HttpMethod.Post, new Uri("/v1/stream/sessions/closed-one", UriKind.Relative)) { Content = new ByteArrayContent([]) };
        close.Headers.Add("Stream-Closed", "true");
        Assert.True((await server.Client.SendAsync(close)).IsSuccessStatusCode);

        foreach (var (path, body) in new[] { ("messages", "{\"text\":\"anyone?\"}"), ("presence", "{\"participantId\":\"user:a\",\"kind\":\"client\"}"), ("handoff", "{\"holder\":\"user:h\"}") })
        {
            var refused = await server.Client.PostAsync(new Uri($"/v1/sessions/closed-one/{path}", UriKind.Relative), Json(body));
            Assert.Equal(HttpStatusCode.Conflict, refused.StatusCode);
            Assert.Contains("\"STREAM_CLOSED\"", await refused.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        Assert.Equal(HttpStatusCode.NotFound, (await server.Client.PostAsync(new Uri("/v1/sessions/never-made/messages", UriKind.Relative), Json("{\"text\":\"x\"}"))).StatusCode);
    }

    [Theory]
    [InlineData(".")]
    [InlineData("..")]
    public async Task A_chat_or_session_id_of_dots_alone_is_refused(string id)
    {
        await using var server = await InProcessServer.StartAsync();
        var body = new JsonObject { ["id"] = id, ["messages"] = new JsonArray(new JsonObject { ["id"] = "m1", ["role"] = "user", ["parts"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "hi" }) }) };
        var chat = await server.Client.PostAsync(new Uri("/api/chat", UriKind.Relative), new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, chat.StatusCode);
        var create = await server.Client.PutAsync(new Uri($"/v1/sessions/{Uri.EscapeDataString(id).Replace(".", "%2E", StringComparison.Ordinal)}", UriKind.Relative), new StringContent("{}", Encoding.UTF8, "application/json"));
        Assert.True((int)create.StatusCode is >= 400 and < 500, $"{create.StatusCode}");
        await foreach (var path in server.Services.GetRequiredService<StreamStore>().ListPathsAsync())
        {
            Assert.DoesNotContain("..", path.Split('/').Where(s => s is "." or ".."));
        }
    }

    private sealed class ContendedStore(StreamStore inner) : DelegatingStore(inner)
    {
        public volatile bool Contended;

        public int Refusals;

        public override async ValueTask<AppendResult> AppendAsync(AppendRequest request, CancellationToken cancellationToken = default)
        {
            if (Contended && request.Path == "sessions/contended" && request.ExpectedTail is { } tail)
            {
                Interlocked.Increment(ref Refusals);
                return new AppendResult { Status = AppendStatus.TailMoved, TailPosition = tail };
            }

            return await Inner.AppendAsync(request, cancellationToken);
        }
    }
}
