using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using DurableSessions.Live;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using StackExchange.Redis;

namespace DurableSessions.Storage.Redis;

/// <summary>
/// A durable stream store on Redis, for running many server nodes over one shared store.
/// </summary>
/// <remarks>
/// <para>A stream's metadata, records and producer state live under one hash tag, so they map to one Redis Cluster
/// slot, and every append (its checks, offset assignment, write and notification) is one Lua script: atomic, whichever
/// node runs it. Stream ids come from one counter, so an id names one incarnation of one stream on every node.</para>
/// <para>Live readers are woken through Redis pub/sub: each change is published by the script that made it; every node
/// hands it to its own live readers (reading the data from Redis when it was too large to travel in the message). A
/// node publishes its own changes to its readers at once and ignores their echo. No node polls.</para>
/// <para>What an acknowledged append survives is Redis's persistence (<c>appendfsync</c>) plus, optionally,
/// <see cref="RedisStreamStoreOptions.WaitForReplicas"/>. Expiry is judged by this node's <see cref="TimeProvider"/>.</para>
/// </remarks>
public sealed partial class RedisStreamStore : StreamStore
{
    private const int ReadBatch = 128;

    // Probes of the changes subscription after a reconnect: how many, and how long each waits to come back.
    private const int ProbeAttempts = 10;
    private static readonly TimeSpan ProbeWait = TimeSpan.FromSeconds(1);
    private readonly RedisStreamStoreOptions _options;
    private readonly SemaphoreSlim _connecting = new(1, 1);
    private ConnectionMultiplexer? _redis;
    private IDatabase _db = null!;
    private readonly ILogger _logger;
    private readonly RedisChannel _channel;
    private readonly string _node = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
    private readonly string _prefix;
    private ChannelMessageQueue? _changes;
    private long _notificationsDropped;
    private readonly ConcurrentDictionary<long, byte> _settlingDeletes = new();
    private readonly ConcurrentDictionary<string, TaskCompletionSource> _probes = new(StringComparer.Ordinal);
    private int _probesHeard;
    private ITimer? _sweepTimer;
    private readonly CancellationTokenSource _sweepStop = new();
    private Task _sweepTask = Task.CompletedTask;
    private Task _indexing = Task.CompletedTask;
    private int _disposed;
    private int _sweeping;
    private int _sweepRequested;
    private long _lastLimitSweep;
    private readonly ConcurrentDictionary<string, long> _ownerSweeps = new(StringComparer.Ordinal);
    private static readonly TimeSpan OwnerSweepInterval = TimeSpan.FromSeconds(10);
    private const int MaxOwnerSweepsRemembered = 10_000;

    private RedisStreamStore(RedisStreamStoreOptions options, TimeProvider timeProvider, StreamFanout fanout, ILogger logger)
        : base(timeProvider, fanout)
    {
        _options = options;
        _logger = logger;
        _prefix = options.KeyPrefix;
        _channel = RedisChannel.Literal(_prefix + ":changes");
    }

