using System.Diagnostics;

namespace DurableSessions.Live;

/// <summary>
/// A committed change to a stream, handed to every live reader of that stream.
/// </summary>
/// <remarks>
/// One instance is shared by all subscribers; encodings derived from it (such as an SSE frame) are computed once
/// through <see cref="GetOrAddEncoding{T}(object, Func{LiveAppend, T})"/> and reused.
/// </remarks>
public sealed class LiveAppend
{
    private static readonly object DefaultEncoding = new();
    private KeyValuePair<object, object>[]? _encodings;

    /// <summary>Creates a notification.</summary>
    public LiveAppend(long streamId, string path, StreamChunk chunk, bool closed, bool deleted = false, bool remote = false)
    {
        StreamId = streamId;
        Path = path;
        Chunk = chunk;
        Closed = closed;
        Deleted = deleted;
        IsRemote = remote;
    }

    /// <summary>The stream's store id.</summary>
    public long StreamId { get; }

    /// <summary>The stream's path.</summary>
    public string Path { get; }

    /// <summary>The appended data (may be empty for a close-only change).</summary>
    public StreamChunk Chunk { get; }

    /// <summary>Whether the stream is closed after this change.</summary>
    public bool Closed { get; }

    /// <summary>Whether the stream was deleted or expired.</summary>
    public bool Deleted { get; }

    /// <summary>
    /// Whether another server node committed the change (a shared store told this node about it). Live readers take
    /// every change; services that must act once per change (notifications, subscription deliveries) act on the node
    /// that committed it.
    /// </summary>
    public bool IsRemote { get; }

    /// <summary>
    /// The trace context of the request that committed the change (default when it was not traced): the fan-out's span is
    /// its child, so one trace runs from the HTTP append through the commit to the delivery.
    /// </summary>
    public ActivityContext Parent { get; init; }

    /// <summary>The idempotent producer that wrote the change, if it was written by one on this node (else null).</summary>
    public string? ProducerId { get; init; }

    /// <summary>
    /// Whether the change only carries progress that a later change of the same producer restates in full (see
    /// <see cref="AppendRequest.Progress"/>). A live reader that follows its own writes skips its own progress.
    /// </summary>
    public bool IsProgress { get; init; }

    /// <summary>
    /// The <see cref="AppendRequest.Annotation"/> of the append that made the change, when this node committed it and the
    /// store published it from that request; null otherwise (a change another node made, a stream created with data, a
    /// change a shared store published from its own notification). An observer must be able to work out the same from
    /// the data.
    /// </summary>
    public object? Annotation { get; init; }

    /// <summary>
    /// Whether a live reader that asked to skip the progress of producers whose id starts with
    /// <paramref name="producerPrefix"/> skips this change. A change that closes the stream is never skipped.
    /// </summary>
    public bool IsProgressOf(string? producerPrefix)
        => producerPrefix is not null && IsProgress && !Closed && ProducerId is { } producer
           && producer.StartsWith(producerPrefix, StringComparison.Ordinal);

    /// <summary>Returns the shared encoding of this change, creating it on first use.</summary>
    /// <remarks>Thread-safe; the factory may run more than once under a race, but one result wins for everybody.</remarks>
    public T GetOrAddEncoding<T>(Func<LiveAppend, T> factory)
        where T : class
        => GetOrAddEncoding(DefaultEncoding, factory);

    /// <summary>
    /// Returns the shared encoding of this change named by <paramref name="key"/> (compared by reference), creating it on
    /// first use, so that readers of different kinds (SSE, WebSocket) each share their own.
    /// </summary>
    /// <remarks>Thread-safe; the factory may run more than once under a race, but one result wins for everybody.</remarks>
    public T GetOrAddEncoding<T>(object key, Func<LiveAppend, T> factory)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(factory);
        while (true)
        {
            var current = Volatile.Read(ref _encodings);
            if (current is not null)
            {
                foreach (var (existingKey, value) in current)
                {
                    if (ReferenceEquals(existingKey, key))
                    {
                        return (T)value;
                    }
                }
            }

            var created = factory(this);
            KeyValuePair<object, object>[] next = current is null ? [new(key, created)] : [.. current, new(key, created)];
            if (ReferenceEquals(Interlocked.CompareExchange(ref _encodings, next, current), current))
            {
                return created;
            }
        }
    }
}
