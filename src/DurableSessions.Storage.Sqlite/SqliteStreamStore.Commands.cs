using System.Diagnostics;
using DurableSessions.Live;

namespace DurableSessions.Storage.Sqlite;

public sealed partial class SqliteStreamStore
{
    private abstract class WriteCommand
    {
        /// <summary>The trace context of the request that issued the write (default when untraced).</summary>
        public ActivityContext Parent { get; } = Activity.Current?.Context ?? default;

        /// <summary>How many requests the command carries (one, but for appends taken at once), for the store's counts.</summary>
        public virtual int Requests => 1;

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

        public sealed override void Fail(Exception exception)
        {
            Failed();
            Completion.TrySetException(new StreamStoreUnavailableException("The store could not commit the request.", exception));
        }

        protected abstract T Run(BatchContext context);

        /// <summary>Called when the command's batch failed: whether or not <see cref="Run"/> ran, its changes are not kept.</summary>
        protected virtual void Failed()
        {
        }

        /// <summary>
        /// Finds a live stream, removing it first (in this batch) if it has expired. One that expired while forks still
        /// read from it is returned soft-deleted: its path stays taken until the last fork goes.
        /// </summary>
        protected static StreamInfo? FindLive(BatchContext context, string path)
        {
            var info = context.Find(path);
            if (info is not null && !info.SoftDeleted && context.IsExpired(info))
            {
                ExpireStream(context, info);
                return info.ForkCount > 0 ? info with { SoftDeleted = true } : null;
            }

            return info;
        }

        private const int MaxExpiredAtLimit = 256;

        /// <summary>
        /// Removes, in this batch, every stream that has expired and not been removed yet (the expiry sweep's work, done
        /// now). It scans every stream, so it runs at most once a second: a client creating at the limit over and over
        /// must not make the writer scan on each request.
        /// </summary>
        /// <returns>How many streams were removed (at most 256; the expiry sweep removes the rest).</returns>
        protected static int ExpireDue(BatchContext context)
        {
            var store = context.Store;
            var now = store.TimeProvider.GetTimestamp();
            if (store._lastLimitSweep != 0 && store.TimeProvider.GetElapsedTime(store._lastLimitSweep, now) < TimeSpan.FromSeconds(1))
            {
                return 0;
            }

            store._lastLimitSweep = now;
            var due = new List<string>();
            foreach (var (path, info) in store._writerByPath)
            {
                if ((info.TtlSeconds is not null || info.ExpiresAt is not null) && !info.SoftDeleted)
                {
                    due.Add(path);
                }
            }

            // At most a batch's worth in this request's transaction; the expiry sweep removes the rest.
            var removed = 0;
            foreach (var path in due)
            {
                if (context.Find(path) is { SoftDeleted: false } info && context.IsExpired(info))
                {
                    ExpireStream(context, info);
                    if (++removed == MaxExpiredAtLimit)
                    {
                        break;
                    }
                }
            }

            return removed;
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

            context.Store.Report(logger => Log.Expired(logger, info.Path));
        }
    }

    private sealed class CreateCommand(CreateStreamRequest request) : WriteCommand<CreateStreamResult>
    {
        protected override CreateStreamResult Run(BatchContext context)
        {
            var existing = FindLive(context, request.Path);
            if (existing is not null)
            {
                return new CreateStreamResult(CreateRules.SameConfiguration(existing, request) ? CreateStreamStatus.AlreadyExists : CreateStreamStatus.Conflict, existing);
            }

            StreamInfo? source = null;
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

                if (CreateRules.TooDeep(request, source, level => level.ForkSourceId is { } id ? context.FindById(id) : null))
                {
                    return new CreateStreamResult(CreateStreamStatus.ForkTooDeep, null);
                }
            }

            var (rejection, contentType, ttl, expiresAt, forkOffset, forkPosition) = CreateRules.Plan(request, source);
            if (rejection is { } refused)
            {
                return new CreateStreamResult(refused, null);
            }

            // Decided on the writer thread, where creates are serialized: the limit is exact. Streams whose time has come
            // count only until they are removed, so at the limit the due ones are removed first.
            if (request.MaxStreams is { } limit && context.StreamCount >= limit && (ExpireDue(context) == 0 || context.StreamCount >= limit))
            {
                return new CreateStreamResult(CreateStreamStatus.LimitReached, null);
            }

            if (request.MaxStreamsPerOwner is { } ownerLimit && request.Owner is { } owner && context.StreamsOwnedBy(owner) >= ownerLimit)
            {
                return new CreateStreamResult(CreateStreamStatus.OwnerLimitReached, null);
            }

            var tail = forkPosition + request.InitialData.Units;
            var id = context.InsertStream(request, contentType, ttl, expiresAt, tail, source, forkPosition, forkOffset);
            if (!request.InitialData.IsEmpty)
            {
                context.InsertChunk(id, forkPosition, request.InitialData, StreamContentType.IsJson(contentType));
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
                RetainedFrom = source?.RetainedFrom ?? 0,
                Owner = request.Owner,
            };
            context.Stage(info);
            if (source is not null)
            {
                context.Stage(source with { ForkCount = source.ForkCount + 1 }, persistRow: false);
            }

