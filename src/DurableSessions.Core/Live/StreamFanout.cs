using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Threading.Channels;

namespace DurableSessions.Live;

/// <summary>
/// Hands committed appends to the live readers of each stream in this process.
/// </summary>
/// <remarks>
/// Every subscriber has a queue bounded both in entries and in bytes of data. <see cref="Publish"/> never blocks: a
/// subscriber whose queue is full is cut off (its reader completes with <see cref="LiveSubscription.FellBehind"/> set)
/// and resumes from its own offset with a new request, so a slow reader never slows the writer or the other readers,
/// and a reader that stops reading holds at most its byte bound (plus the one change it is writing). Thread-safe.
/// </remarks>
public sealed class StreamFanout
{
    /// <summary>The default bound of one subscriber's queue in bytes of queued data: 4 MiB.</summary>
    public const long DefaultQueueBytes = 4 * 1024 * 1024;

    private readonly ConcurrentDictionary<long, Subscribers> _streams = new();
    private readonly int _queueCapacity;
    private readonly long _queueBytes;
    private volatile Action<LiveAppend>[] _observers = [];

    /// <summary>Creates a fan-out with the given per-subscriber queue bounds.</summary>
    /// <param name="queueCapacity">The most changes one subscriber may have queued.</param>
    /// <param name="queueBytes">
    /// The most bytes of data one subscriber may have queued. A single change larger than this is still delivered to a
    /// subscriber whose queue is empty, so a reader that keeps up always gets every append.
    /// </param>
    public StreamFanout(int queueCapacity = 1024, long queueBytes = DefaultQueueBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(queueCapacity, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(queueBytes, 1);
        _queueCapacity = queueCapacity;
        _queueBytes = queueBytes;
        CoreTelemetry.Register(this);
    }

    /// <summary>The number of streams with at least one live reader.</summary>
    public int ActiveStreams => _streams.Count;

    /// <summary>Registers a live reader of a stream. Dispose the subscription to unregister.</summary>
    public LiveSubscription Subscribe(long streamId)
    {
        var subscription = new LiveSubscription(this, streamId, _queueCapacity, _queueBytes);
        while (true)
        {
            var list = _streams.GetOrAdd(streamId, static _ => new Subscribers());
            lock (list)
            {
                if (list.Removed)
                {
                    continue;
                }

                list.Items = [.. list.Items, subscription];
                return subscription;
            }
        }
    }

    /// <summary>
    /// Registers a callback invoked synchronously for every committed change of every stream (used by server-side
    /// services such as subscriptions). It must return quickly and never throw.
    /// </summary>
    public void AddObserver(Action<LiveAppend> observer)
    {
        lock (_streams)
        {
            _observers = [.. _observers, observer];
        }
    }

    /// <summary>Delivers a committed change to every live reader of its stream.</summary>
    public void Publish(LiveAppend change)
    {
        if (!change.IsRemote && !change.Deleted && change.Chunk.Data.Length > 0)
        {
            CoreTelemetry.Appends.Add(1);
            CoreTelemetry.AppendBytes.Add(change.Chunk.Data.Length);
        }

        // A child of the request that committed the change, when it was traced (null, and free, otherwise).
        using var activity = change.Parent == default ? null : CoreTelemetry.Source.StartActivity("durable_sessions.fanout", ActivityKind.Internal, change.Parent);
        activity?.SetTag("durable_sessions.stream", change.Path);
        PublishCore(change);
        activity?.SetTag("durable_sessions.readers", _streams.TryGetValue(change.StreamId, out var readers) ? readers.Items.Length : 0);
    }

    private void PublishCore(LiveAppend change)
    {
        foreach (var observer in _observers)
        {
            try
            {
                observer(change);
            }
            catch (Exception)
            {
                // Publish runs on the commit path: an observer that breaks its contract and throws must not stop the
                // store's sync thread, the other observers or the live readers. Observers log their own failures.
            }
        }

        if (!_streams.TryGetValue(change.StreamId, out var list))
        {
            return;
        }

        foreach (var subscription in list.Items)
        {
            subscription.Offer(change);
        }
    }

    /// <summary>
    /// Cuts every live reader off, as if each had fallen behind, so each resumes from its own offset by reading the
    /// store. A shared store calls this when its change notifications may have missed something (a lost connection).
    /// </summary>
    public void DisconnectAll()
    {
        foreach (var list in _streams.Values)
        {
            foreach (var subscription in list.Items)
            {
                subscription.CutOff();
            }
        }
    }

    /// <summary>Sums <paramref name="measure"/> over the live readers (for the fan-out gauges).</summary>
    internal long Sum(Func<LiveSubscription, long> measure)
    {
        long total = 0;
        foreach (var list in _streams.Values)
        {
            foreach (var subscription in list.Items)
            {
                total += measure(subscription);
            }
        }

        return total;
    }

    internal void Unsubscribe(LiveSubscription subscription)
    {
        if (!_streams.TryGetValue(subscription.StreamId, out var list))
        {
            return;
        }

        lock (list)
        {
            list.Items = Array.FindAll(list.Items, s => !ReferenceEquals(s, subscription));
            if (list.Items.Length == 0)
            {
                list.Removed = true;
                _streams.TryRemove(new KeyValuePair<long, Subscribers>(subscription.StreamId, list));
            }
        }
    }

    private sealed class Subscribers
    {
        public volatile LiveSubscription[] Items = [];
        public bool Removed;
    }
}

/// <summary>A live reader's queue of changes to one stream.</summary>
public sealed class LiveSubscription : IDisposable
{
    private readonly StreamFanout _owner;
    private readonly Channel<LiveAppend> _queue;
    private readonly long _maxBytes;
    private readonly CountingReader _reader;
    private long _queuedBytes;
    private int _disposed;

