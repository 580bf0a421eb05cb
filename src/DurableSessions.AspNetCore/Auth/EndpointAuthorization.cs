using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Authorization.Policy;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Options;

namespace DurableSessions.AspNetCore.Auth;

/// <summary>Names of the authentication scheme and authorization policy the DurableSessions endpoints use.</summary>
public static class DurableSessionsAuthorization
{
    /// <summary>
    /// The policy every DurableSessions endpoint requires when access control is on: a token validated by the configured
    /// scheme (<see cref="AccessOptions.Scheme"/>, or <see cref="SharedKeyScheme"/>) that names its subject. The capability
    /// on each stream is then checked per request with a <see cref="StreamAccessRequirement"/>.
    /// </summary>
    public const string Policy = "DurableSessions";

    /// <summary>The JwtBearer scheme that validates HS256 tokens signed with <see cref="AccessOptions.SigningKey"/>.</summary>
    public const string SharedKeyScheme = "DurableSessions.SharedKey";
}

/// <summary>
/// Marks an endpoint as a DurableSessions endpoint: which of its requests need no token (CORS preflight, routes that
/// check a token of their own), and the headers every answer carries, refusals included.
/// </summary>
internal sealed class DurableSessionsEndpoint(Func<HttpContext, bool> isAnonymous, Action<HttpContext> applyHeaders)
{
    public bool IsAnonymous(HttpContext context) => isAnonymous(context);

    public void ApplyHeaders(HttpContext context) => applyHeaders(context);
}

/// <summary>The requirement of <see cref="DurableSessionsAuthorization.Policy"/>: an authenticated caller with a subject.</summary>
internal sealed class AccessTokenRequirement : IAuthorizationRequirement
{
    public static AccessTokenRequirement Instance { get; } = new();

    private AccessTokenRequirement()
    {
    }
}

internal sealed class AccessTokenHandler(AccessControl access) : AuthorizationHandler<AccessTokenRequirement>
{
    public const string NoSubject = "The access token has no subject.";

    protected override Task HandleRequirementAsync(AuthorizationHandlerContext context, AccessTokenRequirement requirement)
    {
        if (context.Resource is HttpContext http && http.GetEndpoint()?.Metadata.GetMetadata<DurableSessionsEndpoint>() is { } endpoint && endpoint.IsAnonymous(http))
        {
            context.Succeed(requirement);
        }
        else if (context.User.Identity?.IsAuthenticated == true)
        {
            // Without a subject nothing can be attributed (authors, presence, stream ownership), so the token is refused.
            if (access.AccessOf(context.User) is null)
            {
                context.Fail(new AuthorizationFailureReason(this, NoSubject));
            }
            else
            {
                context.Succeed(requirement);
            }
        }

        return Task.CompletedTask;
    }
}

/// <summary>
/// Answers a refusal on a DurableSessions endpoint with the protocol's error body: 401 with <c>WWW-Authenticate</c>
/// for a missing or invalid token, 403 otherwise. Refusals on any other endpoint are left to the default handler.
/// </summary>
internal sealed class AccessRefusalHandler(IOptions<AccessOptions> options) : IAuthorizationMiddlewareResultHandler
{
    private readonly AuthorizationMiddlewareResultHandler _default = new();

    public async Task HandleAsync(RequestDelegate next, HttpContext context, AuthorizationPolicy policy, PolicyAuthorizationResult authorizeResult)
    {
        if (authorizeResult.Succeeded || context.GetEndpoint()?.Metadata.GetMetadata<DurableSessionsEndpoint>() is not { } endpoint)
        {
            await _default.HandleAsync(next, context, policy, authorizeResult).ConfigureAwait(false);
            return;
        }

        endpoint.ApplyHeaders(context);
        if (authorizeResult.Forbidden && !(authorizeResult.AuthorizationFailure?.FailureReasons.Any(r => r.Message == AccessTokenHandler.NoSubject) ?? false))
        {
            await Problem.Write(context, 403, "FORBIDDEN", "The token is not allowed here.").ConfigureAwait(false);
            return;
        }

        var presented = context.Request.Headers.Authorization.ToString().StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)
                        || (context.Request.Path.Equals(WebSockets.StreamSocketEndpoint.Path, StringComparison.Ordinal) && context.Request.Query.ContainsKey("access_token"));
        if (authorizeResult.Challenged && !presented)
        {
            context.Response.Headers.WWWAuthenticate = "Bearer";
            await Problem.Write(context, 401, "UNAUTHENTICATED", "An access token is required (Authorization: Bearer <token>).").ConfigureAwait(false);
            return;
        }

        string reason;
        if (authorizeResult.Forbidden)
        {
            reason = AccessTokenHandler.NoSubject;
        }
        else
        {
            // The scheme's handler keeps its result for the request, so this does not validate the token again.
            var result = await context.AuthenticateAsync(options.Value.EffectiveScheme).ConfigureAwait(false);
            reason = AccessControl.FailureReason(result);
        }

        context.Response.Headers.WWWAuthenticate = "Bearer error=\"invalid_token\"";
        await Problem.Write(context, 401, "INVALID_TOKEN", reason).ConfigureAwait(false);
    }
}
