using System.Text;

namespace DurableSessions.Core.Tests;

public sealed class JsonFramingTests
{
    [Theory]
    [InlineData("{\"a\":1}", "{\"a\":1}", 1)]
    [InlineData("[{\"a\":1}, {\"b\":2}]", "{\"a\":1},{\"b\":2}", 2)]
    [InlineData("[[1,2],[3,4]]", "[1,2],[3,4]", 2)]
    [InlineData("[[[1,2,3]]]", "[[1,2,3]]", 1)]
    [InlineData("[null, 42, \"x\", true]", "null,42,\"x\",true", 4)]
    [InlineData("  \"text\"  ", "\"text\"", 1)]
    public void TryFrame_FlattensExactlyOneArrayLevel(string body, string expected, long units)
    {
        Assert.True(JsonFraming.TryFrame(Encoding.UTF8.GetBytes(body), allowEmptyArray: false, out var payload, out var error), error);
        Assert.Equal(expected, Encoding.UTF8.GetString(payload.Data.Span));
        Assert.Equal(units, payload.Units);
    }

    [Theory]
    [InlineData("[{\"a\":1}, {\"b\":2}]")]
    [InlineData("[ 1 ,\n 2 ]")]
    [InlineData("[]")]
    public void TryFrame_FramesAnArrayIntoAWholeArrayOfItsOwn(string body)
    {
        // A store binds a whole array as it is (a slice of a larger one is copied again), and the caller's buffer is
        // the caller's to reuse.
        var bytes = Encoding.UTF8.GetBytes(body);
        Assert.True(JsonFraming.TryFrame(bytes, allowEmptyArray: true, out var payload, out var error), error);
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray(payload.Data, out var segment));
        Assert.NotSame(bytes, segment.Array);
        Assert.Equal(0, segment.Offset);
        Assert.Equal(segment.Array!.Length, segment.Count);
    }

    [Fact]
    public void TryFrame_FramesALargeArrayIntoAWholeArrayOutsideTheCallersBuffer()
    {
        var body = Encoding.UTF8.GetBytes("[\"" + new string('x', 200_000) + "\",\n 1 ]");
        Assert.True(JsonFraming.TryFrame(body, allowEmptyArray: false, out var payload, out var error), error);
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray(payload.Data, out var segment));
        Assert.NotSame(body, segment.Array);
        Assert.Equal(0, segment.Offset);
        Assert.Equal(segment.Array!.Length, segment.Count);
        Assert.Equal(2, payload.Units);
        Assert.Equal("\"" + new string('x', 200_000) + "\",1", Encoding.UTF8.GetString(payload.Data.Span));
    }

    [Theory]
    [InlineData("{ invalid json }")]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("{\"a\":1} trailing")]
    [InlineData("[1,2")]
    [InlineData("[1] [2]")]
    public void TryFrame_RejectsInvalidJsonWithAMessage(string body)
    {
        Assert.False(JsonFraming.TryFrame(Encoding.UTF8.GetBytes(body), allowEmptyArray: true, out _, out var error));
        Assert.False(string.IsNullOrWhiteSpace(error));
    }

    public static TheoryData<byte[]> Undecodable => new()
    {
        new byte[] { (byte)'{', (byte)'"', (byte)'a', (byte)'"', (byte)':', (byte)'"', 0xff, (byte)'"', (byte)'}' },
        new byte[] { (byte)'[', (byte)'"', 0xc0, 0x80, (byte)'"', (byte)']' },
        new byte[] { (byte)'"', 0xed, 0xa0, 0x80, (byte)'"' },
        Encoding.UTF8.GetBytes("{\"a\":\"\\ud800\"}"),
        Encoding.UTF8.GetBytes("[\"ok\",{\"\\udc00\":1}]"),
        Encoding.UTF8.GetBytes(string.Concat(Enumerable.Repeat("{\"a\":", 33)) + "1" + new string('}', 33)),
        Encoding.UTF8.GetBytes("[" + new string('[', 33) + new string(']', 33) + "]"),
    };

    [Theory]
    [MemberData(nameof(Undecodable))]
    public void TryFrame_RejectsInvalidUtf8LoneSurrogatesAndNestingPastTheLimit(byte[] body)
    {
        Assert.False(JsonFraming.TryFrame(body, allowEmptyArray: true, out _, out var error));
        Assert.StartsWith("Body is not valid JSON", error);
        Assert.False(JsonFraming.TryValidate(body, out _));
    }

    [Fact]
    public void TryFrame_AcceptsPairedSurrogatesAndNestingAtTheLimit()
    {
        var deepest = string.Concat(Enumerable.Repeat("{\"a\":", 32)) + "1" + new string('}', 32);
        Assert.True(JsonFraming.TryFrame(Encoding.UTF8.GetBytes("[" + deepest + ",\"\\ud83d\\ude00 é\"]"), allowEmptyArray: false, out var payload, out var error), error);
        Assert.Equal(2, payload.Units);
        var parsed = JsonFraming.ParseMessages(payload.Data.Span);
        Assert.Equal("\U0001F600 é", parsed[1]!.GetValue<string>());
    }

    [Fact]
    public void TryFrame_RejectsEmptyArrayOnAppendButAcceptsItOnCreate()
    {
        Assert.False(JsonFraming.TryFrame("[]"u8.ToArray(), allowEmptyArray: false, out _, out _));
        Assert.True(JsonFraming.TryFrame("[]"u8.ToArray(), allowEmptyArray: true, out var payload, out _));
        Assert.Equal(0, payload.Units);
    }

    [Fact]
    public void Slice_ReturnsTheRequestedMessages()
    {
        var data = Encoding.UTF8.GetBytes("{\"a\":1},{\"b\":[2,3]},\"c\",4");
        Assert.Equal("{\"b\":[2,3]},\"c\"", Encoding.UTF8.GetString(JsonFraming.Slice(data, 1, 2).Span));
        Assert.Equal("{\"a\":1}", Encoding.UTF8.GetString(JsonFraming.Slice(data, 0, 1).Span));
        Assert.Equal("4", Encoding.UTF8.GetString(JsonFraming.Slice(data, 3, 5).Span));
    }
}
