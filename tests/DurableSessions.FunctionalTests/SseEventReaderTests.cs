using System.Net;
using System.Text;
using DurableSessions.Client;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// The .NET client's SSE parsing: every line ending the format allows, read a byte at a time, and bounds on what a
/// server that misbehaves can make it hold.
/// </summary>
public sealed class SseEventReaderTests
{
    [Fact]
    public async Task Events_split_anywhere_with_any_line_ending_are_read_whole()
    {
        var text = "event: data\r\ndata: [1,\r\ndata: 2]\r\n\r\n: keep-alive\n\nevent: control\rdata: {\"a\":1}\r\revent:data\ndata:[3]\n\nevent: data\rdata: [\"é\"]\r\r";
        using var reader = new SseEventReader(new OneByteAtATime(Encoding.UTF8.GetBytes(text)), maxEventLength: 1024);
        var events = new List<(string, string)>();
        while (await reader.NextAsync(TestContext.Current.CancellationToken) is { } next)
        {
            events.Add((next.Type, Encoding.UTF8.GetString(next.Data.Span)));
        }

        Assert.Equal([("data", "[1,\n2]"), ("control", "{\"a\":1}"), ("data", "[3]"), ("data", "[\"é\"]")], events);
    }

    [Fact]
    public async Task A_byte_order_mark_opening_the_body_is_not_part_of_its_first_line()
    {
        using var reader = new SseEventReader(new OneByteAtATime([0xEF, 0xBB, 0xBF, .. "event: control\ndata: {}\n\n"u8]), maxEventLength: 1024);
        var first = await reader.NextAsync(TestContext.Current.CancellationToken);
        Assert.Equal(("control", "{}"), (first!.Value.Type, Encoding.UTF8.GetString(first.Value.Data.Span)));
    }

    [Fact]
    public async Task Events_longer_than_the_read_buffer_are_read_whole_and_the_next_one_after_them()
    {
        var large = "[\"" + new string('x', 200_000) + "\"]";
        var text = $"event: data\ndata: {large}\n\nevent: control\ndata: {{}}\n\n";
        using var reader = new SseEventReader(new MemoryStream(Encoding.UTF8.GetBytes(text)), maxEventLength: 1024 * 1024);
        var first = await reader.NextAsync(TestContext.Current.CancellationToken);
        Assert.Equal(large, Encoding.UTF8.GetString(first!.Value.Data.Span));
        var second = await reader.NextAsync(TestContext.Current.CancellationToken);
        Assert.Equal(("control", "{}"), (second!.Value.Type, Encoding.UTF8.GetString(second.Value.Data.Span)));
        Assert.Null(await reader.NextAsync(TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task A_line_that_never_ends_is_refused_at_the_limit()
    {
        using var reader = new SseEventReader(new Endless("data: "u8.ToArray(), "x"u8.ToArray()), maxEventLength: 64 * 1024);
        var refused = await Assert.ThrowsAsync<InvalidDataException>(() => reader.NextAsync(TestContext.Current.CancellationToken));
        Assert.Contains("65536", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_live_read_of_data_events_that_never_reach_a_control_event_fails_instead_of_holding_them_all()
    {
        // A server that sends data events, each within the limit, and never the control event that ends their batch.
        using var http = new HttpClient(new Answer(() => new Endless([], "event: data\ndata: [\"0123456789\"]\n\n"u8.ToArray())));
        using var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { MaxSseEventLength = 4096, UseWebSocket = false }, http);
        var read = Assert.ThrowsAsync<InvalidDataException>(async () =>
        {
            await foreach (var unused in client.ReadStreamAsync("s", cancellationToken: TestContext.Current.CancellationToken))
            {
            }
        });
        var refused = await read.WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken);
        Assert.Contains("4096", refused.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => new DurableSessionsClient(DurableSessionsClientOptions.Default with { MaxSseEventLength = 100 }));
    }

    /// <summary>Answers every request 200 with a fresh body from <paramref name="body"/>.</summary>
    private sealed class Answer(Func<Stream> body) : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
            => Task.FromResult(new HttpResponseMessage(HttpStatusCode.OK) { Content = new StreamContent(body()), RequestMessage = request });
    }

    /// <summary>A body that gives one byte per read.</summary>
    private sealed class OneByteAtATime(byte[] bytes) : MemoryStream(bytes)
    {
        public override int Read(byte[] buffer, int offset, int count) => base.Read(buffer, offset, Math.Min(count, 1));

        public override int Read(Span<byte> buffer) => base.Read(buffer[..Math.Min(buffer.Length, 1)]);

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
            => base.ReadAsync(buffer[..Math.Min(buffer.Length, 1)], cancellationToken);

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
            => base.ReadAsync(buffer, offset, Math.Min(count, 1), cancellationToken);
    }

    /// <summary>A body that starts with <paramref name="head"/> and repeats <paramref name="unit"/> for ever.</summary>
    private sealed class Endless(byte[] head, byte[] unit) : Stream
    {
        private long _position;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => _position; set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count)
        {
            for (var i = 0; i < count; i++, _position++)
            {
                buffer[offset + i] = _position < head.Length ? head[_position] : unit[(_position - head.Length) % unit.Length];
            }

            return count;
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
