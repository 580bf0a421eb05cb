using System.Threading.Tasks.Sources;

namespace DurableSessions.AspNetCore.WebSockets;

/// <summary>
/// A connection's queue of messages to send: any number of writers, one reader (the send loop).
/// </summary>
/// <remarks>
/// Thousands of connections sit idle at once, so an empty queue holds almost nothing: no segment array and no waiter
/// objects (an unbounded channel holds about 1.5 KB while empty). The reader's wait is this object itself, reset
/// for each wait. Bounds are the connection's business: it counts the bytes of data it queues.
/// </remarks>
internal sealed class SendQueue<T> : IValueTaskSource<bool>
{
    private readonly Queue<T> _items = new();
    private ManualResetValueTaskSourceCore<bool> _waiter = new() { RunContinuationsAsynchronously = true };
    private bool _waiting;
    private bool _completed;

    /// <summary>Queues <paramref name="item"/>; false once the queue is completed.</summary>
    public bool TryWrite(T item)
    {
        lock (_items)
        {
            if (_completed)
            {
                return false;
            }

            _items.Enqueue(item);
            if (!_waiting)
            {
                return true;
            }

            _waiting = false;
        }

        _waiter.SetResult(true);
        return true;
    }

    /// <summary>No more items: the reader gets what is queued, then false from <see cref="WaitToReadAsync"/>.</summary>
    public void Complete()
    {
        lock (_items)
        {
            if (_completed)
            {
                return;
            }

            _completed = true;
            if (!_waiting)
            {
                return;
            }

            _waiting = false;
        }

        _waiter.SetResult(false);
    }

    /// <summary>Takes the oldest item. One reader only.</summary>
    public bool TryRead(out T item)
    {
        lock (_items)
        {
            if (_items.TryDequeue(out item!))
            {
                if (_items.Count == 0 && _items.EnsureCapacity(0) > 16)
                {
                    // A burst grew the array: an idle connection gives it back.
                    _items.TrimExcess();
                }

                return true;
            }

            return false;
        }
    }

    /// <summary>True when an item is there to read, false when the queue is completed and empty. One reader only.</summary>
    public ValueTask<bool> WaitToReadAsync()
    {
        lock (_items)
        {
            if (_items.Count > 0)
            {
                return new ValueTask<bool>(true);
            }

            if (_completed)
            {
                return new ValueTask<bool>(false);
            }

            _waiter.Reset();
            _waiting = true;
            return new ValueTask<bool>(this, _waiter.Version);
        }
    }

    bool IValueTaskSource<bool>.GetResult(short token) => _waiter.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<bool>.GetStatus(short token) => _waiter.GetStatus(token);

    void IValueTaskSource<bool>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => _waiter.OnCompleted(continuation, state, token, flags);
}
