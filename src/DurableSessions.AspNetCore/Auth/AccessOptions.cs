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

    /// <summary>Allowed clock difference when checking <c>exp</c> and <c>nbf</c>. Default 30 seconds.</summary>
    public TimeSpan ClockSkew { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Whether a signing key is configured.</summary>
    public bool Enabled => !string.IsNullOrEmpty(SigningKey);
}
