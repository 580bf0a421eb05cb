using DurableSessions.Live;
using Microsoft.Data.Sqlite;

namespace DurableSessions.Storage.Sqlite;

public sealed partial class SqliteStreamStore
{
    private void WriterLoop()
    {
        try
        {
            var batch = new List<WriteCommand>(_options.MaxBatchSize);
            var context = new BatchContext(this);
            while (_commands.WaitForItems())
            {
                batch.Clear();
                while (batch.Count < _options.MaxBatchSize && _commands.TryDequeue(out var command))
                {
                    batch.Add(command);
                }

                if (batch.Count > 0)
                {
                    CommitBatch(batch, context);
                }
            }

            _writerStopped.TrySetResult();
        }
        catch (Exception ex)
        {
            _writerStopped.TrySetException(ex);
        }
    }

    private void CommitBatch(List<WriteCommand> batch, BatchContext context)
    {
        context.Reset(TimeProvider.GetUtcNow());
        try
        {
            using (var transaction = _writer.BeginTransaction())
            {
                context.Transaction = transaction;
                foreach (var command in batch)
                {
                    command.Execute(context);
                }

                context.WriteDirtyStreams();
                transaction.Commit();
            }

            // Committed (and, with Fsync durability, on disk): publish, then acknowledge.
            Interlocked.Increment(ref _commits);
            Interlocked.Add(ref _committedRequests, batch.Count);
            StoreMetrics.Commits.Add(1);
            StoreMetrics.GroupSize.Record(batch.Count);
            context.ApplyToMemory();
            foreach (var change in context.Published)
            {
                Fanout.Publish(change);
            }

            foreach (var command in batch)
            {
                command.Acknowledge();
            }
        }
        catch (Exception ex) when (ex is SqliteException or InvalidOperationException or IOException)
        {
            Log.CommitFailed(_logger, ex, batch.Count);
            foreach (var entry in context.TouchedEntries)
            {
                entry.Producers.Clear();
            }

            foreach (var command in batch)
            {
                command.Fail(ex);
            }
        }
        finally
        {
            context.Transaction = null;
        }
    }

    /// <summary>The staged state of one group commit: nothing here is visible until the transaction commits.</summary>
    private sealed class BatchContext
    {
        private readonly SqliteStreamStore _store;
        private readonly Dictionary<string, StreamInfo?> _stagedByPath = new(StringComparer.Ordinal);
        private readonly Dictionary<long, StreamInfo> _stagedById = [];
        private readonly HashSet<long> _dirty = [];
        private readonly HashSet<long> _created = [];
        private readonly HashSet<long> _deleted = [];
        private readonly Dictionary<(long, string), ProducerState> _producers = [];
        private readonly SqliteCommand _insertChunk;
        private readonly SqliteCommand _updateStream;
        private readonly SqliteCommand _upsertProducer;

        public BatchContext(SqliteStreamStore store)
        {
            _store = store;
            _insertChunk = Prepare(Schema.InsertChunk, "$id", "$end", "$start", "$data");
            _updateStream = Prepare(Schema.UpdateStream, "$id", "$tail", "$closed", "$closed_by_id", "$closed_by_epoch", "$closed_by_seq", "$last_access", "$last_stream_seq", "$soft_deleted");
            _upsertProducer = Prepare(Schema.UpsertProducer, "$id", "$producer", "$epoch", "$seq");
        }

        public SqliteTransaction? Transaction { get; set; }

        public DateTimeOffset Now { get; private set; }

        public List<LiveAppend> Published { get; } = [];

        public List<StreamEntry> TouchedEntries { get; } = [];

        public SqliteStreamStore Store => _store;

        public void Reset(DateTimeOffset now)
        {
            Now = now;
            _stagedByPath.Clear();
            _stagedById.Clear();
            _dirty.Clear();
            _created.Clear();
            _deleted.Clear();
            _producers.Clear();
            Published.Clear();
            TouchedEntries.Clear();
        }

        /// <summary>The stream at a path as this batch sees it (staged changes first), or null.</summary>
        public StreamInfo? Find(string path)
        {
            if (_stagedByPath.TryGetValue(path, out var staged))
            {
                return staged;
            }

            return _store._byPath.TryGetValue(path, out var entry) ? WithLiveAccess(entry) : null;
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

            return _store._byId.TryGetValue(id, out var entry) ? WithLiveAccess(entry) : null;
        }

        public bool IsExpired(StreamInfo info)
        {
            if (info.ExpiresAt is { } expiresAt && Now >= expiresAt)
            {
                return true;
            }

            return info.TtlSeconds is { } ttl && Now >= info.LastAccessAt.AddSeconds(ttl);
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
            var id = (long)command.ExecuteScalar()!;
            _created.Add(id);
            return id;
        }

