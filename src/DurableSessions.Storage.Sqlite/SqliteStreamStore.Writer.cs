using System.Diagnostics;
using DurableSessions.Live;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;

namespace DurableSessions.Storage.Sqlite;

/// <remarks>
/// <para>The write path runs on the store's <b>writer thread</b>:</para>
/// <list type="number">
/// <item>it runs every waiting request in one SQLite transaction and commits it (with
/// <see cref="SqliteDurability.Fsync"/> SQLite itself does not sync: <c>synchronous=OFF</c>);</item>
/// <item>it fsyncs the WAL for that commit, so every flush covers one commit and each page the commit changed is written
/// to the WAL once;</item>
/// <item>it publishes the commit to live readers and acknowledges its requests. A commit whose changes have many live
/// readers to offer them to (or that finds earlier ones still being published) is handed to the <b>publisher
/// thread</b> instead, which publishes and acknowledges in commit order, so a stream with thousands of readers never
/// holds up the next commit.</item>
/// </list>
/// Requests that arrive while a commit is flushed wait in the queue and form the next group, so the disk's flush latency
/// bounds the acknowledgement latency but not the throughput. Doing the flush and the acknowledgements on the writer
/// saves two thread wake-ups per commit, which on small machines cost more than the overlap of one commit's flush with
/// the next one's statements gained. Nothing is visible to readers or acknowledged before it is on disk. Checkpoints run
/// with <c>synchronous=FULL</c> (which syncs the database file before the WAL can be reused).
/// </remarks>
public sealed partial class SqliteStreamStore
{
    // Background checkpoints run often, so the one on the writer (which pauses writes) has little left to copy.
    private static readonly TimeSpan CheckpointInterval = TimeSpan.FromMilliseconds(500);

    // The writer checkpoints (and so lets the WAL start over) once the WAL file outgrows MaxWalBytes, which is also the
    // journal size limit SQLite truncates it back to when it starts over. Checked every few commits, so the file
    // overshoots by a few commits' pages (more when a checkpoint cannot complete at once): truncating a WAL that had
    // grown far past the limit (hundreds of MB under a steady load of small appends, whose commits each rewrite whole
    // pages) stalled the next commit for a third of a second. A larger limit means fewer of these pauses (each ~30-50 ms
    // on the 2-core machine) for more disk.
    private const int CommitsBetweenWalChecks = 8;
    private const int CommitsAfterIncompleteCheckpoint = 56;

    // A commit whose changes go to more live readers than this is published by the publisher thread, not the writer:
    // offering a change costs a reader's wake-up, and thousands of them would delay the next commit by milliseconds.
    private const int MaxOffersOnWriter = 128;

    private void WriterLoop()
    {
        var batch = new List<WriteCommand>(_options.MaxBatchSize);
        try
        {
            var context = new BatchContext(this);
            try
            {
                while (_commands.WaitForItems())
                {
                    while (batch.Count < _options.MaxBatchSize && _commands.TryDequeue(out var command))
                    {
                        batch.Add(command);
                    }

                    if (_broken)
                    {
                        // After a failed flush nothing is run any more: the kernel may have dropped the failed pages and
                        // report the error only once, so no later flush vouches for anything, and a commit now could become
                        // durable later (through WAL recovery) although its requests were refused.
                        PublishInOrder(new PublishBatch([.. batch], [], []) { Failure = BrokenFlush() });
                    }
                    else if (ExecuteInTransaction(batch, context) && CommitBatch(batch, context) is { } committed)
                    {
                        FlushAndPublish(committed);

                        // Answered now, or queued to be answered in order: should the writer stop after this, it must not
                        // refuse these requests.
                        batch.Clear();
                        if (_options.Durability == SqliteDurability.Fsync && !_broken
                            && ++context.CommitsSinceWalCheck >= CommitsBetweenWalChecks)
                        {
                            context.CommitsSinceWalCheck = 0;
                            if (WalLength() > _options.MaxWalBytes && !CheckpointOnWriter())
                            {
                                // It could not copy everything (the background checkpoint held the lock, a reader an old
                                // snapshot), so the WAL does not start over: try again after more commits, not after
                                // every few.
                                context.CommitsSinceWalCheck = -CommitsAfterIncompleteCheckpoint;
                            }
                        }
                    }

                    batch.Clear();
                }
            }
            finally
            {
                // Before the connection can close: the store closes it once the writer has stopped.
                context.Dispose();
            }

            _publishQueue.Complete();
            _writerStopped.TrySetResult();
        }
        catch (Exception ex)
        {
            // Nothing the writer calls is meant to throw out of it (failed statements, commits and flushes fail their own
            // requests; loggers and listeners are guarded). Should something still, the writer cannot know what it left
            // half done, so it stops for good: the store refuses writes from now on, and no request waits for it.
            StopWriter(batch, ex);
            _publishQueue.Complete();
            _writerStopped.TrySetResult();
        }
    }

