using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// Tokens from an identity provider: the real server configured with the standard <c>Authentication:Schemes:Bearer</c>
/// section finds the provider's keys by OIDC discovery and JWKS, accepts RS256 and ES256 tokens signed by them, refuses
/// others, follows a key rotation, and maps scopes to capabilities.
/// </summary>
public sealed class IdentityProviderTests : IAsyncLifetime
{
    private const string Audience = "durable-sessions";
    private readonly RSA _first = RSA.Create(2048);
    private readonly RSA _second = RSA.Create(2048);
    private readonly ECDsa _elliptic = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private readonly RSA _stranger = RSA.Create(2048);
    private WebApplication _provider = null!;
    private string _issuer = null!;
    private volatile JsonArray _keys = [];

    public async ValueTask InitializeAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        _provider = builder.Build();
        _provider.MapGet("/.well-known/openid-configuration", () => Results.Text(new JsonObject { ["issuer"] = _issuer, ["jwks_uri"] = _issuer + "/jwks" }.ToJsonString(), "application/json"));
        _provider.MapGet("/jwks", () => Results.Text(new JsonObject { ["keys"] = _keys.DeepClone() }.ToJsonString(), "application/json"));
        await _provider.StartAsync();
        _issuer = _provider.Urls.First();
        _keys = [Rsa("k1", _first), Ec("e1", _elliptic)];
    }

    public async ValueTask DisposeAsync()
    {
        await _provider.DisposeAsync();
        _first.Dispose();
        _second.Dispose();
        _elliptic.Dispose();
        _stranger.Dispose();
    }

    [Fact]
    public async Task Tokens_signed_by_the_providers_keys_are_accepted_others_refused_and_a_rotation_is_followed()
    {
        await using var server = await StartWithProviderAsync("--Authentication:Schemes:Bearer:RefreshInterval=00:00:01", "--Auth:ScopeGrants:streams.read:idp/**:0=read");
        using var client = new HttpClient { BaseAddress = server.BaseAddress };
        var all = new JsonObject { ["idp/**"] = new JsonArray("read", "write", "admin") };

        // RS256 and ES256 from the provider's JWKS.
        Assert.Equal(HttpStatusCode.Created, await Send(client, HttpMethod.Put, "/v1/stream/idp/a", Token(new RsaSecurityKey(_first) { KeyId = "k1" }, SecurityAlgorithms.RsaSha256, grants: all), "[]"));
        Assert.Equal(HttpStatusCode.NoContent, await Send(client, HttpMethod.Post, "/v1/stream/idp/a", Token(new ECDsaSecurityKey(_elliptic) { KeyId = "e1" }, SecurityAlgorithms.EcdsaSha256, grants: all), "{\"n\":1}"));

        // A key the provider does not publish, another audience, another issuer, no token: 401.
        Assert.Equal(HttpStatusCode.Unauthorized, await Send(client, HttpMethod.Get, "/v1/stream/idp/a?offset=-1", Token(new RsaSecurityKey(_stranger) { KeyId = "k1" }, SecurityAlgorithms.RsaSha256, grants: all)));
        Assert.Equal(HttpStatusCode.Unauthorized, await Send(client, HttpMethod.Get, "/v1/stream/idp/a?offset=-1", Token(new RsaSecurityKey(_first) { KeyId = "k1" }, SecurityAlgorithms.RsaSha256, grants: all, audience: "someone-else")));
        Assert.Equal(HttpStatusCode.Unauthorized, await Send(client, HttpMethod.Get, "/v1/stream/idp/a?offset=-1", Token(new RsaSecurityKey(_first) { KeyId = "k1" }, SecurityAlgorithms.RsaSha256, grants: all, issuer: "http://127.0.0.1:1")));
        Assert.Equal(HttpStatusCode.Unauthorized, await Send(client, HttpMethod.Get, "/v1/stream/idp/a?offset=-1", token: null));

        // A scope mapped by configuration: read, not write.
        var reader = Token(new RsaSecurityKey(_first) { KeyId = "k1" }, SecurityAlgorithms.RsaSha256, scope: "openid streams.read");
        Assert.Equal(HttpStatusCode.OK, await Send(client, HttpMethod.Get, "/v1/stream/idp/a?offset=-1", reader));
        Assert.Equal(HttpStatusCode.Forbidden, await Send(client, HttpMethod.Post, "/v1/stream/idp/a", reader, "{\"n\":2}"));

        // The provider rotates to a new key and drops the old one: the server learns the new one and stops taking the old.
        _keys = [Rsa("k2", _second), Ec("e1", _elliptic)];
        var rotated = Token(new RsaSecurityKey(_second) { KeyId = "k2" }, SecurityAlgorithms.RsaSha256, grants: all);
        await Eventually(async () => await Send(client, HttpMethod.Post, "/v1/stream/idp/a", rotated, "{\"n\":3}") == HttpStatusCode.NoContent, "the rotated key to be accepted");
        var old = Token(new RsaSecurityKey(_first) { KeyId = "k1" }, SecurityAlgorithms.RsaSha256, grants: all);
        await Eventually(async () => await Send(client, HttpMethod.Get, "/v1/stream/idp/a?offset=-1", old) == HttpStatusCode.Unauthorized, "the dropped key to be refused");
    }

    [Fact]
    public async Task A_websocket_opened_with_a_key_the_provider_withdrew_is_closed_with_4401_and_others_go_on()
    {
        // HTTP requests stop taking a token once its signing key is withdrawn (and the server has fetched the key set
        // again). A WebSocket opened with such a token used to be served until the token expired: its token is now
        // validated again every TokenRecheckInterval.
        await using var server = await StartWithProviderAsync("--Authentication:Schemes:Bearer:RefreshInterval=00:00:01", "--WebSockets:TokenRecheckInterval=00:00:01");
        using var client = new HttpClient { BaseAddress = server.BaseAddress };
        var all = new JsonObject { ["idp/**"] = new JsonArray("read", "write", "admin") };
        var withdrawnKey = Token(new RsaSecurityKey(_first) { KeyId = "k1" }, SecurityAlgorithms.RsaSha256, grants: all);
        var keptKey = Token(new ECDsaSecurityKey(_elliptic) { KeyId = "e1" }, SecurityAlgorithms.EcdsaSha256, grants: all);
        Assert.Equal(HttpStatusCode.Created, await Send(client, HttpMethod.Put, "/v1/stream/idp/ws", withdrawnKey, "[]"));

        await using var withdrawn = await SocketClient.ConnectAsync(server.BaseAddress, withdrawnKey);
        await using var kept = await SocketClient.ConnectAsync(server.BaseAddress, keptKey);
        foreach (var socket in new[] { withdrawn, kept })
        {
            await socket.SendAsync(new JsonObject { ["op"] = "subscribe", ["sub"] = "s", ["path"] = "idp/ws", ["offset"] = "-1" });
            await socket.NextAsync(m => m["type"]?.GetValue<string>() == "up-to-date" || m["upToDate"]?.GetValue<bool>() == true);
        }

        // The provider drops k1; the server learns it (a token signed with the new key makes it fetch the key set).
        _keys = [Rsa("k2", _second), Ec("e1", _elliptic)];
        var rotated = Token(new RsaSecurityKey(_second) { KeyId = "k2" }, SecurityAlgorithms.RsaSha256, grants: all);
        await Eventually(async () => await Send(client, HttpMethod.Post, "/v1/stream/idp/ws", rotated, "{\"n\":1}") == HttpStatusCode.NoContent, "the rotated key to be accepted");
        await Eventually(async () => await Send(client, HttpMethod.Get, "/v1/stream/idp/ws?offset=-1", withdrawnKey) == HttpStatusCode.Unauthorized, "the dropped key to be refused");

        await withdrawn.DrainUntilClosedAsync(TimeSpan.FromSeconds(30));
        Assert.Equal((System.Net.WebSockets.WebSocketCloseStatus)4401, withdrawn.CloseStatus);

        // The connection whose key stays is served: it answers a ping after the other one was closed.
        await kept.SendAsync(new JsonObject { ["op"] = "ping", ["id"] = "p1" });
        var pong = await kept.NextAsync(m => m["type"]?.GetValue<string>() == "pong");
        Assert.Equal("p1", pong["id"]!.GetValue<string>());
        Assert.Null(kept.CloseStatus);
    }

    [Fact]
    public async Task With_an_identity_provider_and_no_signing_key_the_hosted_agent_is_not_started_and_the_server_serves()
    {
        // The provider's scheme does not take a token the server could issue its own agent (it has no signing key): the
        // agent is not hosted, which the server says, and it keeps serving. (The agent's first refused call used to stop
        // the whole server.)
        await using var server = await StartWithProviderAsync("--Agent:Enabled=true");
        await Eventually(() => Task.FromResult(server.RecentOutput.Contains("is not started: access control does not accept", StringComparison.Ordinal)), "the hosted agent to be refused");
        using var client = new HttpClient { BaseAddress = server.BaseAddress };
        var all = new JsonObject { ["idp/**"] = new JsonArray("read", "write", "admin") };
        Assert.Equal(HttpStatusCode.Created, await Send(client, HttpMethod.Put, "/v1/stream/idp/up", Token(new RsaSecurityKey(_first) { KeyId = "k1" }, SecurityAlgorithms.RsaSha256, grants: all), "[]"));
        Assert.DoesNotContain("BackgroundService failed", server.RecentOutput, StringComparison.Ordinal);
    }

    /// <summary>The server with the provider as its <c>Bearer</c> scheme (its audience, plain HTTP), and <paramref name="settings"/>.</summary>
    private Task<ServerProcess> StartWithProviderAsync(params string[] settings)
        => ServerProcess.StartAsync(null,
        [
            $"--Authentication:Schemes:Bearer:Authority={_issuer}",
            "--Authentication:Schemes:Bearer:RequireHttpsMetadata=false",
            $"--Authentication:Schemes:Bearer:ValidAudiences:0={Audience}",
            .. settings,
        ]);

    private string Token(SecurityKey key, string algorithm, JsonObject? grants = null, string? scope = null, string audience = Audience, string? issuer = null)
    {
        var claims = new Dictionary<string, object> { ["sub"] = "user:idp" };
        if (grants is not null)
        {
            claims["grants"] = System.Text.Json.JsonDocument.Parse(grants.ToJsonString()).RootElement.Clone();
        }

        if (scope is not null)
        {
            claims["scope"] = scope;
        }

        var now = DateTime.UtcNow;
        return new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
        {
            Claims = claims,
            Issuer = issuer ?? _issuer,
            Audience = audience,
            IssuedAt = now,
            NotBefore = now,
            Expires = now.AddMinutes(5),
            SigningCredentials = new SigningCredentials(key, algorithm),
        });
    }

    private static async Task<HttpStatusCode> Send(HttpClient client, HttpMethod method, string url, string? token, string? body = null)
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

        using var response = await client.SendAsync(request);
        return response.StatusCode;
    }

    private static async Task Eventually(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}");
            await Task.Delay(100);
        }
    }

    private static JsonObject Rsa(string kid, RSA rsa)
    {
        var p = rsa.ExportParameters(false);
        return new JsonObject { ["kty"] = "RSA", ["kid"] = kid, ["use"] = "sig", ["alg"] = "RS256", ["n"] = Base64UrlEncoder.Encode(p.Modulus), ["e"] = Base64UrlEncoder.Encode(p.Exponent) };
    }

    private static JsonObject Ec(string kid, ECDsa ec)
    {
        var p = ec.ExportParameters(false);
        return new JsonObject { ["kty"] = "EC", ["kid"] = kid, ["use"] = "sig", ["alg"] = "ES256", ["crv"] = "P-256", ["x"] = Base64UrlEncoder.Encode(p.Q.X), ["y"] = Base64UrlEncoder.Encode(p.Q.Y) };
    }
}
