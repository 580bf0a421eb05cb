using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;

namespace DurableSessions.AspNetCore.Coordination;

/// <summary>
/// A critical section over state kept in the store's documents: this process's lock and, on a store that several nodes
/// share, the store's lock every node takes, with the state read again on entry (another node may have changed it).
/// </summary>
internal sealed partial class SharedSection(StreamStore store, string name, TimeSpan lease, ILogger logger) : IDisposable
{
    private readonly SemaphoreSlim _lock = new(1, 1);
    private readonly ILogger _logger = logger;
    private readonly string _name = name;
    private readonly TimeSpan _lease = lease;

    // The store's lock while this process is inside on a shared store. Set and cleared inside the in-process lock, whose
    // waits and releases order it for whatever runs inside.
    private StoreLock? _held;

    /// <summary>Enters; <paramref name="refresh"/> runs on entry when the store is shared. Dispose the result to leave.</summary>
    public async Task<ConfiguredAsyncDisposable> EnterAsync(Func<CancellationToken, Task> refresh, CancellationToken cancellationToken)
    {
        await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
        if (!store.IsShared)
        {
            return new Held(this, null).ConfigureAwait(false);
        }

        StoreLock? shared = null;
        try
        {
            shared = await store.AcquireLockAsync(_name, _lease, cancellationToken).ConfigureAwait(false);
            _held = shared;
            await refresh(cancellationToken).ConfigureAwait(false);
            return new Held(this, shared).ConfigureAwait(false);
        }
        catch
        {
            _held = null;
            try
            {
                if (shared is not null)
                {
                    // Best effort: a store that failed the read may fail this too, and the lease ends the lock anyway.
                    await shared.DisposeAsync().ConfigureAwait(false);
                }
            }
            catch (Exception)
            {
            }
            finally
            {
                _lock.Release();
            }

            throw;
        }
    }

    /// <summary>
    /// Writes a document from inside the section: through the store's lock on a shared store (refused with
    /// <see cref="StreamStoreUnavailableException"/> once that lock is no longer this node's), straight to the store
    /// otherwise.
    /// </summary>
    public ValueTask PutDocumentAsync(string collection, string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken)
        => Fence() is { } held ? held.PutDocumentAsync(collection, key, value, cancellationToken) : store.PutDocumentAsync(collection, key, value, cancellationToken);

    /// <summary>Removes a document from inside the section, fenced as <see cref="PutDocumentAsync"/> is.</summary>
    public ValueTask DeleteDocumentAsync(string collection, string key, CancellationToken cancellationToken)
        => Fence() is { } held ? held.DeleteDocumentAsync(collection, key, cancellationToken) : store.DeleteDocumentAsync(collection, key, cancellationToken);

    // On a shared store a write from outside the section would go unfenced beside another node's section: a caller's bug,
    // so it fails instead of writing.
    private StoreLock? Fence()
        => _held ?? (store.IsShared ? throw new InvalidOperationException($"A document of the shared section '{_name}' is written outside the section.") : null);

    public void Dispose() => _lock.Dispose();

    private sealed class Held(SharedSection owner, StoreLock? shared) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            owner._held = null;
            try
            {
                if (shared is not null)
                {
                    await shared.DisposeAsync().ConfigureAwait(false);
                }
            }
            catch (Exception ex)
            {
                // What ran inside is done and saved: a store that cannot release the lock now must not turn that into
                // a failed request (which a client would retry). The lock's lease ends it anyway, and every node's next
                // change here waits until then: said, so that wait has a cause in the log.
                Log.ReleaseFailed(owner._logger, owner._name, owner._lease, ex);
            }
            finally
            {
                owner._lock.Release();
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1310, LogLevel.Warning, "Releasing the shared lock {Name} failed; it ends with its lease ({Lease}), and changes under it wait until then")]
        public static partial void ReleaseFailed(ILogger logger, string name, TimeSpan lease, Exception exception);
    }
}
