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
}
