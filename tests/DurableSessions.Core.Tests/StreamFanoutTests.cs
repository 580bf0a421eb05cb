using DurableSessions.Live;

namespace DurableSessions.Core.Tests;

public sealed class StreamFanoutTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(200)]
    public async Task Every_reader_gets_every_change_of_its_stream_in_commit_order(int readers)
    {
        var fanout = new StreamFanout(queueCapacity: 4096);
        var subscriptions = Enumerable.Range(0, readers).Select(_ => fanout.Subscribe(7)).ToList();
        using var other = fanout.Subscribe(8);
        const int Changes = 2000;
        for (var i = 0; i < Changes; i++)
        {
            fanout.Publish(Change(7, i));

            // Readers come and go meanwhile; those present throughout see every change.
            if (i % 100 == 50)
            {
                fanout.Subscribe(7).Dispose();
            }
        }

        fanout.Publish(Change(7, Changes, closed: true));
        foreach (var subscription in subscriptions)
        {
            var expected = 0L;
            await foreach (var change in subscription.Reader.ReadAllAsync(TestContext.Current.CancellationToken))
            {
                Assert.Equal(expected, change.Chunk.Start);
                expected = change.Chunk.End;
                if (change.Closed)
                {
                    break;
                }
            }

            Assert.Equal(Changes + 1, expected);
            Assert.False(subscription.FellBehind);
            subscription.Dispose();
        }

        // Nothing of stream 7 reached stream 8's reader.
        Assert.False(other.Reader.TryRead(out _));
    }

    private static LiveAppend Change(long stream, long at, bool closed = false)
        => new(stream, "s" + stream, new StreamChunk(at, at + 1, new byte[] { (byte)'1' }), closed);
}
