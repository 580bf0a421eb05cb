using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using DurableSessions.Live;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Win32.SafeHandles;

namespace DurableSessions.Storage.Sqlite;

/// <summary>
/// The embedded stream store: one SQLite database in WAL mode, written by a single writer with group commit.
/// </summary>
/// <remarks>
/// <para>
/// Every mutation goes through one writer loop. The loop takes all requests that are waiting (up to
/// <see cref="SqliteStreamStoreOptions.MaxBatchSize"/>), applies them in one transaction, commits and flushes it (the
/// requests that arrive meanwhile form the next group); only then are the requests acknowledged and the changes published
/// to live readers. With <see cref="SqliteDurability.Fsync"/> the commit
/// fsyncs the WAL, so an acknowledged append survives <c>kill -9</c> and power loss; a crash mid-transaction leaves no
/// trace of it (SQLite's atomic commit), so there are no torn records and restart needs no repair.
/// </para>
/// <para>
/// Stream metadata lives in memory as immutable <see cref="StreamInfo"/> snapshots, replaced by the writer after each
/// commit; reads take a snapshot and then read chunks from their own connections, so they never block the writer.
/// </para>
/// </remarks>
public sealed partial class SqliteStreamStore : StreamStore
{
    private const int ReadBatchRows = 256;

    private readonly SqliteStreamStoreOptions _options;
    private readonly ILogger _logger;
    private readonly string _connectionString;
    private readonly ConcurrentDictionary<string, StreamEntry> _byPath = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<long, StreamEntry> _byId = new();
    private readonly ConcurrentDictionary<long, byte> _accessDirty = new();
    private readonly ConcurrentBag<ReaderConnection> _readers = [];
    private int _pooledReaders;
    private int _openReaders;
    internal static readonly int MaxPooledReaders = Math.Max(8, Environment.ProcessorCount * 4);
    private readonly WriteQueue<WriteCommand> _commands = new(65536);
    private readonly WriteQueue<PublishBatch> _publishQueue = new(int.MaxValue);
    private readonly TaskCompletionSource _writerStopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _publisherStopped = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // The writer thread's view: committed state, possibly not yet durable. Touched only by the writer thread.
    private readonly Dictionary<string, StreamInfo> _writerByPath = new(StringComparer.Ordinal);

    // Streams per owner, for per-owner limits; the writer's view, like the two maps around it.
    private readonly Dictionary<string, int> _ownerCounts = new(StringComparer.Ordinal);
    private readonly Dictionary<long, StreamInfo> _writerById = [];
    private readonly Dictionary<(long StreamId, string ProducerId), CachedProducer> _writerProducers = [];
    private int _cachedProducers;
    private int _producerSweepPending;
    private long _lastProducerSweepTicks;

    // Writer thread only: when a create at the stream limit last removed what had expired (a timestamp; 0 never).
    private long _lastLimitSweep;
    private readonly string _walPath;
    private SafeFileHandle? _walHandle;
    private volatile bool _broken;

    // Set if the writer thread stopped after an unexpected error: the store then refuses every write.
    private volatile Exception? _writerFailure;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Task _checkpointer = Task.CompletedTask;

    private readonly SqliteConnection _writer;
    private readonly DataDirectoryLock _directoryLock;
    private readonly ITimer _sweepTimer;
    private readonly ITimer _accessTimer;
    private readonly DateTimeOffset _openedAt;

    // Whether the store was last closed cleanly (every access saved): set while it opens.
    private bool _closedCleanly;
    private int _disposed;
    private long _commits;
    private long _flushes;

    // Commits numbered as the writer starts them, and the highest number known durable (flushed, or rolled back): a
    // document read waits until what it may have seen is durable (see WhenDurableAsync).
    private long _committing;
    private long _durable;
    private readonly Lock _durableGate = new();
    private TaskCompletionSource? _durableWaiters;

    // Why the WAL could not be flushed, once it could not: what a read of an unflushed commit is refused with.
    private volatile Exception? _flushFailure;

    // Commits handed to the publisher thread and not yet published (see the write path in SqliteStreamStore.Writer.cs).
    private int _queuedForPublisher;
    private long _committedRequests;

    private SqliteStreamStore(SqliteStreamStoreOptions options, TimeProvider timeProvider, StreamFanout fanout, ILogger logger)
        : base(timeProvider, fanout)
    {
        _options = options;
        _logger = logger;
        Directory.CreateDirectory(options.DataDirectory);

        // Before anything is read: a second process on the same directory would keep its own view of the streams, and
        // the two would overwrite each other's acknowledged appends.
        _directoryLock = DataDirectoryLock.Acquire(options.DataDirectory);
        var path = Path.GetFullPath(Path.Combine(options.DataDirectory, "streams.db"));
        _walPath = path + "-wal";
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Cache = SqliteCacheMode.Private,
            Pooling = false,
        }.ToString();

