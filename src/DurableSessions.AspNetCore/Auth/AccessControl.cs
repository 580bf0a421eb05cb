using System.Globalization;
using System.Security.Claims;
using System.Text.Json;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.Tokens;

namespace DurableSessions.AspNetCore.Auth;

/// <summary>
/// Enforces access tokens on every stream and session endpoint: no or invalid token → 401, outside the token's grant → 403.
/// With no signing key configured, everything is allowed (and a warning is logged at start).
/// </summary>
internal sealed partial class AccessControl
{
    private const string ItemKey = "DurableSessions.Access";

    private readonly AccessOptions _options;

    public AccessControl(IOptions<AccessOptions> options, ILogger<AccessControl> logger)
    {
        _options = options.Value;
        Tokens = new AccessTokens(_options);
        if (!_options.Enabled)
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
        if (!_options.Enabled)
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

        var (access, error) = _options.Scheme is { Length: > 0 } scheme
            ? await AuthenticateAsync(context, scheme).ConfigureAwait(false)
            : await Tokens.ValidateAsync(header[7..].Trim()).ConfigureAwait(false);
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

    /// <summary>
    /// Validates the token with an ASP.NET Core authentication scheme (JwtBearer with OIDC discovery and JWKS, or any
    /// other) and reads the access from its claims: <c>sub</c>, <c>grants</c>, and the configured scope and role grants.
    /// </summary>
    private async Task<(Access? Access, string? Error)> AuthenticateAsync(HttpContext context, string scheme)
    {
        var result = await context.AuthenticateAsync(scheme).ConfigureAwait(false);
        if (!result.Succeeded || result.Principal is not { } principal)
        {
            return (null, result.Failure is SecurityTokenExpiredException ? "The access token has expired." : "The access token is not valid.");
        }

        var subject = principal.FindFirst("sub")?.Value ?? principal.FindFirst(ClaimTypes.NameIdentifier)?.Value;
        if (string.IsNullOrEmpty(subject))
        {
            return (null, "The access token has no subject.");
        }

        var grants = new List<(string Pattern, HashSet<Capability> Capabilities)>();
        foreach (var claim in principal.FindAll("grants"))
        {
            try
            {
                using var json = JsonDocument.Parse(claim.Value);
                grants.AddRange(AccessTokens.ParseGrants(json.RootElement));
            }
            catch (JsonException)
            {
                // A grants claim that is not JSON grants nothing.
            }
        }

        var scopes = principal.FindAll("scope").Concat(principal.FindAll("scp")).SelectMany(c => c.Value.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        var roles = principal.FindAll("roles").Concat(principal.FindAll("role")).Concat(principal.FindAll(ClaimTypes.Role)).Select(c => c.Value);
        grants.AddRange(Mapped(scopes, _options.ScopeGrants));
        grants.AddRange(Mapped(roles, _options.RoleGrants));

        DateTimeOffset? expiresAt = long.TryParse(principal.FindFirst("exp")?.Value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var exp)
            ? DateTimeOffset.FromUnixTimeSeconds(exp) + _options.ClockSkew
            : null;
        return (new Access(subject, grants, expiresAt: expiresAt), null);
    }

    private static IEnumerable<(string Pattern, HashSet<Capability> Capabilities)> Mapped(IEnumerable<string> names, Dictionary<string, Dictionary<string, string[]>> map)
    {
        foreach (var name in names.Distinct(StringComparer.Ordinal))
        {
            if (!map.TryGetValue(name, out var grants))
            {
                continue;
            }

            foreach (var (pattern, capabilities) in grants)
            {
                var parsed = new HashSet<Capability>();
                foreach (var capability in capabilities)
                {
                    if (capability switch { "read" => Capability.Read, "write" => Capability.Write, "control" => Capability.Control, "admin" => Capability.Admin, _ => (Capability?)null } is { } known)
                    {
                        parsed.Add(known);
                    }
                }

                yield return (pattern, parsed);
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(500, LogLevel.Warning, "ACCESS CONTROL IS OFF: no Auth:SigningKey is configured, so anyone who can reach this server can read, write and delete every stream and session. Configure Auth:SigningKey before exposing it.")]
        public static partial void RunningOpen(ILogger logger);
    }
}
