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

    [Fact]
    public async Task A_waiting_reader_wakes_for_each_change_offered_from_another_thread()
    {
        var fanout = new StreamFanout();
        using var subscription = fanout.Subscribe(1);
        var reader = subscription.Reader;
        const int Changes = 500;
        var publisher = Task.Run(async () =>
        {
            for (var i = 0; i < Changes; i++)
            {
                fanout.Publish(Change(1, i));
                if (i % 7 == 0)
                {
                    // Let the reader catch up and wait, so that offers also find it waiting.
                    await Task.Yield();
                }
            }
        }, TestContext.Current.CancellationToken);

        var expected = 0L;
        while (expected < Changes && await reader.WaitToReadAsync(TestContext.Current.CancellationToken))
        {
            while (reader.TryRead(out var change))
            {
                Assert.Equal(expected, change.Chunk.Start);
                expected = change.Chunk.End;
            }
        }

        await publisher;
        Assert.Equal(Changes, expected);
        Assert.Equal(0, subscription.QueuedBytes);
    }

    [Fact]
    public async Task A_cancelled_wait_leaves_the_subscription_whole()
    {
        var fanout = new StreamFanout();
        using var subscription = fanout.Subscribe(1);
        using var cancel = new CancellationTokenSource();
        var waiting = subscription.Reader.WaitToReadAsync(cancel.Token).AsTask();
        Assert.False(waiting.IsCompleted);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);

        // The next wait, on another token, gets the next change; the first token's cancellation does not reach it.
        var next = subscription.Reader.WaitToReadAsync(TestContext.Current.CancellationToken).AsTask();
        fanout.Publish(Change(1, 0));
        Assert.True(await next);
        Assert.True(subscription.Reader.TryRead(out var change));
        Assert.Equal(0, change.Chunk.Start);
        Assert.False(subscription.FellBehind);
    }

    [Fact]
    public async Task A_wait_ends_false_when_the_reader_falls_behind_or_is_disposed()
    {
        var fanout = new StreamFanout(queueCapacity: 2);
        var slow = fanout.Subscribe(1);
        fanout.Publish(Change(1, 0));
        fanout.Publish(Change(1, 1));
        fanout.Publish(Change(1, 2));
        Assert.True(slow.FellBehind);

        // What was queued before the cut stays readable; then the queue says it is done.
        Assert.True(slow.Reader.TryRead(out _));
        Assert.True(slow.Reader.TryRead(out _));
        Assert.False(await slow.Reader.WaitToReadAsync(TestContext.Current.CancellationToken));
        await slow.Reader.Completion.WaitAsync(TestContext.Current.CancellationToken);
        slow.Dispose();

        var idle = fanout.Subscribe(1);
        var waiting = idle.Reader.WaitToReadAsync(TestContext.Current.CancellationToken).AsTask();
        idle.Dispose();
        Assert.False(await waiting);
        Assert.False(idle.FellBehind);
    }

    [Fact]
    public async Task A_metrics_listener_that_throws_neither_keeps_a_change_from_a_reader_nor_stops_cutting_readers_off()
    {
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "DurableSessions.Core")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, _, _, _) =>
        {
            // Listeners are process-wide: this one throws only in this test's flow.
            if (s_throwing.Value)
            {
                throw new InvalidOperationException("A metrics listener that throws.");
            }
        });
        listener.Start();
        s_throwing.Value = true;

        // The first reader never reads, so the second change cuts it off (one change queued at most); the reader after
        // it gets both changes all the same.
        var fanout = new StreamFanout(queueCapacity: 1);
        using var stalled = fanout.Subscribe(7);
        using var reader = fanout.Subscribe(7);
        var token = TestContext.Current.CancellationToken;
        fanout.Publish(Change(7, 0));
        Assert.Equal(1, (await reader.Reader.ReadAsync(token)).Chunk.End);
        fanout.Publish(Change(7, 1));
        Assert.Equal(2, (await reader.Reader.ReadAsync(token)).Chunk.End);
        Assert.True(stalled.FellBehind);

        // Cutting every reader off goes on past each one's cut-off.
        var others = Enumerable.Range(0, 3).Select(i => fanout.Subscribe(8 + i)).ToList();
        fanout.DisconnectAll();
        Assert.All(others, s => Assert.True(s.FellBehind));
        Assert.True(reader.FellBehind);
        s_throwing.Value = false;
    }

    private static readonly AsyncLocal<bool> s_throwing = new();

    private static LiveAppend Change(long stream, long at, bool closed = false)
        => new(stream, "s" + stream, new StreamChunk(at, at + 1, new byte[] { (byte)'1' }), closed);
}
