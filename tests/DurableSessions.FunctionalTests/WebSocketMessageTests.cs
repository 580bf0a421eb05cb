using DurableSessions.AspNetCore.WebSockets;
using DurableSessions.Live;

namespace DurableSessions.FunctionalTests;

/// <summary>The live data message assembled from shared parts is the message the JSON writer writes, byte for byte.</summary>
public sealed class WebSocketMessageTests
{
    [Theory]
    [InlineData("s1", true)]
    [InlineData("s1", false)]
    [InlineData("a \"quoted\" é <sub>\\", true)]
    public void A_live_json_message_is_the_written_data_message(string sub, bool upToDate)
    {
        byte[] data = "{\"a\":1},\"two\",[3]"u8.ToArray();
        var change = new LiveAppend(1, "p", new StreamChunk(40, 43, data), closed: false);
        var expected = StreamSocketConnection.DataMessage(sub, "application/json", [data], 43, upToDate);

        // Twice: the second uses the change's shared encoding.
        Assert.Equal(expected, StreamSocketConnection.LiveJsonMessage(StreamSocketConnection.DataPrefix(sub), change, 43, upToDate));
        Assert.Equal(expected, StreamSocketConnection.LiveJsonMessage(StreamSocketConnection.DataPrefix(sub), change, 43, upToDate));
    }
}
