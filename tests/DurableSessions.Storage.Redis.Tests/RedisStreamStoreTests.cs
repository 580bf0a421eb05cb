using DurableSessions.Live;
using DurableSessions.Storage.Specification;
using DurableSessions.Testing;

[assembly: AssemblyFixture(typeof(DurableSessions.Storage.Redis.Tests.RedisFixture))]

namespace DurableSessions.Storage.Redis.Tests;

/// <summary>One real redis-server for the test assembly.</summary>
public sealed class RedisFixture : IAsyncLifetime
{
    public RedisServer Server { get; private set; } = null!;

    public async ValueTask InitializeAsync() => Server = await RedisServer.StartAsync();

    public async ValueTask DisposeAsync() => await Server.DisposeAsync();
}

/// <summary>The Redis store held to the storage specification; each test has its own key prefix.</summary>
public sealed class RedisStreamStoreTests(RedisFixture redis) : StreamStoreSpecification
{
    private readonly string _prefix = "spec-" + Guid.NewGuid().ToString("N")[..12];

    protected override async ValueTask<StreamStore> OpenStoreAsync(TimeProvider time)
        => await RedisStreamStore.ConnectAsync(new RedisStreamStoreOptions { Configuration = redis.Server.Configuration, KeyPrefix = _prefix }, time);
}

/// <summary>Behaviour specific to running several nodes over one Redis.</summary>
public sealed class RedisNodesTests(RedisFixture redis) : IAsyncDisposable
{
    private readonly string _prefix = "nodes-" + Guid.NewGuid().ToString("N")[..12];
    private readonly List<RedisStreamStore> _stores = [];

    private async Task<RedisStreamStore> Node()
    {
        var store = await RedisStreamStore.ConnectAsync(new RedisStreamStoreOptions { Configuration = redis.Server.Configuration, KeyPrefix = _prefix, InlineNotificationBytes = 8 });
        _stores.Add(store);
        return store;
    }

    [Fact]
    public async Task A_lock_waits_for_its_holder_and_a_release_after_the_lease_ran_out_leaves_the_next_holder_alone()
    {
        var a = await Node();
        var b = await Node();
        using var redisClient = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.Server.Configuration);
        var key = _prefix + ":lock:turns";

        // B waits while A holds the lock, and gets it once A's short lease runs out (A held up: it does not renew it).
        a.RenewLocks = false;
        var first = await a.AcquireLockAsync("turns", TimeSpan.FromMilliseconds(300));
        a.RenewLocks = true;
        var second = await b.AcquireLockAsync("turns", TimeSpan.FromSeconds(30)).AsTask().WaitAsync(TimeSpan.FromSeconds(10));

        // A's late release must not free B's lock.
        await first.DisposeAsync();
        Assert.True((await redisClient.GetDatabase().StringGetAsync(key)).HasValue);

        await second.DisposeAsync();
        Assert.False((await redisClient.GetDatabase().StringGetAsync(key)).HasValue);
        await using var third = await a.AcquireLockAsync("turns", TimeSpan.FromSeconds(30)).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Documents_written_through_a_lock_whose_lease_ran_out_are_refused_and_leave_the_next_holders_alone()
    {
        var a = await Node();
        var b = await Node();
        using var redisClient = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.Server.Configuration);

        // A writes under its lock, then is held up past its lease: the lock's key expires.
        var first = await a.AcquireLockAsync("registry", TimeSpan.FromSeconds(30));
        await first.PutDocumentAsync("items", "one", "a1"u8.ToArray());
        await first.PutDocumentAsync("items", "two", "a2"u8.ToArray());
        Assert.True(await redisClient.GetDatabase().KeyDeleteAsync(_prefix + ":lock:registry"));

        // B gets the lock, and writes.
        var second = await b.AcquireLockAsync("registry", TimeSpan.FromSeconds(30)).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        await second.PutDocumentAsync("items", "one", "b1"u8.ToArray());

