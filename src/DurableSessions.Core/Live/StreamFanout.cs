using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Threading.Channels;
using System.Threading.Tasks.Sources;

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

    /// <summary>Whether the stream has a live reader in this process now.</summary>
    /// <remarks>
    /// A shared store uses it to skip work that only live readers need (reading the data of another node's change);
    /// a reader that subscribes just after must not depend on that work, so it reads the store once it has subscribed.
    /// </remarks>
    public bool HasReaders(long streamId) => ReaderCount(streamId) > 0;

    /// <summary>The number of live readers of the stream in this process now.</summary>
    public int ReaderCount(long streamId) => _streams.TryGetValue(streamId, out var list) ? list.Items.Length : 0;

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
        // Metrics and trace listeners run inside these calls; one that throws must not keep the change from any reader,
        // nor leave its span current on the publishing thread.
        var current = Activity.Current;
        Activity? activity = null;
        try
        {
            if (!change.IsRemote && !change.Deleted && change.Chunk.Data.Length > 0)
            {
                CoreTelemetry.Appends.Add(1);
                CoreTelemetry.AppendBytes.Add(change.Chunk.Data.Length);
            }

            // A child of the request that committed the change, when it was traced (null, and free, otherwise).
            activity = change.Parent == default ? null : CoreTelemetry.Source.StartActivity("durable_sessions.fanout", ActivityKind.Internal, change.Parent);
            activity?.SetTag("durable_sessions.stream", change.Path);
        }
        catch (Exception)
        {
            Activity.Current = current is { IsStopped: false } ? current : null;
        }

        PublishCore(change);
        if (activity is not null)
        {
            try
            {
                activity.SetTag("durable_sessions.readers", _streams.TryGetValue(change.StreamId, out var readers) ? readers.Items.Length : 0);
                activity.Dispose();
            }
            catch (Exception)
            {
                Activity.Current = current is { IsStopped: false } ? current : null;
            }
        }
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
                // store's writer, the other observers or the live readers. Observers log their own failures.
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

    private long _interruptions;

    /// <summary>
    /// How many times published changes may have gone unheard: each <see cref="DisconnectAll"/> and each
    /// <see cref="ReportMissed"/>. A holder of state kept current by the published changes (a cache of a stream) compares
    /// it before and after: a count that moved means it must read the store.
    /// </summary>
    public long Interruptions => Volatile.Read(ref _interruptions);

    /// <summary>
    /// Tells the holders of state kept current by the published changes that a change may not have been published (a
    /// notification that could not be handled), without cutting the live readers off: each of them learns of a gap from
    /// the next change of its stream.
    /// </summary>
    public void ReportMissed() => Interlocked.Increment(ref _interruptions);

    /// <summary>
    /// Cuts every live reader off, as if each had fallen behind, so each resumes from its own offset by reading the
    /// store. A shared store calls this when its change notifications may have missed something (a lost connection).
    /// </summary>
    public void DisconnectAll()
    {
        Interlocked.Increment(ref _interruptions);
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
/// <remarks>
/// One reader, many offers: a plain queue under a lock, with one reusable waiter. A subscription is held by every live
/// reader for as long as it is connected (thousands per process), and a bounded channel held ~0.7 KB even while empty,
/// and allocated a waiter for each cancellable wait.
/// </remarks>
public sealed class LiveSubscription : IDisposable
{
    private readonly StreamFanout _owner;
    private readonly int _capacity;
    private readonly long _maxBytes;
    private readonly Queue<LiveAppend> _items = new();
    private ManualResetValueTaskSourceCore<bool> _waiter = new() { RunContinuationsAsynchronously = true };
    private CancellationTokenRegistration _waitRegistration;
    private CancellationToken _waitToken;
    private bool _waiting;
    private bool _completed;
    private long _queuedBytes;
    private int _disposed;
    private readonly QueueReader _reader;
    private TaskCompletionSource? _drained;

    internal LiveSubscription(StreamFanout owner, long streamId, int capacity, long maxBytes)
    {
        _owner = owner;
        StreamId = streamId;
        _capacity = capacity;
        _maxBytes = maxBytes;
        _reader = new QueueReader(this);
    }

    /// <summary>The stream's store id.</summary>
    public long StreamId { get; }

    /// <summary>The queued changes, in commit order, for one reader. Completes when the reader falls behind.</summary>
    public ChannelReader<LiveAppend> Reader => _reader;

    /// <summary>Whether the queue overflowed and the reader must resume from its offset.</summary>
    public bool FellBehind { get; private set; }

    /// <summary>The bytes of data currently queued for this reader.</summary>
    public long QueuedBytes => Volatile.Read(ref _queuedBytes);

    private object Gate => _items;

    internal void Offer(LiveAppend change)
    {
        var size = change.Chunk.Data.Length;
        lock (Gate)
        {
            if (_completed)
            {
                return;
            }

            // The byte bound is what keeps a reader that stopped reading from pinning every large append in memory; an
            // empty queue always takes the change so an oversized append still reaches a reader that keeps up.
            if (_items.Count >= _capacity || (_items.Count > 0 && _queuedBytes + size > _maxBytes))
            {
                CutOffLocked();
                return;
            }

            _items.Enqueue(change);
            Volatile.Write(ref _queuedBytes, _queuedBytes + size);
            WakeLocked(true);
        }
    }

    internal void CutOff()
    {
        lock (Gate)
        {
            CutOffLocked();
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            lock (Gate)
            {
                CompleteLocked();
            }

            _owner.Unsubscribe(this);
        }
    }

    private void CutOffLocked()
    {
        if (!FellBehind && !_completed)
        {
            FellBehind = true;
            CompleteLocked();
            try
            {
                CoreTelemetry.ReadersCutOff.Add(1);
            }
            catch (Exception)
            {
                // A metrics listener that throws: the reader is cut off all the same, and the offer or the cut-off of
                // every other reader goes on.
            }
        }
    }

    private void CompleteLocked()
    {
        _completed = true;
        WakeLocked(false);
        if (_items.Count == 0)
        {
            _drained?.TrySetResult();
        }
    }

    // Completes a pending wait. Its continuation runs on the thread pool, never inline on the offering (commit) thread.
    private void WakeLocked(bool result)
    {
        if (_waiting)
        {
            _waiting = false;

            // Not Dispose: that would wait for a cancellation callback that is running and waiting for this lock.
            _waitRegistration.Unregister();
            _waiter.SetResult(result);
        }
    }

    private ValueTask<bool> WaitToReadAsync(CancellationToken cancellationToken)
    {
        short version;
        lock (Gate)
        {
            if (_items.Count > 0)
            {
                return new ValueTask<bool>(true);
            }

            if (_completed)
            {
                return new ValueTask<bool>(false);
            }

            if (cancellationToken.IsCancellationRequested)
            {
                return ValueTask.FromCanceled<bool>(cancellationToken);
            }

            if (_waiting)
            {
                throw new InvalidOperationException("A live subscription has one reader, which waits once at a time.");
            }

            _waiter.Reset();
            _waiting = true;
            _waitToken = cancellationToken;
            version = _waiter.Version;
            if (cancellationToken.CanBeCanceled)
            {
                // Registered under the lock: a token cancelled meanwhile runs the callback here, on this thread, which
                // holds the lock already (re-entrant), so the wait cannot be left armed with its token cancelled.
                _waitRegistration = cancellationToken.UnsafeRegister(static (state, token) => ((LiveSubscription)state!).CancelWait(token), this);
            }
        }

        return new ValueTask<bool>(_reader, version);
    }

    private void CancelWait(CancellationToken token)
    {
        lock (Gate)
        {
            // A callback of an earlier wait that lost the race to an offer finds no wait, or a wait on another token.
            if (_waiting && _waitToken == token)
            {
                _waiting = false;
                _waiter.SetException(new OperationCanceledException(token));
            }
        }
    }

    private bool TryRead([MaybeNullWhen(false)] out LiveAppend item)
    {
        lock (Gate)
        {
            if (!_items.TryDequeue(out item))
            {
                return false;
            }

            Volatile.Write(ref _queuedBytes, _queuedBytes - item.Chunk.Data.Length);
            if (_completed && _items.Count == 0)
            {
                _drained?.TrySetResult();
            }

            return true;
        }
    }

    private bool TryPeek([MaybeNullWhen(false)] out LiveAppend item)
    {
        lock (Gate)
        {
            return _items.TryPeek(out item);
        }
    }

    private int Count
    {
        get
        {
            lock (Gate)
            {
                return _items.Count;
            }
        }
    }

    private Task Completion
    {
        get
        {
            lock (Gate)
            {
                if (_drained is null)
                {
                    _drained = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    if (_completed && _items.Count == 0)
                    {
                        _drained.TrySetResult();
                    }
                }

                return _drained.Task;
            }
        }
    }

    /// <summary>The one reader's view of the queue, and the source of its waits.</summary>
    private sealed class QueueReader(LiveSubscription owner) : ChannelReader<LiveAppend>, IValueTaskSource<bool>
    {
        public override Task Completion => owner.Completion;

        public override bool CanCount => true;

        public override bool CanPeek => true;

        public override int Count => owner.Count;

        public override bool TryRead([MaybeNullWhen(false)] out LiveAppend item) => owner.TryRead(out item);

        public override bool TryPeek([MaybeNullWhen(false)] out LiveAppend item) => owner.TryPeek(out item);

        public override ValueTask<bool> WaitToReadAsync(CancellationToken cancellationToken = default) => owner.WaitToReadAsync(cancellationToken);

        bool IValueTaskSource<bool>.GetResult(short token) => owner._waiter.GetResult(token);

        ValueTaskSourceStatus IValueTaskSource<bool>.GetStatus(short token) => owner._waiter.GetStatus(token);

        void IValueTaskSource<bool>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
            => owner._waiter.OnCompleted(continuation, state, token, flags);
    }
}