    private void StopWriter(List<WriteCommand> batch, Exception ex)
    {
        _writerFailure = ex;
        ReleaseDurableWaiters();
        Report(logger => Log.WriterStopped(logger, ex));
        var failure = new IOException("The SQLite store's writer stopped after an unexpected error.", ex);
        _commands.Complete();
        foreach (var command in batch)
        {
            command.Fail(failure);
        }

        while (_commands.TryDequeue(out var queued))
        {
            queued.Fail(failure);
        }
    }

    /// <summary>
    /// Logs from the store's own threads and callbacks: a logger that throws must not stop the writer (every later write
    /// would wait for it), the background checkpoints, or the process (from a timer callback).
    /// </summary>
    private void Report(Action<ILogger> log)
    {
        try
        {
            log(_logger);
        }
        catch (Exception)
        {
            // The failure being reported is handled whether or not its log entry is written.
        }
    }

    /// <summary>Runs <paramref name="batch"/>'s commands in a new transaction.</summary>
    /// <returns>False if one failed: then the transaction is rolled back and every request in it is failed, in order.</returns>
    private bool ExecuteInTransaction(List<WriteCommand> batch, BatchContext context)
    {
        try
        {
            context.Reset(TimeProvider.GetUtcNow());
            context.Transaction = _writer.BeginTransaction();
            foreach (var command in batch)
            {
                command.Execute(context);
            }

            return true;
        }
        catch (Exception ex)
        {
            Fail(batch, context, ex);
            return false;
        }
    }

    /// <returns>What the commit changed, to publish once it is durable; null if it failed (its requests are failed, in order).</returns>
    private PublishBatch? CommitBatch(List<WriteCommand> batch, BatchContext context)
    {
        var started = Stopwatch.GetTimestamp();
        // Numbered before SQLite makes it visible, so that a document read that sees it knows to wait for its flush.
        var commit = Interlocked.Increment(ref _committing);
        try
        {
            context.WriteDirtyStreams();
            context.Transaction!.Commit();
        }
        catch (Exception ex)
        {
            // Rolled back: nothing of it is visible, so nothing waits for it to be flushed.
            MarkDurable(commit);
            Fail(batch, context, ex);
            return null;
        }

        context.Transaction.Dispose();
        context.Transaction = null;
        Interlocked.Increment(ref _commits);
        var requests = 0;
        foreach (var command in batch)
        {
            requests += command.Requests;
        }

        Interlocked.Add(ref _committedRequests, requests);
        try
        {
            StoreTelemetry.Commits.Add(1);
            StoreTelemetry.GroupSize.Record(requests);
        }
        catch (Exception)
        {
            // A metrics listener that throws: the commit stands, and is made durable and acknowledged as any other.
        }

        var publish = context.ApplyToWriterState([.. batch]);
        publish.Started = started;
        publish.Commit = commit;
        return publish;
    }

    /// <summary>Rolls the open transaction back and fails every request in it.</summary>
    private void Fail(List<WriteCommand> batch, BatchContext context, Exception ex)
    {
        // Whatever went wrong fails this batch's requests, never the writer: a writer that stopped would leave every
        // later write waiting forever.
        Report(logger => Log.CommitFailed(logger, ex, batch.Count));
        try
        {
            context.Transaction?.Dispose();
        }
        catch (SqliteException)
        {
            // A transaction SQLite already rolled back (after SQLITE_FULL, say) may refuse the rollback as well.
        }

        context.Transaction = null;
        context.DiscardChunks();
        PublishInOrder(new PublishBatch([.. batch], [], []) { Failure = ex });
    }

    /// <summary>
    /// A checkpoint on the writer connection, between transactions, so that it can complete and let SQLite reuse the WAL
    /// from its start (the background checkpoints copy most frames but cannot finish while writes keep arriving, and
    /// then the WAL would only grow). Cheap, because the background checkpoints have already copied most frames.
    /// </summary>
    /// <returns>Whether every frame of the WAL was copied, so that the next transaction starts it over.</returns>
    private bool CheckpointOnWriter()
    {
        try
        {
            // Everything committed so far is already durable (the writer flushes each commit); FULL also syncs the
            // database file.
            return CheckpointWithFullSync("PASSIVE", "OFF");
        }
        catch (SqliteException ex)
        {
            Report(logger => Log.CheckpointFailed(logger, ex));
            return false;
        }
    }

    /// <summary>
    /// A checkpoint on the writer connection with <c>synchronous=FULL</c> (the WAL synced before it is copied, the
    /// database after), then <paramref name="synchronous"/> again.
    /// </summary>
    /// <returns>Whether every frame of the WAL was copied.</returns>
    private bool CheckpointWithFullSync(string mode, string synchronous)
    {
        Execute(_writer, "PRAGMA synchronous=FULL;");
        try
        {
            using var command = _writer.CreateCommand();
            command.CommandText = $"PRAGMA wal_checkpoint({mode});";
            using var result = command.ExecuteReader();

            // busy, frames in the WAL, frames copied.
            return result.Read() && result.GetInt64(0) == 0 && result.GetInt64(1) == result.GetInt64(2);
        }
        finally
        {
            Execute(_writer, $"PRAGMA synchronous={synchronous};");
        }
    }