        // A's late writes and delete change nothing, and say so.
        await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => first.PutDocumentAsync("items", "one", "a1-late"u8.ToArray()).AsTask());
        await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => first.PutDocumentAsync("items", "three", "a3-late"u8.ToArray()).AsTask());
        await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => first.DeleteDocumentAsync("items", "two").AsTask());
        await first.DisposeAsync();
        Assert.Equal("b1"u8.ToArray(), await a.GetDocumentAsync("items", "one"));
        Assert.Equal("a2"u8.ToArray(), await a.GetDocumentAsync("items", "two"));
        Assert.Null(await a.GetDocumentAsync("items", "three"));

        // B's lock still holds, and its own delete goes through; once released, its writes are refused too.
        await second.DeleteDocumentAsync("items", "two");
        Assert.Null(await b.GetDocumentAsync("items", "two"));
        await second.DisposeAsync();
        await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => second.PutDocumentAsync("items", "one", "b1-late"u8.ToArray()).AsTask());
        Assert.Equal("b1"u8.ToArray(), await b.GetDocumentAsync("items", "one"));
    }

    [Fact]
    public async Task A_redis_cluster_is_refused_at_connect_with_a_clear_error()
    {
        await using var cluster = await RedisServer.StartClusterNodeAsync();
        var store = RedisStreamStore.Create(new RedisStreamStoreOptions { Configuration = cluster.Configuration, KeyPrefix = _prefix });
        await using (store)
        {
            var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => store.ConnectAsync(CancellationToken.None));
            Assert.Contains("cluster", refused.Message, StringComparison.Ordinal);
            Assert.Contains("one primary", refused.Message, StringComparison.Ordinal);

            // Its endpoints, not its whole configuration, which may carry a password.
            Assert.Contains(cluster.Configuration, refused.Message, StringComparison.Ordinal);
            Assert.DoesNotContain("abortConnect", refused.Message, StringComparison.OrdinalIgnoreCase);
        }
    }

    [Fact]
    public async Task A_live_reader_on_one_node_is_woken_by_appends_on_another()
    {
        var a = await Node();
        var b = await Node();
        var created = await a.CreateAsync(new CreateStreamRequest { Path = "shared", ContentType = "text/plain" });
        using var subscription = b.Fanout.Subscribe(created.Stream!.Id);

        // Small appends travel inside the notification; this one is larger than the 8-byte inline limit and is read from Redis.
        await a.AppendAsync(new AppendRequest { Path = "shared", ContentType = "text/plain", Data = new StreamPayload("hi"u8.ToArray(), 2) });
        await a.AppendAsync(new AppendRequest { Path = "shared", ContentType = "text/plain", Data = new StreamPayload("a longer one"u8.ToArray(), 12) });

        var first = await NextWithData(subscription);
        var second = await NextWithData(subscription);
        Assert.True(first.IsRemote);
        Assert.Equal((0, 2, "hi"), (first.Chunk.Start, first.Chunk.End, System.Text.Encoding.UTF8.GetString(first.Chunk.Data.Span)));
        Assert.Equal((2, 14, "a longer one"), (second.Chunk.Start, second.Chunk.End, System.Text.Encoding.UTF8.GetString(second.Chunk.Data.Span)));
    }

    [Theory]
    [InlineData("READONLY You can't write against a read only replica.", true)]
    [InlineData("OOM command not allowed when used memory > 'maxmemory'.", true)]
    [InlineData("ERR Error running script (call to f_0123): @user_script:4: @user_script: 4: -READONLY You can't write against a read only replica.", true)]
    [InlineData("ERR Error running script (call to f_0123): @user_script:9: -NOREPLICAS Not enough good replicas to write.", true)]
    [InlineData("WRONGTYPE Operation against a key holding the wrong kind of value", false)]
    [InlineData("ERR Error running script (call to f_0123): @user_script:4: user_script:4: attempt to compare nil with number", false)]
    public void Errors_redis_gives_while_it_takes_no_commands_are_unavailability_bare_or_wrapped_by_a_script(string message, bool unavailable)
    {
#pragma warning disable CS0618 // The message is all this classification reads.
        var error = new StackExchange.Redis.RedisServerException(message);
#pragma warning restore CS0618
        Assert.Equal(unavailable, RedisStreamStore.IsUnavailable(error));
    }

    [Fact]
    public async Task A_redis_that_refuses_writes_during_a_failover_is_answered_as_unavailable_and_nothing_is_written()
    {
        await using var own = await RedisServer.StartAsync();
        await using var store = await RedisStreamStore.ConnectAsync(new RedisStreamStoreOptions { Configuration = own.Configuration, KeyPrefix = _prefix });
        using var admin = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(own.Configuration + ",allowAdmin=true");
        await store.CreateAsync(new CreateStreamRequest { Path = "demoted", ContentType = "text/plain" });
        await store.AppendAsync(new AppendRequest { Path = "demoted", ContentType = "text/plain", Data = new StreamPayload("a"u8.ToArray(), 1) });

        // Demoted to a replica (of a primary that is not there), as in a failover: Redis answers writes READONLY.
        await admin.GetDatabase().ExecuteAsync("REPLICAOF", "127.0.0.1", "1");
        try
        {
            await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => store.AppendAsync(new AppendRequest { Path = "demoted", ContentType = "text/plain", Data = new StreamPayload("b"u8.ToArray(), 1) }).AsTask());
            await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => store.CreateAsync(new CreateStreamRequest { Path = "new-one", ContentType = "text/plain" }).AsTask());
            await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => store.DeleteAsync("demoted").AsTask());
        }
        finally
        {
            await admin.GetDatabase().ExecuteAsync("REPLICAOF", "NO", "ONE");
        }

        // Nothing of the refused writes happened, and the store serves again.
        var stream = (await store.GetAsync("demoted")).Stream!;
        Assert.Equal(1, stream.TailPosition);
        Assert.Equal(StreamLookupStatus.NotFound, (await store.GetAsync("new-one")).Status);
        Assert.Equal(AppendStatus.Appended, (await store.AppendAsync(new AppendRequest { Path = "demoted", ContentType = "text/plain", Data = new StreamPayload("c"u8.ToArray(), 1) })).Status);
        var read = await store.ReadAsync((await store.GetAsync("demoted")).Stream!, 0, 1 << 20);
        Assert.Equal("ac", string.Concat(read.Chunks.Select(c => System.Text.Encoding.UTF8.GetString(c.Data.Span))));
    }

    [Fact]
    public async Task A_removed_stream_leaves_its_owners_set_of_paths_and_one_created_again_there_joins_its_own_owners()
    {
        var a = await Node();
        using var redisClient = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.Server.Configuration);
        var db = redisClient.GetDatabase();
        for (var i = 0; i < 5; i++)
        {
            await a.CreateAsync(new CreateStreamRequest { Path = $"owned/{i}", ContentType = "text/plain", Owner = "user:o" });
        }

        // A source deleted while a fork reads from it is removed when the fork goes: its owner's set loses it then.
        await a.CreateAsync(new CreateStreamRequest { Path = "owned/source", ContentType = "text/plain", Owner = "user:o", InitialData = new StreamPayload("abc"u8.ToArray(), 3) });
        await a.CreateAsync(new CreateStreamRequest { Path = "owned/fork", ContentType = "text/plain", Owner = "user:o", ForkedFrom = "owned/source", ForkOffset = 3 });
        Assert.Equal(7, await db.SetLengthAsync(_prefix + ":owner:user:o"));

        for (var i = 0; i < 5; i++)
        {
            await a.DeleteAsync($"owned/{i}");
        }

        await a.DeleteAsync("owned/source");
        Assert.Equal(2, await db.SetLengthAsync(_prefix + ":owner:user:o"));
        await a.DeleteAsync("owned/fork");
        Assert.Equal(0, await db.SetLengthAsync(_prefix + ":owner:user:o"));

        // Created again by someone else: counted for them, not for the first owner.
        await a.CreateAsync(new CreateStreamRequest { Path = "owned/0", ContentType = "text/plain", Owner = "user:p" });
        Assert.Equal(0, await db.SetLengthAsync(_prefix + ":owner:user:o"));
        Assert.Equal(["owned/0"], (await db.SetMembersAsync(_prefix + ":owner:user:p")).Select(m => (string)m!));
    }

    [Fact]
    public async Task A_change_whose_data_cannot_be_read_on_another_node_still_reaches_a_live_reader_there()
    {
        var a = await Node();
        var b = await Node();
        var created = await a.CreateAsync(new CreateStreamRequest { Path = "unfetched", ContentType = "text/plain" });

        // B cannot read the change's data when its notification comes: Redis is away for it at that moment.
        var refused = 0;
        b.BeforeChangeFetch = () =>
        {
            Interlocked.Increment(ref refused);
            throw new StreamStoreUnavailableException("Redis is unreachable (test).");
        };
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var follower = new StreamFollower(b, created.Stream!);
        var reached = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var text = new System.Text.StringBuilder();
        var reading = Task.Run(async () =>
        {
            await foreach (var item in follower.FollowAsync(0, stop.Token))
            {
                if (item.Kind == StreamFollowKind.CaughtUp && item.Position == 0)
                {
                    // Following live from here: the append below comes through the notification, not the first read.
                    await a.AppendAsync(new AppendRequest { Path = "unfetched", ContentType = "text/plain", Data = new StreamPayload("a longer one"u8.ToArray(), 12) });
                }

                foreach (var chunk in item.Read?.Chunks ?? (item.Change is { } change ? [change.Chunk] : []))
                {
                    text.Append(System.Text.Encoding.UTF8.GetString(chunk.Data.Span));
                }

                if (item.Position == 12)
                {
                    reached.TrySetResult(text.ToString());
                    return;
                }
            }
        });

        // The reader is told the tail moved, and reads the change from Redis itself rather than wait for a next one.
        Assert.Equal("a longer one", await reached.Task.WaitAsync(stop.Token));
        Assert.True(Volatile.Read(ref refused) > 0, "the notification's data was to be read on B");
        await reading;
    }

    [Fact]
    public async Task Another_nodes_large_append_is_read_only_on_a_node_with_a_live_reader_of_its_stream()
    {
        var a = await Node();
        var b = await Node();
        var created = await a.CreateAsync(new CreateStreamRequest { Path = "fetched", ContentType = "text/plain" });
        var fetches = 0;
        b.BeforeChangeFetch = () =>
        {
            Interlocked.Increment(ref fetches);
            return Task.CompletedTask;
        };

        // No live reader of the stream on B: B's fan-out hears the change (its observers look at every change) without
        // its data, which B does not read.
        var heard = new TaskCompletionSource<LiveAppend>(TaskCreationOptions.RunContinuationsAsynchronously);
        b.Fanout.AddObserver(change =>
        {
            if (change.Path == "fetched" && change.Chunk.End == 12)
            {
                heard.TrySetResult(change);
            }
        });
        await a.AppendAsync(new AppendRequest { Path = "fetched", ContentType = "text/plain", Data = new StreamPayload("a longer one"u8.ToArray(), 12) });
        var unread = await heard.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(unread.Chunk.End, unread.Chunk.Start);
        Assert.Equal(0, Volatile.Read(ref fetches));

        // With a live reader there, the next one is read once and handed to it.
        using var subscription = b.Fanout.Subscribe(created.Stream!.Id);
        await a.AppendAsync(new AppendRequest { Path = "fetched", ContentType = "text/plain", Data = new StreamPayload("and one more"u8.ToArray(), 12) });
        var change = await NextWithData(subscription);
        Assert.Equal("and one more", System.Text.Encoding.UTF8.GetString(change.Chunk.Data.Span));
        Assert.Equal(1, Volatile.Read(ref fetches));
    }

    [Fact]
    public async Task A_node_that_falls_too_far_behind_on_notifications_drops_them_and_its_readers_read_what_they_missed_from_redis()
    {
        var a = await Node();
        var b = await RedisStreamStore.ConnectAsync(new RedisStreamStoreOptions { Configuration = redis.Server.Configuration, KeyPrefix = _prefix, InlineNotificationBytes = 8, MaxNotificationBacklog = 5 });
        _stores.Add(b);
        var created = await a.CreateAsync(new CreateStreamRequest { Path = "behind", ContentType = "text/plain" });
        var reader = b.Fanout.Subscribe(created.Stream!.Id);

        // B's handling of one notification is held (it reads a large change's data), while 50 more queue up behind it.
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        b.BeforeChangeFetch = async () =>
        {
            held.TrySetResult();
            await release.Task;
        };
        await a.AppendAsync(new AppendRequest { Path = "behind", ContentType = "text/plain", Data = new StreamPayload("a longer one"u8.ToArray(), 12) });
        await held.Task.WaitAsync(TimeSpan.FromSeconds(10));
        b.BeforeChangeFetch = null;
        for (var i = 0; i < 50; i++)
        {
            await a.AppendAsync(new AppendRequest { Path = "behind", ContentType = "text/plain", Data = new StreamPayload("x"u8.ToArray(), 1) });
        }

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (b.NotificationBacklog < 50 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10);
        }

        Assert.Equal(50, b.NotificationBacklog);
        release.SetResult();

        // The backlog is dropped, not handled, and B's reader is cut: it has fewer changes than were made.
        var heard = 0;
        while (await reader.Reader.WaitToReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30)))
        {
            while (reader.Reader.TryRead(out _))
            {
                heard++;
            }
        }

        Assert.True(reader.FellBehind);
        Assert.True(heard < 51, $"the reader heard {heard} changes");
        Assert.InRange(b.NotificationsDropped, 45, 50);
        Assert.Equal(0, b.NotificationBacklog);
        reader.Dispose();

        // What it missed is in Redis, and a reader that resumes hears the next change.
        var stream = (await b.GetAsync("behind")).Stream!;
        Assert.Equal(62, stream.TailPosition);
        var read = await b.ReadAsync(stream, 0, 1 << 20);
        Assert.Equal("a longer one" + new string('x', 50), string.Concat(read.Chunks.Select(c => System.Text.Encoding.UTF8.GetString(c.Data.Span))));
        using var resumed = b.Fanout.Subscribe(created.Stream.Id);
        await a.AppendAsync(new AppendRequest { Path = "behind", ContentType = "text/plain", Data = new StreamPayload("after it"u8.ToArray(), 8) });
        var change = await NextWithData(resumed);
        Assert.Equal("after it", System.Text.Encoding.UTF8.GetString(change.Chunk.Data.Span));
    }

    [Fact]
    public async Task After_its_subscription_comes_back_a_node_cuts_its_readers_once_the_subscription_is_in_force_and_they_hear_later_changes()
    {
        // A Redis of its own: dropping every subscription connection of the shared one would cut other tests' readers.
        await using var own = await RedisServer.StartAsync();
        var options = new RedisStreamStoreOptions { Configuration = own.Configuration, KeyPrefix = _prefix };
        await using var a = await RedisStreamStore.ConnectAsync(options);
        await using var b = await RedisStreamStore.ConnectAsync(options);
        var created = await a.CreateAsync(new CreateStreamRequest { Path = "resubscribed", ContentType = "text/plain" });
        var reader = b.Fanout.Subscribe(created.Stream!.Id);

        // Redis drops every subscription connection; the client library connects them again.
        using var admin = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(own.Configuration + ",allowAdmin=true");
        await admin.GetDatabase().ExecuteAsync("CLIENT", "KILL", "TYPE", "pubsub");

        // B's reader is cut (so it would read what the drop missed from Redis), and only after B heard its own probe
        // back through the subscription.
        // (The create's own notification may still sit in the queue: the reader ends once it has read it.)
        while (await reader.Reader.WaitToReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30)))
        {
            while (reader.Reader.TryRead(out _))
            {
            }
        }

        Assert.True(reader.FellBehind);
        Assert.True(b.ProbesHeard >= 1, "the subscription was to be proven back before the readers were cut");
        reader.Dispose();

        // A reader that resumes now hears the next change made on A.
        using var resumed = b.Fanout.Subscribe(created.Stream.Id);
        await a.AppendAsync(new AppendRequest { Path = "resubscribed", ContentType = "text/plain", Data = new StreamPayload("after"u8.ToArray(), 5) });
        var change = await NextWithData(resumed);
        Assert.Equal("after", System.Text.Encoding.UTF8.GetString(change.Chunk.Data.Span));
    }

    [Fact]
    public async Task A_fork_registration_whose_answer_is_lost_is_given_back_so_its_source_can_still_be_removed()
    {
        var a = await Node();
        await a.CreateAsync(new CreateStreamRequest { Path = "held/source", ContentType = "text/plain" });

        // The registration on the source runs, but its answer is lost: the fork is not created.
        a.AfterForkRegistered = () => throw new StreamStoreUnavailableException("The answer was lost (test).");
        await Assert.ThrowsAsync<StreamStoreUnavailableException>(async () =>
            await a.CreateAsync(new CreateStreamRequest { Path = "held/fork", ContentType = "text/plain", ForkedFrom = "held/source", ForkOffset = 0 }));
        a.AfterForkRegistered = null;
        Assert.Equal(StreamLookupStatus.NotFound, (await a.GetAsync("held/fork")).Status);

        // No hold is left: the source counts no fork, and a delete removes it for good (its path is free again).
        Assert.Equal(0, (await a.GetAsync("held/source")).Stream!.ForkCount);
        await a.DeleteAsync("held/source");
        Assert.Equal(CreateStreamStatus.Created, (await a.CreateAsync(new CreateStreamRequest { Path = "held/source", ContentType = "text/plain" })).Status);
    }

    [Fact]
    public async Task A_filtered_listing_looks_up_only_the_streams_its_filter_accepts()
    {
        var a = await Node();
        for (var i = 0; i < 300; i++)
        {
            await a.CreateAsync(new CreateStreamRequest { Path = $"many/{i}", ContentType = "text/plain" });
        }

        await a.CreateAsync(new CreateStreamRequest { Path = "wanted/1", ContentType = "text/plain" });
        await a.CreateAsync(new CreateStreamRequest { Path = "wanted/2", ContentType = "text/plain" });
        var loads = 0;
        a.OnLoad = _ => Interlocked.Increment(ref loads);
        var listed = new List<string>();
        await foreach (var path in a.ListPathsAsync(path => path.StartsWith("wanted/", StringComparison.Ordinal)))
        {
            listed.Add(path);
        }

        a.OnLoad = null;
        Assert.Equal(["wanted/1", "wanted/2"], listed.Order(StringComparer.Ordinal));
        Assert.InRange(loads, 2, 4);
    }

    [Fact]
    public async Task A_fork_delete_whose_answer_is_lost_still_leaves_the_index_and_gives_its_hold_on_a_deleted_source_back()
    {
        var a = await Node();
        await a.CreateAsync(new CreateStreamRequest { Path = "lost/source", ContentType = "text/plain", InitialData = new StreamPayload("s"u8.ToArray(), 1) });
        await a.CreateAsync(new CreateStreamRequest { Path = "lost/fork", ContentType = "text/plain", ForkedFrom = "lost/source", ForkOffset = 1 });
        Assert.Equal(DeleteStreamStatus.Deleted, await a.DeleteAsync("lost/source"));
        Assert.Equal(StreamLookupStatus.Gone, (await a.GetAsync("lost/source")).Status);

        // The fork's delete runs, but its answer is lost: the caller hears that Redis was away, and nothing after the
        // script (the index, the hold on the source) ran then.
        a.AfterDeleteScript = () => throw new StreamStoreUnavailableException("The answer was lost (test).");
        await Assert.ThrowsAsync<StreamStoreUnavailableException>(async () => await a.DeleteAsync("lost/fork"));
        a.AfterDeleteScript = null;
        Assert.Equal(StreamLookupStatus.NotFound, (await a.GetAsync("lost/fork")).Status);

        // Once Redis answers (the first try a second later), the source, which nothing reads from any more, is removed,
        // and both paths leave the index.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while ((await a.GetAsync("lost/source")).Status != StreamLookupStatus.NotFound && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        Assert.Equal(StreamLookupStatus.NotFound, (await a.GetAsync("lost/source")).Status);
        using var redisClient = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.Server.Configuration);
        var database = redisClient.GetDatabase();
        deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (await database.SetLengthAsync(_prefix + ":paths") > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        var listed = (await database.SetMembersAsync(_prefix + ":paths")).Select(p => (string)p!).ToList();
        Assert.DoesNotContain("lost/fork", listed);
        Assert.DoesNotContain("lost/source", listed);
        Assert.Equal(CreateStreamStatus.Created, (await a.CreateAsync(new CreateStreamRequest { Path = "lost/source", ContentType = "text/plain" })).Status);
    }

    [Fact]
    public async Task A_delete_whose_answer_is_lost_leaves_the_index_so_its_path_no_longer_counts_against_the_stream_limit()
    {
        var a = await Node();
        await a.CreateAsync(new CreateStreamRequest { Path = "limit/one", ContentType = "text/plain", MaxStreams = 1 });
        a.AfterDeleteScript = () => throw new StreamStoreUnavailableException("The answer was lost (test).");
        await Assert.ThrowsAsync<StreamStoreUnavailableException>(async () => await a.DeleteAsync("limit/one"));
        a.AfterDeleteScript = null;

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        CreateStreamStatus status;
        while ((status = (await a.CreateAsync(new CreateStreamRequest { Path = "limit/two", ContentType = "text/plain", MaxStreams = 1 })).Status) == CreateStreamStatus.LimitReached
            && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        Assert.Equal(CreateStreamStatus.Created, status);
    }

    [Fact]
    public async Task A_release_that_removed_a_soft_deleted_fork_but_lost_its_answer_still_gives_that_forks_hold_back_up_the_chain()
    {
        var a = await Node();
        await a.CreateAsync(new CreateStreamRequest { Path = "chain/root", ContentType = "text/plain", InitialData = new StreamPayload("r"u8.ToArray(), 1) });
        await a.CreateAsync(new CreateStreamRequest { Path = "chain/middle", ContentType = "text/plain", ForkedFrom = "chain/root", ForkOffset = 1 });
        await a.CreateAsync(new CreateStreamRequest { Path = "chain/leaf", ContentType = "text/plain", ForkedFrom = "chain/middle", ForkOffset = 1 });

        // Root and middle are deleted while a fork reads from each: both stay, soft-deleted.
        Assert.Equal(DeleteStreamStatus.Deleted, await a.DeleteAsync("chain/root"));
        Assert.Equal(DeleteStreamStatus.Deleted, await a.DeleteAsync("chain/middle"));
        Assert.Equal(StreamLookupStatus.Gone, (await a.GetAsync("chain/root")).Status);
        Assert.Equal(StreamLookupStatus.Gone, (await a.GetAsync("chain/middle")).Status);

        // Deleting the leaf gives its hold on middle back, which removes middle; the answer of that release is lost, so
        // middle's own hold on root is not given back then. The release is sent again (a second later): it finds middle
        // removed, and gives middle's hold on root back in its place.
        var lost = 0;
        a.AfterForkReleased = () => Interlocked.Increment(ref lost) == 1 ? throw new StreamStoreUnavailableException("The answer was lost (test).") : Task.CompletedTask;
        Assert.Equal(DeleteStreamStatus.Deleted, await a.DeleteAsync("chain/leaf"));
        Assert.Equal(StreamLookupStatus.NotFound, (await a.GetAsync("chain/middle")).Status);

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while ((await a.GetAsync("chain/root")).Status != StreamLookupStatus.NotFound && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        Assert.Equal(StreamLookupStatus.NotFound, (await a.GetAsync("chain/root")).Status);
        Assert.True(lost >= 2, "the release up the chain was sent again");

        // Both left the index too, middle though its removal's answer was lost; root's path is free again.
        using var redisClient = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.Server.Configuration);
        var listed = (await redisClient.GetDatabase().SetMembersAsync(_prefix + ":paths")).Select(p => (string)p!).ToList();
        Assert.DoesNotContain("chain/middle", listed);
        Assert.DoesNotContain("chain/root", listed);
        Assert.Equal(CreateStreamStatus.Created, (await a.CreateAsync(new CreateStreamRequest { Path = "chain/root", ContentType = "text/plain" })).Status);
    }

    [Fact]
    public async Task A_shared_lock_held_past_its_lease_is_renewed_and_no_other_node_takes_it_until_it_is_let_go()
    {
        var a = await Node();
        var b = await Node();
        var renewals = 0;
        var twoLeases = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        a.OnLockRenewed = () =>
        {
            // Renewed every third of the lease: six renewals are two whole leases.
            if (Interlocked.Increment(ref renewals) == 6)
            {
                twoLeases.TrySetResult();
            }
        };

        var held = await a.AcquireLockAsync("renewed", TimeSpan.FromSeconds(1.5));
        var other = b.AcquireLockAsync("renewed", TimeSpan.FromSeconds(5)).AsTask();
        await twoLeases.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(other.IsCompleted, "another node took the lock while it was held past its lease");

        // Let go, it is the other node's within well under a lease (the release, not the lease, freed it); a second
        // dispose does nothing.
        await held.DisposeAsync();
        await held.DisposeAsync();
        await using var taken = await other.WaitAsync(TimeSpan.FromMilliseconds(800));
    }

    [Fact]
    public async Task Giving_back_a_registration_that_never_ran_leaves_the_other_forks_hold_on_the_source()
    {
        var a = await Node();
        await a.CreateAsync(new CreateStreamRequest { Path = "kept/source", ContentType = "text/plain" });
        await a.CreateAsync(new CreateStreamRequest { Path = "kept/fork", ContentType = "text/plain", ForkedFrom = "kept/source", ForkOffset = 0 });

        // Redis is away before a second fork's registration is sent: it is given back all the same, as the node cannot tell.
        a.BeforeForkRegistration = () => throw new StreamStoreUnavailableException("Redis is away (test).");
        await Assert.ThrowsAsync<StreamStoreUnavailableException>(async () =>
            await a.CreateAsync(new CreateStreamRequest { Path = "kept/never", ContentType = "text/plain", ForkedFrom = "kept/source", ForkOffset = 0 }));
        a.BeforeForkRegistration = null;

        // The first fork still holds the source: deleted, it stays for that fork's reads (gone, not removed).
        Assert.Equal(1, (await a.GetAsync("kept/source")).Stream!.ForkCount);
        await a.DeleteAsync("kept/source");
        Assert.Equal(StreamLookupStatus.Gone, (await a.GetAsync("kept/source")).Status);
        Assert.Equal(StreamLookupStatus.Found, (await a.GetAsync("kept/fork")).Status);
    }

    [Fact]
    public async Task A_fork_registered_before_forks_were_kept_by_id_is_still_released_when_it_is_deleted()
    {
        var a = await Node();
        using var redisClient = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.Server.Configuration);
        var db = redisClient.GetDatabase();
        await a.CreateAsync(new CreateStreamRequest { Path = "old/source", ContentType = "text/plain" });
        var fork = (await a.CreateAsync(new CreateStreamRequest { Path = "old/fork", ContentType = "text/plain", ForkedFrom = "old/source", ForkOffset = 0 })).Stream!;
        Assert.Equal(1, (await a.GetAsync("old/source")).Stream!.ForkCount);

        // As an older version left them: the source counts the fork without its id, and the fork has no mark of it.
        Assert.True(await db.HashDeleteAsync(_prefix + ":s:{old/source}:f", fork.Id));
        Assert.True(await db.HashDeleteAsync(_prefix + ":s:{old/fork}:m", "fsreg"));

        // Deleting the fork releases it by count, so the source can then be removed for good.
        await a.DeleteAsync("old/fork");
        Assert.Equal(0, (await a.GetAsync("old/source")).Stream!.ForkCount);
        await a.DeleteAsync("old/source");
        Assert.Equal(CreateStreamStatus.Created, (await a.CreateAsync(new CreateStreamRequest { Path = "old/source", ContentType = "text/plain" })).Status);
    }

    /// <summary>The stream's tail once it reaches <paramref name="expected"/>, or where it stands when the time is up.</summary>
    private static async Task<long> WaitForTailAsync(StreamStore store, string path, long expected, TimeSpan within)
    {
        var deadline = DateTime.UtcNow + within;
        while (true)
        {
            long tail;
            try
            {
                tail = (await store.GetAsync(path)).Stream!.TailPosition;
            }
            catch (StreamStoreUnavailableException) when (DateTime.UtcNow < deadline)
            {
                // A pause can cost the client its connection: it is reconnecting.
                await Task.Delay(50);
                continue;
            }

            if (tail >= expected || DateTime.UtcNow > deadline)
            {
                return tail;
            }

            await Task.Delay(50);
        }
    }

    // The create's own (empty) notification may arrive after the subscription started.
    private static async Task<LiveAppend> NextWithData(LiveSubscription subscription)
    {
        while (true)
        {
            var change = await subscription.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
            if (change.Chunk.End > change.Chunk.Start)
            {
                return change;
            }
        }
    }

    [Fact]
    public async Task Concurrent_appends_from_two_nodes_get_distinct_offsets_and_producers_dedupe_across_nodes()
    {
        var a = await Node();
        var b = await Node();
        await a.CreateAsync(new CreateStreamRequest { Path = "race", ContentType = "text/plain" });
        var one = new StreamPayload("x"u8.ToArray(), 1);
        var results = await Task.WhenAll(Enumerable.Range(0, 400).Select(i => (i % 2 == 0 ? a : b).AppendAsync(new AppendRequest { Path = "race", Data = one }).AsTask()));
        Assert.Equal(400, results.Select(r => r.TailPosition).Distinct().Count());
        Assert.Equal(400, (await b.GetAsync("race")).Stream!.TailPosition);

        // A producer's request retried through the other node is recognised.
        var stamp = new ProducerStamp("p", 0, 0);
        Assert.Equal(AppendStatus.Appended, (await a.AppendAsync(new AppendRequest { Path = "race", Data = one, Producer = stamp })).Status);
        Assert.Equal(AppendStatus.Duplicate, (await b.AppendAsync(new AppendRequest { Path = "race", Data = one, Producer = stamp })).Status);
    }

    [Fact]
    public async Task The_sweep_removes_streams_that_expired_unread_and_keeps_those_a_read_renewed()
    {
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        await using var store = await RedisStreamStore.ConnectAsync(new RedisStreamStoreOptions { Configuration = redis.Server.Configuration, KeyPrefix = _prefix, ExpirySweepInterval = TimeSpan.FromSeconds(5) }, clock);
        using var redisClient = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.Server.Configuration);
        var db = redisClient.GetDatabase();
        const int Lapsing = 600;
        for (var i = 0; i < Lapsing; i++)
        {
            await store.CreateAsync(new CreateStreamRequest { Path = $"lapse/{i}", ContentType = "text/plain", TtlSeconds = 10, InitialData = new StreamPayload("x"u8.ToArray(), 1) });
        }

        await store.CreateAsync(new CreateStreamRequest { Path = "renewed", ContentType = "text/plain", TtlSeconds = 10 });
        await store.CreateAsync(new CreateStreamRequest { Path = "forever", ContentType = "text/plain" });
        Assert.Equal(Lapsing + 2, await db.SetLengthAsync(_prefix + ":paths"));

        // "renewed" is read at 8 s; at 12 s the others have been idle past their TTL. Nobody touches them: the sweep
        // (every 5 s here, several batches per tick) removes them, keys and all.
        clock.Advance(TimeSpan.FromSeconds(8));
        await store.TouchAsync((await store.GetAsync("renewed")).Stream!);
        clock.Advance(TimeSpan.FromSeconds(4));

        // The renewed stream is indexed again at its new expiry (8 s + 10 s); the others are gone.
        var renewedAt = new DateTimeOffset(2026, 1, 1, 0, 0, 18, TimeSpan.Zero).ToUnixTimeMilliseconds();
        using (var wait = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            while (await db.SetLengthAsync(_prefix + ":paths") > 2 || await db.SortedSetScoreAsync(_prefix + ":expiries", "renewed") != renewedAt)
            {
                await Task.Delay(20, wait.Token);
            }
        }

        Assert.Equal(["forever", "renewed"], (await db.SetMembersAsync(_prefix + ":paths")).Select(m => (string)m!).Order(StringComparer.Ordinal));
        Assert.False(await db.KeyExistsAsync(_prefix + ":s:{lapse/0}:m"));
        Assert.False(await db.KeyExistsAsync(_prefix + ":s:{lapse/599}:d"));

        // Once that passes unread (the sweeps at 15 and 20 s), it is removed too.
        clock.Advance(TimeSpan.FromSeconds(9));
        using (var wait = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            while (await db.KeyExistsAsync(_prefix + ":s:{renewed}:m"))
            {
                await Task.Delay(20, wait.Token);
            }
        }

        Assert.Equal(StreamLookupStatus.Found, (await store.GetAsync("forever")).Status);
        Assert.Equal(0, await db.SortedSetLengthAsync(_prefix + ":expiries"));
    }

    [Fact]
    public async Task The_expiry_index_drops_deleted_streams_and_is_filled_once_for_streams_stored_before_it()
    {
        using var redisClient = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.Server.Configuration);
        var db = redisClient.GetDatabase();
        var first = await Node();
        await first.CreateAsync(new CreateStreamRequest { Path = "ttl/deleted", ContentType = "text/plain", TtlSeconds = 3600 });
        await first.CreateAsync(new CreateStreamRequest { Path = "ttl/older", ContentType = "text/plain", TtlSeconds = 3600 });
        await first.CreateAsync(new CreateStreamRequest { Path = "no-ttl", ContentType = "text/plain" });
        Assert.NotNull(await db.SortedSetScoreAsync(_prefix + ":expiries", "ttl/deleted"));

        // A delete takes the stream's entry with it, not only when it would have come due.
        Assert.Equal(DeleteStreamStatus.Deleted, await first.DeleteAsync("ttl/deleted"));
        Assert.Null(await db.SortedSetScoreAsync(_prefix + ":expiries", "ttl/deleted"));

        // As a Redis from before the index: "ttl/older" is not in it, and no node has filled it yet. The next node to
        // start fills it, once.
        await db.SortedSetRemoveAsync(_prefix + ":expiries", "ttl/older");
        await db.KeyDeleteAsync(_prefix + ":expiries:indexed");
        await Node();
        using (var wait = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            while (await db.StringGetAsync(_prefix + ":expiries:indexed") != "done")
            {
                await Task.Delay(20, wait.Token);
            }
        }

        Assert.NotNull(await db.SortedSetScoreAsync(_prefix + ":expiries", "ttl/older"));
        Assert.Null(await db.SortedSetScoreAsync(_prefix + ":expiries", "no-ttl"));
        Assert.Equal(1, await db.SortedSetLengthAsync(_prefix + ":expiries"));
    }

    [Fact]
    public async Task A_fork_whose_create_answer_was_lost_keeps_its_hold_on_the_source_so_the_source_cannot_go_under_it()
    {
        // Its own redis-server (the pause holds every client's writes), short client timeouts.
        await using var own = await RedisServer.StartAsync();
        await using var store = await RedisStreamStore.ConnectAsync(new RedisStreamStoreOptions { Configuration = own.Configuration + ",asyncTimeout=300,syncTimeout=300", KeyPrefix = _prefix });
        using var admin = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(own.Configuration + ",allowAdmin=true");
        await store.CreateAsync(new CreateStreamRequest { Path = "source", ContentType = "text/plain", InitialData = new StreamPayload("hello"u8.ToArray(), 5) });

        // Redis holds writes from the moment the fork's create script is sent: its answer is lost, and it runs when the
        // pause ends. (As in the lost-append test, a pause can cost the client its connection and the command with it;
        // then the fork was never made, and the attempt is made again.)
        var created = false;
        for (var attempt = 0; attempt < 3 && !created; attempt++)
        {
            store.BeforeCreateScript = async () =>
            {
                store.BeforeCreateScript = null;
                await admin.GetDatabase().ExecuteAsync("CLIENT", "PAUSE", "10000", "WRITE");
            };
            await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => store.CreateAsync(new CreateStreamRequest { Path = "fork", ContentType = "text/plain", ForkedFrom = "source", ForkOffset = 5 }).AsTask());
            await admin.GetDatabase().ExecuteAsync("CLIENT", "UNPAUSE");
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(6);
            while (!(created = await ForkFoundAsync()) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50);
            }
        }

        Assert.True(created, "the held-up create ran once Redis let it");

        async Task<bool> ForkFoundAsync()
        {
            try
            {
                return (await store.GetAsync("fork")).Status == StreamLookupStatus.Found;
            }
            catch (StreamStoreUnavailableException)
            {
                // A pause can cost the client its connection: it is reconnecting, and the fork is looked for again.
                return false;
            }
        }

        // The fork exists though its create was answered 503, and it still holds its source: deleted, the source is only
        // soft-deleted, and the fork reads the source's records.
        var fork = (await store.GetAsync("fork")).Stream!;
        Assert.Equal(DeleteStreamStatus.Deleted, await store.DeleteAsync("source"));
        var read = await store.ReadAsync(fork, 0, 1024);
        Assert.Equal("hello", string.Concat(read.Chunks.Select(c => System.Text.Encoding.UTF8.GetString(c.Data.Span))));

        // A create settled as abandoned refuses to run (as one held up past the settling would): the store gives its hold
        // back and creates the fork under a new id, and the source holds exactly one fork.
        var db = admin.GetDatabase();
        await store.CreateAsync(new CreateStreamRequest { Path = "source2", ContentType = "text/plain", InitialData = new StreamPayload("hi"u8.ToArray(), 2) });
        var nextId = (long)await db.StringGetAsync(_prefix + ":ids") + 1;
        await db.HashSetAsync(_prefix + ":s:{fork2}:x", nextId.ToString(System.Globalization.CultureInfo.InvariantCulture), "a");
        var fork2 = await store.CreateAsync(new CreateStreamRequest { Path = "fork2", ContentType = "text/plain", ForkedFrom = "source2", ForkOffset = 2 });
        Assert.Equal(CreateStreamStatus.Created, fork2.Status);
        Assert.NotEqual(nextId, fork2.Stream!.Id);
        Assert.Equal("1", (string?)await db.HashGetAsync(_prefix + ":s:{source2}:m", "forks"));

        // Settling a fork's create: one that ran answers "made" even after the fork was deleted (it gave its hold back
        // itself, so the hold must not be given back twice); one that never ran is marked given up, for an hour, and
        // settling it again answers the same.
        StackExchange.Redis.RedisKey[] KeysOf(string path) => [.. new[] { "m", "d", "p", "x" }.Select(k => (StackExchange.Redis.RedisKey)$"{_prefix}:s:{{{path}}}:{k}")];
        async Task<string> SettleAsync(string path, long id) => (string)(await RedisScripts.Abandon.EvaluateAsync(db, KeysOf(path), [id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))!;
        Assert.Equal("Created", await SettleAsync("fork2", fork2.Stream.Id));
        Assert.Equal(DeleteStreamStatus.Deleted, await store.DeleteAsync("fork2"));
        Assert.Equal("Created", await SettleAsync("fork2", fork2.Stream.Id));
        Assert.Equal("0", (string?)await db.HashGetAsync(_prefix + ":s:{source2}:m", "forks"));
        Assert.Equal("Abandoned", await SettleAsync("never", 12345));
        Assert.Equal("Abandoned", await SettleAsync("never", 12345));
        Assert.Equal("a", (string?)await db.HashGetAsync(KeysOf("never")[3], "12345"));
        Assert.True(await db.KeyTimeToLiveAsync(KeysOf("never")[3]) > TimeSpan.FromMinutes(59));
    }

    [Fact]
    public async Task An_append_whose_answer_was_lost_still_reaches_this_nodes_live_readers_once_redis_runs_it()
    {
        // A redis-server of its own (the pause below holds every client's writes), and short client timeouts, so an append
        // held up by Redis fails on the client while Redis still has it to run.
        await using var own = await RedisServer.StartAsync();
        await using var store = await RedisStreamStore.ConnectAsync(new RedisStreamStoreOptions { Configuration = own.Configuration + ",asyncTimeout=300,syncTimeout=300", KeyPrefix = _prefix });
        using var admin = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(own.Configuration + ",allowAdmin=true");
        var created = await store.CreateAsync(new CreateStreamRequest { Path = "lost", ContentType = "text/plain" });
        using var subscription = store.Fanout.Subscribe(created.Stream!.Id);

        // What services that act once per change (subscriptions, notifications) are shown: changes of this node's own.
        var judged = System.Threading.Channels.Channel.CreateUnbounded<LiveAppend>();
        var published = new System.Collections.Concurrent.ConcurrentQueue<LiveAppend>();
        store.Fanout.AddObserver(change =>
        {
            if (change.Path == "lost")
            {
                published.Enqueue(change);
                if (!change.IsRemote)
                {
                    judged.Writer.TryWrite(change);
                }
            }
        });

        // A live reader, as an SSE or WebSocket subscriber has, from the start: it reports each position it reaches.
        using var stop = new CancellationTokenSource();
        var positions = System.Threading.Channels.Channel.CreateUnbounded<long>();
        var follower = new StreamFollower(store, (await store.GetAsync("lost")).Stream!);
        var reader = Task.Run(async () =>
        {
            await foreach (var item in follower.FollowAsync(0, stop.Token))
            {
                positions.Writer.TryWrite(item.Position);
            }
        });

        // One append answered (Redis now has the append script, so the held one needs no second round trip), and the
        // reader has it: it is following live, with nothing of its own waiting on Redis.
        await store.AppendAsync(new AppendRequest { Path = "lost", ContentType = "text/plain", Data = new StreamPayload("a"u8.ToArray(), 1) });
        Assert.Equal("a", System.Text.Encoding.UTF8.GetString((await NextWithData(subscription)).Chunk.Data.Span));
        using (var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
        {
            while (await positions.Reader.ReadAsync(cancel.Token) < 1)
            {
            }
        }

        // Redis holds writes until the append's answer has failed to come within its timeout, so it is not acknowledged,
        // and Redis runs it when the pause is lifted. (The client checks its timeout about once a second; the pause's
        // 10 s only bounds it on a slow machine, and it is lifted as soon as the append has failed. A client that gives up on its connection during the pause takes the paused command with it,
        // never run: then nothing was written, nothing is owed to the readers, and the attempt is made again.)
        var tail = 1L;
        for (var attempt = 0; attempt < 3 && tail == 1; attempt++)
        {
            await admin.GetDatabase().ExecuteAsync("CLIENT", "PAUSE", "10000", "WRITE");
            await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => store.AppendAsync(new AppendRequest { Path = "lost", ContentType = "text/plain", Data = new StreamPayload("x"u8.ToArray(), 1) }).AsTask());
            await admin.GetDatabase().ExecuteAsync("CLIENT", "UNPAUSE");
            tail = await WaitForTailAsync(store, "lost", 2, TimeSpan.FromSeconds(6));
        }

        Assert.Equal(2, tail);

        // This node's live reader hears of it from its notification or the nudge, not at the stream's next append.
        using (var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(15)))
        {
            while (await positions.Reader.ReadAsync(cancel.Token) < 2)
            {
            }
        }

        // And it is judged here, as this node's own change, with its data: a subscription on this stream is woken by it
        // (the client's retry of it is a duplicate, which changes nothing to judge).
        using (var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(15)))
        {
            LiveAppend change;
            do
            {
                change = await judged.Reader.ReadAsync(cancel.Token);
            }
            while (change.Chunk.End < 2);

            Assert.Equal((1L, 2L, "x"), (change.Chunk.Start, change.Chunk.End, System.Text.Encoding.UTF8.GetString(change.Chunk.Data.Span)));
        }

        // An append answered within that path's window reaches this node twice, by its answer and by its notification:
        // it is judged here once, the other passed on as remote (readers skip it by offset).
        await store.AppendAsync(new AppendRequest { Path = "lost", ContentType = "text/plain", Data = new StreamPayload("y"u8.ToArray(), 1) });
        using (var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(15)))
        {
            while (published.Count(c => c.Chunk.End == 3 && c.Chunk.Start == 2) < 2)
            {
                await Task.Delay(20, cancel.Token);
            }
        }

        Assert.Single(published, c => c.Chunk.End == 3 && c.Chunk.Start == 2 && !c.IsRemote);
        Assert.Single(published, c => c.Chunk.End == 2 && c.Chunk.Start == 1 && !c.IsRemote);

        await stop.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => reader);
    }

    [Fact]
    public async Task A_delete_whose_answer_was_lost_is_judged_on_this_node_once_redis_runs_it()
    {
        // As above: a redis-server of its own, paused, and short client timeouts.
        await using var own = await RedisServer.StartAsync();
        await using var store = await RedisStreamStore.ConnectAsync(new RedisStreamStoreOptions { Configuration = own.Configuration + ",asyncTimeout=300,syncTimeout=300", KeyPrefix = _prefix });
        using var admin = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(own.Configuration + ",allowAdmin=true");

        // Every deletion of the path this node publishes, and those judged here (what services that act once per change,
        // such as subscriptions unlinking a deleted stream, are shown).
        var published = new System.Collections.Concurrent.ConcurrentQueue<LiveAppend>();
        var judged = System.Threading.Channels.Channel.CreateUnbounded<LiveAppend>();
        store.Fanout.AddObserver(change =>
        {
            if (change.Path == "lost-delete" && change.Deleted)
            {
                published.Enqueue(change);
                if (!change.IsRemote)
                {
                    judged.Writer.TryWrite(change);
                }
            }
        });

        // A delete answered is judged here at its answer. (Each wait below has 15 s of its own.)
        var first = (await store.CreateAsync(new CreateStreamRequest { Path = "lost-delete", ContentType = "text/plain" })).Stream!;
        Assert.Equal(DeleteStreamStatus.Deleted, await store.DeleteAsync("lost-delete"));
        using (var wait = new CancellationTokenSource(TimeSpan.FromSeconds(15)))
        {
            Assert.Equal(first.Id, (await judged.Reader.ReadAsync(wait.Token)).StreamId);
        }

        // One whose answer does not come within the client's timeout, which Redis runs when the pause ends: judged here
        // from its notification. (A client that gives up on its connection takes the paused command with it: then it
        // never ran, the stream is still there, and the attempt is made again.)
        StreamInfo? deleted = null;
        for (var attempt = 0; attempt < 3 && deleted is null; attempt++)
        {
            await store.CreateAsync(new CreateStreamRequest { Path = "lost-delete", ContentType = "text/plain" });
            await store.AppendAsync(new AppendRequest { Path = "lost-delete", ContentType = "text/plain", Data = new StreamPayload("a"u8.ToArray(), 1) });
            var held = (await store.GetAsync("lost-delete")).Stream!;
            await admin.GetDatabase().ExecuteAsync("CLIENT", "PAUSE", "10000", "WRITE");
            await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => store.DeleteAsync("lost-delete").AsTask());
            await admin.GetDatabase().ExecuteAsync("CLIENT", "UNPAUSE");
            var until = DateTime.UtcNow.AddSeconds(6);
            while (DateTime.UtcNow < until && (await store.GetAsync("lost-delete")).Stream?.Id == held.Id)
            {
                await Task.Delay(20);
            }

            if ((await store.GetAsync("lost-delete")).Stream?.Id != held.Id)
            {
                deleted = held;
            }
        }

        Assert.NotNull(deleted);
        using (var wait = new CancellationTokenSource(TimeSpan.FromSeconds(15)))
        {
            var change = await judged.Reader.ReadAsync(wait.Token);
            Assert.Equal((deleted.Id, deleted.TailPosition, deleted.TailPosition), (change.StreamId, change.Chunk.Start, change.Chunk.End));
        }

        // A delete answered within that path's window reaches this node twice, by its answer and by its notification:
        // it is judged here once, the other passed on as remote.
        var again = (await store.CreateAsync(new CreateStreamRequest { Path = "lost-delete", ContentType = "text/plain" })).Stream!;
        Assert.Equal(DeleteStreamStatus.Deleted, await store.DeleteAsync("lost-delete"));
        using (var wait = new CancellationTokenSource(TimeSpan.FromSeconds(15)))
        {
            while (published.Count(c => c.StreamId == again.Id) < 2)
            {
                await Task.Delay(20, wait.Token);
            }
        }

        Assert.Single(published, c => c.StreamId == again.Id && !c.IsRemote);
        Assert.Single(published, c => c.StreamId == deleted.Id && !c.IsRemote);
    }

    [Fact]
    public async Task A_create_whose_answer_was_lost_is_judged_on_this_node_once_redis_runs_it()
    {
        // As above: a redis-server of its own, paused just before the create's script, and short client timeouts.
        await using var own = await RedisServer.StartAsync();
        await using var store = await RedisStreamStore.ConnectAsync(new RedisStreamStoreOptions { Configuration = own.Configuration + ",asyncTimeout=300,syncTimeout=300", KeyPrefix = _prefix });
        using var admin = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(own.Configuration + ",allowAdmin=true");
        var judged = System.Threading.Channels.Channel.CreateUnbounded<LiveAppend>();
        store.Fanout.AddObserver(change =>
        {
            if (change.Path.StartsWith("lost-create", StringComparison.Ordinal) && !change.IsRemote && !change.Deleted)
            {
                judged.Writer.TryWrite(change);
            }
        });

        // The create (with its first data) is not acknowledged, and Redis runs it when the pause ends: judged here from
        // its notification, data and all, as services that act once per change (subscriptions, a session's turn) need.
        // (A client that gives up on its connection takes the paused command with it: then nothing was created, and the
        // attempt is made again under another path.)
        // One create answered first: Redis then has the create script, so the held one needs no second round trip.
        Assert.Equal(CreateStreamStatus.Created, (await store.CreateAsync(new CreateStreamRequest { Path = "answered-create", ContentType = "text/plain" })).Status);
        StreamInfo? created = null;
        for (var attempt = 0; attempt < 3 && created is null; attempt++)
        {
            var path = $"lost-create-{attempt}";
            store.BeforeCreateScript = () => admin.GetDatabase().ExecuteAsync("CLIENT", "PAUSE", "10000", "WRITE");
            await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => store.CreateAsync(new CreateStreamRequest { Path = path, ContentType = "text/plain", InitialData = new StreamPayload("first"u8.ToArray(), 5) }).AsTask());
            store.BeforeCreateScript = null;
            await admin.GetDatabase().ExecuteAsync("CLIENT", "UNPAUSE");
            var until = DateTime.UtcNow.AddSeconds(6);
            while (DateTime.UtcNow < until && (await store.GetAsync(path)).Stream is null)
            {
                await Task.Delay(20);
            }

            created = (await store.GetAsync(path)).Stream;
        }

        Assert.NotNull(created);
        using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        var change = await judged.Reader.ReadAsync(wait.Token);
        Assert.Equal((created.Id, 0L, 5L, "first"), (change.StreamId, change.Chunk.Start, change.Chunk.End, System.Text.Encoding.UTF8.GetString(change.Chunk.Data.Span)));
    }

    [Fact]
    public async Task Scripts_run_by_hash_are_sent_again_when_redis_no_longer_has_them()
    {
        var a = await Node();
        await a.CreateAsync(new CreateStreamRequest { Path = "flushed", ContentType = "text/plain" });
        using var admin = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.Server.Configuration + ",allowAdmin=true");
        var server = admin.GetServer(admin.GetEndPoints()[0]);
        for (var i = 1; i <= 3; i++)
        {
            // What a restart or a failover to a replica does to the script cache.
            await server.ScriptFlushAsync();
            Assert.Equal(AppendStatus.Appended, (await a.AppendAsync(new AppendRequest { Path = "flushed", Data = new StreamPayload("z"u8.ToArray(), 1) })).Status);
            var stream = (await a.GetAsync("flushed")).Stream!;
            Assert.Equal(i, stream.TailPosition);

            await server.ScriptFlushAsync();
            Assert.Equal(i, (await a.ReadAsync(stream, 0, 1 << 20)).Chunks.Sum(c => c.Data.Length));
        }

        // A lock's release is a script too: after a flush it still frees the lock.
        var held = await a.AcquireLockAsync("flushed", TimeSpan.FromSeconds(30));
        await server.ScriptFlushAsync();
        await held.DisposeAsync();
        Assert.False((await admin.GetDatabase().StringGetAsync(_prefix + ":lock:flushed")).HasValue);
    }

    [Fact]
    public async Task Acknowledged_appends_survive_a_redis_kill_and_restart()
    {
        // A separate server: this test kills it.
        await using var own = await RedisServer.StartAsync();
        var options = new RedisStreamStoreOptions { Configuration = own.Configuration + ",connectTimeout=2000,syncTimeout=2000", KeyPrefix = _prefix };
        await using var store = await RedisStreamStore.ConnectAsync(options);
        await store.CreateAsync(new CreateStreamRequest { Path = "kept", ContentType = "text/plain" });
        for (var i = 0; i < 200; i++)
        {
            Assert.Equal(AppendStatus.Appended, (await store.AppendAsync(new AppendRequest { Path = "kept", Data = new StreamPayload("y"u8.ToArray(), 1) })).Status);
        }

        await own.RestartAsync(); // SIGKILL, then start on the same append-only file
        var deadline = DateTime.UtcNow.AddSeconds(20);
        StreamLookup lookup = default;
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                lookup = await store.GetAsync("kept");
                break;
            }
            catch (StreamStoreUnavailableException)
            {
                await Task.Delay(100); // reconnecting
            }
        }

        Assert.Equal(200, lookup.Stream!.TailPosition);
        var read = await store.ReadAsync(lookup.Stream, 0, 1 << 20);
        Assert.Equal(200, read.Chunks.Sum(c => c.Data.Length));
    }

    [Fact]
    public async Task Creates_refused_at_an_owners_limit_do_not_each_read_every_stream_the_owner_holds()
    {
        const int Limit = 50;

        // A separate server: its command counters then count this test's calls alone.
        await using var own = await RedisServer.StartAsync();
        await using var store = await RedisStreamStore.ConnectAsync(new RedisStreamStoreOptions { Configuration = own.Configuration, KeyPrefix = _prefix });
        for (var i = 0; i < Limit; i++)
        {
            var created = await store.CreateAsync(new CreateStreamRequest { Path = $"mine/{i}", ContentType = "text/plain", Owner = "user:busy", MaxStreamsPerOwner = Limit });
            Assert.Equal(CreateStreamStatus.Created, created.Status);
        }

        using var admin = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(own.Configuration + ",allowAdmin=true");
        var server = admin.GetServer(admin.GetEndPoints()[0]);
        async Task<long> StreamReads() => (await server.InfoAsync("commandstats")).SelectMany(g => g)
            .Where(p => p.Key == "cmdstat_hgetall").Select(p => long.Parse(p.Value.Split(',')[0]["calls=".Length..], System.Globalization.CultureInfo.InvariantCulture)).SingleOrDefault();

        // Twenty refused creates in a row: the owner's streams are looked through for stale entries once, not each time.
        var before = await StreamReads();
        for (var i = 0; i < 20; i++)
        {
            var refused = await store.CreateAsync(new CreateStreamRequest { Path = $"more/{i}", ContentType = "text/plain", Owner = "user:busy", MaxStreamsPerOwner = Limit });
            Assert.Equal(CreateStreamStatus.OwnerLimitReached, refused.Status);
        }

        Assert.InRange(await StreamReads() - before, Limit, 2 * Limit);
    }

    [Fact]
    public async Task A_read_of_large_records_takes_about_a_reads_worth_from_redis_not_a_whole_batch()
    {
        const int Records = 24;
        const int RecordBytes = 4 * 1024 * 1024;
        const int ReadBytes = 1024 * 1024;

        // A separate server: its output counter then counts this test's reads alone.
        await using var own = await RedisServer.StartAsync();
        await using var store = await RedisStreamStore.ConnectAsync(new RedisStreamStoreOptions { Configuration = own.Configuration, KeyPrefix = _prefix });
        await store.CreateAsync(new CreateStreamRequest { Path = "large", ContentType = "application/octet-stream" });
        var record = new byte[RecordBytes];
        for (var i = 0; i < Records; i++)
        {
            record.AsSpan().Fill((byte)('a' + i));
            Assert.Equal(AppendStatus.Appended, (await store.AppendAsync(new AppendRequest { Path = "large", Data = new StreamPayload(record, RecordBytes) })).Status);
        }

        using var admin = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(own.Configuration + ",allowAdmin=true");
        var server = admin.GetServer(admin.GetEndPoints()[0]);
        async Task<long> SentBytes() => long.Parse(
            (await server.InfoAsync("stats")).SelectMany(g => g).Single(p => p.Key == "total_net_output_bytes").Value,
            System.Globalization.CultureInfo.InvariantCulture);

        // Each read of a 1 MiB budget takes one 4 MiB record; fetched 128 at a time it took all 96 MiB at once.
        var stream = (await store.GetAsync("large")).Stream!;
        long position = 0;
        for (var i = 0; i < Records; i++)
        {
            var before = await SentBytes();
            var read = await store.ReadAsync(stream, position, ReadBytes);
            var sent = await SentBytes() - before;
            var chunk = Assert.Single(read.Chunks);
            Assert.Equal((byte)('a' + i), chunk.Data.Span[0]);
            Assert.Equal(RecordBytes, chunk.Data.Length);
            Assert.InRange(sent, RecordBytes, RecordBytes + (64 * 1024));
            position = read.NextPosition;
        }

        Assert.Equal((long)Records * RecordBytes, position);
    }

    [Fact]
    public async Task With_wait_for_replicas_an_append_is_acknowledged_only_once_a_replica_has_it()
    {
        await using var primary = await RedisServer.StartAsync();
        await using var plain = await RedisStreamStore.ConnectAsync(new RedisStreamStoreOptions { Configuration = primary.Configuration, KeyPrefix = _prefix });
        await plain.CreateAsync(new CreateStreamRequest { Path = "replicated", ContentType = "text/plain" });
        var options = new RedisStreamStoreOptions { Configuration = primary.Configuration, KeyPrefix = _prefix, WaitForReplicas = 1, WaitTimeout = TimeSpan.FromSeconds(2) };
        await using var waiting = await RedisStreamStore.ConnectAsync(options);
        var request = new AppendRequest { Path = "replicated", Data = new StreamPayload("z"u8.ToArray(), 1), Producer = new ProducerStamp("w", 0, 0) };

        // No replica yet: the write is applied on the primary but not acknowledged.
        await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => waiting.AppendAsync(request).AsTask());

        // With a replica attached, the producer's retry is acknowledged, as the duplicate it is.
        await using var replica = await RedisServer.StartAsync("--replicaof", "127.0.0.1", primary.Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var deadline = DateTime.UtcNow.AddSeconds(20);
        AppendResult retried;
        while (true)
        {
            try
            {
                retried = await waiting.AppendAsync(request);
                break;
            }
            catch (StreamStoreUnavailableException) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(100); // the replica is still syncing
            }
        }

        Assert.Equal(AppendStatus.Duplicate, retried.Status);
        Assert.Equal(AppendStatus.Appended, (await waiting.AppendAsync(request with { Producer = new ProducerStamp("w", 0, 1) })).Status);
        Assert.Equal(2, (await plain.GetAsync("replicated")).Stream!.TailPosition);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var store in _stores)
        {
            await store.DisposeAsync();
        }
    }
}