    internal LiveSubscription(StreamFanout owner, long streamId, int capacity, long maxBytes)
    {
        _owner = owner;
        StreamId = streamId;
        _maxBytes = maxBytes;
        _queue = Channel.CreateBounded<LiveAppend>(new BoundedChannelOptions(capacity)
        {
            SingleReader = true,
            SingleWriter = false,
            FullMode = BoundedChannelFullMode.Wait,
        });
        _reader = new CountingReader(this);
    }

    /// <summary>The stream's store id.</summary>
    public long StreamId { get; }

    /// <summary>The queued changes, in commit order. Completes when the reader falls behind.</summary>
    public ChannelReader<LiveAppend> Reader => _reader;

    /// <summary>Whether the queue overflowed and the reader must resume from its offset.</summary>
    public bool FellBehind { get; private set; }

    /// <summary>The bytes of data currently queued for this reader.</summary>
    public long QueuedBytes => Interlocked.Read(ref _queuedBytes);

    internal void Offer(LiveAppend change)
    {
        var size = change.Chunk.Data.Length;

        // The byte bound is what keeps a reader that stopped reading from pinning every large append in memory; an
        // empty queue always takes the change so an oversized append still reaches a reader that keeps up.
        var queued = Interlocked.Add(ref _queuedBytes, size);
        if ((queued > _maxBytes && queued != size) || !_queue.Writer.TryWrite(change))
        {
            Interlocked.Add(ref _queuedBytes, -size);
            CutOff();
        }
    }

    internal void CutOff()
    {
        if (!FellBehind)
        {
            FellBehind = true;
            CoreTelemetry.ReadersCutOff.Add(1);
            _queue.Writer.TryComplete();
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _queue.Writer.TryComplete();
            _owner.Unsubscribe(this);
        }
    }

    private void Dequeued(LiveAppend change) => Interlocked.Add(ref _queuedBytes, -change.Chunk.Data.Length);

    /// <summary>The channel's reader, releasing a change's bytes from the bound as it is taken.</summary>
    private sealed class CountingReader(LiveSubscription owner) : ChannelReader<LiveAppend>
    {
        private ChannelReader<LiveAppend> Inner => owner._queue.Reader;

        public override Task Completion => Inner.Completion;

        public override bool CanCount => Inner.CanCount;

        public override bool CanPeek => Inner.CanPeek;

        public override int Count => Inner.Count;

        public override bool TryRead([MaybeNullWhen(false)] out LiveAppend item)
        {
            if (Inner.TryRead(out item))
            {
                owner.Dequeued(item);
                return true;
            }

            return false;
        }

        public override bool TryPeek([MaybeNullWhen(false)] out LiveAppend item) => Inner.TryPeek(out item);

        public override ValueTask<bool> WaitToReadAsync(CancellationToken cancellationToken = default) => Inner.WaitToReadAsync(cancellationToken);

        public override async ValueTask<LiveAppend> ReadAsync(CancellationToken cancellationToken = default)
        {
            var item = await Inner.ReadAsync(cancellationToken).ConfigureAwait(false);
            owner.Dequeued(item);
            return item;
        }
    }
}