            context.Published.Add(new LiveAppend(id, info.Path, new StreamChunk(forkPosition, tail, request.InitialData.Data), info.Closed) { Parent = Parent });
            return new CreateStreamResult(CreateStreamStatus.Created, info);
        }
    }

    /// <summary>Several appends taken at once (<see cref="TryAppendInOrder"/>), applied in their order within one batch.</summary>
    private sealed class AppendManyCommand(IReadOnlyList<AppendRequest> requests) : WriteCommand<AppendResult[]>
    {
        public override int Requests => requests.Count;

        protected override AppendResult[] Run(BatchContext context)
        {
            var results = new AppendResult[requests.Count];
            for (var i = 0; i < results.Length; i++)
            {
                results[i] = AppendCommand.Append(context, requests[i], Parent);
            }

            return results;
        }
    }

    private sealed class AppendCommand(AppendRequest request) : WriteCommand<AppendResult>
    {
        protected override AppendResult Run(BatchContext context) => Append(context, request, Parent);

        /// <summary>Applies one append in the batch: what <see cref="AppendCommand"/> and <see cref="AppendManyCommand"/> run per request.</summary>
        public static AppendResult Append(BatchContext context, AppendRequest request, ActivityContext parent)
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
                context.InsertChunk(stream.Id, stream.TailPosition, request.Data, stream.IsJson);
            }

            if (decision.NewProducerState is { } newState)
            {
                context.SetProducer(stream.Id, request.Producer!.Value.ProducerId, newState);
            }

            var updated = AppendRules.Apply(stream, request, context.Now);
            context.Stage(updated, persistRow: updated.Closed != stream.Closed || updated.LastStreamSeq != stream.LastStreamSeq);
            context.Published.Add(new LiveAppend(stream.Id, stream.Path, new StreamChunk(stream.TailPosition, updated.TailPosition, request.Data.Data), updated.Closed)
            {
                Parent = parent,
                ProducerId = request.Producer?.ProducerId,
                IsProgress = request.Progress,
                Annotation = request.Annotation,
            });
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

    private sealed class TrimCommand(string path, long before) : WriteCommand<TrimResult>
    {
        protected override TrimResult Run(BatchContext context)
        {
            var info = FindLive(context, path);
            if (info is null)
            {
                return new TrimResult(TrimStatus.NotFound, 0);
            }

            if (info.SoftDeleted)
            {
                return new TrimResult(TrimStatus.Gone, info.RetainedFrom);
            }

            if (info.ForkCount > 0)
            {
                return new TrimResult(TrimStatus.HasForks, info.RetainedFrom);
            }

            // Only at the end of a whole chunk: a cut inside one would leave part of an append behind.
            var cut = context.QueryScalar(Schema.SelectTrimPoint, ("$id", info.Id), ("$before", Math.Min(before, info.TailPosition))) is long end ? end : 0;
            if (cut <= info.RetainedFrom)
            {
                return new TrimResult(TrimStatus.Trimmed, info.RetainedFrom);
            }

            context.ExecuteSql(Schema.DeleteChunksBefore, ("$id", info.Id), ("$cut", cut));
            context.Stage(info with { RetainedFrom = cut });
            return new TrimResult(TrimStatus.Trimmed, cut);
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

    /// <summary>
    /// Forgets producers idle for longer than <see cref="SqliteStreamStoreOptions.ProducerStateTtl"/>, on disk and in the
    /// cache, and drops producers idle for <see cref="ProducerCacheIdle"/> from the cache alone.
    /// </summary>
    private sealed class ExpireProducersCommand(SqliteStreamStore store) : WriteCommand<bool>
    {
        protected override bool Run(BatchContext context)
        {
            Volatile.Write(ref store._producerSweepPending, 0);
            var now = context.Now.ToUnixTimeMilliseconds();
            var cutoff = now - (long)store._options.ProducerStateTtl.TotalMilliseconds;

            // The rows deleted and the entries forgotten are the same ones: an entry removed while its row stayed would be
            // read back from disk as known again. One idle past the TTL but not yet past the slack stays, and answers
            // as forgotten from memory.
            var deleteBefore = cutoff - store.LastUsedSlackMs;
            context.ExecuteSql(Schema.DeleteIdleProducers, ("$cutoff", deleteBefore));

            // A producer still known but idle for a while leaves memory and keeps its row: an agent writes each run as a
            // producer of its own, so caching every producer for the whole TTL grew memory by every run the store had
            // seen in a week. Read back on its next append, it counts as used up to the slack later than it was (as
            // after a restart), so it is never forgotten early, and it still answers as known until its row goes.
            var idleBefore = now - (long)ProducerCacheIdle.TotalMilliseconds;
            var left = store._writerProducers
                .Where(p => p.Value.StoredLastUsed < deleteBefore || (p.Value.LastUsed < idleBefore && p.Value.LastUsed > cutoff))
                .Select(p => p.Key).ToList();
            foreach (var key in left)
            {
                store._writerProducers.Remove(key);
            }

            // A dictionary keeps the capacity of its largest size: after a burst of runs, give it back.
            if (left.Count > 0 && store._writerProducers.Count < store._writerProducers.Capacity / 4)
            {
                store._writerProducers.TrimExcess();
            }

            Volatile.Write(ref store._cachedProducers, store._writerProducers.Count);
            return true;
        }

        // A sweep whose batch failed (a request before it in the same transaction was refused, say) did not happen: the
        // next sweep interval queues another, instead of finding this one still pending for ever.
        protected override void Failed() => Volatile.Write(ref store._producerSweepPending, 0);
    }
}
