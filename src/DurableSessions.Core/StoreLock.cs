namespace DurableSessions;

/// <summary>
/// A lock taken with <see cref="StreamStore.AcquireLockAsync"/>, held until disposed or until its lease runs out.
/// </summary>
/// <remarks>
/// A lease is what keeps a stopped node from holding a lock for good, and it is also why a lock alone cannot keep a
/// holder's writes exclusive: a holder held up past its lease (a long pause, a lost connection) carries on as if it
/// still held the lock, while another node has taken it. Documents written through the lock are therefore fenced: the
/// store takes each write only if this holder still holds the lock at the moment the write is applied, and refuses it
/// otherwise, so a late write can never overwrite what the next holder read and wrote.
/// </remarks>
public abstract class StoreLock : IAsyncDisposable
{
    /// <summary>Creates a lock; stores create them in <see cref="StreamStore.AcquireLockAsync"/>.</summary>
    protected StoreLock()
    {
    }

    /// <summary>
    /// Writes a metadata document durably, only while this lock is held.
    /// </summary>
    /// <exception cref="StreamStoreUnavailableException">
    /// The lock is no longer held (its lease ran out, and another node may hold it now): nothing was written.
    /// </exception>
    public abstract ValueTask PutDocumentAsync(string collection, string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken = default);

    /// <summary>Removes a metadata document, only while this lock is held.</summary>
    /// <exception cref="StreamStoreUnavailableException">
    /// The lock is no longer held (its lease ran out, and another node may hold it now): nothing was removed.
    /// </exception>
    public abstract ValueTask DeleteDocumentAsync(string collection, string key, CancellationToken cancellationToken = default);

    /// <summary>Releases the lock, unless its lease ran out and another holder has it.</summary>
    public abstract ValueTask DisposeAsync();

    /// <summary>
    /// The lock of a store used by one process: its callers exclude each other in process, so there is nothing to
    /// fence, and writes go straight to the store.
    /// </summary>
    internal sealed class Unshared(StreamStore store) : StoreLock
    {
        public override ValueTask PutDocumentAsync(string collection, string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken = default)
            => store.PutDocumentAsync(collection, key, value, cancellationToken);

        public override ValueTask DeleteDocumentAsync(string collection, string key, CancellationToken cancellationToken = default)
            => store.DeleteDocumentAsync(collection, key, cancellationToken);

        public override ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
