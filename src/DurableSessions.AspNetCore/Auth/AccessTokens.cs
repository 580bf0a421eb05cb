using System.Security.Claims;
using System.Text;
using System.Text.Json;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace DurableSessions.AspNetCore.Auth;

/// <summary>
/// Issues access tokens: HS256 JWTs whose <c>sub</c> names the participant and whose <c>grants</c> claim
/// maps stream-path patterns to capabilities, e.g. <c>{"sessions/chat-42": ["read","write","control"], "sessions/team-*": ["read"]}</c>.
/// </summary>
/// <remarks>
/// Patterns are matched against stream paths (a session <c>id</c> is the path <c>sessions/{id}</c>): <c>*</c> matches
/// within one segment, <c>**</c> any number of segments. The reserved subscription APIs are the path <c>__ds</c>.
/// Thread-safe.
/// </remarks>
public sealed class AccessTokens
{
    private readonly AccessOptions _options;
    private readonly SymmetricSecurityKey? _key;
    private readonly JsonWebTokenHandler _handler = new() { MapInboundClaims = false };

    /// <summary>Creates the issuer/validator for the configured key.</summary>
    public AccessTokens(AccessOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        if (!string.IsNullOrEmpty(options.SigningKey))
        {
            var bytes = Encoding.UTF8.GetBytes(options.SigningKey!);
            if (bytes.Length < 32)
            {
                throw new InvalidOperationException("Auth:SigningKey must be at least 32 bytes.");
            }

            _key = new SymmetricSecurityKey(bytes);
        }
    }

    /// <summary>Whether tokens are required.</summary>
    public bool Enabled => _key is not null;

    /// <summary>Issues a token for <paramref name="subject"/> with the given grants.</summary>
    public string Issue(string subject, IReadOnlyDictionary<string, Capability[]> grants, TimeSpan lifetime)
    {
        ArgumentException.ThrowIfNullOrEmpty(subject);
        ArgumentNullException.ThrowIfNull(grants);
        if (_key is null)
        {
            throw new InvalidOperationException("No Auth:SigningKey is configured.");
        }

        var grantJson = JsonSerializer.Serialize(grants.ToDictionary(g => g.Key, g => g.Value.Select(c => c.ToString().ToLowerInvariant()).ToArray()));
        var now = DateTime.UtcNow;
        return _handler.CreateToken(new SecurityTokenDescriptor
        {
            Subject = new ClaimsIdentity([new Claim("sub", subject)]),
            Claims = new Dictionary<string, object> { ["grants"] = JsonDocument.Parse(grantJson).RootElement.Clone() },
            Issuer = _options.Issuer,
            Audience = _options.Audience,
            IssuedAt = now,
            NotBefore = now,
            Expires = now + lifetime,
            SigningCredentials = new SigningCredentials(_key, SecurityAlgorithms.HmacSha256),
        });
    }

    /// <summary>
    /// How the shared-key scheme (<see cref="DurableSessionsAuthorization.SharedKeyScheme"/>) validates a token: HS256 with
    /// the signing key only, an expiry required, and the issuer and audience when configured.
    /// </summary>
    internal TokenValidationParameters ValidationParameters() => new()
    {
        IssuerSigningKey = _key,
        ValidAlgorithms = [SecurityAlgorithms.HmacSha256],
        ValidateIssuer = _options.Issuer is not null,
        ValidIssuer = _options.Issuer,
        ValidateAudience = _options.Audience is not null,
        ValidAudience = _options.Audience,
        ValidateLifetime = true,
        RequireExpirationTime = true,
        RequireSignedTokens = true,
        ClockSkew = _options.ClockSkew,
    };

    /// <summary>The grants of a <c>grants</c> claim: an object of stream-path globs to arrays of capability names.</summary>
    internal static List<(string Pattern, HashSet<Capability> Capabilities)> ParseGrants(JsonElement claim)
    {
        var grants = new List<(string Pattern, HashSet<Capability> Capabilities)>();
        if (claim.ValueKind != JsonValueKind.Object)
        {
            return grants;
        }

        foreach (var grant in claim.EnumerateObject())
        {
            var capabilities = new HashSet<Capability>();
            if (grant.Value.ValueKind == JsonValueKind.Array)
            {
                foreach (var item in grant.Value.EnumerateArray())
                {
                    if (ParseCapability(item) is { } capability)
                    {
                        capabilities.Add(capability);
                    }
                }
            }

            grants.Add((grant.Name, capabilities));
        }

        return grants;
    }

    /// <summary>
    /// A capability named exactly, as a JSON string in lowercase. Anything else (another case, spaces, numbers, a
    /// comma-separated list, a name this server does not know) grants nothing and is ignored, so a token minted for a
    /// newer server with more capabilities still works here for the ones it shares.
    /// </summary>
    private static Capability? ParseCapability(JsonElement item)
    {
        if (item.ValueKind != JsonValueKind.String)
        {
            return null;
        }

        return item.GetString() switch
        {
            "read" => Capability.Read,
            "write" => Capability.Write,
            "control" => Capability.Control,
            "admin" => Capability.Admin,
            _ => null,
        };
    }
}

/// <summary>What a validated token allows.</summary>
public sealed class Access
{
    private readonly IReadOnlyList<(string Pattern, HashSet<Capability> Capabilities)> _grants;
    private readonly bool _everything;

    internal Access(string subject, IReadOnlyList<(string Pattern, HashSet<Capability> Capabilities)> grants, bool everything = false, DateTimeOffset? expiresAt = null)
    {
        Subject = subject;
        _grants = grants;
        _everything = everything;
        ExpiresAt = expiresAt;
    }

    /// <summary>When the token stops being valid (null without one): live reads end then, and the client reconnects with a fresh token.</summary>
    public DateTimeOffset? ExpiresAt { get; }

    /// <summary>Unrestricted access (the server runs without a signing key).</summary>
    public static Access Everything { get; } = new("anonymous", [], everything: true);

    /// <summary>No access: what a request that was never authorized holds.</summary>
    internal static Access Nothing { get; } = new("nobody", []);

    /// <summary>The participant the token names.</summary>
    public string Subject { get; }

    /// <summary>Whether the server runs open (no key).</summary>
    public bool IsAnonymous => _everything;

    /// <summary>Whether the token grants <paramref name="capability"/> on <paramref name="path"/>.</summary>
    public bool Allows(string path, Capability capability)
        => _everything || _grants.Any(g => g.Capabilities.Contains(capability) && Subscriptions.PathGlob.IsMatch(g.Pattern, path));

    /// <summary>
    /// Whether the token grants <paramref name="capability"/> on every path that <paramref name="pattern"/> can match,
    /// now or in the future: one of its grant patterns must cover the whole pattern (<c>jobs/**</c> covers
    /// <c>jobs/*/q</c>; <c>jobs/a</c> does not cover <c>jobs/*</c>). A plain path is checked as by <see cref="Allows"/>.
    /// </summary>
    public bool AllowsEvery(string pattern, Capability capability)
        => _everything || _grants.Any(g => g.Capabilities.Contains(capability) && Subscriptions.PathGlob.Covers(g.Pattern, pattern));
}
