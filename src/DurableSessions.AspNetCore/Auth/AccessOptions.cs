namespace DurableSessions.AspNetCore.Auth;

/// <summary>Settings of access control. Bound from the <c>Auth</c> configuration section.</summary>
public sealed class AccessOptions
{
    /// <summary>
    /// The HMAC key (at least 32 bytes of UTF-8) that signs access tokens (JWT, HS256). With no key the server runs open
    /// — anyone can read and write everything — and says so loudly at start.
    /// </summary>
    public string? SigningKey { get; set; }

    /// <summary>The required <c>iss</c> claim, if any.</summary>
    public string? Issuer { get; set; }

    /// <summary>The required <c>aud</c> claim, if any.</summary>
    public string? Audience { get; set; }

    /// <summary>Allowed clock difference when checking <c>exp</c> and <c>nbf</c>. Default 30 seconds; from 0 to 1 hour.</summary>
    public TimeSpan ClockSkew { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// The ASP.NET Core authentication scheme that validates tokens instead of the shared key, e.g. <c>Bearer</c> for
    /// JwtBearer configured from <c>Authentication:Schemes:Bearer</c> (OIDC discovery, JWKS, RS256/ES256, key rotation).
    /// Set automatically when that section exists. The token's <c>grants</c> claim, <see cref="ScopeGrants"/> and
    /// <see cref="RoleGrants"/> give its capabilities.
    /// </summary>
    public string? Scheme { get; set; }

    /// <summary>
    /// Capabilities given by OAuth scopes (<c>scope</c> or <c>scp</c> claims): scope → stream-path glob → capabilities,
    /// e.g. <c>Auth:ScopeGrants:chat:sessions/**:0=read</c>. Added to the token's own <c>grants</c>.
    /// </summary>
    public Dictionary<string, Dictionary<string, string[]>> ScopeGrants { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Capabilities given by roles (<c>roles</c> or <c>role</c> claims), in the shape of <see cref="ScopeGrants"/>.</summary>
    public Dictionary<string, Dictionary<string, string[]>> RoleGrants { get; set; } = new(StringComparer.Ordinal);

    /// <summary>The scheme that validates tokens: <see cref="Scheme"/>, or the shared-key scheme when none is named.</summary>
    public string EffectiveScheme => string.IsNullOrEmpty(Scheme) ? DurableSessionsAuthorization.SharedKeyScheme : Scheme;

    /// <summary>Whether tokens are required: a signing key or an authentication scheme is configured.</summary>
    public bool Enabled => !string.IsNullOrEmpty(SigningKey) || !string.IsNullOrEmpty(Scheme);
}