        _openedAt = timeProvider.GetUtcNow();
        _writer = new SqliteConnection(_connectionString);
        try
        {
            OpenDatabase(options);
        }
        catch
        {
            _writer.Dispose();
            _directoryLock.Dispose();
            throw;
        }

        var fsync = options.Durability == SqliteDurability.Fsync;
        new Thread(WriterLoop) { IsBackground = true, Name = "DurableSessions SQLite writer" }.Start();
        new Thread(PublisherLoop) { IsBackground = true, Name = "DurableSessions SQLite publisher" }.Start();
        if (fsync)
        {
            _checkpointer = Task.Run(CheckpointLoopAsync);
        }
        _sweepTimer = timeProvider.CreateTimer(_ => SweepExpired(), null, options.ExpirySweepInterval, options.ExpirySweepInterval);
        _accessTimer = timeProvider.CreateTimer(_ => FlushAccess(), null, options.AccessFlushInterval, options.AccessFlushInterval);
        try
        {
            StoreTelemetry.Register(this);
        }
        catch (Exception)
        {
            // A metrics listener that throws as the store's instruments are published: the store serves all the same.
        }

        Report(logger => Log.Opened(logger, path, options.Durability, _byPath.Count));
    }

    /// <summary>Opens (creating if needed) the store in <see cref="SqliteStreamStoreOptions.DataDirectory"/>.</summary>
    public static SqliteStreamStore Open(SqliteStreamStoreOptions options, TimeProvider? timeProvider = null, StreamFanout? fanout = null, ILogger<SqliteStreamStore>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(options.ProducerStateTtl, TimeSpan.Zero, "ProducerStateTtl");
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxWalBytes, 1024 * 1024, "MaxWalBytes");
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxBatchSize, 1, "MaxBatchSize");
        ArgumentOutOfRangeException.ThrowIfLessThan(options.WriterCacheBytes, 1024 * 1024, "WriterCacheBytes");
        ArgumentOutOfRangeException.ThrowIfGreaterThan(options.WriterCacheBytes, int.MaxValue * 1024L, "WriterCacheBytes");
        // A timer period of zero fires once: the sweep (or the flush of read times) would then never run again.
        ArgumentOutOfRangeException.ThrowIfLessThan(options.ExpirySweepInterval, TimeSpan.FromMilliseconds(10), "ExpirySweepInterval");
        ArgumentOutOfRangeException.ThrowIfGreaterThan(options.ExpirySweepInterval, TimeSpan.FromDays(1), "ExpirySweepInterval");
        ArgumentOutOfRangeException.ThrowIfLessThan(options.AccessFlushInterval, TimeSpan.FromMilliseconds(10), "AccessFlushInterval");
        ArgumentOutOfRangeException.ThrowIfGreaterThan(options.AccessFlushInterval, TimeSpan.FromDays(1), "AccessFlushInterval");
        return new SqliteStreamStore(options, timeProvider ?? TimeProvider.System, fanout ?? new StreamFanout(), (ILogger?)logger ?? NullLogger.Instance);
    }

    private void OpenDatabase(SqliteStreamStoreOptions options)
    {
        _writer.Open();

        // With Fsync durability the writer flushes the WAL itself (see the write path in SqliteStreamStore.Writer.cs),
        // and checkpoints run explicitly with synchronous=FULL; Relaxed leaves syncing to SQLite's NORMAL mode.
        var fsync = options.Durability == SqliteDurability.Fsync;
        using (var wal = _writer.CreateCommand())
        {
            // Every flush and checkpoint here is the WAL's: a file system where SQLite cannot keep one (it then keeps its
            // old journal and says so) would commit without syncing, so the store does not open on it.
            wal.CommandText = "PRAGMA journal_mode=WAL";
            var mode = wal.ExecuteScalar() as string;
            if (!string.Equals(mode, "wal", StringComparison.OrdinalIgnoreCase))
            {
                throw new InvalidOperationException($"SQLite cannot keep a write-ahead log in {options.DataDirectory} (journal mode stays {mode}); the store needs one.");
            }
        }

        Execute(_writer, $"""
            PRAGMA synchronous={(fsync ? "OFF" : "NORMAL")};
            PRAGMA busy_timeout=5000;
            PRAGMA wal_autocheckpoint={(fsync ? 0 : 4000)};
            PRAGMA journal_size_limit={options.MaxWalBytes};
            """);
        Execute(_writer, Schema.Create);

        // After a clean close every access was saved, and a TTL counts on from it; after a crash the last ones may not
        // have been. The mark is taken away (durably) before anything is served, so a crash from here on is seen as one.
        using (var check = _writer.CreateCommand())
        {
            check.CommandText = Schema.SelectClosedCleanly;
            _closedCleanly = check.ExecuteScalar() is long closed && closed == 1;
        }

        if (_closedCleanly)
        {
            Execute(_writer, $"PRAGMA synchronous=FULL; {Schema.ForgetClosedCleanly}; PRAGMA synchronous={(fsync ? "OFF" : "NORMAL")};");
        }

        CreateTableIfMissing("chunks", Schema.CreateChunks);
        CreateTableIfMissing("producers", Schema.CreateProducers);
        using (var check = _writer.CreateCommand())
        {
            check.CommandText = Schema.HasProducerLastUsed;
            if (Convert.ToInt64(check.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture) == 0)
            {
                // Both at once: a column added but never set would read as unused since 1970, and the first sweep
                // would forget every producer.
                using var transaction = _writer.BeginTransaction();
                using var migrate = _writer.CreateCommand();
                migrate.Transaction = transaction;
                migrate.CommandText = Schema.AddProducerLastUsed;
                migrate.Parameters.AddWithValue("$now", _openedAt.ToUnixTimeMilliseconds());
                migrate.ExecuteNonQuery();
                transaction.Commit();
            }
        }

        using (var check = _writer.CreateCommand())
        {
            check.CommandText = Schema.HasStreamOwner;
            if (Convert.ToInt64(check.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture) == 0)
            {
                Execute(_writer, Schema.AddStreamOwner);
            }
        }

        using (var check = _writer.CreateCommand())
        {
            check.CommandText = Schema.HasRetainedFrom;
            if (Convert.ToInt64(check.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture) == 0)
            {
                Execute(_writer, Schema.AddRetainedFrom);
            }
        }

        if (options.ConvertTables)
        {
            ConvertStreamKeyedTables(fsync);
        }

        Execute(_writer, Schema.CreateProducerIndex);

        LoadStreams();

        // Set only now: loading scans the streams table and the index of every chunk once, and a large cache would keep
        // those pages (tens of MB with 100,000 stored streams) although most streams are never appended to again.
        Execute(_writer, $"PRAGMA cache_size=-{options.WriterCacheBytes / 1024};");
    }

    /// <inheritdoc />
    public override bool IsAvailable => !_broken && _writerFailure is null && Volatile.Read(ref _disposed) == 0;

    /// <summary>The number of group commits (transactions) so far.</summary>
    public long CommitCount => Interlocked.Read(ref _commits);

    /// <summary>
    /// The number of times the WAL was flushed to disk for commits so far (with <see cref="SqliteDurability.Fsync"/>).
    /// The writer flushes each commit before it starts the next, so this follows <see cref="CommitCount"/> (until a flush fails: then no more are made).
    /// </summary>
    public long FlushCount => Interlocked.Read(ref _flushes);

    /// <summary>
    /// The number of producers whose state the writer holds in memory: those that appended or were looked up within
    /// about a minute plus <see cref="SqliteStreamStoreOptions.ExpirySweepInterval"/>, never every producer the store
    /// remembers. Each expiry sweep drops the ones idle for a minute; their state stays on disk until the producer TTL.
    /// </summary>
    public int CachedProducerCount => Volatile.Read(ref _cachedProducers);

    /// <summary>The number of write requests acknowledged so far; divided by <see cref="CommitCount"/> it is the mean group size.</summary>
    public long CommittedRequestCount => Interlocked.Read(ref _committedRequests);

    /// <inheritdoc />
    public override ValueTask<CreateStreamResult> CreateAsync(CreateStreamRequest request, CancellationToken cancellationToken = default)
        => Enqueue(new CreateCommand(request), cancellationToken);

    /// <inheritdoc />
    public override ValueTask<AppendResult> AppendAsync(AppendRequest request, CancellationToken cancellationToken = default)
        => Enqueue(new AppendCommand(request), cancellationToken);

    /// <inheritdoc />
    public override bool TakesAppendsInOrder => true;

    /// <inheritdoc />
    /// <remarks>
    /// The appends are one command of the writer's queue, taken only if the queue has room now: the queue is first in,
    /// first out, so commands taken this way run in the order of the calls. A full queue, or a store that stopped
    /// writing, takes none (one by one, the caller then waits for room or hears why).
    /// </remarks>
    public override bool TryAppendInOrder(IReadOnlyList<AppendRequest> requests, out Task<AppendResult[]> results)
    {
        results = null!;
        if (Volatile.Read(ref _disposed) != 0 || _broken || _writerFailure is not null)
        {
            return false;
        }

        var command = new AppendManyCommand(requests);
        if (!_commands.TryEnqueue(command))
        {
            return false;
        }

        results = command.Completion.Task;
        return true;
    }

    /// <inheritdoc />
    public override ValueTask<DeleteStreamStatus> DeleteAsync(string path, CancellationToken cancellationToken = default)
        => Enqueue(new DeleteCommand(path, expireOnly: false), cancellationToken);

    /// <inheritdoc />
    public override ValueTask<TrimResult> TrimAsync(string path, long beforePosition, CancellationToken cancellationToken = default)
        => Enqueue(new TrimCommand(path, beforePosition), cancellationToken);

    /// <inheritdoc />
    public override ValueTask<StreamLookup> GetAsync(string path, CancellationToken cancellationToken = default)
    {
        if (!_byPath.TryGetValue(path, out var entry))
        {
            return ValueTask.FromResult(new StreamLookup(StreamLookupStatus.NotFound, null));
        }

        var info = entry.Info;
        if (info.SoftDeleted)
        {
            return ValueTask.FromResult(new StreamLookup(StreamLookupStatus.Gone, info));
        }

        if (IsExpired(entry, TimeProvider.GetUtcNow()))
        {
            EnqueueExpire(path);
            return ValueTask.FromResult(new StreamLookup(StreamLookupStatus.NotFound, null));
        }

        return ValueTask.FromResult(new StreamLookup(StreamLookupStatus.Found, info));
    }

    /// <inheritdoc />
    public override ValueTask TouchAsync(StreamInfo stream, CancellationToken cancellationToken = default)
    {
        if (stream.TtlSeconds is not null && _byId.TryGetValue(stream.Id, out var entry))
        {
            entry.Touch(TimeProvider.GetUtcNow());
            _accessDirty.TryAdd(stream.Id, 0);
        }

        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public override async IAsyncEnumerable<string> ListPathsAsync(Func<string, bool>? include = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var now = TimeProvider.GetUtcNow();
        foreach (var (path, entry) in _byPath)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (!entry.Info.SoftDeleted && !IsExpired(entry, now) && include?.Invoke(path) != false)
            {
                yield return path;
            }
        }

        await Task.CompletedTask.ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask<ReadResult> ReadAsync(StreamInfo stream, long fromPosition, int maxBytes, CancellationToken cancellationToken = default)
    {
        // The caller's snapshot may predate a trim: the published one says where the stream starts now.
        var retained = Math.Max(stream.RetainedFrom, _byId.TryGetValue(stream.Id, out var current) ? current.Info.RetainedFrom : 0);
        if (fromPosition < retained)
        {
            return ReadResult.BeforeRetention(fromPosition, retained);
        }

        var segments = new List<Segment>(2);
        CollectSegments(stream, fromPosition, stream.TailPosition, segments);
        var chunks = new List<StreamChunk>();
        long total = 0;
        var next = fromPosition;
        if (segments.Count == 0)
        {
            return new ReadResult(chunks, Math.Max(fromPosition, Math.Min(fromPosition, stream.TailPosition)), 0);
        }

        ReadResult? gone = null;
        var reader = RentReader();
        try
        {
            foreach (var segment in segments)
            {
                var position = Math.Max(segment.From, next);
                while (position < segment.To)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    var rows = reader.Read(segment.StreamId, position, ReadBatchRows, maxBytes - total, out var more);

                    // A stream's chunks are contiguous up to the tail the caller was given: a gap, or nothing at all, is a
                    // trim or a delete committed since (maybe not yet published), never data to skip. A trim is answered
                    // gone, from where it cut; anything else (a delete) makes no progress, so that a follower looks the
                    // stream up again and ends.
                    if (rows.Count == 0 || rows[0].Start > position)
                    {
                        if (reader.RetainedFrom(segment.StreamId) is { } retainedFrom && retainedFrom > position)
                        {
                            // Read from the database, so perhaps from a trim not yet flushed: answered once it is.
                            gone = ReadResult.BeforeRetention(fromPosition, retainedFrom);
                            break;
                        }

                        return new ReadResult([], fromPosition, 0);
                    }

                    foreach (var row in rows)
                    {
                        if (row.Start >= segment.To)
                        {
                            position = segment.To;
                            break;
                        }

                        var chunk = Slice(stream.IsJson, row, position, segment.To);
                        chunks.Add(chunk);
                        total += chunk.Data.Length;
                        position = chunk.End;
                        next = chunk.End;
                        if (total >= maxBytes || position >= segment.To)
                        {
                            break;
                        }
                    }

                    if (total >= maxBytes || !more)
                    {
                        break;
                    }
                }

                if (total >= maxBytes)
                {
                    break;
                }

                next = Math.Max(next, segment.To);
            }
        }
        finally
        {
            ReturnReader(reader);
        }

        if (gone is { } trimmed)
        {
            await WhenDurableAsync(cancellationToken).ConfigureAwait(false);
            return trimmed;
        }

        return new ReadResult(chunks, next, total);
    }

    /// <inheritdoc />
    public override async ValueTask<byte[]?> GetDocumentAsync(string collection, string key, CancellationToken cancellationToken = default)
    {
        byte[]? document;
        var reader = RentReader();
        try
        {
            document = reader.GetDocument(collection, key);
        }
        finally
        {
            ReturnReader(reader);
        }

        await WhenDurableAsync(cancellationToken).ConfigureAwait(false);
        return document;
    }

    /// <inheritdoc />
    public override async IAsyncEnumerable<KeyValuePair<string, byte[]>> ListDocumentsAsync(string collection, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var reader = RentReader();
        List<KeyValuePair<string, byte[]>> documents;
        try
        {
            documents = reader.ListDocuments(collection);
        }
        finally
        {
            ReturnReader(reader);
        }

        await WhenDurableAsync(cancellationToken).ConfigureAwait(false);
        foreach (var document in documents)
        {
            cancellationToken.ThrowIfCancellationRequested();
            yield return document;
        }
    }

    /// <inheritdoc />
    public override async ValueTask PutDocumentAsync(string collection, string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken = default)
        => await Enqueue(new DocumentCommand(collection, key, value.ToArray()), cancellationToken).ConfigureAwait(false);

    /// <inheritdoc />
    public override async ValueTask DeleteDocumentAsync(string collection, string key, CancellationToken cancellationToken = default)
        => await Enqueue(new DocumentCommand(collection, key, null), cancellationToken).ConfigureAwait(false);

    /// <inheritdoc />
    public override async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _sweepTimer.DisposeAsync().ConfigureAwait(false);
        await _accessTimer.DisposeAsync().ConfigureAwait(false);
        FlushAccess();
        await _stopping.CancelAsync().ConfigureAwait(false);
        await _checkpointer.ConfigureAwait(false);
        _commands.Complete();
        await _writerStopped.Task.ConfigureAwait(false);
        await _publisherStopped.Task.ConfigureAwait(false);
        Volatile.Write(ref _cachedProducers, 0);
        _commands.Dispose();
        _publishQueue.Dispose();
        _walHandle?.Dispose();
        try
        {
            if (_broken || _writerFailure is not null)
            {
                // After a failed flush (or a writer that stopped) the WAL's pages cannot be vouched for: the last
                // connection to close leaves the WAL as it is (SQLite would otherwise copy it into the database on
                // close), and the next open recovers from it, checking every frame's checksum.
                SqliteException.ThrowExceptionForRC(
                    SQLitePCL.raw.sqlite3_db_config(_writer.Handle, SQLitePCL.raw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, out _), _writer.Handle);
            }
            else
            {
                // The next open counts TTLs on from what is saved: every stream with one gets its last access as the
                // store knows it now (a flush in the writer may have missed one), in the commit that marks the close.
                using (var transaction = _writer.BeginTransaction())
                {
                    using var touch = _writer.CreateCommand();
                    touch.Transaction = transaction;
                    touch.CommandText = Schema.TouchStream;
                    var id = touch.Parameters.Add("$id", SqliteType.Integer);
                    var lastAccess = touch.Parameters.Add("$last_access", SqliteType.Integer);
                    foreach (var entry in _byId.Values)
                    {
                        if (entry.Info.TtlSeconds is not null)
                        {
                            id.Value = entry.Info.Id;
                            lastAccess.Value = entry.LastAccess.ToUnixTimeMilliseconds();
                            touch.ExecuteNonQuery();
                        }
                    }

                    using var mark = _writer.CreateCommand();
                    mark.Transaction = transaction;
                    mark.CommandText = Schema.MarkClosedCleanly;
                    mark.ExecuteNonQuery();
                    transaction.Commit();
                }

                Execute(_writer, "PRAGMA synchronous=FULL; PRAGMA wal_checkpoint(TRUNCATE);");
            }
        }
        catch (SqliteException ex)
        {
            Report(logger => Log.CheckpointFailed(logger, ex));
        }
        while (_readers.TryTake(out var reader))
        {
            CloseReader(reader);
        }

        _writer.Dispose();
        _directoryLock.Dispose();
    }

    private static bool IsExpired(StreamEntry entry, DateTimeOffset now)
    {
        var info = entry.Info;
        if (info.ExpiresAt is { } expiresAt && now >= expiresAt)
        {
            return true;
        }

        return info.TtlSeconds is { } ttl && StreamInfo.TtlElapsed(entry.LastAccess, ttl, now);
    }

    /// <summary>
    /// The segments of <paramref name="stream"/>'s data between <paramref name="from"/> and <paramref name="to"/>, in
    /// order: up its chain of fork sources first. A loop, not a recursion, so that no chain's depth can exhaust a stack.
    /// </summary>
    private void CollectSegments(StreamInfo stream, long from, long to, List<Segment> segments)
    {
        var first = segments.Count;
        for (StreamInfo? level = stream; level is not null && from < to;)
        {
            var ownStart = 0L;
            StreamInfo? source = null;
            if (level.ForkSourceId is { } sourceId)
            {
                ownStart = level.ForkPosition;
                if (from < ownStart && _byId.TryGetValue(sourceId, out var entry))
                {
                    source = entry.Info;
                }
            }

            var start = Math.Max(from, ownStart);
            if (start < to)
            {
                segments.Add(new Segment(level.Id, start, to));
            }

            to = Math.Min(to, ownStart);
            level = source;
        }

        // Collected from the stream up; read from the oldest source down.
        segments.Reverse(first, segments.Count - first);
    }

    private static StreamChunk Slice(bool json, ChunkRow row, long from, long to)
    {
        var start = Math.Max(row.Start, from);
        var end = Math.Min(row.End, to);
        if (start == row.Start && end == row.End)
        {
            return new StreamChunk(row.Start, row.End, row.Data);
        }

        var skip = start - row.Start;
        var take = end - start;
        var data = json
            ? JsonFraming.Slice(row.Data, skip, take)
            : row.Data.AsMemory((int)skip, (int)take);
        return new StreamChunk(start, end, data);
    }

    internal ReaderConnection RentReader()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (_readers.TryTake(out var reader))
        {
            Interlocked.Decrement(ref _pooledReaders);
            return reader;
        }

        var opened = new ReaderConnection(_connectionString);
        Interlocked.Increment(ref _openReaders);
        return opened;
    }

    /// <summary>For tests: reader connections open now, in the pool or in use.</summary>
    internal int OpenReaders => Volatile.Read(ref _openReaders);

    /// <summary>Called on the writer thread just before it flushes a commit; an <see cref="IOException"/> it throws counts as
    /// a failed flush. For tests.</summary>
    internal Action? BeforeFlush { get; set; }

    private void CloseReader(ReaderConnection reader)
    {
        Interlocked.Decrement(ref _openReaders);
        reader.Dispose();
    }

    // Reads run on pool threads, one connection each: a burst of them (thousands of followers catching up at once) opens
    // as many as there are threads, and the pool keeps only a few of them, each holding a page cache. (SQLite keeps the
    // file descriptor of a closed connection while another one of the process holds a lock on the file, as the writer
    // always does in WAL mode, and gives it to the next connection opened: descriptors stay at a burst's peak.)
    internal void ReturnReader(ReaderConnection reader)
    {
        if (Volatile.Read(ref _disposed) == 0)
        {
            if (Interlocked.Increment(ref _pooledReaders) <= MaxPooledReaders)
            {
                _readers.Add(reader);

                // Disposed meanwhile, after its pool was emptied: nothing would close this one.
                if (Volatile.Read(ref _disposed) != 0 && _readers.TryTake(out var late))
                {
                    CloseReader(late);
                }

                return;
            }

            Interlocked.Decrement(ref _pooledReaders);
        }

        CloseReader(reader);
    }

    private async ValueTask<T> Enqueue<T>(WriteCommand<T> command, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (_broken)
        {
            throw new StreamStoreUnavailableException("The store stopped accepting writes after a failed disk flush; restart the server.");
        }

        WriterFailed();
        try
        {
            await _commands.EnqueueAsync(command, cancellationToken).ConfigureAwait(false);
        }
        catch (ObjectDisposedException)
        {
            // The queue closes when the store is disposed, or when its writer stopped: say which.
            WriterFailed();
            throw;
        }

        // The write may commit even if the caller stops waiting; cancellation only abandons the wait.
        return await command.Completion.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    private void WriterFailed()
    {
        if (_writerFailure is { } failure)
        {
            throw new StreamStoreUnavailableException("The store's writer stopped after an unexpected error and takes no more writes; restart the server.", failure);
        }
    }

    /// <summary>Asks the writer to remove an expired stream; fire-and-forget, since readers already treat it as absent.</summary>
    private void EnqueueExpire(string path)
    {
        if (Volatile.Read(ref _disposed) == 0)
        {
            _commands.TryEnqueue(new DeleteCommand(path, expireOnly: true));
        }
    }

    // Timer callbacks run on the thread pool, where an exception would end the process: each one logs and waits for
    // its next tick instead.
    private void SweepExpired()
    {
        try
        {
            var now = TimeProvider.GetUtcNow();

            // Idle producers are forgotten at most once per sweep interval, however the clock moves.
            if (now.UtcTicks - Interlocked.Read(ref _lastProducerSweepTicks) >= _options.ExpirySweepInterval.Ticks
                && Volatile.Read(ref _disposed) == 0 && Interlocked.CompareExchange(ref _producerSweepPending, 1, 0) == 0)
            {
                Interlocked.Exchange(ref _lastProducerSweepTicks, now.UtcTicks);
                if (!_commands.TryEnqueue(new ExpireProducersCommand(this)))
                {
                    Volatile.Write(ref _producerSweepPending, 0);
                }
            }

            foreach (var (path, entry) in _byPath)
            {
                if (!entry.Info.SoftDeleted && IsExpired(entry, now))
                {
                    EnqueueExpire(path);
                }
            }
        }
        catch (Exception ex)
        {
            Report(logger => Log.BackgroundTaskFailed(logger, ex, "expiry sweep"));
        }
    }

    private void FlushAccess()
    {
        try
        {
            if (!_accessDirty.IsEmpty && !_commands.IsCompleted)
            {
                _commands.TryEnqueue(new FlushAccessCommand());
            }
        }
        catch (Exception ex)
        {
            Report(logger => Log.BackgroundTaskFailed(logger, ex, "access flush"));
        }
    }

    private void LoadStreams()
    {
        using var command = _writer.CreateCommand();
        command.CommandText = Schema.SelectStreams;
        using var reader = command.ExecuteReader();
        var forkCounts = new Dictionary<long, int>();
        var loaded = new List<StreamInfo>();
        while (reader.Read())
        {
            var info = Schema.ReadStream(reader);

            // Reads that refreshed a TTL since the last persisted access may not have been saved before a crash;
            // restarting the countdown errs on the side of keeping data. After a clean close, every access was saved.
            if (!_closedCleanly && info.TtlSeconds is not null && info.LastAccessAt < _openedAt)
            {
                info = info with { LastAccessAt = _openedAt };
            }

            loaded.Add(info);
            if (info.ForkSourceId is { } source)
            {
                forkCounts[source] = forkCounts.GetValueOrDefault(source) + 1;
            }
        }

        // Plain appends do not rewrite the streams row: the tail is the end of the last chunk.
        var tails = new Dictionary<long, long>();
        using (var tailCommand = _writer.CreateCommand())
        {
            tailCommand.CommandText = Schema.SelectTails;
            using var tailReader = tailCommand.ExecuteReader();
            while (tailReader.Read())
            {
                tails[tailReader.GetInt64(0)] = tailReader.GetInt64(1);
            }
        }

        foreach (var info in loaded)
        {
            var tail = Math.Max(info.TailPosition, tails.GetValueOrDefault(info.Id));
            var loadedInfo = info with { ForkCount = forkCounts.GetValueOrDefault(info.Id), TailPosition = tail };
            _writerByPath[loadedInfo.Path] = loadedInfo;
            _writerById[loadedInfo.Id] = loadedInfo;
            CountOwner(loadedInfo.Owner, +1);
            var entry = new StreamEntry(loadedInfo);
            _byPath[info.Path] = entry;
            _byId[info.Id] = entry;
        }
    }

    private void CountOwner(string? owner, int delta)
    {
        if (owner is null)
        {
            return;
        }

        var count = _ownerCounts.GetValueOrDefault(owner) + delta;
        if (count > 0)
        {
            _ownerCounts[owner] = count;
        }
        else
        {
            _ownerCounts.Remove(owner);
        }
    }

    /// <summary>
    /// Rewrites the append and producer tables of a database created by an earlier version, keyed by stream, into the
    /// layout new databases have (<see cref="SqliteStreamStoreOptions.ConvertTables"/>): both in one transaction, so a
    /// rewrite cut short leaves the database as it was.
    /// </summary>
    private void ConvertStreamKeyedTables(bool fsync)
    {
        var tables = new List<(string Table, string Create, string Columns, string Key)>(2);
        if (IsStreamKeyed("chunks"))
        {
            tables.Add(("chunks", Schema.CreateChunks, Schema.ChunkColumns, Schema.ChunkKey));
        }

        if (IsStreamKeyed("producers"))
        {
            tables.Add(("producers", Schema.CreateProducers, Schema.ProducerColumns, Schema.ProducerKey));
        }

        if (tables.Count == 0)
        {
            return;
        }

        var started = Stopwatch.GetTimestamp();
        Log.ConvertingTables(_logger, tables.Count);
        using (var transaction = _writer.BeginTransaction())
        {
            foreach (var (table, create, columns, key) in tables)
            {
                using var convert = _writer.CreateCommand();
                convert.Transaction = transaction;
                convert.CommandTimeout = 0;
                convert.CommandText = Schema.ConvertTable(table, create, columns, key);
                convert.ExecuteNonQuery();
            }

            // The old producers table took its last_used index with it; the new one gets it here, inside the rewrite.
            using var index = _writer.CreateCommand();
            index.Transaction = transaction;
            index.CommandTimeout = 0;
            index.CommandText = Schema.CreateProducerIndex;
            index.ExecuteNonQuery();
            transaction.Commit();
        }

        // The rewrite is in the WAL, not synced (synchronous OFF or NORMAL): FULL syncs it, copies it into the database,
        // syncs that, and only then empties the WAL, which would otherwise keep a copy of every append. Nothing else has
        // the database open yet, so it should complete; if not, the background checkpoints copy the rest later.
        if (!CheckpointWithFullSync("TRUNCATE", fsync ? "OFF" : "NORMAL"))
        {
            Log.ConvertCheckpointIncomplete(_logger);
        }

        Log.ConvertedTables(_logger, tables.Count, Stopwatch.GetElapsedTime(started).TotalSeconds);
    }

    private bool IsStreamKeyed(string table)
        => TableSql(table) is { } sql && sql.Contains("WITHOUT ROWID", StringComparison.OrdinalIgnoreCase);

    private void CreateTableIfMissing(string table, string sql)
    {
        if (TableSql(table) is null)
        {
            // The table and its index at once: a table found without its index would be scanned by every read.
            using var transaction = _writer.BeginTransaction();
            using var create = _writer.CreateCommand();
            create.Transaction = transaction;
            create.CommandText = sql;
            create.ExecuteNonQuery();
            transaction.Commit();
        }
    }

    /// <summary>The statement that created <paramref name="table"/>, or null if the database has no such table.</summary>
    private string? TableSql(string table)
    {
        using var check = _writer.CreateCommand();
        check.CommandText = Schema.TableSql;
        check.Parameters.AddWithValue("$name", table);
        return check.ExecuteScalar() as string;
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    private readonly record struct Segment(long StreamId, long From, long To);

    /// <summary>
    /// A producer's state as committed (times in Unix milliseconds): <paramref name="LastUsed"/> is when it last appended
    /// (for a producer read from disk, the latest that can have been), <paramref name="StoredLastUsed"/> the
    /// <c>last_used</c> on disk, which is written again only once it is <see cref="LastUsedSlackMs"/> behind. An entry
    /// stands for a row on disk: the sweep removes both together once the producer is forgotten, and the entry alone once
    /// the producer has been idle for <see cref="ProducerCacheIdle"/>.
    /// </summary>
    private readonly record struct CachedProducer(ProducerState State, long LastUsed, long StoredLastUsed);

    /// <summary>
    /// How long the writer keeps an idle producer's state in memory; after that it is read from disk on the producer's
    /// next append. Memory then holds the producers used within about this plus a sweep interval, not every producer the
    /// TTL still remembers.
    /// </summary>
    private static readonly TimeSpan ProducerCacheIdle = TimeSpan.FromMinutes(1);

    /// <summary>
    /// How far a producer's <c>last_used</c> on disk may trail its last append: rewriting it (and its index entry) on every
    /// append cost as much as storing the append's data. A producer read from disk counts as used this much later than
    /// its <c>last_used</c>, and the sweep leaves it this much longer, so state is never dropped early. A hundredth of
    /// the producer TTL, at most a minute.
    /// </summary>
    private long LastUsedSlackMs => Math.Min(60_000, (long)_options.ProducerStateTtl.TotalMilliseconds / 100);

    /// <summary>The store's in-memory view of one stream.</summary>
    private sealed class StreamEntry
    {
        private long _lastAccessTicks;
        private volatile StreamInfo _info;

        public StreamEntry(StreamInfo info)
        {
            _info = info;
            _lastAccessTicks = info.LastAccessAt.UtcTicks;
        }

        public StreamInfo Info
        {
            get => _info;
            set
            {
                _info = value;
                Touch(value.LastAccessAt);
            }
        }

        public DateTimeOffset LastAccess => new(Interlocked.Read(ref _lastAccessTicks), TimeSpan.Zero);

        public void Touch(DateTimeOffset at)
        {
            var ticks = at.UtcTicks;
            var current = Interlocked.Read(ref _lastAccessTicks);
            while (ticks > current)
            {
                var seen = Interlocked.CompareExchange(ref _lastAccessTicks, ticks, current);
                if (seen == current)
                {
                    return;
                }

                current = seen;
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "SQLite store opened at {Path} (durability {Durability}, {StreamCount} streams)")]
        public static partial void Opened(ILogger logger, string path, SqliteDurability durability, int streamCount);

        [LoggerMessage(2, LogLevel.Error, "SQLite group commit of {Count} requests failed; none were acknowledged")]
        public static partial void CommitFailed(ILogger logger, Exception exception, int count);

        [LoggerMessage(3, LogLevel.Debug, "Stream {Path} expired and was removed")]
        public static partial void Expired(ILogger logger, string path);

        [LoggerMessage(4, LogLevel.Critical, "Flushing the SQLite WAL to disk failed; the store no longer accepts writes")]
        public static partial void SyncFailed(ILogger logger, Exception exception);

        [LoggerMessage(5, LogLevel.Warning, "SQLite checkpoint failed; it is retried later")]
        public static partial void CheckpointFailed(ILogger logger, Exception exception);

        [LoggerMessage(6, LogLevel.Error, "SQLite store background task '{Task}' failed; it runs again at its next interval")]
        public static partial void BackgroundTaskFailed(ILogger logger, Exception exception, string task);

        [LoggerMessage(7, LogLevel.Warning, "Rewriting {Count} SQLite tables keyed by stream into rows with an index by stream (Storage:Sqlite:ConvertTables); the store serves nothing until it is done")]
        public static partial void ConvertingTables(ILogger logger, int count);

        [LoggerMessage(8, LogLevel.Information, "Rewrote {Count} SQLite tables in {Seconds:F1} s")]
        public static partial void ConvertedTables(ILogger logger, int count, double seconds);

        [LoggerMessage(9, LogLevel.Warning, "The checkpoint after rewriting the SQLite tables did not complete; the background checkpoints copy the rest")]
        public static partial void ConvertCheckpointIncomplete(ILogger logger);

        [LoggerMessage(10, LogLevel.Error, "Publishing a durable SQLite commit to live readers failed; its requests are acknowledged and every live reader resumes from its offset")]
        public static partial void PublishFailed(ILogger logger, Exception exception);

        [LoggerMessage(11, LogLevel.Critical, "The SQLite store's writer stopped after an unexpected error; the store refuses every write until the server restarts")]
        public static partial void WriterStopped(ILogger logger, Exception exception);
    }
}
