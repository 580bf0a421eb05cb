using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DurableSessions.AspNetCore.Auth;

/// <summary>
/// Enforces access tokens on every stream and session endpoint: no or invalid token → 401, outside the token's grant → 403.
/// With no signing key configured, everything is allowed (and a warning is logged at start).
/// </summary>
internal sealed partial class AccessControl
{
    private const string ItemKey = "DurableSessions.Access";

    public AccessControl(IOptions<AccessOptions> options, ILogger<AccessControl> logger)
    {
        Tokens = new AccessTokens(options.Value);
        if (!Tokens.Enabled)
        {
            Log.RunningOpen(logger);
        }
    }

    public AccessTokens Tokens { get; }

    /// <summary>
    /// The access of the current request, as <see cref="AuthorizeAsync"/> established it. A request that was never
    /// authorized gets no access at all: a route that forgot to authorize fails closed, never open.
    /// </summary>
    public static Access Current(HttpContext context) => context.Items[ItemKey] as Access ?? Access.Nothing;

    /// <summary>Checks the request's token for <paramref name="capability"/> on <paramref name="path"/>; writes 401/403 and returns false when refused.</summary>
    public async Task<bool> AuthorizeAsync(HttpContext context, string path, Capability capability)
    {
        if (!Tokens.Enabled)
        {
            context.Items[ItemKey] = Access.Everything;
            return true;
        }

        var header = context.Request.Headers.Authorization.ToString();
        if (!header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            context.Response.Headers.WWWAuthenticate = "Bearer";
            await Problem.Write(context, 401, "UNAUTHENTICATED", "An access token is required (Authorization: Bearer <token>).").ConfigureAwait(false);
            return false;
        }

        var (access, error) = await Tokens.ValidateAsync(header[7..].Trim()).ConfigureAwait(false);
        if (access is null)
        {
            context.Response.Headers.WWWAuthenticate = "Bearer error=\"invalid_token\"";
            await Problem.Write(context, 401, "INVALID_TOKEN", error!).ConfigureAwait(false);
            return false;
        }

        if (!access.Allows(path, capability))
        {
            await Problem.Write(context, 403, "FORBIDDEN", $"The token does not grant {capability.ToString().ToLowerInvariant()} on {path}.").ConfigureAwait(false);
            return false;
        }

        context.Items[ItemKey] = access;
        return true;
    }

    private static partial class Log
    {
        [LoggerMessage(500, LogLevel.Warning, "ACCESS CONTROL IS OFF: no Auth:SigningKey is configured, so anyone who can reach this server can read, write and delete every stream and session. Configure Auth:SigningKey before exposing it.")]
        public static partial void RunningOpen(ILogger logger);
    }
}
