using System.Net;
using System.Net.Http.Headers;
using System.Security.Claims;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.AspNetCore.Auth;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace DurableSessions.FunctionalTests;

/// <summary>Bearer tokens on every stream and session endpoint: the auth matrix.</summary>
public sealed class AccessControlTests : IAsyncLifetime
{
    private const string Key = "test-signing-key-of-at-least-32-bytes!";
    private InProcessServer _server = null!;
    private AccessTokens _tokens = null!;

    public async ValueTask InitializeAsync()
    {
        _server = await InProcessServer.StartAsync(services: s => s.Configure<AccessOptions>(o => o.SigningKey = Key));
        _tokens = _server.Services.GetRequiredService<AccessTokens>();
        var admin = Token("admin:root", ("sessions/**", [Capability.Read, Capability.Write, Capability.Control, Capability.Admin]));
        foreach (var id in new[] { "a", "b" })
        {
            Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Put, $"/v1/sessions/{id}", admin, "{}")).StatusCode);
        }
    }

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    private string Token(string subject, params (string Pattern, Capability[] Capabilities)[] grants)
        => _tokens.Issue(subject, grants.ToDictionary(g => g.Pattern, g => g.Capabilities), TimeSpan.FromMinutes(5));

    private async Task<HttpResponseMessage> Send(HttpMethod method, string url, string? token, string? body = null)
    {
        using var request = new HttpRequestMessage(method, url);
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        if (body is not null)
        {
            request.Content = new StringContent(body, Encoding.UTF8, "application/json");
        }

        return await _server.Client.SendAsync(request);
    }

    private static string Forged(string key, DateTime notBefore, DateTime expires) => new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
    {
        Subject = new ClaimsIdentity([new Claim("sub", "user:mallory")]),
        Claims = new Dictionary<string, object> { ["grants"] = new Dictionary<string, object> { ["sessions/**"] = new[] { "read", "write", "control", "admin" } } },
        NotBefore = notBefore,
        IssuedAt = notBefore,
        Expires = expires,
        SigningCredentials = new SigningCredentials(new SymmetricSecurityKey(Encoding.UTF8.GetBytes(key)), SecurityAlgorithms.HmacSha256),
    });

    public static TheoryData<string, string, string?> Endpoints => new()
    {
        { "GET", "/v1/sessions/a", null },
        { "GET", "/v1/stream/sessions/a?offset=-1", null },
        { "POST", "/v1/sessions/a/messages", "{\"text\":\"hi\"}" },
        { "POST", "/v1/stream/sessions/a", "[{\"type\":\"x\",\"key\":\"k\",\"value\":{},\"headers\":{\"operation\":\"insert\"}}]" },
        { "DELETE", "/v1/stream/sessions/a", null },
        { "PUT", "/v1/stream/__ds/subscriptions/s1", "{\"type\":\"pull-wake\",\"pattern\":\"sessions/*\",\"wake_stream\":\"wake\"}" },
    };

    [Theory]
    [MemberData(nameof(Endpoints))]
    public async Task No_token_wrong_key_and_expired_tokens_get_401(string method, string url, string? body)
    {
        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(new HttpMethod(method), url, null, body)).StatusCode);
        var wrongKey = Forged("another-key-that-is-also-32-bytes-long!!", DateTime.UtcNow.AddMinutes(-1), DateTime.UtcNow.AddMinutes(5));
        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(new HttpMethod(method), url, wrongKey, body)).StatusCode);
        var expired = Forged(Key, DateTime.UtcNow.AddHours(-2), DateTime.UtcNow.AddHours(-1));
        var response = await Send(new HttpMethod(method), url, expired, body);
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Contains("expired", await response.Content.ReadAsStringAsync(), StringComparison.OrdinalIgnoreCase);
        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(new HttpMethod(method), url, "not.a.jwt", body)).StatusCode);
    }

    [Fact]
    public async Task A_token_for_one_session_is_refused_on_another()
    {
        var alice = Token("user:alice", ("sessions/a", [Capability.Read, Capability.Write, Capability.Control]));
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Get, "/v1/sessions/a", alice)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Get, "/v1/sessions/b", alice)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Get, "/v1/stream/sessions/b?offset=-1", alice)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Post, "/v1/sessions/b/messages", alice, "{\"text\":\"hi\"}")).StatusCode);
    }

    [Fact]
    public async Task Each_operation_needs_its_capability()
    {
        var reader = Token("user:reader", ("sessions/*", [Capability.Read]));
        var writer = Token("user:writer", ("sessions/*", [Capability.Read, Capability.Write]));
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Get, "/v1/stream/sessions/a?offset=-1", reader)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Post, "/v1/sessions/a/messages", reader, "{\"text\":\"hi\"}")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Post, "/v1/sessions/a/messages", writer, "{\"text\":\"hi\"}")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Post, "/v1/sessions/a/runs/r1/cancel", writer, "{}")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Post, "/v1/sessions/a/handoff", writer, "{}")).StatusCode);

        // Asking for a reply again needs write, as asking a question does: a reader is refused before the session is
        // looked at, a writer is answered by the session's rules (no reply to write again here).
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Post, "/v1/sessions/a/messages/m1/regenerate", reader, "{}")).StatusCode);
        var regenerate = await Send(HttpMethod.Post, "/v1/sessions/a/messages/m1/regenerate", writer, "{}");
        Assert.Equal(HttpStatusCode.Conflict, regenerate.StatusCode);
        Assert.Contains("MESSAGE_NOT_FOUND", await regenerate.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Delete, "/v1/stream/sessions/a", writer)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Get, "/v1/stream/__ds/subscriptions/s1", writer)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Get, "/v1/stream/__ds/jwks.json", null)).StatusCode);
    }

    [Fact]
    public async Task The_author_is_the_tokens_subject_not_what_the_body_claims()
    {
        var writer = Token("user:writer", ("sessions/a", [Capability.Read, Capability.Write]));
        var post = await Send(HttpMethod.Post, "/v1/sessions/a/messages", writer, "{\"text\":\"hi\",\"author\":\"user:ceo\"}");
        var messageId = JsonNode.Parse(await post.Content.ReadAsStringAsync())!["messageId"]!.GetValue<string>();
        var snapshot = JsonNode.Parse(await (await Send(HttpMethod.Get, "/v1/sessions/a", writer)).Content.ReadAsStringAsync())!.AsArray();
        var message = snapshot.Single(m => m!["key"]?.GetValue<string>() == messageId)!["value"]!;
        Assert.Equal("user:writer", message["author"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_token_that_expires_during_a_live_tail_is_refreshed_and_the_tail_resumes_from_its_offset_losing_nothing()
    {
        await using var server = await InProcessServer.StartAsync(services: s => s.Configure<AccessOptions>(o =>
        {
            o.SigningKey = Key;
            o.ClockSkew = TimeSpan.Zero;
        }));
        var tokens = server.Services.GetRequiredService<AccessTokens>();
        var writer = tokens.Issue("agent:w", new Dictionary<string, Capability[]> { ["refresh/**"] = [Capability.Read, Capability.Write] }, TimeSpan.FromMinutes(5));
        var issued = 0;
        using var client = new DurableSessions.Client.DurableSessionsClient(DurableSessions.Client.DurableSessionsClientOptions.Default with
        {
            BaseAddress = server.BaseAddress,

            // Every token lives two seconds (a JWT's expiry is in whole seconds, so one to two): the tail outlives several.
            AccessTokenProvider = _ =>
            {
                Interlocked.Increment(ref issued);
                return ValueTask.FromResult<string?>(tokens.Issue("user:reader", new Dictionary<string, Capability[]> { ["refresh/**"] = [Capability.Read] }, TimeSpan.FromSeconds(2)));
            },
        });

        async Task Append(int n)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/stream/refresh/tail") { Content = new StringContent($"{{\"n\":{n}}}", Encoding.UTF8, "application/json") };
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", writer);
            Assert.Equal(HttpStatusCode.NoContent, (await server.Client.SendAsync(request)).StatusCode);
        }

        using (var create = new HttpRequestMessage(HttpMethod.Put, "/v1/stream/refresh/tail") { Content = new StringContent("[]", Encoding.UTF8, "application/json") })
        {
            create.Headers.Authorization = new AuthenticationHeaderValue("Bearer", writer);
            Assert.Equal(HttpStatusCode.Created, (await server.Client.SendAsync(create)).StatusCode);
        }

        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var received = new List<int>();
        var tail = Task.Run(async () =>
        {
            await foreach (var batch in client.ReadStreamAsync("refresh/tail", "-1", stop.Token))
            {
                lock (received)
                {
                    received.AddRange(batch.Messages.Select(m => m.GetProperty("n").GetInt32()));
                    if (received.Count >= 30)
                    {
                        return;
                    }
                }
            }
        });

        // Ten events, then ten more after each of two token refreshes: each live read ends when its token expires.
        await WaitFor(() => Volatile.Read(ref issued) >= 1, "the tail to connect");
        for (var round = 0; round < 3; round++)
        {
            var refreshes = Volatile.Read(ref issued);
            for (var n = round * 10; n < (round + 1) * 10; n++)
            {
                await Append(n);
            }

            if (round < 2)
            {
                await WaitFor(() => Volatile.Read(ref issued) > refreshes, $"a reconnect with a fresh token after round {round}");
            }
        }

        async Task WaitFor(Func<bool> condition, string what)
        {
            var deadline = DateTime.UtcNow.AddSeconds(20);
            while (!condition())
            {
                if (tail.IsFaulted)
                {
                    await tail;
                }

                Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}");
                await Task.Delay(20);
            }
        }

        await tail.WaitAsync(stop.Token);
        Assert.Equal(Enumerable.Range(0, 30), received);
        Assert.True(issued >= 3, $"the token provider was asked {issued} times");
    }
}
