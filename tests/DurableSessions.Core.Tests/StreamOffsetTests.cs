namespace DurableSessions.Core.Tests;

public sealed class StreamOffsetTests
{
    [Theory]
    [InlineData(0L, "0000000000000000_0000000000000000")]
    [InlineData(42L, "0000000000000000_0000000000000042")]
    [InlineData(10_000_000_000_000_000L, "0000000000000001_0000000000000000")]
    public void Format_WritesTwoFixedWidthGroups(long position, string expected)
    {
        Assert.Equal(expected, StreamOffset.Format(position));
        Assert.True(StreamOffset.TryParse(expected, out var parsed));
        Assert.Equal(position, parsed);
    }

    [Fact]
    public void Formatted_offsets_sort_lexicographically_in_position_order()
    {
        long[] positions = [0, 1, 9, 10, 99, 100, 123_456_789, 10_000_000_000_000_000, long.MaxValue];
        var tokens = positions.Select(StreamOffset.Format).ToList();
        Assert.Equal(tokens, tokens.Order(StringComparer.Ordinal).ToList());
    }

    [Theory]
    [InlineData("")]
    [InlineData("-1")]
    [InlineData("now")]
    [InlineData("0000000000000000_000000000000004")]
    [InlineData("0000000000000000-0000000000000042")]
    [InlineData("0000000000000000_000000000000004a")]
    [InlineData(" 000000000000000_0000000000000042")]
    [InlineData("9999999999999999_9999999999999999")]
    public void TryParse_RejectsMalformedOrOversizedTokens(string token)
        => Assert.False(StreamOffset.TryParse(token, out _));
}
