using System.Collections.Concurrent;

namespace DurableSessions.Storage.Sqlite;

/// <summary>
/// The queue between request threads and the store's dedicated writer thread.
/// </summary>
/// <remarks>
/// The writer blocks on an event rather than awaiting, so a burst of request continuations on the thread pool can never
/// delay the next group commit. Capacity is bounded: producers wait (asynchronously) when the writer falls behind.
/// </remarks>
internal sealed class WriteQueue<T> : IDisposable
{
    private readonly ConcurrentQueue<T> _items = new();
    private readonly SemaphoreSlim _capacity;
    private readonly ManualResetEventSlim _signal = new(false, spinCount: 0);
    private readonly Lock _gate = new();
    private volatile bool _completed;

    public WriteQueue(int capacity) => _capacity = new SemaphoreSlim(capacity, capacity);

    public bool IsCompleted => _completed;

    public async ValueTask EnqueueAsync(T item, CancellationToken cancellationToken)
    {
        if (!_capacity.Wait(0, CancellationToken.None))
        {
            await _capacity.WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        if (!Add(item))
        {
            _capacity.Release();
            throw new ObjectDisposedException(nameof(WriteQueue<T>), "The store is closing and takes no more writes.");
        }
    }

    public bool TryEnqueue(T item)
    {
        if (_completed || !_capacity.Wait(0))
        {
            return false;
        }

        if (!Add(item))
        {
            _capacity.Release();
            return false;
        }

        return true;
    }

    /// <summary>Adds an item regardless of capacity (for queues whose producer is already bounded).</summary>
    public void Enqueue(T item)
    {
        _capacity.Wait(0, CancellationToken.None);
        if (!Add(item))
        {
            throw new InvalidOperationException("The queue was completed.");
        }
    }

    /// <summary>Stops accepting items; the writer drains what is queued and then sees the end.</summary>
    public void Complete()
    {
        lock (_gate)
        {
            _completed = true;
        }

        _signal.Set();
    }

    /// <summary>Blocks the consumer thread until an item is queued (true) or the queue is completed and empty (false).</summary>
    public bool WaitForItems()
    {
        while (true)
        {
            if (!_items.IsEmpty)
            {
                return true;
            }

            if (_completed)
            {
                return false;
            }

            _signal.Reset();
            if (!_items.IsEmpty || _completed)
            {
                continue;
            }

            _signal.Wait();
        }
    }

    public bool TryDequeue(out T item)
    {
        if (_items.TryDequeue(out item!))
        {
            _capacity.Release();
            return true;
        }

        return false;
    }

    /// <returns>False if the queue was completed first: then the item was not added.</returns>
    private bool Add(T item)
    {
        // Under the lock that Complete takes, so an item is either added before the queue completes, and the consumer
        // sees it before it sees the end, or refused: never left behind in a queue nobody reads any more.
        lock (_gate)
        {
            if (_completed)
            {
                return false;
            }

            _items.Enqueue(item);
        }

        _signal.Set();
        return true;
    }

    public void Dispose()
    {
        _capacity.Dispose();
        _signal.Dispose();
    }
}
