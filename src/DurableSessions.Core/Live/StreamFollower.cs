using System.Runtime.CompilerServices;

namespace DurableSessions.Live;

/// <summary>Settings of a <see cref="StreamFollower"/>.</summary>
public sealed record StreamFollowOptions
{
    /// <summary>The defaults: 1 MiB store reads, live data handed on, no idle signal, resubscribing after a fall-behind.</summary>
    public static StreamFollowOptions Default { get; } = new();

    /// <summary>About how many bytes one store read returns (at least one chunk). Default 1 MiB.</summary>
    public int MaxReadBytes { get; init; } = 1 << 20;

    /// <summary>
    /// Whether live changes are handed on as they come (<see cref="StreamFollowKind.Live"/>). When false, a change only
    /// wakes the follower, which then reads the store: every piece of data comes as a <see cref="StreamFollowKind.Read"/>.
    /// Default true.
    /// </summary>
    public bool LiveData { get; init; } = true;

    /// <summary>How long the follower waits for a change before it yields <see cref="StreamFollowKind.Idle"/>; null never does. Default null.</summary>
    public TimeSpan? IdleTimeout { get; init; }

    /// <summary>
    /// Whether the follow ends (<see cref="StreamFollowEnd.FellBehind"/>) when the live queue is cut off: the reader fell
    /// behind, or the store's change notifications were interrupted. When false, the follower subscribes again and
    /// reads what it missed from the store. Default false.
    /// </summary>
    public bool EndOnFallBehind { get; init; }

    /// <summary>
    /// Taken for each store read and held until the reader asks for what follows it, so followers that share it hold at
    /// most its count of reads in memory at once (a connection's many subscriptions catching up). Default null: no limit.
    /// </summary>
    public SemaphoreSlim? ReadGate { get; init; }
}

/// <summary>What a <see cref="StreamFollowItem"/> is.</summary>
public enum StreamFollowKind
{
    /// <summary>Data read from the store (<see cref="StreamFollowItem.Read"/>): the follower is catching up.</summary>
    Read,

    /// <summary>A live change (<see cref="StreamFollowItem.Change"/>) continuing exactly where the reader stands.</summary>
    Live,

    /// <summary>The follower reached the tail and waits for the next change.</summary>
    CaughtUp,

    /// <summary>Nothing happened for <see cref="StreamFollowOptions.IdleTimeout"/>; the follower keeps waiting.</summary>
    Idle,
}

/// <summary>Why a follow ended (other than by cancellation).</summary>
public enum StreamFollowEnd
{
    /// <summary>The stream is closed and the reader has everything in it.</summary>
    Closed,

    /// <summary>The stream was deleted, expired or replaced by another stream at its path.</summary>
    Deleted,

    /// <summary>The live queue was cut off and <see cref="StreamFollowOptions.EndOnFallBehind"/> is set.</summary>
    FellBehind,

    /// <summary>
    /// The reader's position is before the stream's <see cref="StreamInfo.RetainedFrom"/>: the data it would read next was
    /// removed by retention.
    /// </summary>
    Trimmed,
}

/// <summary>One step of a followed stream: data from the store, a live change, or a signal.</summary>
/// <remarks>A struct, so following a stream allocates nothing per change beyond what the store and fan-out hand over.</remarks>
public readonly struct StreamFollowItem
{
    internal StreamFollowItem(StreamFollowKind kind, StreamInfo stream, long position, ReadResult? read = null, LiveAppend? change = null, bool moreQueued = false)
    {
        Kind = kind;
        Stream = stream;
        Position = position;
        Read = read;
        Change = change;
        MoreQueued = moreQueued;
    }

    /// <summary>What this item is.</summary>
    public StreamFollowKind Kind { get; }

    /// <summary>The stream as last looked up in the store (its tail may be behind live changes since).</summary>
    public StreamInfo Stream { get; }

    /// <summary>Where the reader stands after this item.</summary>
    public long Position { get; }

    /// <summary>For <see cref="StreamFollowKind.Read"/>, what was read.</summary>
    public ReadResult? Read { get; }

    /// <summary>For <see cref="StreamFollowKind.Live"/>, the change, shared with every live reader (encode it once with <see cref="LiveAppend.GetOrAddEncoding{T}(object, Func{LiveAppend, T})"/>).</summary>
    public LiveAppend? Change { get; }

    /// <summary>
    /// For <see cref="StreamFollowKind.Live"/>, whether the change queued behind this one yields another item (or ends the
    /// follow) before the follower waits: a queued change the reader already has does not count.
    /// </summary>
    public bool MoreQueued { get; }

    /// <summary>Whether the reader has reached the tail of the stream as last looked up (or, live, has nothing more queued).</summary>
    public bool AtTail => Kind switch
    {
        StreamFollowKind.Read => Position >= Stream.TailPosition,
        StreamFollowKind.Live => !MoreQueued || Change!.Closed,
        _ => true,
    };

    /// <summary>Whether the stream is closed and the reader has everything in it: nothing follows this item.</summary>
    public bool ClosedAtTail => Kind switch
    {
        StreamFollowKind.Read => Position >= Stream.TailPosition && Stream.Closed,
        StreamFollowKind.Live => Change!.Closed,
        _ => Stream.Closed,
    };
}

