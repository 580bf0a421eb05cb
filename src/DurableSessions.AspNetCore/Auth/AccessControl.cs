using System.Globalization;
using System.Runtime.CompilerServices;
using System.Security.Claims;
using System.Text.Json;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DurableSessions.AspNetCore.Auth;

/// <summary>
/// Access control on every stream and session endpoint, through ASP.NET Core authentication and authorization. The
/// endpoints require <see cref="DurableSessionsAuthorization.Policy"/> (no or invalid token → 401), and each request
/// checks its capability on its stream with a <see cref="StreamAccessRequirement"/> (outside the token's grant → 403).
/// With no signing key and no scheme configured, everything is allowed (and a warning is logged at start).
/// </summary>
internal sealed partial class AccessControl
{
    internal const string ItemKey = "DurableSessions.Access";

    private readonly AccessOptions _options;

    // What a principal may do, read from its claims once: a request checks its stream, and then perhaps a fork source or
    // the streams of a subscription, with the same principal.
    private readonly ConditionalWeakTable<ClaimsPrincipal, Access> _accessByPrincipal = [];

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

    /// <summary>Whether tokens are required.</summary>
    public bool Enabled => _options.Enabled;

    /// <summary>
    /// The access of the current request, as <see cref="AuthorizeAsync"/> established it. A request that was never
    /// authorized gets no access at all: a route that forgot to authorize fails closed, never open.
    /// </summary>
    public static Access Current(HttpContext context) => context.Items[ItemKey] as Access ?? Access.Nothing;

    /// <summary>Checks the request for <paramref name="capability"/> on <paramref name="path"/>; writes 401/403 and returns false when refused.</summary>
    public async Task<bool> AuthorizeAsync(HttpContext context, string path, Capability capability)
    {
        if (!_options.Enabled)
        {
            context.Items[ItemKey] = Access.Everything;
            return true;
        }

        // The endpoint's policy has authenticated the caller already; one reached without it (mapped by hand, say) is
        // refused rather than let through.
        if (AccessOf(context.User) is not { } access)
        {
            context.Response.Headers.WWWAuthenticate = "Bearer";
            await Problem.Write(context, 401, "UNAUTHENTICATED", "An access token is required (Authorization: Bearer <token>).").ConfigureAwait(false);
            return false;
        }

        if (!await AllowsAsync(context, new StreamResource(path), capability).ConfigureAwait(false))
        {
            await Problem.Write(context, 403, "FORBIDDEN", $"The token does not grant {capability.ToString().ToLowerInvariant()} on {path}.").ConfigureAwait(false);
            return false;
        }

        context.Items[ItemKey] = access;
        return true;
    }

    /// <summary>
    /// Establishes the access of a request that is not about one path (a WebSocket connection, whose operations each name
    /// their own): everything when access control is off, else what the authenticated caller's token grants.
    /// </summary>
    /// <returns>The access, or null when the caller is not authenticated (the endpoint's policy refuses it first).</returns>
    public Access? Establish(HttpContext context)
    {
        var access = _options.Enabled ? AccessOf(context.User) : Access.Everything;
        if (access is not null)
        {
            context.Items[ItemKey] = access;
        }

        return access;
    }

    /// <summary>
    /// Validates a bearer token outside its own request (a token that replaces a WebSocket connection's) with the
    /// configured scheme, as if it came in an <c>Authorization</c> header.
    /// </summary>
    public async Task<(ClaimsPrincipal? Principal, string Error)> ValidateAsync(IServiceProvider services, string token)
    {
        var result = await AuthenticateAsync(services, token).ConfigureAwait(false);
        if (!result.Succeeded || result.Principal is not { } principal)
        {
            return (null, FailureReason(result));
        }

        return AccessOf(principal) is null ? (null, AccessTokenHandler.NoSubject) : (principal, string.Empty);
    }

