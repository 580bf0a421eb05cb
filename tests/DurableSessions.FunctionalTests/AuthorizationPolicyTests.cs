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
                "reader" => [new Claim("sub", "reader")],
                _ => null,
            };
            return Task.FromResult(claims is null
                ? AuthenticateResult.Fail("unknown key")
                : AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(new ClaimsIdentity(claims, SchemeName)), SchemeName)));
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
