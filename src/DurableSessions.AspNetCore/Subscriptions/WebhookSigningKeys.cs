using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Signers;
using Org.BouncyCastle.Security;

namespace DurableSessions.AspNetCore.Subscriptions;

/// <summary>
/// The server's Ed25519 webhook signing key (protocol §6.5, §7.1) and the HMAC secret for callback and claim tokens.
/// Both are generated once and persisted in the store, so restarts keep verifying old signatures and tokens.
/// </summary>
internal sealed class WebhookSigningKeys
{
    private const string Collection = "keys";
    private readonly Ed25519PrivateKeyParameters _privateKey;
    private readonly byte[] _tokenSecret;

    private WebhookSigningKeys(Ed25519PrivateKeyParameters privateKey, byte[] tokenSecret)
    {
        _privateKey = privateKey;
        _tokenSecret = tokenSecret;
        PublicKey = Base64Url(privateKey.GeneratePublicKey().GetEncoded());

        // RFC 7638 thumbprint: members in lexicographic order, no whitespace.
        var thumbprint = SHA256.HashData(Encoding.UTF8.GetBytes($"{{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"{PublicKey}\"}}"));
        KeyId = "ds_" + Base64Url(thumbprint)[..22];
    }

    /// <summary>The key id published in the JWKS and in every signature header.</summary>
    public string KeyId { get; }

    /// <summary>The public key, base64url.</summary>
    public string PublicKey { get; }

    /// <summary>
    /// Reads the keys, creating those missing. Called under the store's lock, through which the new keys are written, so
    /// nodes starting together agree on one set: a node held up past the lock's lease has its write refused.
    /// </summary>
    public static async Task<WebhookSigningKeys> LoadOrCreateAsync(StreamStore store, StoreLock held, CancellationToken cancellationToken)
    {
        var signing = await store.GetDocumentAsync(Collection, "webhook-ed25519", cancellationToken).ConfigureAwait(false);
        if (signing is null)
        {
            signing = new Ed25519PrivateKeyParameters(new SecureRandom()).GetEncoded();
            await held.PutDocumentAsync(Collection, "webhook-ed25519", signing, cancellationToken).ConfigureAwait(false);
        }

        var secret = await store.GetDocumentAsync(Collection, "token-hmac", cancellationToken).ConfigureAwait(false);
        if (secret is null)
        {
            secret = RandomNumberGenerator.GetBytes(32);
            await held.PutDocumentAsync(Collection, "token-hmac", secret, cancellationToken).ConfigureAwait(false);
        }

        return new WebhookSigningKeys(new Ed25519PrivateKeyParameters(signing), secret);
    }

    /// <summary>Signs <c>timestamp.body</c> and returns the <c>Webhook-Signature</c> header value.</summary>
    public string SignatureHeader(long unixSeconds, ReadOnlySpan<byte> body)
    {
        var prefix = Encoding.ASCII.GetBytes(unixSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture) + ".");
        var signer = new Ed25519Signer();
        signer.Init(true, _privateKey);
        signer.BlockUpdate(prefix, 0, prefix.Length);
        var bodyBytes = body.ToArray();
        signer.BlockUpdate(bodyBytes, 0, bodyBytes.Length);
        return $"t={unixSeconds},kid={KeyId},ed25519={Base64Url(signer.GenerateSignature())}";
    }

    public byte[] JwksDocument() => JsonSerializer.SerializeToUtf8Bytes(new
    {
        keys = new[] { new { kty = "OKP", crv = "Ed25519", kid = KeyId, use = "sig", alg = "EdDSA", x = PublicKey } },
    });

    /// <summary>Issues a bearer token scoped to one wake of one subscription.</summary>
    public string IssueToken(string subscriptionId, long generation, string wakeId)
    {
        var payload = Encoding.UTF8.GetBytes($"{subscriptionId}\n{generation}\n{wakeId}");
        return Base64Url(payload) + "." + Base64Url(HMACSHA256.HashData(_tokenSecret, payload));
    }

    /// <summary>Validates a token's signature and returns its scope.</summary>
    public bool TryValidateToken(string? token, out string subscriptionId, out long generation, out string wakeId)
    {
        subscriptionId = wakeId = string.Empty;
        generation = 0;
        var dot = token?.IndexOf('.', StringComparison.Ordinal) ?? -1;
        if (token is null || dot <= 0)
        {
            return false;
        }

        try
        {
            var payload = FromBase64Url(token[..dot]);
            var signature = FromBase64Url(token[(dot + 1)..]);
            if (!CryptographicOperations.FixedTimeEquals(signature, HMACSHA256.HashData(_tokenSecret, payload)))
            {
                return false;
            }

            var parts = Encoding.UTF8.GetString(payload).Split('\n');
            if (parts.Length != 3 || !long.TryParse(parts[1], System.Globalization.CultureInfo.InvariantCulture, out generation))
            {
                return false;
            }

            subscriptionId = parts[0];
            wakeId = parts[2];
            return true;
        }
        catch (FormatException)
        {
            return false;
        }
    }

    public static string Base64Url(ReadOnlySpan<byte> data) => Convert.ToBase64String(data).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    private static byte[] FromBase64Url(string value)
    {
        var s = value.Replace('-', '+').Replace('_', '/');
        s += (s.Length % 4) switch { 2 => "==", 3 => "=", _ => string.Empty };
        return Convert.FromBase64String(s);
    }
}