    /// <summary>
    /// Validates again a token that was accepted before (an open WebSocket's): false when the configured scheme now
    /// refuses it (expired, or signed with a key no longer accepted), null when the scheme failed without judging the
    /// token (an identity provider's keys out of reach), true when it still passes.
    /// </summary>
    public async Task<bool?> StillValidAsync(IServiceProvider services, string token)
    {
        var result = await AuthenticateAsync(services, token).ConfigureAwait(false);
        if (result.Succeeded && result.Principal is { } principal)
        {
            return AccessOf(principal) is not null;
        }

        return result.Failure is null or Microsoft.IdentityModel.Tokens.SecurityTokenException ? false : null;
    }

    private async Task<AuthenticateResult> AuthenticateAsync(IServiceProvider services, string token)
    {
        // A scope of its own: the authentication handlers of a scope keep the result of the request they first served.
        var scope = services.GetRequiredService<IServiceScopeFactory>().CreateAsyncScope();
        await using (scope.ConfigureAwait(false))
        {
            var probe = new DefaultHttpContext { RequestServices = scope.ServiceProvider };
            probe.Request.Headers.Authorization = "Bearer " + token;
            return await probe.AuthenticateAsync(_options.EffectiveScheme).ConfigureAwait(false);
        }
    }

    /// <summary>Why a token was refused, as the 401 body and the WebSocket's <c>auth</c> answer say it.</summary>
    internal static string FailureReason(AuthenticateResult result)
        => result.Failure is Microsoft.IdentityModel.Tokens.SecurityTokenExpiredException ? "The access token has expired." : "The access token is not valid.";

    /// <summary>Whether the request's caller holds <paramref name="capability"/> on <paramref name="resource"/>, by the registered authorization handlers.</summary>
    /// <remarks>For checks beyond the request's own path (a fork source, the streams of a subscription), after <see cref="AuthorizeAsync"/>.</remarks>
    public static async Task<bool> AllowsAsync(HttpContext context, StreamResource resource, Capability capability)
    {
        if (Current(context).IsAnonymous)
        {
            // The server runs open.
            return true;
        }

        // Resolved per request: an application's own handlers may be scoped.
        var authorization = context.RequestServices.GetRequiredService<IAuthorizationService>();
        var result = await authorization.AuthorizeAsync(context.User, resource, StreamAccessRequirement.For(capability)).ConfigureAwait(false);
        return result.Succeeded;
    }

    /// <summary>
    /// What an authenticated principal may do, from its claims: <c>sub</c> (or the name identifier), <c>grants</c>, and
    /// the configured scope and role grants. Null when it is not authenticated or names no subject.
    /// </summary>
    public Access? AccessOf(ClaimsPrincipal principal)
    {
        if (principal.Identity?.IsAuthenticated != true)
        {
            return null;
        }

        if (_accessByPrincipal.TryGetValue(principal, out var known))
        {
            return known;
        }

        var subject = principal.FindFirst("sub")?.Value ?? principal.FindFirst(ClaimTypes.NameIdentifier)?.Value;
        if (string.IsNullOrEmpty(subject))
        {
            return null;
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
            ? ExpiryOf(exp, _options.ClockSkew)
            : null;
        var access = new Access(subject, grants, expiresAt: expiresAt);
        _accessByPrincipal.AddOrUpdate(principal, access);
        return access;
    }

    /// <summary>
    /// When a token whose <c>exp</c> claim is <paramref name="exp"/> stops being served, with the clock skew allowed. The
    /// token validator takes an <c>exp</c> past the last date a <see cref="DateTimeOffset"/> holds (year 9999) as that
    /// date: so is it here, rather than fail the request.
    /// </summary>
    private static DateTimeOffset ExpiryOf(long exp, TimeSpan skew)
    {
        var at = DateTimeOffset.FromUnixTimeSeconds(Math.Clamp(exp, DateTimeOffset.MinValue.ToUnixTimeSeconds(), DateTimeOffset.MaxValue.ToUnixTimeSeconds()));
        return DateTimeOffset.MaxValue - at <= skew ? DateTimeOffset.MaxValue : at + skew;
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
