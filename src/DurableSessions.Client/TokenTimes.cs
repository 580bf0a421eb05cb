using System.Buffers.Text;
using System.Text.Json;

namespace DurableSessions.Client;

/// <summary>
/// When a bearer token expires and was issued, read from its JWT payload (<c>exp</c>, <c>iat</c>) without checking its
/// signature: the client only times its refreshes by them, and the server decides what the token is worth.
/// </summary>
internal readonly record struct TokenTimes(DateTimeOffset Expires, DateTimeOffset? IssuedAt)
{
    // Past this a payload is not a token this client times (the server refuses tokens of more than 16,384 characters).
    private const int MaxPayloadChars = 16 * 1024;

    /// <summary>The token's times; null when it is not a JWT or has no usable <c>exp</c>.</summary>
    public static TokenTimes? Of(string token)
    {
        var parts = token.Split('.');
        if (parts.Length != 3 || parts[1].Length is 0 or > MaxPayloadChars)
        {
            return null;
        }

        try
        {
            var payload = Base64Url.DecodeFromChars(parts[1]);
            using var json = JsonDocument.Parse(payload);
            var root = json.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("exp", out var exp) || SecondsOf(exp) is not { } expires)
            {
                return null;
            }

            return new TokenTimes(expires, root.TryGetProperty("iat", out var iat) && SecondsOf(iat) is { } issued && issued < expires ? issued : null);
        }
        catch (Exception ex) when (ex is FormatException or JsonException)
        {
            return null;
        }
    }

    /// <summary>
    /// How long the token has left by <paramref name="now"/>, held within a tenth of its whole lifetime (<c>exp</c> −
    /// <c>iat</c>) and all of it when it has an <c>iat</c>, as the TypeScript client holds it: a clock that is off
    /// neither makes a fresh token look expired (refreshed every second) nor an old one look fresh.
    /// </summary>
    public TimeSpan Left(DateTimeOffset now)
    {
        var left = Expires - now;
        if (IssuedAt is not { } issued)
        {
            return left;
        }

        var whole = Expires - issued;
        var tenth = TimeSpan.FromTicks(whole.Ticks / 10);
        return left < tenth ? tenth : left > whole ? whole : left;
    }

    private static DateTimeOffset? SecondsOf(JsonElement value)
        => value.ValueKind == JsonValueKind.Number && value.TryGetDouble(out var seconds) && double.IsFinite(seconds)
            && seconds >= 0 && seconds <= DateTimeOffset.MaxValue.ToUnixTimeSeconds()
            ? DateTimeOffset.FromUnixTimeMilliseconds((long)(seconds * 1000))
            : null;
}