/// <summary>The store's background work and its commits outlast loggers and telemetry listeners that throw.</summary>
public sealed class RedisResilienceTests(RedisFixture redis)
{
    // Listeners are process-wide: the ones here throw only in this flow, so that other tests running beside them are
    // left alone.
    private static readonly AsyncLocal<bool> s_throwing = new();

    // Every wait is bounded: background work that stopped would leave it waiting for ever.
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private readonly string _prefix = "resilience-" + Guid.NewGuid().ToString("N")[..12];

    [Fact]
    public async Task A_sweep_that_fails_and_is_logged_through_a_logger_that_throws_still_leaves_the_next_tick_its_sweep()
    {
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var logger = new ThrowingLogger();
        await using var store = await RedisStreamStore.ConnectAsync(
            new RedisStreamStoreOptions { Configuration = redis.Server.Configuration, KeyPrefix = _prefix, ExpirySweepInterval = TimeSpan.FromSeconds(5) }, clock, logger: logger);
        var failed = 0;
        store.BeforeSweep = () => Interlocked.Increment(ref failed) == 1 ? throw new InvalidOperationException("A sweep that fails.") : Task.CompletedTask;
        await store.CreateAsync(new CreateStreamRequest { Path = "lapse", ContentType = "text/plain", TtlSeconds = 10 });
        using var redisClient = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.Server.Configuration);
        var db = redisClient.GetDatabase();

