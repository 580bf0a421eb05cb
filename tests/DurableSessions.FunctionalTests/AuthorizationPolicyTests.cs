using System.Net;
using System.Security.Claims;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json.Nodes;
using DurableSessions.AspNetCore;
using DurableSessions.AspNetCore.Auth;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// Access control is ASP.NET Core authentication and authorization: the endpoints require a policy, and the capability on
/// each stream is a resource-based requirement. So an application can plug in any authentication scheme, and add rules
/// of its own with an authorization handler.
/// </summary>
public sealed class AuthorizationPolicyTests
{
    [Fact]
    public async Task Any_scheme_authenticates_and_an_applications_own_handler_adds_rules_with_the_same_refusal_bodies()
    {
        await using var server = await InProcessServer.StartAsync(services: services =>
        {
            services.AddAuthentication().AddScheme<AuthenticationSchemeOptions, ApiKeyHandler>(ApiKeyHandler.SchemeName, null);
            services.Configure<AccessOptions>(o => o.Scheme = ApiKeyHandler.SchemeName);
            services.AddSingleton<IAuthorizationHandler, PublicReadHandler>();
        });
        var client = server.Client;

        // The stream endpoints carry the policy as endpoint metadata, the way RequireAuthorization puts it there.
        var endpoints = server.Services.GetRequiredService<EndpointDataSource>().Endpoints;
        var stream = Assert.Single(endpoints, e => e is RouteEndpoint route && route.RoutePattern.RawText == "/v1/stream/{**path}");
        Assert.Contains(stream.Metadata.GetOrderedMetadata<IAuthorizeData>(), a => a.Policy == DurableSessionsAuthorization.Policy);

        // No credentials: 401 with the protocol's body, from the authorization middleware.
        var anonymous = await client.GetAsync(new Uri("/v1/stream/public/news?offset=-1", UriKind.Relative));
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        Assert.Equal("UNAUTHENTICATED", (await ErrorOf(anonymous))["code"]!.GetValue<string>());
        Assert.Equal("*", anonymous.Headers.GetValues("Access-Control-Allow-Origin").Single());

        // CORS preflight needs no credentials.
        using (var preflight = new HttpRequestMessage(HttpMethod.Options, "/v1/stream/public/news"))
        {
            preflight.Headers.Add("Origin", "https://app.example");
            preflight.Headers.Add("Access-Control-Request-Method", "POST");
            Assert.Equal(HttpStatusCode.NoContent, (await client.SendAsync(preflight)).StatusCode);
        }

        // The custom scheme's caller with grants writes; a caller without grants reads public/** through the
        // application's handler and is refused a write with the protocol's 403 body.
        Assert.Equal(HttpStatusCode.Created, (await Send(client, HttpMethod.Put, "/v1/stream/public/news", "editor")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Send(client, HttpMethod.Post, "/v1/stream/public/news", "editor", "{\"n\":1}")).StatusCode);
        var read = await Send(client, HttpMethod.Get, "/v1/stream/public/news?offset=-1", "reader");
        Assert.Equal(HttpStatusCode.OK, read.StatusCode);
        Assert.Equal("[{\"n\":1}]", await read.Content.ReadAsStringAsync());
        var write = await Send(client, HttpMethod.Post, "/v1/stream/public/news", "reader", "{\"n\":2}");
        Assert.Equal(HttpStatusCode.Forbidden, write.StatusCode);
        Assert.Equal("FORBIDDEN", (await ErrorOf(write))["code"]!.GetValue<string>());

        // The application's rule covers public/** only.
        Assert.Equal(HttpStatusCode.Created, (await Send(client, HttpMethod.Put, "/v1/stream/private/notes", "editor")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(client, HttpMethod.Get, "/v1/stream/private/notes?offset=-1", "reader")).StatusCode);

        // A refused write changed nothing.
        var after = await Send(client, HttpMethod.Get, "/v1/stream/public/news?offset=-1", "editor");
        Assert.Equal("[{\"n\":1}]", await after.Content.ReadAsStringAsync());

        // An unknown key: 401 with the reason.
        var unknown = await Send(client, HttpMethod.Get, "/v1/stream/public/news?offset=-1", "stranger");
        Assert.Equal(HttpStatusCode.Unauthorized, unknown.StatusCode);
        Assert.Equal("INVALID_TOKEN", (await ErrorOf(unknown))["code"]!.GetValue<string>());

        // Sessions are under the same policy.
        Assert.Equal(HttpStatusCode.Unauthorized, (await client.GetAsync(new Uri("/v1/sessions/s1", UriKind.Relative))).StatusCode);
    }

