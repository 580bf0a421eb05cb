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
        using var fanout = new StreamFanout(queueCapacity: 4096);
        var subscriptions = Enumerable.Range(0, readers).Select(_ => fanout.Subscribe(7)).ToList();
        using var other = fanout.Subscribe(8);
        const int Changes = 2000;
        for (var i = 0; i < Changes; i++)
        {
            fanout.Publish(Change(7, i));

            // Readers come and go while changes are in flight to the dispatchers; those present throughout see all.
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
        Assert.Equal(0, fanout.DispatchBytes);
    }

    [Fact]
    public void Past_the_dispatch_bound_the_readers_are_cut_off_to_resume_from_the_store_instead_of_being_queued()
    {
        // A bound smaller than one change: nothing can wait for a dispatcher.
        using var fanout = new StreamFanout(dispatchBytes: 8);
        var subscriptions = Enumerable.Range(0, 10).Select(_ => fanout.Subscribe(1)).ToList();
        fanout.Publish(Change(1, 0));
        Assert.All(subscriptions, s => Assert.True(s.FellBehind));
        Assert.All(subscriptions, s => Assert.True(s.Reader.Completion.IsCompleted));
        Assert.Equal(0, fanout.DispatchBytes);

        // A stream with a reader or two is served inline, so the bound does not apply to it.
        var few = fanout.Subscribe(2);
        fanout.Publish(Change(2, 0));
        Assert.True(few.Reader.TryRead(out var change));
        Assert.Equal(0, change.Chunk.Start);
        Assert.False(few.FellBehind);
    }

    private static LiveAppend Change(long stream, long at, bool closed = false)
        => new(stream, "s" + stream, new StreamChunk(at, at + 1, new byte[] { (byte)'1' }), closed);
}