        // Past the TTL; the first pass fails and its log entry throws. The ticks after it still sweep.
        clock.Advance(TimeSpan.FromSeconds(11));
        using var wait = new CancellationTokenSource(Timeout);
        while (await db.KeyExistsAsync(_prefix + ":s:{lapse}:m"))
        {
            await Task.Delay(20, wait.Token);
            if (Volatile.Read(ref failed) >= 1)
            {
                clock.Advance(TimeSpan.FromSeconds(5));
            }
        }

        Assert.True(logger.Thrown >= 1, "the failed sweep was to be logged through the logger that throws");
        Assert.Equal(StreamLookupStatus.NotFound, (await store.GetAsync("lapse")).Status);
    }

    [Fact]
    public async Task Readers_are_cut_after_the_subscription_came_back_even_when_the_unproven_probe_is_logged_through_a_logger_that_throws()
    {
        // A Redis of its own: dropping every subscription connection of the shared one would cut other tests' readers.
        await using var own = await RedisServer.StartAsync();
        var logger = new ThrowingLogger();
        await using var store = await RedisStreamStore.ConnectAsync(new RedisStreamStoreOptions { Configuration = own.Configuration, KeyPrefix = _prefix }, logger: logger);
        store.BeforeProbe = () => throw new InvalidOperationException("A probe that cannot be sent.");
        var created = await store.CreateAsync(new CreateStreamRequest { Path = "resubscribed", ContentType = "text/plain" });
        var reader = store.Fanout.Subscribe(created.Stream!.Id);

        using var admin = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(own.Configuration + ",allowAdmin=true");
        await admin.GetDatabase().ExecuteAsync("CLIENT", "KILL", "TYPE", "pubsub");

        // The probe fails, its log entry throws, and the reader is cut all the same (it would otherwise wait live for
        // changes the lost subscription never passed on).
        while (await reader.Reader.WaitToReadAsync().AsTask().WaitAsync(Timeout))
        {
            while (reader.Reader.TryRead(out _))
            {
            }
        }

        Assert.True(reader.FellBehind);
        Assert.True(logger.Thrown >= 1, "the unproven subscription was to be logged through the logger that throws");
        reader.Dispose();
    }

    [Fact]
    public async Task An_append_redis_committed_is_answered_as_appended_when_a_metrics_or_trace_listener_throws()
    {
        var thrown = 0;
        void ThrowIfAsked()
        {
            if (s_throwing.Value)
            {
                Interlocked.Increment(ref thrown);
                throw new InvalidOperationException("A listener that throws.");
            }
        }

        using var meters = new System.Diagnostics.Metrics.MeterListener();
        meters.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "DurableSessions.Storage.Redis")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        meters.SetMeasurementEventCallback<double>((_, _, _, _) => ThrowIfAsked());
        meters.Start();
        using var traces = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = source => source.Name == "DurableSessions.Storage.Redis",
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllData,
            ActivityStopped = _ => ThrowIfAsked(),
        };
        System.Diagnostics.ActivitySource.AddActivityListener(traces);

        await using var store = await RedisStreamStore.ConnectAsync(new RedisStreamStoreOptions { Configuration = redis.Server.Configuration, KeyPrefix = _prefix });
        await store.CreateAsync(new CreateStreamRequest { Path = "traced", ContentType = "text/plain" });
        AppendResult appended;
        s_throwing.Value = true;
        try
        {
            appended = await store.AppendAsync(new AppendRequest { Path = "traced", ContentType = "text/plain", Data = new StreamPayload("kept"u8.ToArray(), 4), Producer = new ProducerStamp("p", 0, 0) });
        }
        finally
        {
            s_throwing.Value = false;
        }

        Assert.Equal((AppendStatus.Appended, 4L), (appended.Status, appended.TailPosition));
        Assert.True(Volatile.Read(ref thrown) >= 2, $"the listeners threw {thrown} times");
        var read = await store.ReadAsync((await store.GetAsync("traced")).Stream!, 0, 1024);
        Assert.Equal("kept", System.Text.Encoding.UTF8.GetString(read.Chunks.Single().Data.Span));
    }

    /// <summary>Throws on every warning or worse, and counts how often it did.</summary>
    private sealed class ThrowingLogger : Microsoft.Extensions.Logging.ILogger<RedisStreamStore>
    {
        private int _thrown;

        public int Thrown => Volatile.Read(ref _thrown);

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;

        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel >= Microsoft.Extensions.Logging.LogLevel.Warning)
            {
                Interlocked.Increment(ref _thrown);
                throw new InvalidOperationException("A logger that throws.");
            }
        }
    }
}