    /// <summary>
    /// Creates the store without connecting it; <see cref="ConnectAsync(CancellationToken)"/> connects.
    /// <c>AddRedisStore</c> connects it when the host starts, asynchronously.
    /// </summary>
    public static RedisStreamStore Create(RedisStreamStoreOptions options, TimeProvider? timeProvider = null, StreamFanout? fanout = null, ILogger<RedisStreamStore>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(options.ProducerStateTtl, TimeSpan.Zero, "ProducerStateTtl");
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(options.ExpirySweepInterval, TimeSpan.Zero, "ExpirySweepInterval");
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxNotificationBacklog, 1, "MaxNotificationBacklog");
        return new RedisStreamStore(options, timeProvider ?? TimeProvider.System, fanout ?? new StreamFanout(), (ILogger?)logger ?? NullLogger.Instance);
    }

    /// <summary>Creates the store, connects to Redis and subscribes to the change channel.</summary>
    public static async Task<RedisStreamStore> ConnectAsync(RedisStreamStoreOptions options, TimeProvider? timeProvider = null, StreamFanout? fanout = null, ILogger<RedisStreamStore>? logger = null)
    {
        var store = Create(options, timeProvider, fanout, logger);
        await store.ConnectAsync(CancellationToken.None).ConfigureAwait(false);
        return store;
    }

    /// <summary>Connects to Redis and subscribes to the change channel, once: later calls return when it is done.</summary>
    public async Task ConnectAsync(CancellationToken cancellationToken)
    {
        await _connecting.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_redis is not null)
            {
                return;
            }

            var configuration = ConfigurationOptions.Parse(_options.Configuration);
            configuration.AbortOnConnectFail = false; // keep trying: Redis may start after us or restart under us
            var redis = await ConnectionMultiplexer.ConnectAsync(configuration).WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                // A stream's keys share one slot, but the shared locks fence their document writes in scripts that name the
                // lock's key and a collection's key together, which a cluster refuses when they fall in different slots.
                if (redis.GetServers().Any(server => server.IsConnected && server.ServerType == ServerType.Cluster))
                {
                    // The endpoints only: the configuration string may carry a password.
                    throw new InvalidOperationException($"Redis at {string.Join(", ", configuration.EndPoints)} runs as a cluster; the Redis store needs one primary (with or without replicas).");
                }

                _db = redis.GetDatabase();
                _changes = await redis.GetSubscriber().SubscribeAsync(_channel).ConfigureAwait(false);
                _changes.OnMessage(OnChangeAsync);

                // Notifications published while the subscription was down are lost: readers catch up from Redis instead,
                // once the subscription is in force again.
                redis.ConnectionRestored += (_, e) =>
                {
                    if (e.ConnectionType == ConnectionType.Subscription)
                    {
                        _ = CutReadersOnceSubscribedAsync();
                    }
                };
                _redis = redis;
            }
            catch
            {
                await redis.DisposeAsync().ConfigureAwait(false);
                throw;
            }

            // Every node sweeps; the delete script removes a stream only if it is still expired, so two sweeping the same
            // entry do no harm.
            _sweepTimer = TimeProvider.CreateTimer(_ => RequestSweep(), null, _options.ExpirySweepInterval, _options.ExpirySweepInterval);
            _indexing = IndexExpiriesOnceAsync();

            await LogPersistenceAsync().ConfigureAwait(false);
        }
        finally
        {
            _connecting.Release();
        }
    }

    /// <inheritdoc />
    public override bool IsAvailable => _redis?.IsConnected == true;

    /// <inheritdoc />
    public override bool IsShared => true;

    /// <inheritdoc />
    public override async ValueTask<CreateStreamResult> CreateAsync(CreateStreamRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var keys = Keys(request.Path);
        for (var attempt = 0; attempt < 16; attempt++)
        {
            var now = TimeProvider.GetUtcNow();
            var existing = await LoadAsync(keys).ConfigureAwait(false);
            if (existing is not null)
            {
                if (!existing.IsExpiredAt(now) || existing.SoftDeleted || existing.ForkCount > 0)
                {
                    var live = existing.IsExpiredAt(now) ? existing with { SoftDeleted = true } : existing;
                    return new CreateStreamResult(CreateRules.SameConfiguration(live, request) ? CreateStreamStatus.AlreadyExists : CreateStreamStatus.Conflict, live);
                }

                // Expired: removed the way a delete removes it (its forks, its own source, its readers), then created anew.
                await DeleteIncarnationAsync(request.Path, existing, expiredAt: now).ConfigureAwait(false);
                continue;
            }

            StreamInfo? source = null;
            if (request.ForkedFrom is { } sourcePath)
            {
                source = await LoadAsync(Keys(sourcePath)).ConfigureAwait(false);
                if (source is null || (source.IsExpiredAt(now) && !source.SoftDeleted && source.ForkCount == 0))
                {
                    return new CreateStreamResult(CreateStreamStatus.SourceNotFound, null);
                }

                if (source.SoftDeleted || source.IsExpiredAt(now))
                {
                    return new CreateStreamResult(CreateStreamStatus.SourceGone, null);
                }

                if (request.MaxForkDepth is { } maxDepth)
                {
                    var above = await SourcesAboveAsync(source, maxDepth).ConfigureAwait(false);
                    if (CreateRules.TooDeep(request, source, level => above.GetValueOrDefault(level.Id)))
                    {
                        return new CreateStreamResult(CreateStreamStatus.ForkTooDeep, null);
                    }
                }
            }

            var plan = CreateRules.Plan(request, source);
            if (plan.Rejection is { } refused)
            {
                return new CreateStreamResult(refused, null);
            }

            // The path index lives in a slot of its own, so the count is checked before the create script runs: under
            // concurrent creates on several nodes the limit can be passed by as many creates as race.
            // Streams whose time has come count only until they are removed: at the limit, the due ones are removed first.
            if (request.MaxStreams is { } limit && await Call(_db.SetLengthAsync(_prefix + ":paths")).ConfigureAwait(false) >= limit
                && (await SweepAtLimitAsync().ConfigureAwait(false) == 0
                    || await Call(_db.SetLengthAsync(_prefix + ":paths")).ConfigureAwait(false) >= limit))
            {
                return new CreateStreamResult(CreateStreamStatus.LimitReached, null);
            }

            if (request.MaxStreamsPerOwner is { } ownerLimit && request.Owner is { } owner && await OwnedCountAsync(owner, ownerLimit, now).ConfigureAwait(false) >= ownerLimit)
            {
                return new CreateStreamResult(CreateStreamStatus.OwnerLimitReached, null);
            }

            long? forkId = null;
            if (source is not null)
            {
                // Registered on the source first, by the fork's own id, so the source cannot vanish underneath the fork.
                forkId = await Call(_db.StringIncrementAsync(_prefix + ":ids")).ConfigureAwait(false);
                RedisResult[] registered;
                try
                {
                    if (BeforeForkRegistration is { } before)
                    {
                        await before().ConfigureAwait(false);
                    }

                    registered = (RedisResult[])(await ScriptAsync(RedisScripts.Fork, Keys(source.Path), [Id(source.Id), 1, _channel.ToString(), _node, now.ToUnixTimeMilliseconds(), plan.ForkPosition, Id(forkId.Value), "1"]).ConfigureAwait(false))!;
                    if (AfterForkRegistered is { } hook)
                    {
                        await hook().ConfigureAwait(false);
                    }
                }
                catch (StreamStoreUnavailableException)
                {
                    // The registration may have run: it is given back by the fork's id (a no-op if it did not), since the
                    // fork is not created now. Until Redis answers, it is asked again for a few minutes.
                    await GiveBackRegistrationAsync(keys, forkId.Value, source).ConfigureAwait(false);
                    throw;
                }

                var outcome = (string)registered[0]!;
                if (outcome != "OK")
                {
                    return new CreateStreamResult(outcome switch
                    {
                        "Gone" => CreateStreamStatus.SourceGone,
                        "Trimmed" => CreateStreamStatus.ForkOffsetGone,
                        _ => CreateStreamStatus.SourceNotFound,
                    }, null);
                }

                // Trims stop once a fork is registered: the fork's inherited data starts where the source's does now.
                source = source with { RetainedFrom = long.Parse((string)registered[1]!, CultureInfo.InvariantCulture) };
            }

            var created = await TryCreateAsync(request, keys, plan, source, forkId, now).ConfigureAwait(false);
            if (created is not null)
            {
                return new CreateStreamResult(CreateStreamStatus.Created, created);
            }
        }

        throw new StreamStoreUnavailableException("The stream kept changing while it was being created; try again.");
    }

    /// <summary>
    /// How many streams <paramref name="owner"/> holds. Each owner's set of paths grows on create and shrinks when a
    /// stream is removed; a removal whose cleanup did not complete (Redis away at that moment) leaves a stale entry,
    /// dropped here when the set reaches the limit.
    /// </summary>
    private async Task<long> OwnedCountAsync(string owner, long limit, DateTimeOffset now)
    {
        var key = OwnerKey(owner);
        var count = await Call(_db.SetLengthAsync(key)).ConfigureAwait(false);
        if (count < limit || !TryStartOwnerSweep(owner))
        {
            return count;
        }

        foreach (var member in await Call(_db.SetMembersAsync(key)).ConfigureAwait(false))
        {
            var info = await LoadAsync(Keys((string)member!)).ConfigureAwait(false);
            if (info is null || info.Owner != owner || (info.IsExpiredAt(now) && !info.SoftDeleted && info.ForkCount == 0))
            {
                await Call(_db.SetRemoveAsync(key, member)).ConfigureAwait(false);
            }
        }

        return await Call(_db.SetLengthAsync(key)).ConfigureAwait(false);
    }

    /// <summary>
    /// Whether this node may look through <paramref name="owner"/>'s streams for stale entries now: at most once per
    /// <see cref="OwnerSweepInterval"/> for each owner, since a sweep reads every stream the owner holds (one call each),
    /// and a client at its limit may ask for creates over and over.
    /// </summary>
    private bool TryStartOwnerSweep(string owner)
    {
        var now = TimeProvider.GetTimestamp();
        if (_ownerSweeps.TryGetValue(owner, out var last))
        {
            return TimeProvider.GetElapsedTime(last, now) >= OwnerSweepInterval && _ownerSweeps.TryUpdate(owner, now, last);
        }

        // Bounded: past the bound the times are forgotten, which at worst lets each owner sweep once more.
        if (_ownerSweeps.Count >= MaxOwnerSweepsRemembered)
        {
            _ownerSweeps.Clear();
        }

        return _ownerSweeps.TryAdd(owner, now);
    }

    private string OwnerKey(string owner) => _prefix + ":owner:" + owner;

    /// <summary>
    /// The fork sources above <paramref name="stream"/>, at most <paramref name="limit"/> of them, each under the id of
    /// the fork that reads from it (one lookup each; a source gone ends the chain, as it ends a read).
    /// </summary>
    private async Task<Dictionary<long, StreamInfo>> SourcesAboveAsync(StreamInfo stream, int limit)
    {
        var sources = new Dictionary<long, StreamInfo>();
        for (var level = stream; sources.Count < limit && level.ForkSourceId is { } id && level.ForkSourcePath is { } path;)
        {
            if (await LoadAsync(Keys(path)).ConfigureAwait(false) is not { } source || source.Id != id)
            {
                break;
            }

            sources[level.Id] = source;
            level = source;
        }

        return sources;
    }

    /// <summary>Writes a new incarnation; null when another node created one at the path first.</summary>
    private async Task<StreamInfo?> TryCreateAsync(CreateStreamRequest request, StreamKeys keys, CreatePlan plan, StreamInfo? source, long? forkId, DateTimeOffset now)
    {
        var forkPosition = plan.ForkPosition;
        var written = false;
        var sent = false;
        var refused = false;
        long id = forkId ?? 0;
        try
        {
            // Indexed before it exists, so the index is never missing a stream (a stale entry is checked and dropped).
            await Call(_db.SetAddAsync(_prefix + ":paths", request.Path)).ConfigureAwait(false);
            if (ExpiryScore(plan.TtlSeconds, plan.ExpiresAt, now) is { } expiry)
            {
                await Call(_db.SortedSetAddAsync(ExpiriesKey, request.Path, expiry)).ConfigureAwait(false);
            }

            id = forkId ?? await Call(_db.StringIncrementAsync(_prefix + ":ids")).ConfigureAwait(false);
            var info = new StreamInfo
            {
                Id = id,
                Path = request.Path,
                ContentType = plan.ContentType,
                TailPosition = forkPosition + request.InitialData.Units,
                Closed = request.Closed,
                TtlSeconds = plan.TtlSeconds,
                ExpiresAt = plan.ExpiresAt,
                CreatedAt = now,
                LastAccessAt = now,
                ForkSourceId = source?.Id,
                ForkSourcePath = source?.Path,
                ForkPosition = forkPosition,
                ForkOffset = plan.ForkOffset,
                ForkSubOffset = request.ForkSubOffset,
                Owner = request.Owner,
                RetainedFrom = source?.RetainedFrom ?? 0,
            };

            var args = new List<RedisValue>
            {
                _channel.ToString(), _node, _options.InlineNotificationBytes,
                request.InitialData.Data, request.InitialData.Units, forkPosition, request.Closed ? "1" : "0",
                source is null ? string.Empty : Id(id),
            };
            args.AddRange(MetaFields(info));
            if (BeforeCreateScript is { } hook)
            {
                await hook().ConfigureAwait(false);
            }

            sent = true;
            try
            {
                written = (string)(await ScriptAsync(RedisScripts.Create, keys, [.. args]).ConfigureAwait(false))! == "OK";
            }
            catch (StreamStoreUnavailableException)
            {
                // The script may have run, or may still run, as an append's may (see AppendAsync): its notification is
                // then this node's only word of the new stream and its first data, so it is judged here when it comes.
                ExpectEcho(request.Path);
                throw;
            }

            if (!written)
            {
                refused = true;
                return null;
            }

            // Again, in case a concurrent listing (or a delete's unindexing) dropped the entries between the first add and
            // the create.
            await Call(_db.SetAddAsync(_prefix + ":paths", request.Path)).ConfigureAwait(false);
            if (ExpiryScore(plan.TtlSeconds, plan.ExpiresAt, now) is { } expiresAt)
            {
                await Call(_db.SortedSetAddAsync(ExpiriesKey, request.Path, expiresAt)).ConfigureAwait(false);
            }

            if (request.Owner is { } owner)
            {
                await Call(_db.SetAddAsync(OwnerKey(owner), request.Path)).ConfigureAwait(false);
            }

            Fanout.Publish(new LiveAppend(id, info.Path, new StreamChunk(forkPosition, info.TailPosition, request.InitialData.Data), info.Closed, remote: !ClaimJudgement(info.Path, id, forkPosition, info.TailPosition, info.Closed, deleted: false, echo: false)) { Parent = Activity.Current?.Context ?? default });
            await WaitForReplicasAsync(keys.Meta).ConfigureAwait(false);
            return info;
        }
        finally
        {
            // A fork that was not created gives its registration on the source back. When the create's answer was lost,
            // it may have run, or may still run: the registration is given back only once the create is settled as
            // abandoned. Given back for a fork that exists, it would let the source be removed under the fork's reads;
            // kept when that cannot be settled, it only keeps a deleted source's records until its last fork goes.
            if (!written && source is not null)
            {
                var abandoned = !sent || refused ? true : await AbandonAsync(keys, id).ConfigureAwait(false);
                if (abandoned == true)
                {
                    await GiveBackRegistrationAsync(keys, id, source).ConfigureAwait(false);
                }
                else if (abandoned is null)
                {
                    _ = SettleLaterAsync(keys, id, source);
                }
            }
        }
    }

    /// <summary>For tests: runs just before a create's script is sent (to hold Redis up at that moment).</summary>
    internal Func<Task>? BeforeCreateScript { get; set; }

    /// <summary>For tests: runs just before a fork's registration on its source is sent (to fail it unsent).</summary>
    internal Func<Task>? BeforeForkRegistration { get; set; }

    /// <summary>For tests: runs just after a fork's registration on its source is answered (to lose that answer).</summary>
    internal Func<Task>? AfterForkRegistered { get; set; }

    /// <summary>For tests: runs just after a release that removed a soft-deleted source is answered (to lose that answer).</summary>
    internal Func<Task>? AfterForkReleased { get; set; }

    /// <summary>For tests: told of every read of a stream's metadata, by its key.</summary>
    internal Action<RedisKey>? OnLoad { get; set; }

    /// <summary>For tests: awaited before each change notification is handled (to hold this node's hearing of changes).</summary>
    internal Func<Task>? BeforeChangeHandled { get; set; }

    /// <summary>For tests: runs just after a delete's script is answered (to lose that answer).</summary>
    internal Func<Task>? AfterDeleteScript { get; set; }

    /// <summary>
    /// Gives back the registration of a fork that is not created (its create not sent, refused, or settled as abandoned):
    /// at once, or, when Redis does not answer, through the settling of the create, which finds it never ran. Released
    /// by the fork's id, it counts once however often it is sent.
    /// </summary>
    private async Task GiveBackRegistrationAsync(StreamKeys keys, long forkId, StreamInfo source)
    {
        try
        {
            await ReleaseForkAsync(source.Path, source.Id, forkId, byId: true).ConfigureAwait(false);
        }
        catch (StreamStoreUnavailableException)
        {
            _ = SettleLaterAsync(keys, forkId, source);
        }
    }

    /// <summary>For tests: runs just before this node reads the data of a change too large to travel in its notification.</summary>
    internal Func<Task>? BeforeChangeFetch { get; set; }

    /// <summary>For tests: runs at the start of each pass of the expiry sweep.</summary>
    internal Func<Task>? BeforeSweep { get; set; }

    /// <summary>For tests: runs before each probe of the changes subscription after Redis reconnected.</summary>
    internal Action? BeforeProbe { get; set; }

    /// <summary>
    /// Settles a fork's create whose answer was lost: true when it is given up (and can never run), false when it ran,
    /// null when Redis could not be asked.
    /// </summary>
    private async Task<bool?> AbandonAsync(StreamKeys keys, long id)
    {
        try
        {
            return (string)(await ScriptAsync(RedisScripts.Abandon, keys, [Id(id)]).ConfigureAwait(false))! == "Abandoned";
        }
        catch (StreamStoreUnavailableException)
        {
            return null;
        }
    }

    /// <summary>
    /// Asks again, for a few minutes, whether a fork's create that could not be settled ran, and gives its hold on the
    /// source back if it did not: until then the source is kept (at most soft-deleted), never removed under a fork.
    /// </summary>
    private Task SettleLaterAsync(StreamKeys keys, long id, StreamInfo source)
        => RetryHoldAsync(id, source.Path, async () =>
        {
            switch (await AbandonAsync(keys, id).ConfigureAwait(false))
            {
                case true:
                    // Settling again answers the same, and a release by id counts once: both may be asked again.
                    await ReleaseForkAsync(source.Path, source.Id, id, byId: true).ConfigureAwait(false);
                    return true;
                case false:
                    return true;
                default:
                    return false;
            }
        });

    /// <summary>
    /// Runs <paramref name="attempt"/> on the settling schedule (about five minutes in all) until it is done, Redis
    /// being away counting as not done; a fork hold it never settles is logged, for an operator to release.
    /// </summary>
    private async Task RetryHoldAsync(long forkId, string sourcePath, Func<Task<bool>> attempt, Action<Exception?>? givenUp = null)
    {
        givenUp ??= ex => Report(logger => Log.ForkHoldKept(logger, forkId, sourcePath, ex));
        try
        {
            foreach (var wait in SettleRetries)
            {
                await Task.Delay(wait, TimeProvider, _sweepStop.Token).ConfigureAwait(false);
                try
                {
                    if (await attempt().ConfigureAwait(false))
                    {
                        return;
                    }
                }
                catch (StreamStoreUnavailableException)
                {
                    // Redis still away: the next try.
                }
            }

            givenUp(null);
        }
        catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException)
        {
            // The store is closing.
        }
        catch (Exception ex)
        {
            givenUp(ex);
        }
    }

    private static readonly TimeSpan[] SettleRetries = [TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(15), TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(4)];

    /// <inheritdoc />
    public override async ValueTask<AppendResult> AppendAsync(AppendRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var now = TimeProvider.GetUtcNow();
        var keys = Keys(request.Path);
        var media = !request.Data.IsEmpty && request.ContentType is { } contentType ? StreamContentType.MediaType(contentType) : string.Empty;
        var producer = request.Producer;
        RedisValue[] args =
        [
            now.ToUnixTimeMilliseconds(), media, request.Data.Data, request.Data.Units, request.Close ? "1" : "0",
            request.StreamSeq ?? string.Empty, producer?.ProducerId ?? string.Empty, producer?.Epoch ?? 0, producer?.Seq ?? 0,
            request.ExpectedTail is { } expected ? expected : string.Empty, _channel.ToString(), _node, _options.InlineNotificationBytes,
            (long)_options.ProducerStateTtl.TotalMilliseconds, request.ExpectedStreamId is { } expectedId ? Id(expectedId) : string.Empty,
        ];
        var started = Stopwatch.GetTimestamp();
        RedisResult[] reply;
        var commit = StartCommitSpan();
        try
        {
            reply = (RedisResult[])(await ScriptAsync(RedisScripts.Append, keys, args).ConfigureAwait(false))!;
        }
        catch (Exception ex)
        {
            if (ex is StreamStoreUnavailableException)
            {
                // The script may have run, or may still run (it was sent, and only its answer is missing). Its change
                // notification, which this node ignores for its own appends, is then the only word of it this node
                // gets: it is passed on for a while, and the readers are nudged to look at the stream in Redis now
                // (its notification may have come before the answer was given up).
                ExpectEcho(request.Path);
                _ = NudgeReadersAsync(request.Path);
            }

            EndCommitSpan(commit, path: null, started);
            throw;
        }

        EndCommitSpan(commit, request.Path, started);
        var status = (string)reply[0]!;
        var result = new AppendResult
        {
            Status = status == "Expired" ? AppendStatus.NotFound : Enum.Parse<AppendStatus>(status),
            TailPosition = (long)reply[1],
            Closed = (long)reply[2] == 1,
            ProducerEpoch = (long)reply[3],
            ProducerSeq = (long)reply[4],
        };
        if (status == "Expired")
        {
            // Removed now; one that forks still read from stays, soft-deleted, and answers Gone from here on.
            await ExpireAsync(request.Path).ConfigureAwait(false);
            return await LoadAsync(keys).ConfigureAwait(false) is { SoftDeleted: true } ? result with { Status = AppendStatus.Gone } : result;
        }

        if (result.Status == AppendStatus.Appended)
        {
            // Published here at once, whatever the replicas say: the other nodes already have the notification.
            var start = result.TailPosition - request.Data.Units;
            var id = long.Parse((string)reply[5]!, CultureInfo.InvariantCulture);
            Fanout.Publish(new LiveAppend(id, request.Path, new StreamChunk(start, result.TailPosition, request.Data.Data), result.Closed, remote: !ClaimJudgement(request.Path, id, start, result.TailPosition, result.Closed, deleted: false, echo: false))
            {
                Parent = Activity.Current?.Context ?? default,
                ProducerId = request.Producer?.ProducerId,
                IsProgress = request.Progress,
                Annotation = request.Annotation,
            });
        }

        if (result.Status is AppendStatus.Appended or AppendStatus.Duplicate)
        {
            // A duplicate is acknowledged too, so it waits for the replicas as well: the original may not have.
            await WaitForReplicasAsync(keys.Meta).ConfigureAwait(false);
        }

        return result;
    }

    /// <inheritdoc />
    public override async ValueTask<StreamLookup> GetAsync(string path, CancellationToken cancellationToken = default)
    {
        var info = await LoadAsync(Keys(path)).ConfigureAwait(false);
        if (info is null)
        {
            return new StreamLookup(StreamLookupStatus.NotFound, null);
        }

        if (info.SoftDeleted)
        {
            return new StreamLookup(StreamLookupStatus.Gone, info);
        }

        if (info.IsExpiredAt(TimeProvider.GetUtcNow()))
        {
            _ = ExpireAsync(path);
            return info.ForkCount > 0 ? new StreamLookup(StreamLookupStatus.Gone, info with { SoftDeleted = true }) : new StreamLookup(StreamLookupStatus.NotFound, null);
        }

        return new StreamLookup(StreamLookupStatus.Found, info);
    }

    /// <inheritdoc />
    public override async ValueTask<DeleteStreamStatus> DeleteAsync(string path, CancellationToken cancellationToken = default)
    {
        for (var attempt = 0; attempt < 16; attempt++)
        {
            var info = await LoadAsync(Keys(path)).ConfigureAwait(false);
            if (info is null)
            {
                return DeleteStreamStatus.NotFound;
            }

            if (info.SoftDeleted)
            {
                return DeleteStreamStatus.Gone;
            }

            var expired = info.IsExpiredAt(TimeProvider.GetUtcNow());
            var outcome = await DeleteIncarnationAsync(path, info).ConfigureAwait(false);
            if (outcome is null)
            {
                continue;
            }

            if (outcome == "Gone")
            {
                return DeleteStreamStatus.Gone; // another request soft-deleted it first
            }

            return expired ? DeleteStreamStatus.NotFound : DeleteStreamStatus.Deleted;
        }

        throw new StreamStoreUnavailableException("The stream kept changing while it was being deleted; try again.");
    }

    /// <inheritdoc />
    public override async ValueTask<TrimResult> TrimAsync(string path, long beforePosition, CancellationToken cancellationToken = default)
    {
        for (var attempt = 0; attempt < 16; attempt++)
        {
            var info = await LoadAsync(Keys(path)).ConfigureAwait(false);
            if (info is null || (info.IsExpiredAt(TimeProvider.GetUtcNow()) && !info.SoftDeleted))
            {
                return new TrimResult(TrimStatus.NotFound, 0);
            }

            var reply = (RedisResult[])(await ScriptAsync(RedisScripts.Trim, Keys(path), [Id(info.Id), Math.Max(0, beforePosition)]).ConfigureAwait(false))!;
            var outcome = (string)reply[0]!;
            if (outcome == "Retry")
            {
                continue;
            }

            var retained = long.Parse((string)reply[1]!, CultureInfo.InvariantCulture);
            return new TrimResult(outcome switch { "Gone" => TrimStatus.Gone, "HasForks" => TrimStatus.HasForks, _ => TrimStatus.Trimmed }, retained);
        }

        throw new StreamStoreUnavailableException("The stream kept changing while it was being trimmed; try again.");
    }

    /// <inheritdoc />
    public override async ValueTask<ReadResult> ReadAsync(StreamInfo stream, long fromPosition, int maxBytes, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (fromPosition < stream.RetainedFrom)
        {
            return ReadResult.BeforeRetention(fromPosition, stream.RetainedFrom);
        }

        var segments = new List<(StreamInfo Stream, long From, long To)>(2);
        await CollectSegmentsAsync(stream, fromPosition, stream.TailPosition, segments).ConfigureAwait(false);
        var chunks = new List<StreamChunk>();
        long total = 0;
        var next = fromPosition;
        foreach (var (owner, from, to) in segments)
        {
            var position = Math.Max(from, next);
            while (position < to && total < maxBytes)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var budget = maxBytes - total;
                var entries = await ReadRecordsAsync(owner, "(" + Position(position) + "-0", ReadBatch, budget).ConfigureAwait(false);

                // A stream's records are contiguous up to the tail the caller was given: a gap, or nothing at all, is a
                // trim or a delete since the caller looked the stream up, never data to skip. A trim is answered gone,
                // from where it cut; anything else (a delete) makes no progress, so that a follower looks the stream up
                // again and ends.
                if (entries is null || entries.Count == 0 || entries[0].Start > position)
                {
                    var current = entries is null ? null : await LoadAsync(Keys(owner.Path)).ConfigureAwait(false);
                    return current is not null && current.Id == owner.Id && current.RetainedFrom > position
                        ? ReadResult.BeforeRetention(fromPosition, current.RetainedFrom)
                        : new ReadResult([], fromPosition, 0);
                }

                foreach (var (start, end, bytes) in entries)
                {
                    if (start >= to)
                    {
                        position = to;
                        break;
                    }

                    var chunk = Slice(stream.IsJson, start, end, bytes, position, to);
                    chunks.Add(chunk);
                    total += chunk.Data.Length;
                    position = chunk.End;
                    next = chunk.End;
                    if (total >= maxBytes || position >= to)
                    {
                        break;
                    }
                }

                // Fewer records than asked for and under the budget: the incarnation has no more. Judged by the records'
                // whole size, as the script judged them: what was kept of them may be under the budget although the
                // script stopped at it, when the first record was sliced at the read's start.
                if (entries.Count < ReadBatch && entries.Sum(e => (long)e.Data.Length) < budget)
                {
                    break;
                }
            }

            if (total >= maxBytes)
            {
                break;
            }

            next = Math.Max(next, to);
        }

        return new ReadResult(chunks, segments.Count == 0 ? fromPosition : next, total);
    }

    /// <inheritdoc />
    public override async ValueTask TouchAsync(StreamInfo stream, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (stream.TtlSeconds is not null)
        {
            await ScriptAsync(RedisScripts.Touch, Keys(stream.Path), [Id(stream.Id), TimeProvider.GetUtcNow().ToUnixTimeMilliseconds()]).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public override async IAsyncEnumerable<string> ListPathsAsync(Func<string, bool>? include = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var members = _db.SetScanAsync(_prefix + ":paths", pageSize: 500).GetAsyncEnumerator(cancellationToken);
        try
        {
            while (await Call(members.MoveNextAsync().AsTask()).ConfigureAwait(false))
            {
                var path = (string)members.Current!;
                if (include?.Invoke(path) == false)
                {
                    continue;
                }

                var lookup = await GetAsync(path, cancellationToken).ConfigureAwait(false);
                if (lookup.Status == StreamLookupStatus.Found)
                {
                    yield return path;
                }
                else if (lookup.Status == StreamLookupStatus.NotFound && !await Call(_db.KeyExistsAsync(Keys(path).Meta)).ConfigureAwait(false))
                {
                    await UnindexAsync(path).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            await members.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public override async ValueTask<StoreLock> AcquireLockAsync(string name, TimeSpan lease, CancellationToken cancellationToken = default)
    {
        // Renewed a third of it at a time: a timer's wait is bounded, and a lease of days would hold a dead node's lock
        // for as long.
        ArgumentOutOfRangeException.ThrowIfLessThan(lease, TimeSpan.FromMilliseconds(30));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(lease, TimeSpan.FromDays(1));
        RedisKey key = _prefix + ":lock:" + name;
        var token = Guid.NewGuid().ToString("N");
        var wait = TimeSpan.FromMilliseconds(2);
        while (!await Call(_db.LockTakeAsync(key, token, lease)).ConfigureAwait(false))
        {
            await Task.Delay(wait, cancellationToken).ConfigureAwait(false);
            wait = TimeSpan.FromMilliseconds(Math.Min(50, wait.TotalMilliseconds * 2));
        }

        return new Lock(this, name, key, token, lease);
    }

    /// <summary>For tests: runs each time a held lock's lease is renewed.</summary>
    internal Action? OnLockRenewed { get; set; }

    /// <summary>For tests: false makes the locks taken from now on not renew their lease (a holder held up past it).</summary>
    internal bool RenewLocks { get; set; } = true;

    /// <summary>
    /// A lock held by this node. Its lease is renewed every third of it while held, for up to <see cref="MaxRenewals"/>
    /// renewals, so a section that runs long (a slow store, a long batch) keeps the lock instead of another node entering
    /// beside it when the lease runs out. A lease still ends the lock of a node that stopped, and of a section stuck for
    /// ten leases, rather than every node waiting on it for good. Its document writes are fenced: each is one script that
    /// checks the lock still holds this node's token, so a write sent after the lease ran out changes nothing.
    /// </summary>
    private sealed class Lock : StoreLock
    {
        private const int MaxRenewals = 30;

        private readonly RedisStreamStore _store;
        private readonly string _name;
        private readonly RedisKey _key;
        private readonly string _token;
        private readonly TimeSpan _lease;
        private readonly CancellationTokenSource _stop;
        private readonly Task _renewing;
        private int _disposed;

        public Lock(RedisStreamStore store, string name, RedisKey key, string token, TimeSpan lease)
        {
            _store = store;
            _name = name;
            _key = key;
            _token = token;
            _lease = lease;

            // The store's closing stops the renewals of locks still held.
            _stop = CancellationTokenSource.CreateLinkedTokenSource(store._sweepStop.Token);
            _renewing = store.RenewLocks ? RenewAsync() : Task.CompletedTask;
        }

        // One script call, where the client's own release is a watched transaction: two round trips while every other
        // node waits for the lock. A lost connection is the store being unavailable, as for every other call. A renewal
        // under way is waited for first (it cannot be called back once sent), so none runs after the release.
        public override async ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 1)
            {
                return;
            }

            await _stop.CancelAsync().ConfigureAwait(false);
            await _renewing.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            _stop.Dispose();
            if ((long)await Call(RedisScripts.ReleaseLock.EvaluateAsync(_store._db, [_key], [_token])).ConfigureAwait(false) == 0)
            {
                _store.Report(logger => Log.LockLost(logger, _name, _lease));
            }
        }

        public override async ValueTask PutDocumentAsync(string collection, string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken = default)
        {
            var documents = _store.DocumentKey(collection);
            await WriteAsync(documents, [_token, key, value]).ConfigureAwait(false);
            await _store.WaitForReplicasAsync(documents).ConfigureAwait(false);
        }

        public override async ValueTask DeleteDocumentAsync(string collection, string key, CancellationToken cancellationToken = default)
            => await WriteAsync(_store.DocumentKey(collection), [_token, key]).ConfigureAwait(false);

        private async Task WriteAsync(RedisKey documents, RedisValue[] args)
        {
            if ((long)await Call(RedisScripts.FencedDocumentWrite.EvaluateAsync(_store._db, [_key, documents], args)).ConfigureAwait(false) == 0)
            {
                _store.Report(logger => Log.FencedWriteRefused(logger, _name, _lease));
                throw new StreamStoreUnavailableException($"The store's lock '{_name}' is no longer held by this node (released, or its {_lease.TotalMilliseconds:0} ms lease ran out): the write was refused. Retry the request.");
            }
        }

        private async Task RenewAsync()
        {
            var leaseMs = (long)Math.Ceiling(_lease.TotalMilliseconds);
            for (var renewals = 0; renewals < MaxRenewals; renewals++)
            {
                try
                {
                    await Task.Delay(_lease / 3, _store.TimeProvider, _stop.Token).ConfigureAwait(false);
                    if ((long)await Call(RedisScripts.RenewLock.EvaluateAsync(_store._db, [_key], [_token, leaseMs])).ConfigureAwait(false) == 0)
                    {
                        // It ran out before this renewal (Redis away longer than the lease, or this process held up): the
                        // section may no longer be alone. Said, so a write that another node's overwrote has a cause.
                        _store.Report(logger => Log.LockLost(logger, _name, _lease));
                        return;
                    }

                    _store.OnLockRenewed?.Invoke();
                }
                catch (OperationCanceledException) when (_stop.IsCancellationRequested)
                {
                    return;
                }
                catch (StreamStoreUnavailableException)
                {
                    // Redis away: the next renewal tries again, within the lease.
                }
                catch (Exception ex)
                {
                    // Nothing else is expected (the store closed under it, say); the lease then ends the lock.
                    _store.Report(logger => Log.RenewalFailed(logger, _name, ex));
                    return;
                }
            }

            _store.Report(logger => Log.HeldTooLong(logger, _name, _lease * (MaxRenewals / 3.0)));
        }
    }

    /// <inheritdoc />
    public override async ValueTask<byte[]?> GetDocumentAsync(string collection, string key, CancellationToken cancellationToken = default)
        => (byte[]?)await Call(_db.HashGetAsync(DocumentKey(collection), key)).ConfigureAwait(false);

    /// <inheritdoc />
    public override async ValueTask PutDocumentAsync(string collection, string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken = default)
    {
        await Call(_db.HashSetAsync(DocumentKey(collection), key, value)).ConfigureAwait(false);
        await WaitForReplicasAsync(DocumentKey(collection)).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask DeleteDocumentAsync(string collection, string key, CancellationToken cancellationToken = default)
        => await Call(_db.HashDeleteAsync(DocumentKey(collection), key)).ConfigureAwait(false);

    /// <inheritdoc />
    public override async IAsyncEnumerable<KeyValuePair<string, byte[]>> ListDocumentsAsync(string collection, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        foreach (var entry in await Call(_db.HashGetAllAsync(DocumentKey(collection))).ConfigureAwait(false))
        {
            cancellationToken.ThrowIfCancellationRequested();
            yield return new KeyValuePair<string, byte[]>((string)entry.Name!, (byte[])entry.Value!);
        }
    }

    /// <inheritdoc />
    public override async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }

        if (_sweepTimer is not null)
        {
            await _sweepTimer.DisposeAsync().ConfigureAwait(false);
        }

        // A sweep or the index fill under way stops between entries; both must be done before the connection goes.
        await _sweepStop.CancelAsync().ConfigureAwait(false);
        await _sweepTask.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        await _indexing.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _sweepStop.Dispose();

        if (_changes is not null)
        {
            await _changes.UnsubscribeAsync().ConfigureAwait(false);
        }

        if (_redis is not null)
        {
            await _redis.CloseAsync().ConfigureAwait(false);
            await _redis.DisposeAsync().ConfigureAwait(false);
        }

        _connecting.Dispose();
    }

    // ---- internals ----

    /// <summary>
    /// Writes a log entry from the store's background work or after a change took effect: a logger that throws loses
    /// the entry, never the work around it (a sweep that never runs again, readers never cut after a lost subscription,
    /// an append committed but answered as failed).
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

    /// <summary>Starts the span of one commit; a trace listener that throws leaves it untraced, not failed.</summary>
    private static Activity? StartCommitSpan()
    {
        var current = Activity.Current;
        try
        {
            return RedisTelemetry.Source.StartActivity("durable_sessions.redis.commit");
        }
        catch (Exception)
        {
            Activity.Current = current;
            return null;
        }
    }

    /// <summary>
    /// Ends a commit's span and records its duration once Redis has answered. The script has run by then, so nothing a
    /// listener throws may turn its result into a failure.
    /// </summary>
    private static void EndCommitSpan(Activity? commit, string? path, long started)
    {
        if (commit is not null)
        {
            var parent = commit.Parent;
            try
            {
                if (path is not null)
                {
                    commit.SetTag("durable_sessions.stream", path);
                }

                commit.Dispose();
            }
            catch (Exception)
            {
                Activity.Current = parent is { IsStopped: false } ? parent : null;
            }
        }

        if (path is not null)
        {
            try
            {
                RedisTelemetry.CommitDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds);
            }
            catch (Exception)
            {
                // The measurement is lost; the append stands.
            }
        }
    }

    private readonly record struct StreamKeys(RedisKey Meta, RedisKey Data, RedisKey Producers, RedisKey Abandoned, RedisKey Forks)
    {
        public RedisKey[] All => [Meta, Data, Producers, Abandoned, Forks];
    }

    private StreamKeys Keys(string path)
    {
        // The hash tag puts a stream's keys in one cluster slot. A path with braces would break the tag, so it is hashed,
        // and a digest's tag starts with '#'. So is every path that starts with '#' itself: spelled as another path's
        // digest, it would otherwise name that path's keys.
        var tag = path.StartsWith('#') || path.Contains('{', StringComparison.Ordinal) || path.Contains('}', StringComparison.Ordinal)
            ? "#" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(path)))
            : path;
        var root = _prefix + ":s:{" + tag + "}:";
        return new StreamKeys(root + "m", root + "d", root + "p", root + "x", root + "f");
    }

    private RedisKey DocumentKey(string collection) => _prefix + ":doc:" + collection;

    private async Task<RedisResult> ScriptAsync(RedisScript script, StreamKeys keys, RedisValue[] args)
    {
        try
        {
            return await script.EvaluateAsync(_db, keys.All, args).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsUnavailable(ex))
        {
            throw new StreamStoreUnavailableException("Redis is unreachable or refusing commands for now; the request was not acknowledged.", ex);
        }
    }

    /// <summary>Awaits a Redis call, reporting a lost or slow connection as the store being unavailable (503).</summary>
    private static async Task<T> Call<T>(Task<T> call)
    {
        try
        {
            return await call.ConfigureAwait(false);
        }
        catch (Exception ex) when (IsUnavailable(ex))
        {
            throw new StreamStoreUnavailableException("Redis is unreachable or refusing commands for now; nothing was acknowledged.", ex);
        }
    }

    /// <summary>
    /// Whether a Redis failure means the store cannot serve for now (503, worth a retry): a lost or slow connection, or
    /// an error Redis answers while it takes no commands of this kind. That is a replica during a failover, a server
    /// loading its data, memory full, a script running too long, a cluster reconfiguring, too few replicas, or a failed
    /// snapshot. Redis refuses such a command before running any of it. Other server errors are not availability: they
    /// stay what they are.
    /// </summary>
    internal static bool IsUnavailable(Exception ex)
        => ex is RedisConnectionException or RedisTimeoutException
            || (ex is RedisServerException server && Array.Exists(UnavailableErrors, code => server.Message.StartsWith(code, StringComparison.Ordinal)
                // Before Redis 7 an error inside a script comes wrapped: "ERR Error running script (…): … -READONLY …".
                || (server.Message.StartsWith("ERR Error running script", StringComparison.Ordinal) && server.Message.Contains(" -" + code + " ", StringComparison.Ordinal))));

    private static readonly string[] UnavailableErrors = ["READONLY", "LOADING", "OOM", "BUSY", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "NOREPLICAS", "MISCONF"];

    /// <summary>Waits for the replicas of the primary that holds <paramref name="key"/> (in a cluster, the key's own primary).</summary>
    private async Task WaitForReplicasAsync(RedisKey key)
    {
        if (_options.WaitForReplicas <= 0)
        {
            return;
        }

        var endpoint = await Call(_db.IdentifyEndpointAsync(key)).ConfigureAwait(false);
        var server = endpoint is null ? null : _redis!.GetServer(endpoint);
        var wait = server is null
            ? _db.ExecuteAsync("WAIT", _options.WaitForReplicas, (long)_options.WaitTimeout.TotalMilliseconds)
            : server.ExecuteAsync("WAIT", _options.WaitForReplicas, (long)_options.WaitTimeout.TotalMilliseconds);
        var confirmed = (long)await Call(wait).ConfigureAwait(false);
        if (confirmed < _options.WaitForReplicas)
        {
            throw new StreamStoreUnavailableException($"Only {confirmed} of {_options.WaitForReplicas} replicas confirmed the write in time; it is on the primary, and a producer's retry is deduplicated.");
        }
    }

    private async Task<StreamInfo?> LoadAsync(StreamKeys keys)
    {
        OnLoad?.Invoke(keys.Meta);
        var fields = await Call(_db.HashGetAllAsync(keys.Meta)).ConfigureAwait(false);
        return fields.Length == 0 ? null : ParseMeta(fields);
    }

    private async Task CollectSegmentsAsync(StreamInfo stream, long from, long to, List<(StreamInfo, long, long)> segments)
    {
        if (from >= to)
        {
            return;
        }

        var ownStart = 0L;
        if (stream.ForkSourceId is { } sourceId && stream.ForkSourcePath is { } sourcePath)
        {
            ownStart = stream.ForkPosition;
            if (from < ownStart && await LoadAsync(Keys(sourcePath)).ConfigureAwait(false) is { } source && source.Id == sourceId)
            {
                await CollectSegmentsAsync(source, from, Math.Min(to, ownStart), segments).ConfigureAwait(false);
            }
        }

        var start = Math.Max(from, ownStart);
        if (start < to)
        {
            segments.Add((stream, start, to));
        }
    }

    /// <summary>
    /// Records of one incarnation from an entry id (inclusive, or exclusive with a leading '('), at most
    /// <paramref name="count"/> and no more once their data reaches <paramref name="budget"/> bytes; null once the stream
    /// at its path is another incarnation.
    /// </summary>
    /// <returns>The records, or null when the stream at the path is no longer that incarnation.</returns>
    private async Task<List<(long Start, long End, byte[] Data)>?> ReadRecordsAsync(StreamInfo owner, string from, int count, long budget = long.MaxValue)
    {
        var records = new List<(long, long, byte[])>();
        var reply = await ScriptAsync(RedisScripts.Read, Keys(owner.Path), [Id(owner.Id), from, count, budget]).ConfigureAwait(false);
        if (reply.IsNull || reply.Resp2Type != ResultType.Array)
        {
            return null;
        }

        foreach (var entry in (RedisResult[])reply!)
        {
            var parts = (RedisResult[])entry!;
            var fields = (RedisResult[])parts[1]!;
            long start = 0;
            byte[]? data = null;
            for (var i = 0; i + 1 < fields.Length; i += 2)
            {
                switch ((string)fields[i]!)
                {
                    case "s":
                        start = long.Parse((string)fields[i + 1]!, CultureInfo.InvariantCulture);
                        break;
                    case "d":
                        data = (byte[])fields[i + 1]!;
                        break;
                }
            }

            records.Add((start, ParsePosition((string)parts[0]!), data ?? []));
        }

        return records;
    }

    private static StreamChunk Slice(bool json, long rowStart, long rowEnd, byte[] data, long from, long to)
    {
        var start = Math.Max(rowStart, from);
        var end = Math.Min(rowEnd, to);
        if (start == rowStart && end == rowEnd)
        {
            return new StreamChunk(rowStart, rowEnd, data);
        }

        var skip = start - rowStart;
        var take = end - start;
        return new StreamChunk(start, end, json ? JsonFraming.Slice(data, skip, take) : data.AsMemory((int)skip, (int)take));
    }

    private const int SweepBatch = 256;

    /// <summary>Streams that may expire, by the earliest moment each can (Unix milliseconds); in a slot of its own.</summary>
    private RedisKey ExpiriesKey => _prefix + ":expiries";

    /// <summary>
    /// When a stream expires if nothing touches it: the earlier of its absolute expiry and its sliding TTL from
    /// <paramref name="lastAccess"/>, in Unix milliseconds; null when it never expires.
    /// </summary>
    private static double? ExpiryScore(long? ttlSeconds, DateTimeOffset? expiresAt, DateTimeOffset lastAccess)
    {
        double? score = expiresAt?.ToUnixTimeMilliseconds();
        if (ttlSeconds is { } ttl)
        {
            // In doubles: a TTL too long for any date is just far away, never an overflow.
            var sliding = lastAccess.ToUnixTimeMilliseconds() + (ttl * 1000.0);
            score = score is { } at ? Math.Min(at, sliding) : sliding;
        }

        return score;
    }

    /// <summary>The timer's tick: starts a sweep, or asks the one running to go again when it ends.</summary>
    private void RequestSweep()
    {
        // One sweep at a time per node: a slow Redis makes sweeps longer, never more of them.
        Volatile.Write(ref _sweepRequested, 1);
        if (Interlocked.Exchange(ref _sweeping, 1) == 0)
        {
            _sweepTask = Task.Run(SweepLoopAsync);
        }
    }

    private async Task SweepLoopAsync()
    {
        while (true)
        {
            try
            {
                while (Interlocked.Exchange(ref _sweepRequested, 0) == 1 && !_sweepStop.IsCancellationRequested)
                {
                    // Bounded per pass: what is left is due at the next tick.
                    for (var round = 0; round < 40 && await SweepExpiredAsync(SweepBatch, _sweepStop.Token).ConfigureAwait(false) == SweepBatch; round++)
                    {
                    }
                }
            }
            catch (OperationCanceledException) when (_sweepStop.IsCancellationRequested)
            {
            }
            catch (Exception ex)
            {
                // Whatever went wrong, the next tick tries again; nothing escapes a background task unobserved.
                Report(logger => Log.SweepFailed(logger, ex));
            }

            // A full fence (not a plain store): the read of the request flag below must not be moved before it.
            Interlocked.Exchange(ref _sweeping, 0);

            // A tick that came after the last pass looked, and found this sweep still running, is served now.
            if (Volatile.Read(ref _sweepRequested) == 0 || _sweepStop.IsCancellationRequested || Interlocked.Exchange(ref _sweeping, 1) == 1)
            {
                return;
            }
        }
    }

    /// <summary>
    /// At the stream limit: removes what has expired, at most once a second per node (creates refused over and over
    /// must not each run a sweep) and at most one batch.
    /// </summary>
    private async Task<int> SweepAtLimitAsync()
    {
        var now = TimeProvider.GetTimestamp();
        var last = Interlocked.Read(ref _lastLimitSweep);
        if ((last != 0 && TimeProvider.GetElapsedTime(last, now) < TimeSpan.FromSeconds(1)) || Interlocked.CompareExchange(ref _lastLimitSweep, now, last) != last)
        {
            return 0;
        }

        return await SweepExpiredAsync(SweepBatch, CancellationToken.None).ConfigureAwait(false);
    }

    /// <summary>
    /// Indexes, once per Redis (a marker key records it), the expiry of every stream created before the store kept an
    /// expiry index, so that they are swept too. In the background, in pages; a failure leaves the marker unset, for the
    /// next start to try again.
    /// </summary>
    private async Task IndexExpiriesOnceAsync()
    {
        var marker = _prefix + ":expiries:indexed";
        var mine = false;
        try
        {
            mine = await Call(_db.StringSetAsync(marker, "running", TimeSpan.FromMinutes(10), When.NotExists)).ConfigureAwait(false);
            if (!mine)
            {
                return;
            }

            var page = new List<string>(256);
            await foreach (var member in _db.SetScanAsync(_prefix + ":paths", pageSize: 256).WithCancellation(_sweepStop.Token).ConfigureAwait(false))
            {
                page.Add((string)member!);
                if (page.Count == 256)
                {
                    await IndexPageAsync(page).ConfigureAwait(false);
                    page.Clear();
                }
            }

            await IndexPageAsync(page).ConfigureAwait(false);
            await Call(_db.StringSetAsync(marker, "done")).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            if (!_sweepStop.IsCancellationRequested)
            {
                Report(logger => Log.SweepFailed(logger, ex));
            }

            if (mine)
            {
                try
                {
                    await _db.KeyDeleteAsync(marker).ConfigureAwait(false);
                }
                catch (Exception cleanup) when (cleanup is RedisException or TimeoutException or ObjectDisposedException)
                {
                    // It runs out by itself (10 minutes); the next start fills the index then.
                }
            }
        }
    }

    private async Task IndexPageAsync(List<string> paths)
    {
        var entries = new List<SortedSetEntry>(paths.Count);
        var loads = paths.Select(path => (path, Load: LoadAsync(Keys(path)))).ToList();

        // Every load is awaited before any fails this page, so none is left to fault unobserved.
        await ((Task)Task.WhenAll(loads.Select(l => l.Load))).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        foreach (var (path, load) in loads)
        {
            try
            {
                if (await load.ConfigureAwait(false) is { SoftDeleted: false } info && ExpiryScore(info.TtlSeconds, info.ExpiresAt, info.LastAccessAt) is { } score)
                {
                    entries.Add(new SortedSetEntry(info.Path, score));
                }
            }
            catch (Exception ex) when (IsUnreadable(ex))
            {
                Report(logger => Log.UnreadableMeta(logger, path, ex));
            }
        }

        if (entries.Count > 0)
        {
            // Never over a fresher score: a stream created or renewed meanwhile indexed itself.
            await Call(_db.SortedSetAddAsync(ExpiriesKey, [.. entries], SortedSetWhen.NotExists)).ConfigureAwait(false);
        }
    }

    /// <summary>Whether an exception says a stream's metadata cannot be read as this store writes it (not that Redis is away).</summary>
    private static bool IsUnreadable(Exception ex)
        => ex is FormatException or OverflowException or InvalidCastException or KeyNotFoundException or ArgumentException or RedisServerException;

    /// <summary>
    /// Removes streams whose expiry has come and nobody touched since, up to <paramref name="max"/> entries of the
    /// expiry index: a stream read or appended to since it was indexed is indexed again at its new expiry.
    /// </summary>
    /// <returns>How many entries were due (removed or moved).</returns>
    internal async Task<int> SweepExpiredAsync(int max, CancellationToken cancellationToken)
    {
        if (BeforeSweep is { } hook)
        {
            await hook().ConfigureAwait(false);
        }

        var now = TimeProvider.GetUtcNow();
        var due = await Call(_db.SortedSetRangeByScoreWithScoresAsync(ExpiriesKey, double.NegativeInfinity, now.ToUnixTimeMilliseconds(), take: max)).ConfigureAwait(false);
        foreach (var entry in due)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var path = (string)entry.Element!;
            StreamInfo? current;
            try
            {
                current = await LoadAsync(Keys(path)).ConfigureAwait(false);
            }
            catch (Exception ex) when (IsUnreadable(ex))
            {
                // Metadata this store cannot read: it cannot expire, and its entry must not stop every sweep after it.
                Report(logger => Log.UnreadableMeta(logger, path, ex));
                await Call(RedisScripts.RemoveIndexEntry.EvaluateAsync(_db, [ExpiriesKey], [path, entry.Score])).ConfigureAwait(false);
                continue;
            }

            if (current is { SoftDeleted: false } info && info.IsExpiredAt(now))
            {
                await DeleteIncarnationAsync(path, info, expiredAt: now).ConfigureAwait(false);
            }

            // What stands there now: a stream renewed by a read, or created anew meanwhile, keeps an entry at its own expiry.
            if (await LoadAsync(Keys(path)).ConfigureAwait(false) is { SoftDeleted: false } live
                && ExpiryScore(live.TtlSeconds, live.ExpiresAt, live.LastAccessAt) is { } next)
            {
                await Call(_db.SortedSetAddAsync(ExpiriesKey, path, next)).ConfigureAwait(false);
            }
            else
            {
                // Only the entry that was read: a create at this path since then indexed itself with another score.
                await Call(RedisScripts.RemoveIndexEntry.EvaluateAsync(_db, [ExpiriesKey], [path, entry.Score])).ConfigureAwait(false);
            }
        }

        return due.Length;
    }

    /// <summary>Removes an expired stream (soft when forks still read from it).</summary>
    private async Task ExpireAsync(string path)
    {
        try
        {
            var now = TimeProvider.GetUtcNow();
            if (await LoadAsync(Keys(path)).ConfigureAwait(false) is { SoftDeleted: false } info && info.IsExpiredAt(now))
            {
                await DeleteIncarnationAsync(path, info, expiredAt: now).ConfigureAwait(false);
            }
        }
        catch (StreamStoreUnavailableException ex)
        {
            Report(logger => Log.ExpireFailed(logger, path, ex));
        }
    }

    /// <summary>
    /// Deletes one incarnation and releases its fork registration up the chain; null when it was already replaced. With
    /// <paramref name="expiredAt"/>, only if it is still expired then, checked atomically with the delete.
    /// </summary>
    private async Task<string?> DeleteIncarnationAsync(string path, StreamInfo incarnation, DateTimeOffset? expiredAt = null)
    {
        var id = incarnation.Id;
        RedisValue[] args = expiredAt is { } now
            ? [Id(id), _channel.ToString(), _node, now.ToUnixTimeMilliseconds()]
            : [Id(id), _channel.ToString(), _node];
        RedisResult[] reply;
        try
        {
            reply = (RedisResult[])(await ScriptAsync(RedisScripts.Delete, Keys(path), args).ConfigureAwait(false))!;
            if (AfterDeleteScript is { } hook)
            {
                await hook().ConfigureAwait(false);
            }
        }
        catch (StreamStoreUnavailableException)
        {
            // As with an append whose answer was lost: the delete may have run, and its notification is then the only
            // word of it this node gets, judged here like this node's own. What its answer would have had this node do
            // next (the index, the fork's hold on its source) is done once Redis answers, if it did run.
            ExpectEcho(path);
            _ = SettleDeleteLaterAsync(path, incarnation);
            throw;
        }

        var outcome = (string)reply[0]!;
        if (outcome is "Retry" or "Gone")
        {
            return outcome == "Gone" ? outcome : null;
        }

        var tail = long.Parse((string)reply[outcome == "Hard" ? 3 : 1]!, CultureInfo.InvariantCulture);
        var closed = (string)reply[outcome == "Hard" ? 4 : 2]! == "1";
        Fanout.Publish(new LiveAppend(id, path, new StreamChunk(tail, tail, default), closed, deleted: true, remote: !ClaimJudgement(path, id, tail, tail, closed, deleted: true, echo: false)));
        if (outcome == "Hard")
        {
            // The stream is deleted, and the delete answers as done; what Redis does not take of what follows (the
            // fork's hold on its source, the index) catches up when Redis answers.
            var settle = false;
            var heldByCount = false;
            if ((string)reply[2]! is { Length: > 0 } sourcePath)
            {
                var sourceId = long.Parse((string)reply[1]!, CultureInfo.InvariantCulture);
                var byId = (string)reply[6]! == "1";
                try
                {
                    await ReleaseForkAsync(sourcePath, sourceId, id, byId).ConfigureAwait(false);
                }
                catch (StreamStoreUnavailableException)
                {
                    // Settled by id once Redis answers, which gives nothing twice: a hold kept by count is given back
                    // there only if the release removed the source (its note says so); one still there is logged.
                    settle = true;
                    heldByCount = !byId;
                }
            }

            try
            {
                await UnindexAsync(path, (string)reply[5]!).ConfigureAwait(false);
            }
            catch (StreamStoreUnavailableException)
            {
                settle = true;
            }

            if (settle)
            {
                _ = SettleDeleteLaterAsync(path, incarnation, heldByCount);
            }
        }

        return outcome;
    }

    /// <summary>
    /// Finishes, once Redis answers, a hard delete of <paramref name="incarnation"/> that may have run without this node
    /// doing what follows it: its path leaves the index (unless a stream was created there since), so that it no longer
    /// counts against <c>MaxStreams</c>, and a fork gives its hold on its source back, so that a source deleted while it
    /// was read from is removed. Nothing is done while the incarnation is still there (the delete did not run, or made
    /// it soft). A hold is given back by the fork's id, where giving it back twice counts once, and only when the
    /// source's registry holds it so or the source is gone; otherwise it was given back already, or the fork was
    /// registered by count (before ids were kept) and may have given it back, and it is not given again.
    /// </summary>
    private Task SettleDeleteLaterAsync(string path, StreamInfo incarnation, bool heldByCount = false)
    {
        // One settling per incarnation, however many deletes of it failed while Redis was away.
        if (!_settlingDeletes.TryAdd(incarnation.Id, 0))
        {
            return Task.CompletedTask;
        }

        return RetryHoldAsync(incarnation.Id, incarnation.ForkSourcePath ?? path, async () =>
        {
            if (await LoadAsync(Keys(path)).ConfigureAwait(false) is { } current && current.Id == incarnation.Id)
            {
                return true;
            }

            await UnindexAsync(path, incarnation.Owner ?? string.Empty).ConfigureAwait(false);
            if (incarnation.ForkSourceId is { } sourceId && incarnation.ForkSourcePath is { } sourcePath)
            {
                // Given back by id when the source's registry holds it, or when the source is removed: a release that
                // removed it may have lost its answer, and sent again it finds the note that release left and carries
                // the source's own hold up the chain (with no note it changes nothing).
                var sourceKeys = Keys(sourcePath);
                var sourceThere = (await LoadAsync(sourceKeys).ConfigureAwait(false))?.Id == sourceId;
                if (!sourceThere || await Call(_db.HashGetAsync(sourceKeys.Forks, Id(incarnation.Id))).ConfigureAwait(false) == "1")
                {
                    await ReleaseForkAsync(sourcePath, sourceId, incarnation.Id, byId: true).ConfigureAwait(false);
                }
                else if (heldByCount)
                {
                    // A release by count whose answer was lost, of a source still there: it may or may not have counted.
                    Report(logger => Log.ForkHoldKept(logger, incarnation.Id, sourcePath));
                }
            }

            return true;
        }, ex => Report(logger => Log.DeleteUnsettled(logger, path, incarnation.Id, ex)))
            .ContinueWith(_ => _settlingDeletes.TryRemove(incarnation.Id, out var _), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>
    /// Drops a path from the index, and from its owner's set of paths (<paramref name="owner"/>, empty for none), unless a
    /// stream was created there meanwhile (then it stays listed, under its own owner).
    /// </summary>
    private async Task UnindexAsync(string path, string owner = "")
    {
        await Call(_db.SetRemoveAsync(_prefix + ":paths", path)).ConfigureAwait(false);
        await Call(_db.SortedSetRemoveAsync(ExpiriesKey, path)).ConfigureAwait(false);
        if (owner.Length > 0)
        {
            await Call(_db.SetRemoveAsync(OwnerKey(owner), path)).ConfigureAwait(false);
        }

        if (await LoadAsync(Keys(path)).ConfigureAwait(false) is { } recreated)
        {
            await Call(_db.SetAddAsync(_prefix + ":paths", path)).ConfigureAwait(false);
            if (recreated.Owner is { } recreatedBy)
            {
                await Call(_db.SetAddAsync(OwnerKey(recreatedBy), path)).ConfigureAwait(false);
            }

            if (ExpiryScore(recreated.TtlSeconds, recreated.ExpiresAt, recreated.LastAccessAt) is { } score)
            {
                await Call(_db.SortedSetAddAsync(ExpiriesKey, path, score)).ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// Releases fork <paramref name="forkId"/>'s registration on its source, and up the chain when that removes a
    /// soft-deleted source that was a fork itself. <paramref name="byId"/>: the fork was registered by its id (so a
    /// release sent again counts once); false for a fork registered before ids were kept, released by count.
    /// </summary>
    private async Task ReleaseForkAsync(string sourcePath, long sourceId, long forkId, bool byId)
    {
        while (true)
        {
            RedisResult[] reply;
            try
            {
                reply = (RedisResult[])(await ScriptAsync(RedisScripts.Fork, Keys(sourcePath), [Id(sourceId), -1, _channel.ToString(), _node, 0, 0, Id(forkId), byId ? "1" : string.Empty]).ConfigureAwait(false))!;
                if (AfterForkReleased is { } hook && (string)reply[0]! == "Hard")
                {
                    await hook().ConfigureAwait(false);
                }
            }
            catch (StreamStoreUnavailableException)
            {
                // Its removal of the source, if it ran, is judged from its notification (as a delete's).
                ExpectEcho(sourcePath);
                throw;
            }

            if ((string)reply[0]! == "Removed")
            {
                // This release removed the source before, and its answer was lost: the source leaves the index now, and
                // its own hold goes up the chain. Only a hold kept by id, which counts once however often it is given
                // back; one kept by count may have been given back already, and giving it again would free a source
                // another fork reads, so it is left to an operator.
                await UnindexAsync(sourcePath, (string)reply[4]!).ConfigureAwait(false);
                if ((string)reply[3]! != "1")
                {
                    Report(logger => Log.ForkHoldKept(logger, sourceId, (string)reply[2]!));
                    return;
                }

                forkId = sourceId;
                sourceId = long.Parse((string)reply[1]!, CultureInfo.InvariantCulture);
                sourcePath = (string)reply[2]!;
                byId = true;
                continue;
            }

            if ((string)reply[0]! != "Hard")
            {
                return;
            }

            // Its notification carries what the soft delete's did: when that was judged here within the echo window, this
            // removal goes out as remote, since this node's services already acted on the deletion.
            var tail = long.Parse((string)reply[3]!, CultureInfo.InvariantCulture);
            var closed = (string)reply[4]! == "1";
            Fanout.Publish(new LiveAppend(sourceId, sourcePath, new StreamChunk(tail, tail, default), closed, deleted: true, remote: !ClaimJudgement(sourcePath, sourceId, tail, tail, closed, deleted: true, echo: false)));
            await UnindexAsync(sourcePath, (string)reply[5]!).ConfigureAwait(false);
            if ((string)reply[2]! is not { Length: > 0 } next)
            {
                return;
            }

            // The source just removed was a fork itself: its own registration goes next.
            forkId = sourceId;
            byId = (string)reply[6]! == "1";
            sourceId = long.Parse((string)reply[1]!, CultureInfo.InvariantCulture);
            sourcePath = next;
        }
    }

    /// <summary>A change committed by any node; this node's own were already published to its readers.</summary>
    // Paths with an append whose script's answer was lost, until when this node passes on its own notifications for them
    // to its live readers (who skip what they already have by offset), as changes of its own: this node committed them,
    // so its subscriptions and notifications judge them, as they would have on the answer. A change of this node to such
    // a path that is answered too is judged once, at the answer or at its notification, whichever comes first
    // (_judged). (A notification that came before the answer was given up is not caught.)
    private readonly ConcurrentDictionary<string, long> _echoExpected = new(StringComparer.Ordinal);
    private static readonly TimeSpan EchoWindow = TimeSpan.FromSeconds(60);
    private const int MaxEchoExpected = 10_000;

    // This node's changes to paths in the echo window that were judged here, each until the window ends (and a little
    // longer, so an answer that comes after its window still finds what its notification claimed).
    private readonly ConcurrentDictionary<(string Path, long Id, long Start, long End, bool Closed, bool Deleted), long> _judged = new();
    private const int MaxJudged = 20_000;
    private int _judgedCount;
    private long _lastJudgedPrune;

    /// <summary>
    /// Whether this node's change is judged here now (published as its own) rather than passed on as remote: outside an
    /// echo window at its answer only; inside one at its answer or its notification, whichever claims it first.
    /// </summary>
    private bool ClaimJudgement(string path, long id, long start, long end, bool closed, bool deleted, bool echo)
    {
        var key = (path, id, start, end, closed, deleted);
        if (!IsEchoExpected(path))
        {
            // Its notification may have claimed it while the window was open.
            return !echo && (Volatile.Read(ref _judgedCount) == 0 || !_judged.ContainsKey(key));
        }

        var now = Stopwatch.GetTimestamp();
        if (Volatile.Read(ref _judgedCount) >= MaxJudged)
        {
            PruneJudged(now);
            if (Volatile.Read(ref _judgedCount) >= MaxJudged)
            {
                // Full (a long outage within a minute): judged at the answer, as outside a window. A notification for
                // an answer that was lost is then passed on to readers only.
                return !echo;
            }
        }

        if (!_judged.TryAdd(key, now + (long)(2 * EchoWindow.TotalSeconds * Stopwatch.Frequency)))
        {
            return false;
        }

        Interlocked.Increment(ref _judgedCount);
        return true;
    }

    /// <summary>Drops what has run out, at most once a second.</summary>
    private void PruneJudged(long now)
    {
        var last = Volatile.Read(ref _lastJudgedPrune);
        if (Volatile.Read(ref _judgedCount) == 0 || now - last < Stopwatch.Frequency
            || Interlocked.CompareExchange(ref _lastJudgedPrune, now, last) != last)
        {
            return;
        }

        foreach (var (key, until) in _judged)
        {
            if (until <= now && _judged.TryRemove(new KeyValuePair<(string, long, long, long, bool, bool), long>(key, until)))
            {
                Interlocked.Decrement(ref _judgedCount);
            }
        }
    }

    private void ExpectEcho(string path)
    {
        var now = Stopwatch.GetTimestamp();
        PruneJudged(now);
        if (_echoExpected.Count >= MaxEchoExpected)
        {
            // Full (a long outage fails many appends): what has run out makes room.
            foreach (var (expected, until) in _echoExpected)
            {
                if (until <= now)
                {
                    _echoExpected.TryRemove(new KeyValuePair<string, long>(expected, until));
                }
            }
        }

        if (_echoExpected.Count < MaxEchoExpected || _echoExpected.ContainsKey(path))
        {
            _echoExpected[path] = now + (long)(EchoWindow.TotalSeconds * Stopwatch.Frequency);
        }
        else
        {
            // Its echo will not be passed on: whatever keeps state current by the published changes reads Redis instead.
            Fanout.ReportMissed();
        }
    }

    /// <summary>
    /// Tells this node's live readers of <paramref name="path"/> where its tail stands in Redis, as an empty change at the
    /// tail: a reader short of it reads what it lacks from Redis (a gap), one at it skips it.
    /// </summary>
    private async Task NudgeReadersAsync(string path)
    {
        try
        {
            if (await LoadAsync(Keys(path)).ConfigureAwait(false) is { SoftDeleted: false } info)
            {
                Fanout.Publish(new LiveAppend(info.Id, path, new StreamChunk(info.TailPosition, info.TailPosition, default), info.Closed, remote: true));
            }
        }
        catch (Exception ex) when (ex is StreamStoreUnavailableException or ObjectDisposedException || IsUnreadable(ex))
        {
            // Redis is away: the notification, if the append ran, is still passed on when it comes.
        }
    }

    private bool IsEchoExpected(string path)
    {
        if (_echoExpected.IsEmpty || !_echoExpected.TryGetValue(path, out var until))
        {
            return false;
        }

        if (Stopwatch.GetTimestamp() < until)
        {
            return true;
        }

        _echoExpected.TryRemove(new KeyValuePair<string, long>(path, until));
        return false;
    }

    private async Task OnChangeAsync(ChannelMessage message)
    {
        // The client library queues what Redis sends without a bound: past ours, what is queued is dropped, not handled.
        if (_changes is { } queue && queue.TryGetCount(out var backlog) && backlog > _options.MaxNotificationBacklog)
        {
            DropBacklog(message, queue, backlog);
            return;
        }

        try
        {
            var bytes = (byte[])message.Message!;
            if (bytes.AsSpan().StartsWith(ProbePrefix))
            {
                OnProbe(bytes);
                return;
            }

            if (BeforeChangeHandled is { } hold)
            {
                await hold().ConfigureAwait(false);
            }

            var newline = Array.IndexOf(bytes, (byte)'\n');
            var header = Encoding.UTF8.GetString(bytes, 0, newline).Split('|');
            var pathBytes = int.Parse(header[6], CultureInfo.InvariantCulture);
            var path = Encoding.UTF8.GetString(bytes, newline + 1, pathBytes);

            // This node published its own changes when their scripts answered, except any whose answer was lost.
            var own = header[0] == _node;
            if (own && !IsEchoExpected(path))
            {
                return;
            }

            var id = long.Parse(header[1], CultureInfo.InvariantCulture);
            var start = long.Parse(header[2], CultureInfo.InvariantCulture);
            var end = long.Parse(header[3], CultureInfo.InvariantCulture);
            var dataBytes = int.Parse(header[7], CultureInfo.InvariantCulture);
            var closed = header[4] == "1";
            var deleted = header[5] == "1";
            ReadOnlyMemory<byte> data;
            if (dataBytes >= 0)
            {
                data = bytes.AsMemory(newline + 1 + pathBytes, dataBytes);
            }
            else if ((own || Fanout.HasReaders(id)) && await FetchChangeAsync(id, path, end).ConfigureAwait(false) is { } fetched)
            {
                // Only live readers use another node's data (the observers judge a change on the node that made it, and
                // need only its path), so it is read only where the stream has one: every node fetching every large
                // append, one notification after another, would hold up the notifications behind it for nothing.
                data = fetched;
            }
            else
            {
                // Its data is not read here (no live reader of it on this node, or Redis away, or the stream trimmed or
                // deleted since): readers are told the tail moved, and read what they miss from Redis themselves rather
                // than wait for a next change.
                Fanout.Publish(new LiveAppend(id, path, new StreamChunk(end, end, default), closed, remote: true));
                return;
            }

            var judgedHere = own && ClaimJudgement(path, id, start, end, closed, deleted, echo: true);
            Fanout.Publish(new LiveAppend(id, path, new StreamChunk(start, end, data), closed, deleted, remote: !judgedHere));
        }
        catch (Exception ex) when (ex is RedisException or StreamStoreUnavailableException or FormatException or IndexOutOfRangeException or ArgumentException)
        {
            Fanout.ReportMissed();
            Report(logger => Log.ChangeFailed(logger, ex));
        }
    }

    /// <summary>
    /// Drops the change notifications queued behind this one (at most <paramref name="backlog"/>, so that a flood still
    /// arriving cannot keep it here) and cuts every live reader: each reads from Redis what it did not hear. Probes are
    /// still answered. A change this node made whose answer from Redis was lost is judged by its notification; one
    /// dropped here is not judged (logged).
    /// </summary>
    private void DropBacklog(ChannelMessage current, ChannelMessageQueue queue, int backlog)
    {
        var dropped = 0;
        var seen = 0;
        for (var message = current; ; )
        {
            if (message.Message is { IsNull: false } value && ((byte[])value!).AsSpan().StartsWith(ProbePrefix))
            {
                OnProbe((byte[])value!);
            }
            else
            {
                dropped++;
            }

            if (++seen > backlog || !queue.TryRead(out message))
            {
                break;
            }
        }

        Interlocked.Add(ref _notificationsDropped, dropped);
        Report(logger => Log.NotificationsDropped(logger, dropped, _options.MaxNotificationBacklog));

        // A disposed store's fan-out is not its readers' any more (a new store may share it).
        if (Volatile.Read(ref _disposed) == 0)
        {
            Fanout.DisconnectAll();
        }
    }

    /// <summary>For tests: how many change notifications this node dropped unhandled.</summary>
    internal long NotificationsDropped => Interlocked.Read(ref _notificationsDropped);

    /// <summary>For tests: how many change notifications wait in this node's queue.</summary>
    internal int NotificationBacklog => _changes is { } queue && queue.TryGetCount(out var count) ? count : 0;

    /// <summary>
    /// Cuts every live reader, so that each reads from Redis what the lost subscription missed, once a probe published
    /// on the changes channel has come back through the subscription. The connection may be reported restored before the
    /// client library has subscribed again: a reader cut at once could catch up, wait live, and never hear of a change
    /// made before the subscription was back in force. Cuts anyway after a few tries (at most ten seconds, logged), since Redis
    /// may be gone again (and then its next restore cuts again).
    /// </summary>
    private async Task CutReadersOnceSubscribedAsync()
    {
        Exception? failure = null;
        var proven = false;
        try
        {
            for (var attempt = 0; attempt < ProbeAttempts && Volatile.Read(ref _disposed) == 0; attempt++)
            {
                BeforeProbe?.Invoke();
                var nonce = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
                var heard = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _probes[nonce] = heard;
                try
                {
                    Task publish;
                    try
                    {
                        publish = _db.PublishAsync(_channel, ProbeMessage(_node, nonce));
                    }
                    catch (Exception ex) when (ex is RedisException or ObjectDisposedException)
                    {
                        publish = Task.FromException(ex);
                    }

                    // A publish given up on below may still fail later: its failure is observed here, not left unobserved.
                    _ = publish.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

                    // Each try waits the same, on the real clock whatever the store's clock is, even when the publish fails
                    // at once: the readers are cut within ProbeAttempts × ProbeWait however Redis behaves.
                    await Task.WhenAny(heard.Task, Task.Delay(ProbeWait)).ConfigureAwait(false);
                    if (heard.Task.IsCompleted)
                    {
                        proven = true;
                        Interlocked.Increment(ref _probesHeard);
                        return;
                    }
                }
                finally
                {
                    _probes.TryRemove(nonce, out _);
                }
            }
        }
        catch (Exception ex)
        {
            failure = ex;
        }
        finally
        {
            // A disposed store's fan-out is not its readers' any more (a new store may share it).
            if (Volatile.Read(ref _disposed) == 0)
            {
                if (!proven)
                {
                    Report(logger => Log.SubscriptionUnproven(logger, failure));
                }

                Fanout.DisconnectAll();
            }
        }
    }

    /// <summary>For tests: how many subscription probes this node has heard back.</summary>
    internal int ProbesHeard => Volatile.Read(ref _probesHeard);

    private static ReadOnlySpan<byte> ProbePrefix => "probe|"u8;

    private static byte[] ProbeMessage(string node, string nonce) => Encoding.UTF8.GetBytes($"probe|{node}|{nonce}");

    /// <summary>Completes this node's probe that <paramref name="message"/> carries; another node's is ignored.</summary>
    private void OnProbe(byte[] message)
    {
        var parts = Encoding.UTF8.GetString(message).Split('|');
        if (parts.Length == 3 && parts[1] == _node && _probes.TryGetValue(parts[2], out var heard))
        {
            heard.TrySetResult();
        }
    }

    /// <summary>The data of the change ending at <paramref name="end"/>, left out of its notification for its size; null when it cannot be read now.</summary>
    private async Task<ReadOnlyMemory<byte>?> FetchChangeAsync(long id, string path, long end)
    {
        try
        {
            if (BeforeChangeFetch is { } hook)
            {
                await hook().ConfigureAwait(false);
            }

            var owner = new StreamInfo { Id = id, Path = path, ContentType = string.Empty, TailPosition = end };
            var records = await ReadRecordsAsync(owner, Position(end) + "-0", 1).ConfigureAwait(false);
            if (records is { Count: > 0 } && records[0].End == end)
            {
                return records[0].Data;
            }

            return null;
        }
        catch (Exception ex) when (ex is StreamStoreUnavailableException or RedisException or InvalidCastException or FormatException)
        {
            Report(logger => Log.ChangeFailed(logger, ex));
            return null;
        }
    }

    private async Task LogPersistenceAsync()
    {
        try
        {
            var reply = (RedisResult[])(await Call(_db.ExecuteAsync("CONFIG", "GET", "append*")).ConfigureAwait(false))!;
            var config = new Dictionary<string, string>(StringComparer.Ordinal);
            for (var i = 0; i + 1 < reply.Length; i += 2)
            {
                config[(string)reply[i]!] = (string)reply[i + 1]!;
            }

            var aof = config.GetValueOrDefault("appendonly", "no");
            var fsync = config.GetValueOrDefault("appendfsync", "everysec");
            if (aof != "yes" || fsync != "always")
            {
                Report(logger => Log.WeakPersistence(logger, aof, fsync));
            }
        }
        catch (Exception ex) when (ex is RedisException or RedisCommandException or InvalidCastException or StreamStoreUnavailableException)
        {
            // CONFIG may be disabled (managed Redis); the operator knows the settings.
        }
    }

    private static IEnumerable<RedisValue> MetaFields(StreamInfo info)
    {
        yield return "id"; yield return Id(info.Id);
        yield return "path"; yield return info.Path;
        yield return "ct"; yield return info.ContentType;
        yield return "media"; yield return StreamContentType.MediaType(info.ContentType);
        yield return "tail"; yield return Position(info.TailPosition);
        yield return "closed"; yield return info.Closed ? "1" : "0";
        yield return "ttl"; yield return info.TtlSeconds is { } ttl ? ttl.ToString(CultureInfo.InvariantCulture) : string.Empty;
        yield return "exp"; yield return info.ExpiresAt is { } at ? at.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture) : string.Empty;
        yield return "created"; yield return info.CreatedAt.ToUnixTimeMilliseconds();
        yield return "access"; yield return info.LastAccessAt.ToUnixTimeMilliseconds();
        yield return "fsid"; yield return info.ForkSourceId is { } sid ? Id(sid) : string.Empty;
        yield return "fspath"; yield return info.ForkSourcePath ?? string.Empty;
        yield return "fsreg"; yield return info.ForkSourceId is null ? string.Empty : "1";
        yield return "fpos"; yield return info.ForkPosition;
        yield return "foff"; yield return info.ForkOffset;
        yield return "fsub"; yield return info.ForkSubOffset;
        yield return "sdel"; yield return "0";
        yield return "forks"; yield return 0;
        yield return "owner"; yield return info.Owner ?? string.Empty;
        yield return "rfrom"; yield return info.RetainedFrom;
    }

    private static StreamInfo ParseMeta(HashEntry[] fields)
    {
        var map = fields.ToDictionary(f => (string)f.Name!, f => (string?)f.Value ?? string.Empty, StringComparer.Ordinal);
        string Get(string name) => map.GetValueOrDefault(name, string.Empty);
        long Long(string name) => Get(name) is { Length: > 0 } v ? long.Parse(v, CultureInfo.InvariantCulture) : 0;
        long? Optional(string name) => Get(name) is { Length: > 0 } v ? long.Parse(v, CultureInfo.InvariantCulture) : null;
        return new StreamInfo
        {
            Id = Long("id"),
            Path = Get("path"),
            ContentType = Get("ct"),
            TailPosition = Long("tail"),
            Closed = Get("closed") == "1",
            TtlSeconds = Optional("ttl"),
            ExpiresAt = Optional("exp") is { } exp ? DateTimeOffset.FromUnixTimeMilliseconds(exp) : null,
            CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(Long("created")),
            LastAccessAt = DateTimeOffset.FromUnixTimeMilliseconds(Long("access")),
            ForkSourceId = Optional("fsid"),
            ForkSourcePath = Get("fspath") is { Length: > 0 } sp ? sp : null,
            ForkPosition = Long("fpos"),
            ForkOffset = Long("foff"),
            ForkSubOffset = Long("fsub"),
            SoftDeleted = Get("sdel") == "1",
            ForkCount = (int)Long("forks"),
            LastStreamSeq = Get("seq") is { Length: > 0 } seq ? seq : null,
            Owner = Get("owner") is { Length: > 0 } creator ? creator : null,
            ClosedBy = Get("cbp") is { Length: > 0 } closer ? new ProducerStamp(closer, Long("cbe"), Long("cbs")) : null,
            RetainedFrom = Long("rfrom"),
        };
    }

    private static string Id(long id) => id.ToString(CultureInfo.InvariantCulture);

    private static string Position(long position) => position.ToString(CultureInfo.InvariantCulture);

    private static long ParsePosition(RedisValue entryId)
    {
        var text = (string)entryId!;
        return long.Parse(text.AsSpan(0, text.IndexOf('-', StringComparison.Ordinal)), CultureInfo.InvariantCulture);
    }

    private static partial class Log
    {
        [LoggerMessage(700, LogLevel.Warning, "Redis persistence is appendonly={AppendOnly}, appendfsync={AppendFsync}: an acknowledged append can be lost if Redis stops abruptly. Use appendonly yes and appendfsync always for no loss (see docs/scale-out.md).")]
        public static partial void WeakPersistence(ILogger logger, string appendOnly, string appendFsync);

        [LoggerMessage(701, LogLevel.Warning, "Could not handle a change notification from Redis")]
        public static partial void ChangeFailed(ILogger logger, Exception exception);

        [LoggerMessage(703, LogLevel.Warning, "The expiry sweep failed; the next tick tries again")]
        public static partial void SweepFailed(ILogger logger, Exception exception);

        [LoggerMessage(705, LogLevel.Warning, "A fork (incarnation {Id}) whose registration could not be given back keeps its hold on {Path}: deleted, that source stays soft-deleted, its path taken, until its other forks go and this hold is released by hand")]
        public static partial void ForkHoldKept(ILogger logger, long id, string path, Exception? exception = null);

        [LoggerMessage(706, LogLevel.Warning, "After Redis reconnected, the changes subscription could not be heard back; live readers are cut anyway and read what they missed from Redis")]
        public static partial void SubscriptionUnproven(ILogger logger, Exception? exception);

        [LoggerMessage(707, LogLevel.Warning, "The shared lock {Name} ran out while held (lease {Lease}): another node may have entered its section beside this one")]
        public static partial void LockLost(ILogger logger, string name, TimeSpan lease);

        [LoggerMessage(710, LogLevel.Warning, "A write under the shared lock {Name} was refused: the lock is no longer this node's (released, or its lease {Lease} ran out) and another node may hold it; the write's request fails and may be retried")]
        public static partial void FencedWriteRefused(ILogger logger, string name, TimeSpan lease);

        [LoggerMessage(708, LogLevel.Warning, "Renewing the shared lock {Name} failed; it ends with its lease")]
        public static partial void RenewalFailed(ILogger logger, string name, Exception exception);

        [LoggerMessage(712, LogLevel.Warning, "A delete of {Path} (incarnation {Id}) whose answer from Redis was lost could not be settled: if it ran, the path may stay in the index (counted against MaxStreams until a listing drops it) and a fork's hold on its source may stay")]
        public static partial void DeleteUnsettled(ILogger logger, string path, long id, Exception? exception);

        [LoggerMessage(711, LogLevel.Warning, "This node fell more than {Bound} change notifications behind and dropped {Dropped} of them; its live readers are cut and read what they missed from Redis")]
        public static partial void NotificationsDropped(ILogger logger, int dropped, int bound);

        [LoggerMessage(709, LogLevel.Warning, "The shared lock {Name} has been held for {Held} and is no longer renewed: a section that long is taken for stuck, and its lease ends the lock")]
        public static partial void HeldTooLong(ILogger logger, string name, TimeSpan held);

        [LoggerMessage(704, LogLevel.Warning, "Stream {Path} has metadata this store cannot read; it is left out of expiry")]
        public static partial void UnreadableMeta(ILogger logger, string path, Exception exception);

        [LoggerMessage(702, LogLevel.Warning, "Could not remove expired stream {Path}")]
        public static partial void ExpireFailed(ILogger logger, string path, Exception exception);
    }
}
