using System.Buffers;
using System.Text;
using DurableSessions.AspNetCore.Streams;

namespace DurableSessions.FunctionalTests;

/// <summary>How stored chunks become one SSE data event: JSON as one array, split into lines wherever it has line breaks.</summary>
public sealed class SseEncoderTests
{
    [Fact]
    public void Compact_json_chunks_are_one_data_line_holding_one_array()
        => Assert.Equal("event: data\ndata:[{\"a\":1},{\"b\":2},3]\n\n", Encode("application/json", "{\"a\":1},{\"b\":2}", "3"));

    [Fact]
    public void Json_with_line_breaks_is_split_into_data_lines_at_each_of_them()
        => Assert.Equal("event: data\ndata:[{\ndata:  \"a\": 1\ndata:},2]\n\n", Encode("application/json", "{\r\n  \"a\": 1\n}", "2"));

    [Fact]
    public void No_chunks_and_empty_chunks_are_written_as_they_are()
    {
        Assert.Equal("event: data\ndata:[]\n\n", Encode("application/json"));
        Assert.Equal("event: data\ndata:[,1]\n\n", Encode("application/json", string.Empty, "1"));
    }

    [Fact]
    public void A_lone_carriage_return_also_ends_a_data_line()
        => Assert.Equal("event: data\ndata:[1\ndata:,2]\n\n", Encode("application/json", "1\r", "2"));

    [Fact]
    public void Text_is_split_into_data_lines()
        => Assert.Equal("event: data\ndata:one\ndata:two\n\n", Encode("text/plain", "one\ntwo"));

    private static string Encode(string contentType, params string[] chunks)
    {
        var output = new ArrayBufferWriter<byte>();
        SseEncoder.WriteDataEvent(output, contentType, [.. chunks.Select(c => (ReadOnlyMemory<byte>)Encoding.UTF8.GetBytes(c))]);
        return Encoding.UTF8.GetString(output.WrittenSpan);
    }
}