    [Fact]
    public async Task A_sessions_control_events_and_close_sent_as_raw_appends_are_judged_by_the_applications_handlers_too()
    {
        await using var server = await InProcessServer.StartAsync(services: services =>
        {
            services.AddAuthentication().AddScheme<AuthenticationSchemeOptions, ApiKeyHandler>(ApiKeyHandler.SchemeName, null);
            services.Configure<AccessOptions>(o => o.Scheme = ApiKeyHandler.SchemeName);
            services.AddSingleton<IAuthorizationHandler, SessionRulesHandler>();
        });
        var client = server.Client;
        const string T = "2026-01-01T00:00:00.000Z";
        static string Steer(string by, string key = "c_1") => $$$"""[{"type":"control","key":"{{{key}}}","value":{"id":"{{{key}}}","action":"steer","runId":"r_9","by":"{{{by}}}","text":"shorter","status":"requested","createdAt":"{{{T}}}"},"headers":{"operation":"insert","timestamp":"{{{T}}}"}}]""";

        // The owner's token grants control and admin everywhere; the application's handler refuses both on locked-*
        // sessions. A steer or a close sent as a raw append is refused as the sessions API would refuse it.
        Assert.Equal(HttpStatusCode.Created, (await Send(client, HttpMethod.Put, "/v1/sessions/locked-1", "owner", "{}")).StatusCode);
        var steer = await Send(client, HttpMethod.Post, "/v1/stream/sessions/locked-1", "owner", Steer("owner"));
        Assert.Equal(HttpStatusCode.Forbidden, steer.StatusCode);
        Assert.Contains("control", (await ErrorOf(steer))["message"]!.GetValue<string>());
        using (var close = new HttpRequestMessage(HttpMethod.Post, "/v1/stream/sessions/locked-1"))
        {
            close.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", "owner");
            close.Headers.Add("Stream-Closed", "true");
            var closed = await client.SendAsync(close);
            Assert.Equal(HttpStatusCode.Forbidden, closed.StatusCode);
        }

        var head = await client.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/v1/stream/sessions/locked-1") { Headers = { { "Authorization", "Bearer owner" } } });
        Assert.False(head.Headers.Contains("Stream-Closed"));

        // A session created closed is closed by its creator: admin, as for a close later; without it nothing is created.
        HttpRequestMessage CreateClosed(string path, string key)
        {
            var create = new HttpRequestMessage(HttpMethod.Put, path) { Content = new StringContent("[]", Encoding.UTF8, "application/json") };
            create.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
            create.Headers.Add("Stream-Closed", "true");
            return create;
        }

        var closedByEditor = await client.SendAsync(CreateClosed("/v1/stream/sessions/born-closed", "editor"));
        Assert.Equal(HttpStatusCode.Forbidden, closedByEditor.StatusCode);
        Assert.Contains("admin", (await ErrorOf(closedByEditor))["message"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.NotFound, (await Send(client, HttpMethod.Get, "/v1/stream/sessions/born-closed?offset=-1", "owner")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await client.SendAsync(CreateClosed("/v1/stream/sessions/locked-closed", "owner"))).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await client.SendAsync(CreateClosed("/v1/stream/sessions/born-closed", "owner"))).StatusCode);

        // Where the token grants control (owner on other sessions), a steer is taken.
        Assert.Equal(HttpStatusCode.Created, (await Send(client, HttpMethod.Put, "/v1/sessions/free-1", "owner", "{}")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Send(client, HttpMethod.Post, "/v1/stream/sessions/free-1", "owner", Steer("owner"))).StatusCode);

        // The handler grants the editor (read and write by token) control on open-* sessions: its steer is taken there,
        // and refused elsewhere.
        Assert.Equal(HttpStatusCode.Created, (await Send(client, HttpMethod.Put, "/v1/sessions/open-1", "editor", "{}")).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await Send(client, HttpMethod.Post, "/v1/stream/sessions/open-1", "editor", Steer("editor"))).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Send(client, HttpMethod.Put, "/v1/sessions/plain-1", "editor", "{}")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(client, HttpMethod.Post, "/v1/stream/sessions/plain-1", "editor", Steer("editor"))).StatusCode);

        // Over a WebSocket, the same appends are judged the same way.
        await using (var owner = await SocketClient.ConnectAsync(server.BaseAddress, "owner"))
        {
            await owner.SendAsync(new JsonObject { ["op"] = "append", ["id"] = "locked", ["path"] = "sessions/locked-1", ["data"] = JsonNode.Parse(Steer("owner", "c_2")) });
            var refused = await owner.NextAsync(m => m["id"]?.GetValue<string>() == "locked");
            Assert.Equal(403, refused["status"]!.GetValue<int>());
            await owner.SendAsync(new JsonObject { ["op"] = "append", ["id"] = "free", ["path"] = "sessions/free-1", ["data"] = JsonNode.Parse(Steer("owner", "c_2")) });
            Assert.Equal("ack", (await owner.NextAsync(m => m["id"]?.GetValue<string>() == "free"))["type"]!.GetValue<string>());
        }

        await using (var editor = await SocketClient.ConnectAsync(server.BaseAddress, "editor"))
        {
            await editor.SendAsync(new JsonObject { ["op"] = "append", ["id"] = "open", ["path"] = "sessions/open-1", ["data"] = JsonNode.Parse(Steer("editor", "c_2")) });
            Assert.Equal("ack", (await editor.NextAsync(m => m["id"]?.GetValue<string>() == "open"))["type"]!.GetValue<string>());
        }
    }

    private static async Task<HttpResponseMessage> Send(HttpClient client, HttpMethod method, string path, string key, string? json = null)
    {
        using var request = new HttpRequestMessage(method, path);
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
        request.Content = new StringContent(json ?? string.Empty, Encoding.UTF8, "application/json");
        return await client.SendAsync(request);
    }

    private static async Task<JsonObject> ErrorOf(HttpResponseMessage response)
        => (JsonObject)JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!;

    /// <summary>An application's own scheme: two fixed keys name a subject, one with grants and one without.</summary>
    private sealed class ApiKeyHandler(IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger, UrlEncoder encoder)
        : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
    {
        public const string SchemeName = "ApiKey";

        protected override Task<AuthenticateResult> HandleAuthenticateAsync()
        {
            var header = Request.Headers.Authorization.ToString();
            if (!header.StartsWith("Bearer ", StringComparison.Ordinal))
            {
                return Task.FromResult(AuthenticateResult.NoResult());
            }

            Claim[]? claims = header[7..] switch
            {
                "editor" => [new Claim("sub", "editor"), new Claim("grants", "{\"**\":[\"read\",\"write\"]}")],
                "owner" => [new Claim("sub", "owner"), new Claim("grants", "{\"**\":[\"read\",\"write\",\"control\",\"admin\"]}")],
                "reader" => [new Claim("sub", "reader")],
                _ => null,
            };
            return Task.FromResult(claims is null
                ? AuthenticateResult.Fail("unknown key")
                : AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(new ClaimsIdentity(claims, SchemeName)), SchemeName)));
        }
    }

    /// <summary>
    /// An application's rules on sessions: nobody controls or administers a <c>locked-*</c> session, whatever their token
    /// grants, and anyone signed in controls an <c>open-*</c> one.
    /// </summary>
    private sealed class SessionRulesHandler : AuthorizationHandler<StreamAccessRequirement, StreamResource>
    {
        protected override Task HandleRequirementAsync(AuthorizationHandlerContext context, StreamAccessRequirement requirement, StreamResource resource)
        {
            if (requirement.Capability is Capability.Control or Capability.Admin && resource.Path.StartsWith("sessions/locked-", StringComparison.Ordinal))
            {
                context.Fail();
            }
            else if (requirement.Capability == Capability.Control && resource.Path.StartsWith("sessions/open-", StringComparison.Ordinal))
            {
                context.Succeed(requirement);
            }

            return Task.CompletedTask;
        }
    }

    /// <summary>An application's rule: anyone signed in reads the streams under <c>public/</c>.</summary>
    private sealed class PublicReadHandler : AuthorizationHandler<StreamAccessRequirement, StreamResource>
    {
        protected override Task HandleRequirementAsync(AuthorizationHandlerContext context, StreamAccessRequirement requirement, StreamResource resource)
        {
            if (requirement.Capability == Capability.Read && !resource.IsPattern && resource.Path.StartsWith("public/", StringComparison.Ordinal))
            {
                context.Succeed(requirement);
            }

            return Task.CompletedTask;
        }
    }
}
