using System.Text;
using DurableSessions.Client;

namespace DurableSessions.FunctionalTests;

/// <summary>How the .NET client times a token's refresh on its WebSocket from the token's own times.</summary>
public sealed class TokenTimesTests
{
    private static readonly DateTimeOffset Issued = new(2026, 12, 1, 12, 0, 0, TimeSpan.Zero);

    private static string Jwt(string payload)
        => $"{Base64Url("{\"alg\":\"HS256\"}")}.{Base64Url(payload)}.signature";

    private static string Base64Url(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text)).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    [Fact]
    public void A_clock_that_is_off_neither_makes_a_fresh_token_expired_nor_an_old_one_fresh()
    {
        var times = TokenTimes.Of(Jwt($"{{\"iat\":{Issued.ToUnixTimeSeconds()},\"exp\":{Issued.AddMinutes(10).ToUnixTimeSeconds()}}}"))!.Value;
        Assert.Equal(TimeSpan.FromMinutes(6), times.Left(Issued.AddMinutes(4)));
        // This machine's clock an hour ahead: a tenth of the lifetime left, not a token that looks expired (refreshed
        // every second); an hour behind: the whole lifetime, not seventy minutes.
        Assert.Equal(TimeSpan.FromMinutes(1), times.Left(Issued.AddHours(1)));
        Assert.Equal(TimeSpan.FromMinutes(10), times.Left(Issued.AddHours(-1)));
    }

    [Fact]
    public void Only_a_jwt_with_a_usable_expiry_is_timed()
    {
        var withoutIat = TokenTimes.Of(Jwt($"{{\"exp\":{Issued.AddMinutes(10).ToUnixTimeSeconds()}}}"))!.Value;
        Assert.Equal(TimeSpan.FromMinutes(-50), withoutIat.Left(Issued.AddHours(1)));
        Assert.Null(TokenTimes.Of("opaque-token"));
        Assert.Null(TokenTimes.Of(Jwt("{\"sub\":\"x\"}")));
        Assert.Null(TokenTimes.Of(Jwt("{\"exp\":\"tomorrow\"}")));
        Assert.Null(TokenTimes.Of(Jwt("{\"exp\":1e300}")));
        Assert.Null(TokenTimes.Of(Jwt("[1]")));
        Assert.Null(TokenTimes.Of("a.!!!.c"));
    }
}
