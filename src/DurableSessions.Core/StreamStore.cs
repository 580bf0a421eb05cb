using DurableSessions.Live;

namespace DurableSessions;

/// <summary>
/// The storage behind durable streams. Each backend (embedded SQLite, Redis) derives from this class and is held to
/// the same behaviour by the storage specification tests.
/// </summary>
/// <remarks>
/// <para>Guarantees every implementation gives:</para>
/// <list type="bullet">
/// <item>An append is acknowledged only once it is durable per the store's configured durability, and its producer
/// state, <c>Stream-Seq</c> and closure change are committed atomically with its data.</item>
/// <item>Appends to one stream are serialized: offsets are strictly increasing and never reused.</item>
/// <item>After a change commits, it is published to <see cref="Fanout"/>, which wakes live readers; readers never poll.</item>
/// <item>Expired streams (sliding TTL or absolute expiry, judged by the store's <see cref="TimeProvider"/>) behave as absent.</item>
/// </list>
/// All members are thread-safe.
/// </remarks>
public abstract class StreamStore : IAsyncDisposable
{
    /// <summary>Creates a store.</summary>
    protected StreamStore(TimeProvider timeProvider, StreamFanout fanout)
    {
        TimeProvider = timeProvider;
        Fanout = fanout;
    }

    /// <summary>The clock used for TTL and expiry.</summary>
    public TimeProvider TimeProvider { get; }

    /// <summary>Where committed changes are published for live readers.</summary>
    public StreamFanout Fanout { get; }

    /// <summary>Whether the store can currently accept writes (false after an unrecoverable storage failure).</summary>
    public virtual bool IsAvailable => true;

    /// <summary>
    /// Whether several server nodes may share this store. Services that keep per-process state (presence) then also
    /// keep it in the store's documents, so every node sees it.
    /// </summary>
    public virtual bool IsShared => false;

    /// <summary>Creates a stream or a fork, or confirms an identical existing one.</summary>
    public abstract ValueTask<CreateStreamResult> CreateAsync(CreateStreamRequest request, CancellationToken cancellationToken = default);

    /// <summary>Appends to and/or closes a stream, applying <see cref="AppendRules"/> atomically with the write.</summary>
    public abstract ValueTask<AppendResult> AppendAsync(AppendRequest request, CancellationToken cancellationToken = default);

    /// <summary>Whether <see cref="TryAppendInOrder"/> takes appends at all (it may still refuse a call, when it cannot take them without waiting).</summary>
    public virtual bool TakesAppendsInOrder => false;

    /// <summary>
    /// Hands several appends to the store at once, if it can take them without waiting: they then apply in list order,
    /// after every append handed over by an earlier call of this method, each as <see cref="AppendAsync"/> would apply it.
    /// </summary>
    /// <remarks>
    /// For a transport that receives many appends at once (pipelined over one WebSocket): one hand-off and one
    /// completion for all of them, and an order that holds without waiting for the earlier ones to complete. The default
    /// takes none, and a store that cannot guarantee that order returns false; the caller then appends one by one.
    /// </remarks>
    /// <param name="requests">The appends, in the order they apply.</param>
    /// <param name="results">Completes with one result per request, in the same order, once all are durable.</param>
    /// <returns>Whether the store took them; if not, it took none.</returns>
    public virtual bool TryAppendInOrder(IReadOnlyList<AppendRequest> requests, out Task<AppendResult[]> results)
    {
        results = null!;
        return false;
    }

    /// <summary>Looks up a stream's current metadata. Does not reset its TTL.</summary>
    public abstract ValueTask<StreamLookup> GetAsync(string path, CancellationToken cancellationToken = default);

    /// <summary>Deletes a stream; one still referenced by forks is soft-deleted.</summary>
    public abstract ValueTask<DeleteStreamStatus> DeleteAsync(string path, CancellationToken cancellationToken = default);

    /// <summary>
    /// Reads the stream's data from <paramref name="fromPosition"/> up to its tail as given in <paramref name="stream"/>,
    /// stitching inherited data for forks, returning at most about <paramref name="maxBytes"/> bytes (at least one chunk
    /// below that tail). Data removed since <paramref name="stream"/> was looked up is never skipped: a trimmed range is
    /// answered <see cref="ReadResult.GoneBefore"/>, and a stream deleted meanwhile gives a read with no chunks and
    /// <see cref="ReadResult.NextPosition"/> at <paramref name="fromPosition"/> (look the stream up again).
    /// </summary>
    public abstract ValueTask<ReadResult> ReadAsync(StreamInfo stream, long fromPosition, int maxBytes, CancellationToken cancellationToken = default);

    /// <summary>
    /// Removes the stream's data before <paramref name="beforePosition"/> (retention), down to the last whole append at
    /// or before it (a store that keeps the appends one commit made to a stream together, as SQLite does, cuts at the end
    /// of the last such group at or before it), so that the stream continues with less history:
    /// <see cref="StreamInfo.RetainedFrom"/> moves there, and reads from before it are answered
    /// <see cref="ReadResult.GoneBefore"/>. Durable once it returns. A stream with forks keeps everything
    /// (<see cref="TrimStatus.HasForks"/>). Never moves backward.
    /// </summary>
    public abstract ValueTask<TrimResult> TrimAsync(string path, long beforePosition, CancellationToken cancellationToken = default);

    /// <summary>Resets the sliding TTL of a stream (a read reached the server).</summary>
    public abstract ValueTask TouchAsync(StreamInfo stream, CancellationToken cancellationToken = default);

    /// <summary>
    /// Lists the paths of live streams: all of them, or those <paramref name="include"/> accepts. The filter is applied
    /// to each path before anything else is read about it, so a store that must look a stream up to know whether it is
    /// live (Redis) looks up only the streams asked for.
    /// </summary>
    public abstract IAsyncEnumerable<string> ListPathsAsync(Func<string, bool>? include = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Takes a lock that excludes every node sharing this store (for services whose state lives in documents), held
    /// until the result is disposed or <paramref name="lease"/> passes without the holder renewing it. A store may renew
    /// the lease while the lock is held (the Redis store does, for up to ten leases), so the lease ends the lock of a
    /// holder that stopped or stalled, not of one that is merely slow. Documents written through the lock
    /// (<see cref="StoreLock.PutDocumentAsync"/>) are taken only while it is held. A store used by one process needs no
    /// lock: the default returns at once, its writes go straight to the store, and callers keep their own in-process lock.
    /// </summary>
    public virtual ValueTask<StoreLock> AcquireLockAsync(string name, TimeSpan lease, CancellationToken cancellationToken = default)
        => ValueTask.FromResult<StoreLock>(new StoreLock.Unshared(this));

    /// <summary>Reads a small metadata document (subscriptions, keys) from a named collection.</summary>
    public abstract ValueTask<byte[]?> GetDocumentAsync(string collection, string key, CancellationToken cancellationToken = default);

    /// <summary>Writes a small metadata document durably.</summary>
    public abstract ValueTask PutDocumentAsync(string collection, string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken = default);

    /// <summary>Removes a metadata document.</summary>
    public abstract ValueTask DeleteDocumentAsync(string collection, string key, CancellationToken cancellationToken = default);

    /// <summary>Lists the documents of a collection.</summary>
    public abstract IAsyncEnumerable<KeyValuePair<string, byte[]>> ListDocumentsAsync(string collection, CancellationToken cancellationToken = default);

    /// <inheritdoc />
    public abstract ValueTask DisposeAsync();
}
