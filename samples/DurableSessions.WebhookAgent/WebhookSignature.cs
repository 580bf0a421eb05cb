using System.Buffers.Text;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;

namespace DurableSessions.WebhookAgent;

/// <summary>
/// Checks the <c>Webhook-Signature</c> header of a wake from the server, <c>t={unix seconds},kid={key id},ed25519={signature}</c>:
/// an Ed25519 signature (base64url) of <c>{t}.{body}</c> by the server's key <c>kid</c>, which the server publishes at
/// <c>/v1/stream/__ds/jwks.json</c>. A <c>t</c> more than five minutes away from now is refused, so a recorded wake
/// cannot be replayed later.
/// </summary>
/// <remarks>Thread-safe.</remarks>
/// <param name="server">An HTTP client whose base address is the server.</param>
/// <param name="time">The clock; the system clock when null.</param>
public sealed class WebhookSignature(HttpClient server, TimeProvider? time = null)
{
    private static readonly TimeSpan Tolerance = TimeSpan.FromMinutes(5);
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly SemaphoreSlim _fetching = new(1, 1);
    private volatile Dictionary<string, Ed25519PublicKeyParameters> _keys = [];
    private DateTimeOffset _nextFetch;

    /// <summary>Whether <paramref name="header"/> is the server's valid, recent signature of <paramref name="body"/>.</summary>
    public async Task<bool> VerifyAsync(string? header, byte[] body, CancellationToken cancellationToken = default)
    {
        string? t = null, kid = null, signature = null;
        foreach (var field in (header ?? string.Empty).Split(','))
        {
            var parts = field.Split('=', 2);
            switch (parts[0].Trim())
            {
                case "t" when parts.Length == 2: t = parts[1].Trim(); break;
                case "kid" when parts.Length == 2: kid = parts[1].Trim(); break;
                case "ed25519" when parts.Length == 2: signature = parts[1].Trim(); break;
            }
        }

        if (!long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var seconds) || kid is null || signature is null
            || Math.Abs(_time.GetUtcNow().ToUnixTimeSeconds() - seconds) > Tolerance.TotalSeconds
            || await KeyAsync(kid, cancellationToken) is not { } key)
        {
            return false;
        }

        byte[] signatureBytes;
        try
        {
            signatureBytes = Base64Url.DecodeFromChars(signature);
        }
        catch (FormatException)
        {
            return false;
        }

        var prefix = Encoding.ASCII.GetBytes(t + ".");
        var verifier = new Ed25519Signer();
        verifier.Init(forSigning: false, key);
        verifier.BlockUpdate(prefix, 0, prefix.Length);
        verifier.BlockUpdate(body, 0, body.Length);
        return verifier.VerifySignature(signatureBytes);
    }

    /// <summary>The server's key <paramref name="kid"/>. The key set is fetched for a key not seen yet (a new or rotated key), at most once a minute.</summary>
    private async Task<Ed25519PublicKeyParameters?> KeyAsync(string kid, CancellationToken cancellationToken)
    {
        if (_keys.TryGetValue(kid, out var key))
        {
            return key;
        }

        await _fetching.WaitAsync(cancellationToken);
        try
        {
            if (_keys.TryGetValue(kid, out key) || _time.GetUtcNow() < _nextFetch)
            {
                return key;
            }

            using var jwks = JsonDocument.Parse(await server.GetStringAsync("/v1/stream/__ds/jwks.json", cancellationToken));
            _keys = jwks.RootElement.GetProperty("keys").EnumerateArray()
                .Where(k => k.GetProperty("kty").GetString() == "OKP" && k.GetProperty("crv").GetString() == "Ed25519")
                .ToDictionary(k => k.GetProperty("kid").GetString()!, k => new Ed25519PublicKeyParameters(Base64Url.DecodeFromChars(k.GetProperty("x").GetString())));
            _nextFetch = _time.GetUtcNow().AddMinutes(1);
            return _keys.GetValueOrDefault(kid);
        }
        finally
        {
            _fetching.Release();
        }
    }
}