        public void InsertChunk(long streamId, long start, StreamPayload payload)
        {
            _insertChunk.Transaction = Transaction;
            _insertChunk.Parameters[0].Value = streamId;
            _insertChunk.Parameters[1].Value = start + payload.Units;
            _insertChunk.Parameters[2].Value = start;
            _insertChunk.Parameters[3].Value = payload.Data.ToArray();
            _insertChunk.ExecuteNonQuery();
        }

        public ProducerState? GetProducer(long streamId, string producerId)
        {
            if (_producers.TryGetValue((streamId, producerId), out var staged))
            {
                return staged;
            }

            if (!_store._byId.TryGetValue(streamId, out var entry) || _created.Contains(streamId))
            {
                return null;
            }

            if (entry.Producers.TryGetValue(producerId, out var cached))
            {
                return cached;
            }

            using var command = _store._writer.CreateCommand();
            command.Transaction = Transaction;
            command.CommandText = Schema.SelectProducer;
            command.Parameters.AddWithValue("$id", streamId);
            command.Parameters.AddWithValue("$producer", producerId);
            using var reader = command.ExecuteReader();
            ProducerState? state = reader.Read() ? new ProducerState(reader.GetInt64(0), reader.GetInt64(1)) : null;
            entry.Producers[producerId] = state;
            return state;
        }

        public void SetProducer(long streamId, string producerId, ProducerState state)
        {
            _producers[(streamId, producerId)] = state;
            _upsertProducer.Transaction = Transaction;
            _upsertProducer.Parameters[0].Value = streamId;
            _upsertProducer.Parameters[1].Value = producerId;
            _upsertProducer.Parameters[2].Value = state.Epoch;
            _upsertProducer.Parameters[3].Value = state.LastSeq;
            _upsertProducer.ExecuteNonQuery();
        }

