using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace StrategyExecution.Api;

/// <summary>
/// Password hashes and bearer tokens. Passwords are stored as PBKDF2-HMAC-SHA256 with a random salt
/// (<c>pbkdf2-sha256$iterations$salt$hash</c>, base64), so a hash can move to more iterations later. Tokens are 32
/// random bytes; only their SHA-256 is stored.
/// </summary>
public static class Passwords
{
    /// <summary>The iterations for new hashes (OWASP's figure for PBKDF2-HMAC-SHA256).</summary>
    public const int Iterations = 600_000;

    /// <summary>The shortest password accepted.</summary>
    public const int MinimumLength = 8;

    /// <summary>The longest password accepted: PBKDF2's cost grows with it, so it is bounded.</summary>
    public const int MaximumLength = 256;

    private const string Scheme = "pbkdf2-sha256";

    /// <summary>A new hash of <paramref name="password"/>.</summary>
    public static string Hash(string password)
    {
        ArgumentNullException.ThrowIfNull(password);
        var salt = RandomNumberGenerator.GetBytes(16);
        var hash = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(password), salt, Iterations, HashAlgorithmName.SHA256, 32);
        return string.Join('$', Scheme, Iterations.ToString(CultureInfo.InvariantCulture), Convert.ToBase64String(salt), Convert.ToBase64String(hash));
    }

    /// <summary>Whether <paramref name="password"/> matches <paramref name="stored"/>, compared in constant time.</summary>
    public static bool Verify(string password, string? stored)
    {
        ArgumentNullException.ThrowIfNull(password);
        var parts = stored?.Split('$');
        if (parts is not [Scheme, var iterationsText, var saltText, var hashText]
            || !int.TryParse(iterationsText, NumberStyles.None, CultureInfo.InvariantCulture, out var iterations) || iterations is < 1 or > 10_000_000)
        {
            return false;
        }

        try
        {
            var expected = Convert.FromBase64String(hashText);
            var actual = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(password), Convert.FromBase64String(saltText), iterations, HashAlgorithmName.SHA256, expected.Length);
            return CryptographicOperations.FixedTimeEquals(actual, expected);
        }
        catch (FormatException)
        {
            return false;
        }
    }

    /// <summary>A new bearer token: <c>st_</c> and 32 random bytes, base64url.</summary>
    public static string NewToken() => "st_" + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    /// <summary>The stored form of a token: its SHA-256, hex.</summary>
    public static string TokenHash(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(token)));
    }
}