    private long WalLength()
    {
        try
        {
            return new FileInfo(_walPath).Length;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
    }

    /// <summary>
    /// Copies the WAL into the database file in the background, on its own connection, so the writer never stalls on it.
    /// With <c>synchronous=FULL</c> SQLite syncs the WAL before copying and the database after, so the WAL is only
    /// reused once its content is durable in the database file.
    /// </summary>
    private async Task CheckpointLoopAsync()
    {
        using var connection = new SqliteConnection(_connectionString);
        connection.Open();
        Execute(connection, "PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;");
        using var timer = new PeriodicTimer(CheckpointInterval);
        try
        {
            while (await timer.WaitForNextTickAsync(_stopping.Token).ConfigureAwait(false))
            {
                // After a failed flush the WAL's pages cannot be vouched for, so none is copied into the database; nor after
                // the writer stopped, not knowing what it left half done.
                if (_broken || _writerFailure is not null)
                {
                    continue;
                }

                try
                {
                    Execute(connection, "PRAGMA wal_checkpoint(PASSIVE);");
                }
                catch (SqliteException ex)
                {
                    Report(logger => Log.CheckpointFailed(logger, ex));
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Makes a commit durable, then publishes and acknowledges it in order (see <see cref="PublishInOrder"/>).</summary>
    /// <remarks>Never reached after a failed flush: the writer runs nothing more then (see the writer loop).</remarks>
    private void FlushAndPublish(PublishBatch batch)
    {
        Exception? failure = null;
        if (_options.Durability == SqliteDurability.Fsync)
        {
            try
            {
                BeforeFlush?.Invoke();
                _walHandle ??= File.OpenHandle(_walPath, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
                RandomAccess.FlushToDisk(_walHandle);
                Interlocked.Increment(ref _flushes);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                _flushFailure = ex;
                _broken = true;
                failure = ex;
                Report(logger => Log.SyncFailed(logger, ex));
            }
        }

        if (failure is null)
        {
            MarkDurable(batch.Commit);
        }
        else
        {
            // Committed but never made durable: documents readers saw of it are refused (see WhenDurableAsync).
            ReleaseDurableWaiters();
        }

        batch.Failure = failure;
        PublishInOrder(batch);
    }

    private static IOException BrokenFlush() => new("An earlier flush of the SQLite WAL to disk failed.");

    /// <summary>
    /// Publishes and acknowledges a durable batch (or fails a failed one's requests) on the writer thread, or hands it to
    /// the publisher thread when it would offer its changes to many live readers or earlier batches still wait there.
    /// </summary>
    private void PublishInOrder(PublishBatch batch)
    {
        // Batches are published (or failed) in order: this one goes to the publisher too while earlier ones wait there.
        // Only the writer adds to the count, so once it reads zero the publisher has finished every earlier batch.
        if (Volatile.Read(ref _queuedForPublisher) == 0 && (batch.Failure is not null || batch.Offers(Fanout) <= MaxOffersOnWriter))
        {
            batch.Publish(this);
            return;
        }

        Interlocked.Increment(ref _queuedForPublisher);
        _publishQueue.Enqueue(batch);
    }

    private void PublisherLoop()
    {
        try
        {
            while (_publishQueue.WaitForItems())
            {
                while (_publishQueue.TryDequeue(out var batch))
                {
                    try
                    {
                        batch.Publish(this);
                    }
                    catch (Exception ex)
                    {
                        // Publishing is guarded within; should something still throw, this batch's requests are answered
                        // (those not acknowledged yet are refused), live readers that may have missed it resume from
                        // their offsets, and the publisher goes on with the next batch, so no request waits for ever.
                        PublishBatch.PublishFailed(this, ex, cutOffReaders: true);
                        foreach (var command in batch.Commands)
                        {
                            command.Fail(ex);
                        }
                    }
                    finally
                    {
                        Interlocked.Decrement(ref _queuedForPublisher);
                    }
                }
            }

            _publisherStopped.TrySetResult();
        }
        catch (Exception ex)
        {
            _publisherStopped.TrySetException(ex);
        }
    }

    /// <summary>Marks every commit up to <paramref name="commit"/> durable, and wakes the document reads waiting for it.</summary>
    private void MarkDurable(long commit)
    {
        Volatile.Write(ref _durable, commit);
        ReleaseDurableWaiters();
    }

    private void ReleaseDurableWaiters()
    {
        TaskCompletionSource? waiters;
        lock (_durableGate)
        {
            waiters = _durableWaiters;
            _durableWaiters = null;
        }

        waiters?.TrySetResult();
    }

    /// <summary>
    /// Completes once every commit a read that has just ended may have seen is durable. SQLite shows a commit to readers as
    /// soon as it is committed, before the writer has flushed it: a document read straight from the database could
    /// otherwise return a write that was never acknowledged and that a power loss would take back. Stream reads need it
    /// only where they ask the database rather than what was published after its flush (where a trim has cut).
    /// </summary>
    /// <exception cref="StreamStoreUnavailableException">A commit the read may have seen can no longer be made durable (its
    /// flush failed, or the writer stopped).</exception>
    private ValueTask WhenDurableAsync(CancellationToken cancellationToken)
    {
        // Read after the read: a commit it saw was numbered before SQLite showed it.
        var seen = Interlocked.Read(ref _committing);
        return Volatile.Read(ref _durable) >= seen ? ValueTask.CompletedTask : new ValueTask(WaitDurableAsync(seen, cancellationToken));
    }

    private async Task WaitDurableAsync(long commit, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task flushed;
            lock (_durableGate)
            {
                if (Volatile.Read(ref _durable) >= commit)
                {
                    return;
                }

                if ((_flushFailure ?? _writerFailure) is { } failure)
                {
                    // The commit may never be durable: what was read of it is not answered (nor, until a restart, any
                    // later read that meets it), as the store refuses writes from then on.
                    throw new StreamStoreUnavailableException("The store read a commit it could not make durable: a flush of the SQLite WAL to disk failed, or its writer stopped.", failure);
                }

                flushed = (_durableWaiters ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
            }

            await flushed.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>The changes of one committed batch, waiting to become durable and visible.</summary>
    private sealed class PublishBatch(WriteCommand[] commands, List<(string Path, StreamInfo? Info, long Id)> streams, List<LiveAppend> liveChanges)
    {
        public WriteCommand[] Commands => commands;

        /// <summary>The commit's number (see <c>_committing</c>).</summary>
        public long Commit { get; set; }

        /// <summary>When the group commit started (a <see cref="Stopwatch"/> timestamp).</summary>
        public long Started { get; set; }

        /// <summary>Records the commit's duration, and a commit span under each traced request of the group.</summary>
        public void Committed()
        {
            var elapsed = Stopwatch.GetElapsedTime(Started);
            StoreTelemetry.CommitDuration.Record(elapsed.TotalSeconds);
            if (!StoreTelemetry.Source.HasListeners())
            {
                return;
            }

            var end = DateTimeOffset.UtcNow;
            foreach (var command in commands)
            {
                if (command.Parent != default
                    && StoreTelemetry.Source.StartActivity("durable_sessions.sqlite.commit", ActivityKind.Internal, command.Parent, startTime: end - elapsed) is { } activity)
                {
                    activity.SetTag("durable_sessions.sqlite.group_size", commands.Length);
                    activity.SetEndTime(end.UtcDateTime);
                    activity.Dispose();
                }
            }
        }

        public List<LiveAppend> LiveChanges => liveChanges;

        /// <summary>How many live readers publishing this batch offers a change to (the observers aside).</summary>
        public int Offers(StreamFanout fanout)
        {
            var offers = 0;
            foreach (var change in liveChanges)
            {
                offers += fanout.ReaderCount(change.StreamId);
            }

            return offers;
        }

        /// <summary>The flush failure that fails this batch's requests, or null once it is durable.</summary>
        public Exception? Failure { get; set; }

        /// <summary>
        /// Makes the durable batch visible to readers, hands its changes to the live ones and acknowledges it; or, after a
        /// failed flush, fails its requests.
        /// </summary>
        public void Publish(SqliteStreamStore store)
        {
            if (Failure is { } failure)
            {
                foreach (var command in commands)
                {
                    command.Fail(failure);
                }

                return;
            }

            // Nothing here stops the thread that publishes or leaves a request unanswered: the batch is durable, so its
            // requests are acknowledged whatever a telemetry listener or the fan-out throws.
            ApplyToReaders(store);
            var current = Activity.Current;
            try
            {
                Committed();
            }
            catch (Exception ex)
            {
                // A trace listener that throws may leave its span current on this long-lived thread.
                Activity.Current = current is { IsStopped: false } ? current : null;
                PublishFailed(store, ex, cutOffReaders: false);
            }

            foreach (var change in liveChanges)
            {
                try
                {
                    store.Fanout.Publish(change);
                }
                catch (Exception ex)
                {
                    // Live readers may have missed the change: each is cut off and resumes from its own offset by
                    // reading the store, where the change already is.
                    PublishFailed(store, ex, cutOffReaders: true);
                }
            }

            foreach (var command in commands)
            {
                command.Acknowledge();
            }
        }

        public static void PublishFailed(SqliteStreamStore store, Exception exception, bool cutOffReaders)
        {
            try
            {
                Log.PublishFailed(store._logger, exception);
                if (cutOffReaders)
                {
                    store.Fanout.DisconnectAll();
                }
            }
            catch (Exception)
            {
                // A logger or listener that throws as well: the requests are still acknowledged.
            }
        }

        private void ApplyToReaders(SqliteStreamStore store)
        {
            foreach (var (path, info, id) in streams)
            {
                if (info is null)
                {
                    if (store._byPath.TryGetValue(path, out var removed) && removed.Info.Id == id)
                    {
                        store._byPath.TryRemove(path, out _);
                    }

                    store._byId.TryRemove(id, out _);
                    store._accessDirty.TryRemove(id, out _);
                    continue;
                }

                if (store._byId.TryGetValue(info.Id, out var entry))
                {
                    entry.Info = info;
                }
                else
                {
                    entry = new StreamEntry(info);
                    store._byId[info.Id] = entry;
                }

                store._byPath[path] = entry;
            }
        }
    }

    /// <summary>The largest row that appends to one stream in one batch are joined into (a larger append is a row of its own).</summary>
    private const int MaxSharedChunkBytes = 64 * 1024;

    /// <summary>
    /// The appends to one stream that follow each other in a batch, to be stored as one row: binary data end to end,
    /// JSON messages joined by commas (the stored framing).
    /// </summary>
    private sealed class PendingChunk(long start, StreamPayload first, bool json)
    {
        private readonly ReadOnlyMemory<byte> _first = first.Data;
        private List<ReadOnlyMemory<byte>>? _more;

        public long Start { get; } = start;

        public long End { get; private set; } = start + first.Units;

        /// <summary>The row's length in bytes, separators included.</summary>
        public int Length { get; private set; } = first.Data.Length;

        public void Add(StreamPayload payload)
        {
            (_more ??= []).Add(payload.Data);
            End += payload.Units;
            Length += (json ? 1 : 0) + payload.Data.Length;
        }

        /// <summary>The row's data: the one append's where it lies, or the appends joined in <paramref name="buffer"/> (grown as needed).</summary>
        public ReadOnlySpan<byte> Joined(ref byte[] buffer)
        {
            if (_more is null)
            {
                return _first.Span;
            }

            if (buffer.Length < Length)
            {
                buffer = new byte[Math.Max(Length, Math.Min(2 * buffer.Length, MaxSharedChunkBytes))];
            }

            var data = buffer.AsSpan(0, Length);
            _first.Span.CopyTo(data);
            var written = _first.Length;
            foreach (var part in _more)
            {
                if (json)
                {
                    data[written++] = (byte)',';
                }

                part.Span.CopyTo(data[written..]);
                written += part.Length;
            }

            return data;
        }
    }

    /// <summary>
    /// The staged state of one group commit. Lookups see staged changes first, then the writer's view (committed, maybe not
    /// yet durable). Nothing here is visible to readers until the commit is flushed and published.
    /// </summary>
    private sealed class BatchContext : IDisposable
    {
        private readonly SqliteStreamStore _store;
        private readonly Dictionary<string, StreamInfo?> _stagedByPath = new(StringComparer.Ordinal);
        private readonly Dictionary<long, StreamInfo> _stagedById = [];
        private readonly HashSet<long> _dirty = [];
        private readonly HashSet<long> _created = [];
        private readonly HashSet<long> _deleted = [];
        private readonly Dictionary<(long, string), (ProducerState State, long StoredLastUsed)> _producers = [];
        private readonly Dictionary<long, PendingChunk> _pendingChunks = [];
        private readonly PreparedStatement _insertChunk;
        private readonly PreparedStatement _updateStream;
        private readonly PreparedStatement _upsertProducer;
        private readonly PreparedStatement _updateProducerSeq;

        // Where a row joined from several appends is laid out for binding (SQLite copies what it binds).
        private byte[] _rowBuffer = [];

        public BatchContext(SqliteStreamStore store)
        {
            _store = store;
            _insertChunk = new PreparedStatement(store._writer, Schema.InsertChunk, "$id", "$end", "$start", "$data");
            _updateStream = new PreparedStatement(store._writer, Schema.UpdateStream, "$id", "$tail", "$closed", "$closed_by_id", "$closed_by_epoch", "$closed_by_seq", "$last_access", "$last_stream_seq", "$soft_deleted", "$retained_from");
            _upsertProducer = new PreparedStatement(store._writer, Schema.UpsertProducer, "$id", "$producer", "$epoch", "$seq", "$now");
            _updateProducerSeq = new PreparedStatement(store._writer, Schema.UpdateProducerSeq, "$id", "$producer", "$epoch", "$seq");
        }

        /// <summary>Finalizes the prepared statements, which must happen before the writer's connection closes.</summary>
        public void Dispose()
        {
            _insertChunk.Dispose();
            _updateStream.Dispose();
            _upsertProducer.Dispose();
            _updateProducerSeq.Dispose();
        }

        public SqliteTransaction? Transaction { get; set; }

        public DateTimeOffset Now { get; private set; }

        public List<LiveAppend> Published { get; private set; } = [];

        public SqliteStreamStore Store => _store;

        /// <summary>Commits since the writer last looked at the WAL's size.</summary>
        public int CommitsSinceWalCheck { get; set; }

        public void Reset(DateTimeOffset now)
        {
            Now = now;
            _stagedByPath.Clear();
            _stagedById.Clear();
            _dirty.Clear();
            _created.Clear();
            _deleted.Clear();
            _producers.Clear();
            _pendingChunks.Clear();
            Published = [];
        }

        /// <summary>The stream at a path as this batch sees it, or null.</summary>
        public StreamInfo? Find(string path)
        {
            if (_stagedByPath.TryGetValue(path, out var staged))
            {
                return staged;
            }

            return _store._writerByPath.TryGetValue(path, out var info) ? WithLiveAccess(info) : null;
        }

        public StreamInfo? FindById(long id)
        {
            if (_deleted.Contains(id))
            {
                return null;
            }

            if (_stagedById.TryGetValue(id, out var staged))
            {
                return staged;
            }

            return _store._writerById.TryGetValue(id, out var info) ? WithLiveAccess(info) : null;
        }

        /// <summary>How many streams <paramref name="owner"/> created, counting what this batch has staged so far.</summary>
        public int StreamsOwnedBy(string owner)
        {
            var count = _store._ownerCounts.GetValueOrDefault(owner);
            foreach (var (path, info) in _stagedByPath)
            {
                if (_store._writerByPath.TryGetValue(path, out var committed) && committed.Owner == owner)
                {
                    count--;
                }

                if (info?.Owner == owner)
                {
                    count++;
                }
            }

            return count;
        }

        /// <summary>How many streams exist, counting what this batch has staged so far.</summary>
        public int StreamCount
        {
            get
            {
                var count = _store._writerByPath.Count;
                foreach (var (path, info) in _stagedByPath)
                {
                    var committed = _store._writerByPath.ContainsKey(path);
                    count += info is null ? (committed ? -1 : 0) : (committed ? 0 : 1);
                }

                return count;
            }
        }

        public bool IsExpired(StreamInfo info)
        {
            if (info.ExpiresAt is { } expiresAt && Now >= expiresAt)
            {
                return true;
            }

            return info.TtlSeconds is { } ttl && StreamInfo.TtlElapsed(info.LastAccessAt, ttl, Now);
        }

        /// <summary>Stages a new version of a stream's metadata.</summary>
        /// <param name="info">The new metadata.</param>
        /// <param name="persistRow">
        /// Whether the streams row must be rewritten. The tail is derived from the chunks on load and the last access is
        /// flushed periodically, so plain appends leave the row alone; closure, <c>Stream-Seq</c> and deletion state do not.
        /// </param>
        public void Stage(StreamInfo info, bool persistRow = true)
        {
            _stagedByPath[info.Path] = info;
            _stagedById[info.Id] = info;
            if (persistRow)
            {
                _dirty.Add(info.Id);
            }
            else if (info.TtlSeconds is not null)
            {
                _store._accessDirty.TryAdd(info.Id, 0);
            }
        }

        public long InsertStream(CreateStreamRequest request, string contentType, long? ttl, DateTimeOffset? expiresAt, long tail, StreamInfo? source, long forkPosition, long forkOffset)
        {
            using var command = _store._writer.CreateCommand();
            command.Transaction = Transaction;
            command.CommandText = Schema.InsertStream;
            command.Parameters.AddWithValue("$path", request.Path);
            command.Parameters.AddWithValue("$content_type", contentType);
            command.Parameters.AddWithValue("$tail", tail);
            command.Parameters.AddWithValue("$closed", request.Closed ? 1 : 0);
            command.Parameters.AddWithValue("$ttl", Schema.Db(ttl));
            command.Parameters.AddWithValue("$expires_at", Schema.Db(expiresAt?.ToUnixTimeMilliseconds()));
            command.Parameters.AddWithValue("$now", Now.ToUnixTimeMilliseconds());
            command.Parameters.AddWithValue("$fork_source_id", Schema.Db(source?.Id));
            command.Parameters.AddWithValue("$fork_source_path", Schema.Db(source?.Path));
            command.Parameters.AddWithValue("$fork_position", forkPosition);
            command.Parameters.AddWithValue("$fork_offset", forkOffset);
            command.Parameters.AddWithValue("$fork_sub_offset", request.ForkSubOffset);
            command.Parameters.AddWithValue("$owner", Schema.Db(request.Owner));
            command.Parameters.AddWithValue("$retained_from", source?.RetainedFrom ?? 0);
            var id = (long)command.ExecuteScalar()!;
            _created.Add(id);
            return id;
        }

        /// <summary>
        /// Stores <paramref name="payload"/> at <paramref name="start"/> of a stream. The row is written when the batch
        /// commits (or before any other statement that could read or delete it), and appends to the same stream that
        /// follow each other in one batch share a row, up to <see cref="MaxSharedChunkBytes"/>: each row costs its own
        /// B-tree cells and index entry, and with many small appends to few streams (pipelined writers) a row per append
        /// makes inserting rows a large share of the writer's time. Readers slice a row at any offset; a trim cuts at a
        /// row's end, so it keeps the rest of a row it falls inside (see <see cref="StreamStore.TrimAsync"/>).
        /// </summary>
        public void InsertChunk(long streamId, long start, StreamPayload payload, bool json)
        {
            if (_pendingChunks.TryGetValue(streamId, out var pending))
            {
                if (pending.End == start && pending.Length + 1 + payload.Data.Length <= MaxSharedChunkBytes)
                {
                    pending.Add(payload);
                    return;
                }

                WriteChunk(streamId, pending);
            }

            _pendingChunks[streamId] = new PendingChunk(start, payload, json);
        }

        /// <summary>Lets go of the appends of a batch that failed (and of their data, which may be large).</summary>
        public void DiscardChunks() => _pendingChunks.Clear();

        /// <summary>Writes the rows of the appends this batch has taken so far.</summary>
        public void FlushChunks()
        {
            if (_pendingChunks.Count == 0)
            {
                return;
            }

            foreach (var (streamId, pending) in _pendingChunks)
            {
                WriteChunk(streamId, pending);
            }

            _pendingChunks.Clear();
        }

        private void WriteChunk(long streamId, PendingChunk pending)
        {
            // SQLite copies what it binds, so a single append (up to a request's whole body) is bound where it lies, and
            // appends joined into one row are laid out in a buffer the writer keeps (a row that joins appends is at
            // most MaxSharedChunkBytes).
            _insertChunk.Bind(0, streamId);
            _insertChunk.Bind(1, pending.End);
            _insertChunk.Bind(2, pending.Start);
            _insertChunk.Bind(3, pending.Joined(ref _rowBuffer));
            _insertChunk.Execute();
        }

        public ProducerState? GetProducer(long streamId, string producerId)
        {
            if (_producers.TryGetValue((streamId, producerId), out var staged))
            {
                return staged.State;
            }

            if (_created.Contains(streamId))
            {
                return null;
            }

            // State idle for longer than the producer TTL is treated as absent: the producer starts again as new.
            var cutoff = Now.ToUnixTimeMilliseconds() - (long)_store._options.ProducerStateTtl.TotalMilliseconds;
            if (_store._writerProducers.TryGetValue((streamId, producerId), out var cached))
            {
                return cached.LastUsed > cutoff ? cached.State : null;
            }

            using var command = _store._writer.CreateCommand();
            command.Transaction = Transaction;
            command.CommandText = Schema.SelectProducer;
            command.Parameters.AddWithValue("$id", streamId);
            command.Parameters.AddWithValue("$producer", producerId);
            using var reader = command.ExecuteReader();
            if (!reader.Read())
            {
                // Unknown producers are not cached: a flood of made-up producer ids must not grow memory.
                return null;
            }

            // Its last append may be up to the slack later than last_used says: it counts as used then.
            var stored = reader.GetInt64(2);
            var found = new CachedProducer(new ProducerState(reader.GetInt64(0), reader.GetInt64(1)), stored + _store.LastUsedSlackMs, stored);
            _store._writerProducers[(streamId, producerId)] = found;
            return found.LastUsed > cutoff ? found.State : null;
        }

        public void SetProducer(long streamId, string producerId, ProducerState state)
        {
            var key = (streamId, producerId);
            var now = Now.ToUnixTimeMilliseconds();
            long? stored = _producers.TryGetValue(key, out var staged) ? staged.StoredLastUsed
                : _store._writerProducers.TryGetValue(key, out var cached) ? cached.StoredLastUsed
                : null;
            if (stored is { } storedAt && now - storedAt < _store.LastUsedSlackMs)
            {
                // A row this writer knows is on disk, whose last_used is recent enough: only its sequence changes. Were
                // the row gone after all, the full upsert below writes it again rather than losing the producer's state.
                _producers[key] = (state, storedAt);
                _updateProducerSeq.Bind(0, streamId);
                _updateProducerSeq.Bind(1, producerId);
                _updateProducerSeq.Bind(2, state.Epoch);
                _updateProducerSeq.Bind(3, state.LastSeq);
                if (_updateProducerSeq.Execute() == 1)
                {
                    return;
                }
            }

            _producers[key] = (state, now);
            _upsertProducer.Bind(0, streamId);
            _upsertProducer.Bind(1, producerId);
            _upsertProducer.Bind(2, state.Epoch);
            _upsertProducer.Bind(3, state.LastSeq);
            _upsertProducer.Bind(4, now);
            _upsertProducer.Execute();
        }

        /// <summary>Removes a stream for good, releasing its fork source (and cascading to soft-deleted ancestors).</summary>
        public void HardDelete(StreamInfo info)
        {
            // A loop up the chain, not a recursion: no chain's depth can exhaust the writer's stack.
            for (StreamInfo? next = info; next is not null;)
            {
                next = HardDeleteOne(next);
            }
        }

        /// <returns>Its fork source when that is now removed too (soft-deleted, with no fork left), else null.</returns>
        private StreamInfo? HardDeleteOne(StreamInfo info)
        {
            FlushChunks();
            using (var command = _store._writer.CreateCommand())
            {
                command.Transaction = Transaction;
                command.CommandText = Schema.DeleteStream;
                command.Parameters.AddWithValue("$id", info.Id);
                command.ExecuteNonQuery();
            }

            _stagedByPath[info.Path] = null;
            _stagedById.Remove(info.Id);
            _dirty.Remove(info.Id);
            _deleted.Add(info.Id);
            Published.Add(new LiveAppend(info.Id, info.Path, new StreamChunk(info.TailPosition, info.TailPosition, default), info.Closed, deleted: true));

            if (info.ForkSourceId is { } sourceId && FindById(sourceId) is { } source)
            {
                var released = source with { ForkCount = Math.Max(0, source.ForkCount - 1) };
                if (released.SoftDeleted && released.ForkCount == 0)
                {
                    return released;
                }

                // Fork counts are derived at load time; only memory needs the new value.
                _stagedByPath[released.Path] = released;
                _stagedById[released.Id] = released;
            }

            return null;
        }

        public void WriteDirtyStreams()
        {
            FlushChunks();
            foreach (var id in _dirty)
            {
                var info = _stagedById[id];
                _updateStream.Bind(0, info.Id);
                _updateStream.Bind(1, info.TailPosition);
                _updateStream.Bind(2, info.Closed ? 1 : 0);
                _updateStream.Bind(3, info.ClosedBy?.ProducerId);
                _updateStream.Bind(4, info.ClosedBy?.Epoch);
                _updateStream.Bind(5, info.ClosedBy?.Seq);
                _updateStream.Bind(6, info.LastAccessAt.ToUnixTimeMilliseconds());
                _updateStream.Bind(7, info.LastStreamSeq);
                _updateStream.Bind(8, info.SoftDeleted ? 1 : 0);
                _updateStream.Bind(9, info.RetainedFrom);
                _updateStream.Execute();
            }
        }

        /// <summary>Makes the committed batch the writer's view, and returns what must be published once it is durable.</summary>
        public PublishBatch ApplyToWriterState(WriteCommand[] commands)
        {
            var changes = new List<(string, StreamInfo?, long)>(_stagedByPath.Count);
            foreach (var (path, info) in _stagedByPath)
            {
                if (info is null)
                {
                    if (_store._writerByPath.Remove(path, out var removed))
                    {
                        _store.CountOwner(removed.Owner, -1);
                        changes.Add((path, null, removed.Id));
                    }

                    continue;
                }

                if (!_store._writerByPath.TryGetValue(path, out var replaced) || replaced.Id != info.Id)
                {
                    _store.CountOwner(replaced?.Owner, -1);
                    _store.CountOwner(info.Owner, +1);
                }

                _store._writerByPath[path] = info;
                _store._writerById[info.Id] = info;
                changes.Add((path, info, info.Id));
            }

            foreach (var id in _deleted)
            {
                if (_store._writerById.Remove(id, out var removed) && !changes.Exists(c => c.Item3 == id && c.Item2 is null))
                {
                    changes.Add((removed.Path, null, id));
                }
            }

            if (_deleted.Count > 0 && _store._writerProducers.Count > 0)
            {
                // One pass over the cached producers for the whole batch, not one per deleted stream: an expiry sweep
                // deletes thousands of streams in one batch.
                foreach (var key in _store._writerProducers.Keys.Where(k => _deleted.Contains(k.StreamId)).ToList())
                {
                    _store._writerProducers.Remove(key);
                }
            }

            var used = Now.ToUnixTimeMilliseconds();
            foreach (var (key, (state, stored)) in _producers)
            {
                _store._writerProducers[key] = new CachedProducer(state, used, stored);
            }

            Volatile.Write(ref _store._cachedProducers, _store._writerProducers.Count);

            return new PublishBatch(commands, changes, Published);
        }

        public void ExecuteSql(string sql, params (string Name, object? Value)[] parameters)
        {
            using var command = Command(sql, parameters);
            command.ExecuteNonQuery();
        }

        /// <summary>Runs a query in this batch's transaction and returns its first value (null for SQL NULL or no row).</summary>
        public object? QueryScalar(string sql, params (string Name, object? Value)[] parameters)
        {
            using var command = Command(sql, parameters);
            return command.ExecuteScalar() is { } value and not DBNull ? value : null;
        }

        private SqliteCommand Command(string sql, (string Name, object? Value)[] parameters)
        {
            // Any other statement may read or delete chunks (a trim, a delete): it sees this batch's rows.
            FlushChunks();
            var command = _store._writer.CreateCommand();
            command.Transaction = Transaction;
            command.CommandText = sql;
            foreach (var (name, value) in parameters)
            {
                command.Parameters.AddWithValue(name, Schema.Db(value));
            }

            return command;
        }

        /// <summary>Reads refresh the TTL on the published entry; the writer's view takes the later of the two.</summary>
        private StreamInfo WithLiveAccess(StreamInfo info)
        {
            if (info.TtlSeconds is null || !_store._byId.TryGetValue(info.Id, out var entry))
            {
                return info;
            }

            var access = entry.LastAccess;
            return access > info.LastAccessAt ? info with { LastAccessAt = access } : info;
        }

        private SqliteCommand Prepare(string sql, params string[] names)
        {
            var command = _store._writer.CreateCommand();
            command.CommandText = sql;
            foreach (var name in names)
            {
                command.Parameters.Add(new SqliteParameter { ParameterName = name });
            }

            return command;
        }
    }
}