/// <summary>
/// Follows one stream live from a position: reads what is there from the store (in bounded reads), then waits on the
/// store's fan-out for each committed change. When the live queue cannot continue seamlessly (a gap, a fall-behind,
/// interrupted notifications) it reads what was missed from the store again. The follow ends when the stream is closed
/// and fully read, deleted or replaced (see <see cref="End"/>), or when cancelled.
/// </summary>
/// <remarks>
/// Subscribes before its first store lookup, so nothing committed in between is missed. One follower serves one
/// enumeration; it is not thread-safe. Live changes are the fan-out's shared instances: no per-change copy is made.
/// </remarks>
public sealed class StreamFollower
{
    private readonly StreamStore _store;
    private readonly StreamInfo _stream;
    private readonly StreamFollowOptions _options;
    private CancellationTokenSource? _idleWait;

    /// <summary>A follower of <paramref name="stream"/> (as looked up) in <paramref name="store"/>.</summary>
    public StreamFollower(StreamStore store, StreamInfo stream, StreamFollowOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(stream);
        _store = store;
        _stream = stream;
        _options = options ?? StreamFollowOptions.Default;
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.MaxReadBytes, 1, nameof(options));
    }

    /// <summary>Why the follow ended; null while it runs, and when it was cancelled.</summary>
    public StreamFollowEnd? End { get; private set; }

    /// <summary>When the follow ended because a store lookup no longer found the stream, that lookup; else null.</summary>
    public StreamLookup? EndLookup { get; private set; }

    /// <summary>When the follow ended <see cref="StreamFollowEnd.Trimmed"/>, where the stream's data now starts; else null.</summary>
    public long? EndRetainedFrom { get; private set; }

    /// <summary>
    /// Follows the stream from <paramref name="from"/>: store reads until the tail, <see cref="StreamFollowKind.CaughtUp"/>,
    /// then live changes (or, without <see cref="StreamFollowOptions.LiveData"/>, store reads after each wake-up).
    /// Positions only move forward: data before where the reader stands is never handed on again.
    /// </summary>
    public IAsyncEnumerable<StreamFollowItem> FollowAsync(long from, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(from);
        return FollowCoreAsync(from, cancellationToken);
    }

    private async IAsyncEnumerable<StreamFollowItem> FollowCoreAsync(long from, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var stream = _stream;
        var position = from;
        var stalls = 0;
        var subscription = _store.Fanout.Subscribe(stream.Id);
        try
        {
            while (true)
            {
                // Catch up from the store.
                // A soft-deleted stream (one with forks) is still found, as Gone: it is deleted all the same.
                var lookup = await _store.GetAsync(stream.Path, cancellationToken).ConfigureAwait(false);
                if (lookup.Status != StreamLookupStatus.Found || lookup.Stream?.Id != stream.Id)
                {
                    End = StreamFollowEnd.Deleted;
                    EndLookup = lookup;
                    yield break;
                }

                stream = lookup.Stream;
                var changed = false;
                while (position < stream.TailPosition)
                {
                    var gate = _options.ReadGate;
                    if (gate is not null)
                    {
                        await gate.WaitAsync(cancellationToken).ConfigureAwait(false);
                    }

                    try
                    {
                        var read = await _store.ReadAsync(stream, position, _options.MaxReadBytes, cancellationToken).ConfigureAwait(false);
                        if (read.GoneBefore is { } retainedFrom)
                        {
                            End = StreamFollowEnd.Trimmed;
                            EndRetainedFrom = retainedFrom;
                            yield break;
                        }

                        if (read.NextPosition == position)
                        {
                            // Nothing where the tail said there was data: the stream was deleted or replaced since it was
                            // looked up (a trim is answered GoneBefore). Look it up again rather than read the same nothing.
                            changed = true;
                            break;
                        }

                        position = read.NextPosition;
                        var item = new StreamFollowItem(StreamFollowKind.Read, stream, position, read);

                        // The gate stays taken while the reader holds the read: until it asks for what follows.
                        yield return item;
                        if (item.ClosedAtTail)
                        {
                            End = StreamFollowEnd.Closed;
                            yield break;
                        }
                    }
                    finally
                    {
                        gate?.Release();
                    }
                }

                if (changed)
                {
                    // The stream was deleted (or replaced) since the lookup: the next lookup says so, once published.
                    // Backing off keeps that wait (and a store that keeps answering nothing) from turning into a hot loop.
                    await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(100, 1 << Math.Min(++stalls, 7))), cancellationToken).ConfigureAwait(false);
                    continue;
                }

                stalls = 0;

                yield return new StreamFollowItem(StreamFollowKind.CaughtUp, stream, position);
                if (stream.Closed)
                {
                    End = StreamFollowEnd.Closed;
                    yield break;
                }

                // Follow live until the queue cannot continue seamlessly; then catch up from the store again.
                var reader = subscription.Reader;
                var live = true;
                while (live)
                {
                    var wait = await WaitAsync(reader, cancellationToken).ConfigureAwait(false);
                    if (wait == Wait.Idle)
                    {
                        yield return new StreamFollowItem(StreamFollowKind.Idle, stream, position);
                        continue;
                    }

                    if (wait == Wait.CutOff)
                    {
                        if (_options.EndOnFallBehind)
                        {
                            End = StreamFollowEnd.FellBehind;
                            yield break;
                        }

                        // Subscribe again before reading the store, so nothing committed in between is missed.
                        subscription.Dispose();
                        subscription = _store.Fanout.Subscribe(stream.Id);
                        break;
                    }

                    while (reader.TryRead(out var change))
                    {
                        if (change.Deleted)
                        {
                            End = StreamFollowEnd.Deleted;
                            yield break;
                        }

                        if (!_options.LiveData)
                        {
                            // A wake-up only: the store is read once the queue is drained.
                            live = false;
                            continue;
                        }

                        var chunk = change.Chunk;
                        if (chunk.End < position || (chunk.End == position && !change.Closed))
                        {
                            continue;
                        }

                        if (chunk.Start > position || (chunk.Start < position && chunk.End > position))
                        {
                            // A gap (or a change straddling the reader's position): the store has what is missing.
                            live = false;
                            break;
                        }

                        position = chunk.End;
                        yield return new StreamFollowItem(StreamFollowKind.Live, stream, position, change: change, moreQueued: NextFollows(reader, position));
                        if (change.Closed)
                        {
                            End = StreamFollowEnd.Closed;
                            yield break;
                        }
                    }
                }
            }
        }
        finally
        {
            subscription.Dispose();
            _idleWait?.Dispose();
            _idleWait = null;
        }
    }

    /// <summary>
    /// Whether the change queued next yields an item (or ends the follow) before the follower waits again. A change it
    /// would skip (one the reader already has) does not count: a reader told it is not at the tail expects more to come,
    /// and would wait for an item that never does.
    /// </summary>
    private static bool NextFollows(System.Threading.Channels.ChannelReader<LiveAppend> reader, long position)
        => reader.TryPeek(out var next)
           && (next.Deleted || next.Chunk.End > position || (next.Chunk.End == position && next.Closed));

    private enum Wait
    {
        Ready,
        Idle,
        CutOff,
    }

    // Pooled: a follower waits once per delivered change, and each wait is taken up as soon as it ends, so its state
    // is back in the pool before the follower waits again, instead of being allocated per delivery per reader.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<Wait> WaitAsync(System.Threading.Channels.ChannelReader<LiveAppend> reader, CancellationToken cancellationToken)
    {
        if (_options.IdleTimeout is not { } idle)
        {
            return await reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false) ? Wait.Ready : Wait.CutOff;
        }

        // One timeout source for the whole follow, re-armed for each wait: a new linked source and timer for every
        // delivered change cost more than the delivery's own bookkeeping. Only a wait that timed out needs a new one.
        if (_idleWait is null || !_idleWait.TryReset())
        {
            _idleWait?.Dispose();
            _idleWait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        }

        _idleWait.CancelAfter(idle);
        try
        {
            return await reader.WaitToReadAsync(_idleWait.Token).ConfigureAwait(false) ? Wait.Ready : Wait.CutOff;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return Wait.Idle;
        }
    }
}