        /// <summary>Removes a stream for good, releasing its fork source (and cascading to soft-deleted ancestors).</summary>
        public void HardDelete(StreamInfo info)
        {
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
                    HardDelete(released);
                }
                else
                {
                    // Fork counts are derived at load time; only memory needs the new value.
                    _stagedByPath[released.Path] = released;
                    _stagedById[released.Id] = released;
                }
            }
        }

        public void WriteDirtyStreams()
        {
            _updateStream.Transaction = Transaction;
            foreach (var id in _dirty)
            {
                var info = _stagedById[id];
                var p = _updateStream.Parameters;
                p[0].Value = info.Id;
                p[1].Value = info.TailPosition;
                p[2].Value = info.Closed ? 1 : 0;
                p[3].Value = Schema.Db(info.ClosedBy?.ProducerId);
                p[4].Value = Schema.Db(info.ClosedBy?.Epoch);
                p[5].Value = Schema.Db(info.ClosedBy?.Seq);
                p[6].Value = info.LastAccessAt.ToUnixTimeMilliseconds();
                p[7].Value = Schema.Db(info.LastStreamSeq);
                p[8].Value = info.SoftDeleted ? 1 : 0;
                _updateStream.ExecuteNonQuery();
            }
        }

        public void ApplyToMemory()
        {
            foreach (var (path, info) in _stagedByPath)
            {
                if (info is null)
                {
                    if (_store._byPath.TryGetValue(path, out var removed) && _deleted.Contains(removed.Info.Id))
                    {
                        _store._byPath.TryRemove(path, out _);
                    }

                    continue;
                }

                if (_store._byId.TryGetValue(info.Id, out var entry))
                {
                    entry.Info = info;
                }
                else
                {
                    entry = new StreamEntry(info);
                    _store._byId[info.Id] = entry;
                }

                _store._byPath[path] = entry;
            }

            foreach (var id in _deleted)
            {
                _store._byId.TryRemove(id, out _);
                _store._accessDirty.TryRemove(id, out _);
            }

            foreach (var ((streamId, producerId), state) in _producers)
            {
                if (_store._byId.TryGetValue(streamId, out var entry))
                {
                    entry.Producers[producerId] = state;
                }
            }
        }

        public void ExecuteSql(string sql, params (string Name, object? Value)[] parameters)
        {
            using var command = _store._writer.CreateCommand();
            command.Transaction = Transaction;
            command.CommandText = sql;
            foreach (var (name, value) in parameters)
            {
                command.Parameters.AddWithValue(name, Schema.Db(value));
            }

            command.ExecuteNonQuery();
        }

        private static StreamInfo WithLiveAccess(StreamEntry entry)
        {
            var info = entry.Info;
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

    private abstract class WriteCommand
    {
        public abstract void Execute(BatchContext context);

        public abstract void Acknowledge();

        public abstract void Fail(Exception exception);
    }

    private abstract class WriteCommand<T> : WriteCommand
    {
        private T _result = default!;

        public TaskCompletionSource<T> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public sealed override void Execute(BatchContext context) => _result = Run(context);

        public sealed override void Acknowledge() => Completion.TrySetResult(_result);

        public sealed override void Fail(Exception exception) => Completion.TrySetException(new StreamStoreUnavailableException("The store could not commit the request.", exception));

        protected abstract T Run(BatchContext context);

        /// <summary>Finds a live stream, removing it first (in this batch) if it has expired.</summary>
        protected static StreamInfo? FindLive(BatchContext context, string path)
        {
            var info = context.Find(path);
            if (info is not null && !info.SoftDeleted && context.IsExpired(info))
            {
                ExpireStream(context, info);
                return null;
            }

            return info;
        }

        protected static void ExpireStream(BatchContext context, StreamInfo info)
        {
            if (info.ForkCount > 0)
            {
                context.Stage(info with { SoftDeleted = true });
                context.Published.Add(new LiveAppend(info.Id, info.Path, new StreamChunk(info.TailPosition, info.TailPosition, default), info.Closed, deleted: true));
            }
            else
            {
                context.HardDelete(info);
            }

            Log.Expired(context.Store._logger, info.Path);
        }
    }

    private sealed class CreateCommand(CreateStreamRequest request) : WriteCommand<CreateStreamResult>
    {
        protected override CreateStreamResult Run(BatchContext context)
        {
            var existing = FindLive(context, request.Path);
            if (existing is not null)
            {
                return new CreateStreamResult(SameConfiguration(existing, context) ? CreateStreamStatus.AlreadyExists : CreateStreamStatus.Conflict, existing);
            }

            StreamInfo? source = null;
            var contentType = request.ContentType ?? StreamContentType.Default;
            var ttl = request.TtlSeconds;
            var expiresAt = request.ExpiresAt;
            long forkPosition = 0;
            long forkOffset = 0;
            if (request.ForkedFrom is { } sourcePath)
            {
                source = FindLive(context, sourcePath);
                if (source is null)
                {
                    return new CreateStreamResult(CreateStreamStatus.SourceNotFound, null);
                }

                if (source.SoftDeleted)
                {
                    return new CreateStreamResult(CreateStreamStatus.SourceGone, null);
                }

                if (request.ContentType is { } requested && !StreamContentType.Matches(requested, source.ContentType))
                {
                    return new CreateStreamResult(CreateStreamStatus.ContentTypeMismatch, null);
                }

                contentType = source.ContentType;
                forkOffset = request.ForkOffset ?? source.TailPosition;
                forkPosition = forkOffset + request.ForkSubOffset;
                if (forkOffset > source.TailPosition || forkPosition > source.TailPosition || (request.ForkSubOffset > 0 && request.ForkOffset is null))
                {
                    return new CreateStreamResult(CreateStreamStatus.InvalidForkOffset, null);
                }

                if (ttl is null && expiresAt is null)
                {
                    ttl = source.TtlSeconds;
                    expiresAt = source.ExpiresAt;
                }
            }

            var tail = forkPosition + request.InitialData.Units;
            var id = context.InsertStream(request, contentType, ttl, expiresAt, tail, source, forkPosition, forkOffset);
            if (!request.InitialData.IsEmpty)
            {
                context.InsertChunk(id, forkPosition, request.InitialData);
            }

            var info = new StreamInfo
            {
                Id = id,
                Path = request.Path,
                ContentType = contentType,
                TailPosition = tail,
                Closed = request.Closed,
                TtlSeconds = ttl,
                ExpiresAt = expiresAt,
                CreatedAt = context.Now,
                LastAccessAt = context.Now,
                ForkSourceId = source?.Id,
                ForkSourcePath = source?.Path,
                ForkPosition = forkPosition,
                ForkOffset = forkOffset,
                ForkSubOffset = request.ForkSubOffset,
            };
            context.Stage(info);
            if (source is not null)
            {
                context.Stage(source with { ForkCount = source.ForkCount + 1 }, persistRow: false);
            }

            context.Published.Add(new LiveAppend(id, info.Path, new StreamChunk(forkPosition, tail, request.InitialData.Data), info.Closed));
            return new CreateStreamResult(CreateStreamStatus.Created, info);
        }

        private bool SameConfiguration(StreamInfo existing, BatchContext context)
        {
            if (existing.SoftDeleted || existing.Closed != request.Closed)
            {
                return false;
            }

            if (request.ForkedFrom is null)
            {
                return existing.ForkSourcePath is null
                    && StreamContentType.Matches(request.ContentType ?? StreamContentType.Default, existing.ContentType)
                    && existing.TtlSeconds == request.TtlSeconds
                    && SameInstant(existing.ExpiresAt, request.ExpiresAt);
            }

            if (!string.Equals(existing.ForkSourcePath, request.ForkedFrom, StringComparison.Ordinal)
                || (request.ContentType is { } type && !StreamContentType.Matches(type, existing.ContentType))
                || existing.ForkSubOffset != request.ForkSubOffset
                || (request.ForkOffset is { } offset && offset != existing.ForkOffset))
            {
                return false;
            }

            // A fork without its own expiry inherited the source's; only an explicit request can differ.
            return (request.TtlSeconds is null && request.ExpiresAt is null)
                || (existing.TtlSeconds == request.TtlSeconds && SameInstant(existing.ExpiresAt, request.ExpiresAt));
        }

        private static bool SameInstant(DateTimeOffset? a, DateTimeOffset? b)
            => a?.ToUnixTimeMilliseconds() == b?.ToUnixTimeMilliseconds();
    }

    private sealed class AppendCommand(AppendRequest request) : WriteCommand<AppendResult>
    {
        protected override AppendResult Run(BatchContext context)
        {
            var stream = FindLive(context, request.Path);
            if (stream is null)
            {
                return new AppendResult { Status = AppendStatus.NotFound };
            }

            if (stream.SoftDeleted)
            {
                return new AppendResult { Status = AppendStatus.Gone };
            }

            var producer = request.Producer is { } stamp ? context.GetProducer(stream.Id, stamp.ProducerId) : null;
            var decision = AppendRules.Decide(stream, producer, request);
            if (!decision.Apply)
            {
                // Close-only retries still refresh the sliding TTL.
                if (decision.Result.Status is AppendStatus.AlreadyClosed or AppendStatus.Duplicate)
                {
                    context.Stage(stream with { LastAccessAt = context.Now }, persistRow: false);
                }

                return decision.Result;
            }

            if (!request.Data.IsEmpty)
            {
                context.InsertChunk(stream.Id, stream.TailPosition, request.Data);
            }

            if (decision.NewProducerState is { } newState)
            {
                context.SetProducer(stream.Id, request.Producer!.Value.ProducerId, newState);
            }

            var updated = AppendRules.Apply(stream, request, context.Now);
            context.Stage(updated, persistRow: updated.Closed != stream.Closed || updated.LastStreamSeq != stream.LastStreamSeq);
            context.Published.Add(new LiveAppend(stream.Id, stream.Path, new StreamChunk(stream.TailPosition, updated.TailPosition, request.Data.Data), updated.Closed));
            return decision.Result;
        }
    }

    private sealed class DeleteCommand(string path, bool expireOnly) : WriteCommand<DeleteStreamStatus>
    {
        protected override DeleteStreamStatus Run(BatchContext context)
        {
            var info = context.Find(path);
            if (info is null)
            {
                return DeleteStreamStatus.NotFound;
            }

            if (info.SoftDeleted)
            {
                return DeleteStreamStatus.Gone;
            }

            if (context.IsExpired(info))
            {
                ExpireStream(context, info);
                return DeleteStreamStatus.NotFound;
            }

            if (expireOnly)
            {
                return DeleteStreamStatus.NotFound;
            }

            if (info.ForkCount > 0)
            {
                context.Stage(info with { SoftDeleted = true });
                context.Published.Add(new LiveAppend(info.Id, info.Path, new StreamChunk(info.TailPosition, info.TailPosition, default), info.Closed, deleted: true));
            }
            else
            {
                context.HardDelete(info);
            }

            return DeleteStreamStatus.Deleted;
        }
    }

    private sealed class DocumentCommand(string collection, string key, byte[]? value) : WriteCommand<bool>
    {
        protected override bool Run(BatchContext context)
        {
            if (value is null)
            {
                context.ExecuteSql(Schema.DeleteDocument, ("$collection", collection), ("$key", key));
            }
            else
            {
                context.ExecuteSql(Schema.PutDocument, ("$collection", collection), ("$key", key), ("$value", value));
            }

            return true;
        }
    }

    private sealed class FlushAccessCommand : WriteCommand<bool>
    {
        protected override bool Run(BatchContext context)
        {
            var store = context.Store;
            foreach (var id in store._accessDirty.Keys)
            {
                store._accessDirty.TryRemove(id, out _);
                if (store._byId.TryGetValue(id, out var entry))
                {
                    context.ExecuteSql(Schema.TouchStream, ("$id", id), ("$last_access", entry.LastAccess.ToUnixTimeMilliseconds()));
                }
            }

            return true;
        }
    }
}
