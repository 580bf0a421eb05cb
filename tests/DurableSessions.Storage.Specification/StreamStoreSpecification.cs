using System.Text;
using DurableSessions.Live;
using Microsoft.Extensions.Time.Testing;

namespace DurableSessions.Storage.Specification;

/// <summary>
/// The storage specification: every backend derives this class and must pass every test unchanged, so that all stores
/// have identical semantics (ordering, ranges, producer checks, close, TTL, forks, wake-ups, durability across reopen).
/// </summary>
public abstract class StreamStoreSpecification : IAsyncLifetime
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private readonly List<StreamStore> _opened = [];

    protected FakeTimeProvider Clock { get; } = new(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));

    /// <summary>Opens the backend under test, over the same underlying storage each time it is called within a test.</summary>
    protected abstract ValueTask<StreamStore> OpenStoreAsync(TimeProvider time);

    public virtual ValueTask InitializeAsync() => ValueTask.CompletedTask;

    public virtual async ValueTask DisposeAsync()
    {
        foreach (var store in _opened)
        {
            await store.DisposeAsync();
        }

        GC.SuppressFinalize(this);
    }

    private async Task<StreamStore> Open()
    {
        var store = await OpenStoreAsync(Clock);
        _opened.Add(store);
        return store;
    }

    private static StreamPayload Bytes(string text) => new(Encoding.UTF8.GetBytes(text), Encoding.UTF8.GetByteCount(text));

    private static StreamPayload Json(string body)
    {
        Assert.True(JsonFraming.TryFrame(Encoding.UTF8.GetBytes(body), allowEmptyArray: true, out var payload, out var error), error);
        return payload;
    }

    private static async Task<string> ReadAll(StreamStore store, string path, long from = 0, int maxBytes = 1 << 20)
    {
        var info = (await store.GetAsync(path)).Stream!;
        var text = new StringBuilder();
        while (from < info.TailPosition)
        {
            var read = await store.ReadAsync(info, from, maxBytes);
            Assert.True(read.NextPosition > from, "a read below the tail must make progress");
            foreach (var chunk in read.Chunks)
            {
                if (info.IsJson && text.Length > 0)
                {
                    text.Append(',');
                }

                text.Append(Encoding.UTF8.GetString(chunk.Data.Span));
            }

            from = read.NextPosition;
        }

        return info.IsJson ? "[" + text + "]" : text.ToString();
    }

    private static Task<AppendResult> Append(StreamStore store, string path, string text, ProducerStamp? producer = null, string? seq = null, bool close = false)
        => store.AppendAsync(new AppendRequest { Path = path, ContentType = "text/plain", Data = text.Length == 0 ? default : Bytes(text), Producer = producer, StreamSeq = seq, Close = close }).AsTask();

    private static Task<CreateStreamResult> Create(StreamStore store, string path, string contentType = "text/plain", string? initial = null, long? ttl = null, DateTimeOffset? expiresAt = null, string? forkedFrom = null, long? forkOffset = null, long subOffset = 0)
        => store.CreateAsync(new CreateStreamRequest
        {
            Path = path,
            ContentType = contentType,
            InitialData = initial is null ? default : contentType == "application/json" ? Json(initial) : Bytes(initial),
            TtlSeconds = ttl,
            ExpiresAt = expiresAt,
            ForkedFrom = forkedFrom,
            ForkOffset = forkOffset,
            ForkSubOffset = subOffset,
        }).AsTask();

    [Fact]
    public async Task Create_is_idempotent_for_the_same_configuration_and_conflicts_otherwise()
    {
        var store = await Open();
        Assert.Equal(CreateStreamStatus.Created, (await Create(store, "a/b", ttl: 60)).Status);
        Assert.Equal(CreateStreamStatus.AlreadyExists, (await Create(store, "a/b", "TEXT/PLAIN", ttl: 60)).Status);
        Assert.Equal(CreateStreamStatus.Conflict, (await Create(store, "a/b", "application/json", ttl: 60)).Status);
        Assert.Equal(CreateStreamStatus.Conflict, (await Create(store, "a/b", ttl: 61)).Status);
        var info = (await store.GetAsync("a/b")).Stream!;
        Assert.Equal("text/plain", info.ContentType);
        Assert.Equal(60, info.TtlSeconds);
    }

    [Fact]
    public async Task Paths_that_differ_are_different_streams_whatever_characters_they_hold()
    {
        // A store may name a path's storage by a digest of it (the Redis store does for paths with braces): no other path
        // may reach the same storage, such as one spelled as that digest.
        var store = await Open();
        const string braced = "tenants/{acme}/inbox";
        var digest = "#" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(braced)));
        Assert.Equal(CreateStreamStatus.Created, (await Create(store, braced, initial: "secret")).Status);
        Assert.Equal(StreamLookupStatus.NotFound, (await store.GetAsync(digest)).Status);
        Assert.Equal(AppendStatus.NotFound, (await Append(store, digest, "forged")).Status);
        Assert.Equal(CreateStreamStatus.Created, (await Create(store, digest, initial: "own")).Status);
        Assert.Equal("own", await ReadAll(store, digest));
        Assert.Equal("secret", await ReadAll(store, braced));
        foreach (var path in new[] { "{a}", "{a", "a}", "#{a}", "#a", "a/#b" })
        {
            Assert.Equal(CreateStreamStatus.Created, (await Create(store, path, initial: path)).Status);
        }

        foreach (var path in new[] { "{a}", "{a", "a}", "#{a}", "#a", "a/#b" })
        {
            Assert.Equal(path, await ReadAll(store, path));
        }
    }

    [Fact]
    public async Task Appends_get_strictly_increasing_offsets_and_read_back_in_order()
    {
        var store = await Open();
        await Create(store, "s", initial: "zero-");
        var tails = new List<long>();
        for (var i = 0; i < 20; i++)
        {
            var result = await Append(store, "s", $"m{i};");
            Assert.Equal(AppendStatus.Appended, result.Status);
            tails.Add(result.TailPosition);
        }

        Assert.Equal(tails.Order().Distinct(), tails);
        var expected = "zero-" + string.Concat(Enumerable.Range(0, 20).Select(i => $"m{i};"));
        Assert.Equal(expected, await ReadAll(store, "s"));
        Assert.Equal(expected[10..], await ReadAll(store, "s", from: 10));
        Assert.Equal(expected, await ReadAll(store, "s", maxBytes: 7));

        // From inside a record, with a budget its sliced first record does not fill: the read goes on past it.
        Assert.Equal(expected[10..], await ReadAll(store, "s", from: 10, maxBytes: 5));
    }

    [Fact]
    public async Task Reads_are_bounded_by_the_snapshot_tail_they_were_given()
    {
        var store = await Open();
        await Create(store, "snap", initial: "abc");
        var snapshot = (await store.GetAsync("snap")).Stream!;
        await Append(store, "snap", "def");
        var read = await store.ReadAsync(snapshot, 0, 1 << 20);
        Assert.Equal(3, read.NextPosition);
        Assert.Equal("abc", string.Concat(read.Chunks.Select(c => Encoding.UTF8.GetString(c.Data.Span))));
    }

    [Fact]
    public async Task Json_streams_keep_message_boundaries()
    {
        var store = await Open();
        await Create(store, "j", "application/json", "[{\"n\":1}]");
        await store.AppendAsync(new AppendRequest { Path = "j", ContentType = "application/json", Data = Json("[{\"n\":2},[3],null]") });
        var info = (await store.GetAsync("j")).Stream!;
        Assert.Equal(4, info.TailPosition);
        Assert.Equal("[{\"n\":1},{\"n\":2},[3],null]", await ReadAll(store, "j"));
        Assert.Equal("[[3],null]", await ReadAll(store, "j", from: 2));
    }

    [Fact]
    public async Task Idempotent_producers_deduplicate_fence_and_detect_gaps()
    {
        var store = await Open();
        await Create(store, "p");
        Assert.Equal(AppendStatus.Appended, (await Append(store, "p", "a", new("w", 0, 0))).Status);
        Assert.Equal(AppendStatus.Appended, (await Append(store, "p", "b", new("w", 0, 1))).Status);
        var duplicate = await Append(store, "p", "b", new("w", 0, 1));
        Assert.Equal(AppendStatus.Duplicate, duplicate.Status);
        Assert.Equal(1, duplicate.ProducerSeq);
        var gap = await Append(store, "p", "d", new("w", 0, 3));
        Assert.Equal(AppendStatus.ProducerSeqGap, gap.Status);
        Assert.Equal(2, gap.ProducerSeq);
        Assert.Equal(AppendStatus.Appended, (await Append(store, "p", "c", new("w", 1, 0))).Status);
        var stale = await Append(store, "p", "x", new("w", 0, 2));
        Assert.Equal(AppendStatus.StaleEpoch, stale.Status);
        Assert.Equal(1, stale.ProducerEpoch);
        Assert.Equal("abc", await ReadAll(store, "p"));
    }

    [Fact]
    public async Task Appends_taken_in_order_apply_in_list_order_after_earlier_ones_and_answer_as_one_by_one()
    {
        var store = await Open();
        await Create(store, "o1");
        await Create(store, "o2");
        static AppendRequest Request(string path, string text, long seq) => new() { Path = path, ContentType = "text/plain", Data = Bytes(text), Producer = new("w", 0, seq) };

        var first = new[] { Request("o1", "a", 0), Request("o2", "x", 0), Request("o1", "b", 1) };
        var second = new[] { Request("o1", "c", 2), Request("missing", "m", 0), Request("o2", "y", 2), Request("o2", "y", 1), Request("o1", "b", 1) };
        if (!store.TakesAppendsInOrder)
        {
            // A store that does not take them so takes none.
            Assert.False(store.TryAppendInOrder(first, out _));
            Assert.Equal(0, (await store.GetAsync("o1")).Stream!.TailPosition);
            return;
        }

        // The second list is handed over before the first is answered: its appends still follow the first's.
        Assert.True(store.TryAppendInOrder(first, out var firstResults));
        Assert.True(store.TryAppendInOrder(second, out var secondResults));
        var one = await firstResults.WaitAsync(Timeout);
        var two = await secondResults.WaitAsync(Timeout);
        Assert.Equal([AppendStatus.Appended, AppendStatus.Appended, AppendStatus.Appended], one.Select(r => r.Status));
        Assert.Equal(
            [AppendStatus.Appended, AppendStatus.NotFound, AppendStatus.ProducerSeqGap, AppendStatus.Appended, AppendStatus.Duplicate],
            two.Select(r => r.Status));
        Assert.Equal([1L, 2L, 3L], new[] { one[0].TailPosition, one[2].TailPosition, two[0].TailPosition });
        Assert.Equal(1, two[2].ProducerSeq);
        Assert.Equal("abc", await ReadAll(store, "o1"));
        Assert.Equal("xy", await ReadAll(store, "o2"));
    }

    [Fact]
    public async Task Stream_seq_must_increase_bytewise()
    {
        var store = await Open();
        await Create(store, "q");
        Assert.Equal(AppendStatus.Appended, (await Append(store, "q", "1", seq: "09")).Status);
        Assert.Equal(AppendStatus.Appended, (await Append(store, "q", "2", seq: "10")).Status);
        Assert.Equal(AppendStatus.SequenceConflict, (await Append(store, "q", "3", seq: "10")).Status);
        Assert.Equal(AppendStatus.SequenceConflict, (await Append(store, "q", "3", seq: "1")).Status);
        Assert.Equal(AppendStatus.Appended, (await Append(store, "q", "3", seq: "9")).Status);

        // Past U+FFFF too: in UTF-8 (and code point) order U+1F600 follows U+FF01, though its UTF-16 surrogates sort before it.
        Assert.Equal(AppendStatus.Appended, (await Append(store, "q", "4", seq: "\uFF01")).Status);
        Assert.Equal(AppendStatus.Appended, (await Append(store, "q", "5", seq: "\U0001F600")).Status);
        Assert.Equal(AppendStatus.SequenceConflict, (await Append(store, "q", "6", seq: "\uFFEE")).Status);
        Assert.Equal("12345", await ReadAll(store, "q"));
    }

    [Fact]
    public async Task An_append_expecting_a_tail_is_refused_once_the_tail_moved()
    {
        var store = await Open();
        await Create(store, "t", initial: "ab");
        var refused = await store.AppendAsync(new AppendRequest { Path = "t", ContentType = "text/plain", Data = Bytes("x"), ExpectedTail = 1 });
        Assert.Equal(AppendStatus.TailMoved, refused.Status);
        Assert.Equal(2, refused.TailPosition);
        var accepted = await store.AppendAsync(new AppendRequest { Path = "t", ContentType = "text/plain", Data = Bytes("c"), ExpectedTail = 2 });
        Assert.Equal(AppendStatus.Appended, accepted.Status);

        // A producer's retry is recognised as a duplicate before the tail is compared.
        Assert.Equal(AppendStatus.Appended, (await store.AppendAsync(new AppendRequest { Path = "t", ContentType = "text/plain", Data = Bytes("d"), Producer = new("w", 0, 0), ExpectedTail = 3 })).Status);
        Assert.Equal(AppendStatus.Duplicate, (await store.AppendAsync(new AppendRequest { Path = "t", ContentType = "text/plain", Data = Bytes("d"), Producer = new("w", 0, 0), ExpectedTail = 3 })).Status);
        Assert.Equal("abcd", await ReadAll(store, "t"));
    }

    [Fact]
    public async Task An_append_expecting_a_stream_is_refused_by_another_stream_created_at_its_path()
    {
        var store = await Open();
        await Create(store, "inc", initial: "ab");
        var first = (await store.GetAsync("inc")).Stream!;
        Assert.Equal(AppendStatus.Appended, (await store.AppendAsync(new AppendRequest { Path = "inc", ContentType = "text/plain", Data = Bytes("c"), ExpectedStreamId = first.Id, ExpectedTail = 2 })).Status);

        // Deleted and created again with the same tail: only the stream's identity tells them apart.
        Assert.Equal(DeleteStreamStatus.Deleted, await store.DeleteAsync("inc"));
        await Create(store, "inc", initial: "xyz");
        var second = (await store.GetAsync("inc")).Stream!;
        Assert.NotEqual(first.Id, second.Id);
        var refused = await store.AppendAsync(new AppendRequest { Path = "inc", ContentType = "text/plain", Data = Bytes("!"), ExpectedStreamId = first.Id, ExpectedTail = 3 });
        Assert.Equal(AppendStatus.TailMoved, refused.Status);
        Assert.Equal(AppendStatus.Appended, (await store.AppendAsync(new AppendRequest { Path = "inc", ContentType = "text/plain", Data = Bytes("!"), ExpectedStreamId = second.Id, ExpectedTail = 3 })).Status);
        Assert.Equal("xyz!", await ReadAll(store, "inc"));
    }

    [Fact]
    public async Task An_append_expecting_a_closed_stream_gets_its_closed_answers_and_is_refused_by_a_stream_created_in_its_place()
    {
        var store = await Open();
        await Create(store, "shut", initial: "ab");
        var closed = (await store.GetAsync("shut")).Stream!;
        Assert.Equal(AppendStatus.Appended, (await store.AppendAsync(new AppendRequest { Path = "shut", ContentType = "text/plain", Data = Bytes("c"), Close = true, Producer = new("w", 0, 0) })).Status);

        // The stream it expects: a later append is refused as closed, and the closing request's retry is a duplicate.
        Assert.Equal(AppendStatus.StreamClosed, (await store.AppendAsync(new AppendRequest { Path = "shut", ContentType = "text/plain", Data = Bytes("x"), ExpectedStreamId = closed.Id })).Status);
        Assert.Equal(AppendStatus.Duplicate, (await store.AppendAsync(new AppendRequest { Path = "shut", ContentType = "text/plain", Data = Bytes("c"), Close = true, Producer = new("w", 0, 0), ExpectedStreamId = closed.Id })).Status);

        // Another stream at its path, open: the append that expected the closed one writes nothing there.
        Assert.Equal(DeleteStreamStatus.Deleted, await store.DeleteAsync("shut"));
        await Create(store, "shut", initial: "xyz");
        Assert.Equal(AppendStatus.TailMoved, (await store.AppendAsync(new AppendRequest { Path = "shut", ContentType = "text/plain", Data = Bytes("!"), ExpectedStreamId = closed.Id })).Status);
        Assert.Equal("xyz", await ReadAll(store, "shut"));
    }

    [Fact]
    public async Task Close_is_durable_monotonic_and_rejects_later_appends()
    {
        var store = await Open();
        await Create(store, "c", initial: "x");
        var closed = await Append(store, "c", "final", new("w", 0, 0), close: true);
        Assert.Equal(AppendStatus.Appended, closed.Status);
        Assert.True(closed.Closed);
        Assert.Equal(AppendStatus.Duplicate, (await Append(store, "c", "other body", new("w", 0, 0), close: true)).Status);
        Assert.Equal(AppendStatus.AlreadyClosed, (await Append(store, "c", string.Empty, close: true)).Status);
        var rejected = await Append(store, "c", "late");
        Assert.Equal(AppendStatus.StreamClosed, rejected.Status);
        Assert.Equal(closed.TailPosition, rejected.TailPosition);
        Assert.Equal("xfinal", await ReadAll(store, "c"));
        await store.DisposeAsync();
        _opened.Remove(store);

        var reopened = await Open();
        Assert.True((await reopened.GetAsync("c")).Stream!.Closed);
    }

    [Fact]
    public async Task Sliding_ttl_expires_idle_streams_and_reads_refresh_it()
    {
        var store = await Open();
        await Create(store, "ttl", initial: "data", ttl: 10);
        Clock.Advance(TimeSpan.FromSeconds(8));
        var info = (await store.GetAsync("ttl")).Stream!;
        await store.TouchAsync(info);
        Clock.Advance(TimeSpan.FromSeconds(8));
        Assert.Equal(StreamLookupStatus.Found, (await store.GetAsync("ttl")).Status);
        Clock.Advance(TimeSpan.FromSeconds(3));
        Assert.Equal(StreamLookupStatus.NotFound, (await store.GetAsync("ttl")).Status);
        Assert.Equal(AppendStatus.NotFound, (await Append(store, "ttl", "late")).Status);
        Assert.Equal(CreateStreamStatus.Created, (await Create(store, "ttl", "application/json")).Status);
    }

    [Fact]
    public async Task A_sliding_ttl_counts_on_from_its_last_read_across_a_clean_reopen()
    {
        var store = await Open();
        await Create(store, "ttl-reopened", initial: "data", ttl: 10);
        Clock.Advance(TimeSpan.FromSeconds(4));
        await store.TouchAsync((await store.GetAsync("ttl-reopened")).Stream!);
        await store.DisposeAsync();
        _opened.Remove(store);

        // Closed for longer than the TTL leaves after that read, it would never expire if each start began it again.
        Clock.Advance(TimeSpan.FromSeconds(8));
        store = await Open();
        Assert.Equal(StreamLookupStatus.Found, (await store.GetAsync("ttl-reopened")).Status);
        Clock.Advance(TimeSpan.FromSeconds(3));
        Assert.Equal(StreamLookupStatus.NotFound, (await store.GetAsync("ttl-reopened")).Status);
    }

    [Fact]
    public async Task A_create_past_the_stream_limit_is_refused_and_existing_streams_still_answer()
    {
        var store = await Open();
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(CreateStreamStatus.Created, (await store.CreateAsync(new CreateStreamRequest { Path = $"limit/{i}", ContentType = "text/plain", MaxStreams = 3 })).Status);
        }

        Assert.Equal(CreateStreamStatus.LimitReached, (await store.CreateAsync(new CreateStreamRequest { Path = "limit/3", ContentType = "text/plain", MaxStreams = 3 })).Status);
        Assert.Equal(StreamLookupStatus.NotFound, (await store.GetAsync("limit/3")).Status);
        Assert.Equal(CreateStreamStatus.AlreadyExists, (await store.CreateAsync(new CreateStreamRequest { Path = "limit/0", ContentType = "text/plain", MaxStreams = 3 })).Status);

        Assert.Equal(DeleteStreamStatus.Deleted, await store.DeleteAsync("limit/1"));
        Assert.Equal(CreateStreamStatus.Created, (await store.CreateAsync(new CreateStreamRequest { Path = "limit/3", ContentType = "text/plain", MaxStreams = 3 })).Status);
    }

    [Fact]
    public async Task Streams_that_expired_unread_no_longer_count_toward_the_stream_limit()
    {
        var store = await Open();
        Task<CreateStreamResult> Create(string path, long? ttl) => store.CreateAsync(new CreateStreamRequest { Path = path, ContentType = "text/plain", TtlSeconds = ttl, MaxStreams = 3 }).AsTask();
        Assert.Equal(CreateStreamStatus.Created, (await Create("lapse/0", 10)).Status);
        Assert.Equal(CreateStreamStatus.Created, (await Create("lapse/1", 10)).Status);
        Assert.Equal(CreateStreamStatus.Created, (await Create("lapse/kept", null)).Status);
        Assert.Equal(CreateStreamStatus.LimitReached, (await Create("lapse/3", null)).Status);

        // Nobody reads the two with a TTL after it runs out: they stop counting, the one without a TTL still counts.
        Clock.Advance(TimeSpan.FromSeconds(11));
        Assert.Equal(CreateStreamStatus.Created, (await Create("lapse/3", null)).Status);
        Assert.Equal(CreateStreamStatus.Created, (await Create("lapse/4", null)).Status);
        Assert.Equal(CreateStreamStatus.LimitReached, (await Create("lapse/5", null)).Status);
        Assert.Equal(StreamLookupStatus.NotFound, (await store.GetAsync("lapse/0")).Status);
        Assert.Equal(StreamLookupStatus.Found, (await store.GetAsync("lapse/kept")).Status);
    }

    [Fact]
    public async Task A_create_past_its_owners_limit_is_refused_and_the_count_survives_reopening()
    {
        var store = await Open();
        Task<CreateStreamResult> Create(string path, string owner) => store.CreateAsync(new CreateStreamRequest { Path = path, ContentType = "text/plain", Owner = owner, MaxStreamsPerOwner = 2 }).AsTask();
        Assert.Equal(CreateStreamStatus.Created, (await Create("owned/a1", "alice")).Status);
        Assert.Equal(CreateStreamStatus.Created, (await Create("owned/a2", "alice")).Status);
        Assert.Equal(CreateStreamStatus.OwnerLimitReached, (await Create("owned/a3", "alice")).Status);
        Assert.Equal(CreateStreamStatus.Created, (await Create("owned/b1", "bob")).Status);
        Assert.Equal("alice", (await store.GetAsync("owned/a1")).Stream!.Owner);

        Assert.Equal(DeleteStreamStatus.Deleted, await store.DeleteAsync("owned/a1"));
        Assert.Equal(CreateStreamStatus.Created, (await Create("owned/a3", "alice")).Status);

        await store.DisposeAsync();
        _opened.Remove(store);
        store = await Open();
        Assert.Equal(CreateStreamStatus.OwnerLimitReached, (await Create("owned/a4", "alice")).Status);
        Assert.Equal(CreateStreamStatus.Created, (await Create("owned/b2", "bob")).Status);
    }

    [Fact]
    public async Task A_ttl_too_long_for_any_date_never_breaks_expiry()
    {
        var store = await Open();
        Assert.Equal(CreateStreamStatus.Created, (await Create(store, "forever", initial: "data", ttl: long.MaxValue)).Status);
        Clock.Advance(TimeSpan.FromDays(3650));
        var info = (await store.GetAsync("forever")).Stream!;
        await store.TouchAsync(info);
        Clock.Advance(TimeSpan.FromDays(3650));
        Assert.Equal(AppendStatus.Appended, (await Append(store, "forever", "more")).Status);
        Assert.Equal("datamore", await ReadAll(store, "forever"));
    }

    [Fact]
    public async Task A_source_that_expired_with_living_forks_is_gone_and_keeps_its_path()
    {
        var store = await Open();
        await Create(store, "origin", ttl: 10);
        Assert.Equal(CreateStreamStatus.Created, (await Create(store, "branch", contentType: "text/plain", ttl: 3600, forkedFrom: "origin")).Status);
        Clock.Advance(TimeSpan.FromSeconds(11));

        Assert.Equal(AppendStatus.Gone, (await Append(store, "origin", "late")).Status);
        Assert.Equal(CreateStreamStatus.Conflict, (await Create(store, "origin")).Status);

        // The store goes on serving everything else.
        Assert.Equal(AppendStatus.Appended, (await Append(store, "branch", "more")).Status);
        Assert.Equal(CreateStreamStatus.Created, (await Create(store, "elsewhere")).Status);
    }

    [Fact]
    public async Task Absolute_expiry_is_not_extended_by_access()
    {
        var store = await Open();
        await Create(store, "abs", initial: "data", expiresAt: Clock.GetUtcNow().AddSeconds(5));
        Clock.Advance(TimeSpan.FromSeconds(4));
        Assert.Equal(AppendStatus.Appended, (await Append(store, "abs", "more")).Status);
        Clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(StreamLookupStatus.NotFound, (await store.GetAsync("abs")).Status);
    }

    [Fact]
    public async Task Forks_inherit_data_up_to_the_fork_point_and_diverge()
    {
        var store = await Open();
        await Create(store, "src", initial: "hello");
        await Append(store, "src", " world");
        Assert.Equal(CreateStreamStatus.Created, (await Create(store, "fork", forkedFrom: "src", forkOffset: 0, subOffset: 3)).Status);
        await Append(store, "fork", "LO");
        await Append(store, "src", "!");
        Assert.Equal("helLO", await ReadAll(store, "fork"));
        Assert.Equal("hello world!", await ReadAll(store, "src"));

        Assert.Equal(CreateStreamStatus.Created, (await Create(store, "fork2", forkedFrom: "fork", forkOffset: 0, subOffset: 2)).Status);
        Assert.Equal("he", await ReadAll(store, "fork2"));
        Assert.Equal(CreateStreamStatus.InvalidForkOffset, (await Create(store, "bad", forkedFrom: "src", forkOffset: 999)).Status);
        Assert.Equal(CreateStreamStatus.SourceNotFound, (await Create(store, "bad", forkedFrom: "missing")).Status);
        Assert.Equal(CreateStreamStatus.ContentTypeMismatch, (await Create(store, "bad", "application/json", forkedFrom: "src")).Status);
    }

    [Fact]
    public async Task Trimming_removes_whole_appends_before_a_position_and_reads_from_before_it_are_gone()
    {
        var store = await Open();
        await Create(store, "trim", initial: "ab");
        await Append(store, "trim", "cd");
        await Append(store, "trim", "ef");
        var before = (await store.GetAsync("trim")).Stream!;
        Assert.Equal(0, before.RetainedFrom);

        // Only whole appends go: 3 lies inside "cd", so the cut is after "ab".
        Assert.Equal(new TrimResult(TrimStatus.Trimmed, 2), await store.TrimAsync("trim", 3));
        var after = (await store.GetAsync("trim")).Stream!;
        Assert.Equal(2, after.RetainedFrom);
        Assert.Equal(6, after.TailPosition);
        Assert.Equal(2, (await store.ReadAsync(after, 0, 1 << 20)).GoneBefore);
        Assert.Equal(2, (await store.ReadAsync(after, 1, 1 << 20)).GoneBefore);
        Assert.Equal(2, (await store.ReadAsync(before, 0, 1 << 20)).GoneBefore);
        Assert.Equal("cdef", await ReadAll(store, "trim", from: 2));

        // Never backward; up to the tail at most, and the stream goes on.
        Assert.Equal(new TrimResult(TrimStatus.Trimmed, 2), await store.TrimAsync("trim", 1));
        Assert.Equal(new TrimResult(TrimStatus.Trimmed, 6), await store.TrimAsync("trim", 1_000));
        Assert.Equal(6, (await store.ReadAsync(before, 2, 1 << 20)).GoneBefore);
        Assert.Equal(6, (await store.ReadAsync(after, 4, 1 << 20)).GoneBefore);
        Assert.Equal(AppendStatus.Appended, (await Append(store, "trim", "gh")).Status);
        Assert.Equal("gh", await ReadAll(store, "trim", from: 6));
        Assert.Equal(6, (await store.ReadAsync((await store.GetAsync("trim")).Stream!, 4, 1 << 20)).GoneBefore);

        // JSON streams keep message boundaries: positions count messages.
        await Create(store, "trim-json", "application/json", initial: "[1,2,3]");
        Assert.Equal(new TrimResult(TrimStatus.Trimmed, 0), await store.TrimAsync("trim-json", 2));
        Assert.Equal(AppendStatus.Appended, (await store.AppendAsync(new AppendRequest { Path = "trim-json", ContentType = "application/json", Data = Json("4") })).Status);
        Assert.Equal(new TrimResult(TrimStatus.Trimmed, 3), await store.TrimAsync("trim-json", 3));
        Assert.Equal("[4]", await ReadAll(store, "trim-json", from: 3));

        Assert.Equal(TrimStatus.NotFound, (await store.TrimAsync("trim-missing", 1)).Status);

        // Survives reopening.
        await store.DisposeAsync();
        _opened.Remove(store);
        var reopened = await Open();
        var reloaded = (await reopened.GetAsync("trim")).Stream!;
        Assert.Equal(6, reloaded.RetainedFrom);
        Assert.Equal(8, reloaded.TailPosition);
        Assert.Equal(6, (await reopened.ReadAsync(reloaded, 0, 1 << 20)).GoneBefore);
        Assert.Equal("gh", await ReadAll(reopened, "trim", from: 6));
        Assert.Equal("[4]", await ReadAll(reopened, "trim-json", from: 3));
    }

    [Fact]
    public async Task A_stream_with_forks_is_not_trimmed_and_a_fork_cannot_start_before_what_is_retained()
    {
        var store = await Open();
        await Create(store, "trim-src", initial: "ab");
        await Append(store, "trim-src", "cd");
        await Create(store, "trim-fork", forkedFrom: "trim-src", forkOffset: 0, subOffset: 2);
        Assert.Equal(new TrimResult(TrimStatus.HasForks, 0), await store.TrimAsync("trim-src", 4));
        Assert.Equal("abcd", await ReadAll(store, "trim-src"));
        Assert.Equal("ab", await ReadAll(store, "trim-fork"));

        await Create(store, "trim-later", initial: "ab");
        await Append(store, "trim-later", "cd");
        await store.TrimAsync("trim-later", 2);
        Assert.Equal(CreateStreamStatus.ForkOffsetGone, (await Create(store, "trim-fork-early", forkedFrom: "trim-later", forkOffset: 0, subOffset: 1)).Status);
        Assert.Equal(CreateStreamStatus.Created, (await Create(store, "trim-fork-late", forkedFrom: "trim-later")).Status);
        var fork = (await store.GetAsync("trim-fork-late")).Stream!;
        Assert.Equal(2, fork.RetainedFrom);
        Assert.Equal(2, (await store.ReadAsync(fork, 0, 1 << 20)).GoneBefore);
        Assert.Equal("cd", await ReadAll(store, "trim-fork-late", from: 2));
        Assert.Equal(TrimStatus.HasForks, (await store.TrimAsync("trim-later", 4)).Status);
    }

    [Fact]
    public async Task A_follower_whose_next_read_was_trimmed_away_ends_Trimmed()
    {
        var store = await Open();
        await Create(store, "follow-trim", initial: "ab");
        await Append(store, "follow-trim", "cd");
        await Append(store, "follow-trim", "ef");
        var follower = new StreamFollower(store, (await store.GetAsync("follow-trim")).Stream!, new StreamFollowOptions { MaxReadBytes = 1 });
        var read = new StringBuilder();
        using (var timeout = new CancellationTokenSource(Timeout))
        {
            await foreach (var item in follower.FollowAsync(0, timeout.Token))
            {
                foreach (var chunk in item.Read?.Chunks ?? [])
                {
                    read.Append(Encoding.UTF8.GetString(chunk.Data.Span));
                }

                if (item.Kind == StreamFollowKind.Read && item.Position == 2)
                {
                    Assert.Equal(4, (await store.TrimAsync("follow-trim", 4)).RetainedFrom);
                }
            }
        }

        Assert.Equal("ab", read.ToString());
        Assert.Equal(StreamFollowEnd.Trimmed, follower.End);
        Assert.Equal(4, follower.EndRetainedFrom);

        // One that starts before the retained data ends at once; one from there reads on.
        var early = new StreamFollower(store, (await store.GetAsync("follow-trim")).Stream!);
        await foreach (var _ in early.FollowAsync(0))
        {
            Assert.Fail("nothing is read from before the retained data");
        }

        Assert.Equal(StreamFollowEnd.Trimmed, early.End);
        await Append(store, "follow-trim", "gh", close: true);
        var rest = new StreamFollower(store, (await store.GetAsync("follow-trim")).Stream!);
        var text = new StringBuilder();
        await foreach (var item in rest.FollowAsync(4))
        {
            foreach (var chunk in item.Read?.Chunks ?? [])
            {
                text.Append(Encoding.UTF8.GetString(chunk.Data.Span));
            }
        }

        Assert.Equal("efgh", text.ToString());
        Assert.Equal(StreamFollowEnd.Closed, rest.End);
    }

    [Fact]
    public async Task A_fork_past_the_chains_depth_limit_is_refused_and_the_chain_reads_whole()
    {
        var store = await Open();
        await Create(store, "deep/0", initial: "a");
        CreateStreamRequest Fork(int level, string source) => new()
        {
            Path = $"deep/{level}",
            ContentType = "text/plain",
            ForkedFrom = source,
            InitialData = Bytes(((char)('a' + level)).ToString()),
            MaxForkDepth = 3,
        };

        for (var level = 1; level <= 3; level++)
        {
            Assert.Equal(CreateStreamStatus.Created, (await store.CreateAsync(Fork(level, $"deep/{level - 1}"))).Status);
        }

        // A fourth level is refused and leaves nothing; a fork higher up the chain is still taken.
        Assert.Equal(new CreateStreamResult(CreateStreamStatus.ForkTooDeep, null), await store.CreateAsync(Fork(4, "deep/3")));
        Assert.Equal(StreamLookupStatus.NotFound, (await store.GetAsync("deep/4")).Status);
        Assert.Equal(CreateStreamStatus.Created, (await store.CreateAsync(Fork(5, "deep/2"))).Status);
        Assert.Equal(CreateStreamStatus.Created, (await store.CreateAsync(Fork(6, "deep/3") with { MaxForkDepth = null })).Status);
        Assert.Equal("abcd", await ReadAll(store, "deep/3"));
        Assert.Equal("abcf", await ReadAll(store, "deep/5"));
        Assert.Equal("abcdg", await ReadAll(store, "deep/6"));
    }

    [Fact]
    public async Task Listing_paths_gives_every_live_stream_once_or_those_a_filter_accepts()
    {
        var store = await Open();
        await Create(store, "list/a");
        await Create(store, "list/b");
        await Create(store, "other/c");
        await Create(store, "list/deleted");
        await store.DeleteAsync("list/deleted");
        await Create(store, "list/expires", ttl: 5);
        await Create(store, "list/source");
        await Create(store, "list/fork", forkedFrom: "list/source", forkOffset: 0);
        await store.DeleteAsync("list/source"); // soft-deleted: a fork reads from it
        Clock.Advance(TimeSpan.FromSeconds(10));

        var all = new List<string>();
        await foreach (var path in store.ListPathsAsync())
        {
            all.Add(path);
        }

        Assert.Equal(["list/a", "list/b", "list/fork", "other/c"], all.Order(StringComparer.Ordinal));

        var filtered = new List<string>();
        var asked = new List<string>();
        await foreach (var path in store.ListPathsAsync(path =>
        {
            asked.Add(path);
            return path.StartsWith("list/", StringComparison.Ordinal) && path != "list/b";
        }))
        {
            filtered.Add(path);
        }

        Assert.Equal(["list/a", "list/fork"], filtered.Order(StringComparer.Ordinal));
        Assert.Contains("other/c", asked);
    }

    [Fact]
    public async Task Deleting_a_forked_source_soft_deletes_it_until_the_last_fork_goes()
    {
        var store = await Open();
        await Create(store, "root", initial: "A");
        await Create(store, "mid", forkedFrom: "root");
        await Append(store, "mid", "B");
        await Create(store, "leaf", forkedFrom: "mid");
        await Append(store, "leaf", "C");

        Assert.Equal(DeleteStreamStatus.Deleted, await store.DeleteAsync("root"));
        Assert.Equal(DeleteStreamStatus.Deleted, await store.DeleteAsync("mid"));
        Assert.Equal(StreamLookupStatus.Gone, (await store.GetAsync("root")).Status);
        Assert.Equal(DeleteStreamStatus.Gone, await store.DeleteAsync("mid"));
        Assert.Equal(CreateStreamStatus.Conflict, (await Create(store, "root")).Status);
        Assert.Equal("ABC", await ReadAll(store, "leaf"));

        Assert.Equal(DeleteStreamStatus.Deleted, await store.DeleteAsync("leaf"));
        Assert.Equal(StreamLookupStatus.NotFound, (await store.GetAsync("leaf")).Status);
        Assert.Equal(StreamLookupStatus.NotFound, (await store.GetAsync("mid")).Status);
        Assert.Equal(StreamLookupStatus.NotFound, (await store.GetAsync("root")).Status);
        Assert.Equal(CreateStreamStatus.Created, (await Create(store, "root")).Status);
        Assert.Equal(string.Empty, await ReadAll(store, "root"));
    }

    [Fact]
    public async Task Live_readers_are_woken_with_the_committed_change()
    {
        var store = await Open();
        await Create(store, "live");
        var info = (await store.GetAsync("live")).Stream!;
        await Create(store, "live-fork", forkedFrom: "live");
        var forkInfo = (await store.GetAsync("live-fork")).Stream!;
        using var subscription = store.Fanout.Subscribe(info.Id);
        using var forkSubscription = store.Fanout.Subscribe(forkInfo.Id);

        await Append(store, "live", "ping");
        var change = await subscription.Reader.ReadAsync().AsTask().WaitAsync(Timeout);
        Assert.Equal(0, change.Chunk.Start);
        Assert.Equal(4, change.Chunk.End);
        Assert.Equal("ping", Encoding.UTF8.GetString(change.Chunk.Data.Span));
        Assert.False(forkSubscription.Reader.TryRead(out _), "source appends must not wake fork readers");

        await Append(store, "live", string.Empty, close: true);
        var close = await subscription.Reader.ReadAsync().AsTask().WaitAsync(Timeout);
        Assert.True(close.Closed);
    }

    /// <summary>Follows <paramref name="path"/> from 0, running the next of <paramref name="onCaughtUp"/> each time the follower waits.</summary>
    private static async Task<(string Text, List<StreamFollowKind> Kinds, StreamFollower Follower)> Follow(StreamStore store, string path, StreamFollowOptions options, params Func<Task>[] onCaughtUp)
    {
        var follower = new StreamFollower(store, (await store.GetAsync(path)).Stream!, options);
        var text = new StringBuilder();
        var kinds = new List<StreamFollowKind>();
        var actions = new Queue<Func<Task>>(onCaughtUp);
        var position = 0L;
        using var timeout = new CancellationTokenSource(Timeout);
        await foreach (var item in follower.FollowAsync(0, timeout.Token))
        {
            kinds.Add(item.Kind);
            var chunks = item.Kind switch
            {
                StreamFollowKind.Read => item.Read!.Chunks,
                StreamFollowKind.Live => [item.Change!.Chunk],
                _ => [],
            };
            foreach (var chunk in chunks)
            {
                Assert.Equal(position, chunk.Start);
                position = chunk.End;
                text.Append(Encoding.UTF8.GetString(chunk.Data.Span));
            }

            Assert.Equal(position, item.Position);
            if (item.Kind == StreamFollowKind.CaughtUp && actions.TryDequeue(out var action))
            {
                await action();
            }
        }

        return (text.ToString(), kinds, follower);
    }

    [Fact]
    public async Task A_follower_reads_what_is_there_then_follows_live_until_the_stream_closes()
    {
        var store = await Open();
        await Create(store, "follow", initial: "ab");
        await Append(store, "follow", "cd");

        var (text, kinds, follower) = await Follow(store, "follow", new StreamFollowOptions { MaxReadBytes = 1 }, async () =>
        {
            await Append(store, "follow", "ef");
            await Append(store, "follow", "gh", close: true);
        });

        Assert.Equal("abcdefgh", text);
        Assert.Equal(StreamFollowEnd.Closed, follower.End);
        Assert.Equal(StreamFollowKind.Read, kinds[0]);
        Assert.Contains(StreamFollowKind.CaughtUp, kinds);
    }

    [Fact]
    public async Task A_follower_cut_off_from_the_live_queue_reads_what_it_missed_from_the_store()
    {
        var store = await Open();
        await Create(store, "follow-cut", initial: "ab");

        var (text, kinds, follower) = await Follow(
            store,
            "follow-cut",
            StreamFollowOptions.Default,
            async () =>
            {
                store.Fanout.DisconnectAll();
                await Append(store, "follow-cut", "cd");
            },
            () => Append(store, "follow-cut", "ef", close: true));

        Assert.Equal("abcdef", text);
        Assert.Equal(StreamFollowEnd.Closed, follower.End);
        Assert.True(kinds.Count(k => k == StreamFollowKind.CaughtUp) >= 2, "the follower catches up again after it was cut off");
    }

    [Fact]
    public async Task A_follower_that_only_wakes_reads_every_change_from_the_store()
    {
        var store = await Open();
        await Create(store, "follow-wake");

        var (text, kinds, follower) = await Follow(store, "follow-wake", new StreamFollowOptions { LiveData = false }, () => Append(store, "follow-wake", "ab"), () => Append(store, "follow-wake", "cd", close: true));

        Assert.Equal("abcd", text);
        Assert.Equal(StreamFollowEnd.Closed, follower.End);
        Assert.DoesNotContain(StreamFollowKind.Live, kinds);
    }

    [Fact]
    public async Task A_follower_ends_when_its_stream_is_deleted_or_cut_off_with_EndOnFallBehind()
    {
        var store = await Open();
        await Create(store, "follow-delete", initial: "ab");
        var (_, _, deleted) = await Follow(store, "follow-delete", StreamFollowOptions.Default, async () => await store.DeleteAsync("follow-delete"));
        Assert.Equal(StreamFollowEnd.Deleted, deleted.End);

        await Create(store, "follow-behind");
        var (_, _, behind) = await Follow(store, "follow-behind", new StreamFollowOptions { EndOnFallBehind = true }, () =>
        {
            store.Fanout.DisconnectAll();
            return Task.CompletedTask;
        });
        Assert.Equal(StreamFollowEnd.FellBehind, behind.End);
    }

    [Fact]
    public async Task Concurrent_appenders_are_serialized_without_loss()
    {
        var store = await Open();
        await Create(store, "many");
        const int Writers = 16;
        const int PerWriter = 50;
        var tasks = Enumerable.Range(0, Writers).Select(w => Task.Run(async () =>
        {
            var tails = new List<long>();
            for (var i = 0; i < PerWriter; i++)
            {
                var result = await Append(store, "many", $"<{w}:{i}>", new($"w{w}", 0, i));
                Assert.Equal(AppendStatus.Appended, result.Status);
                tails.Add(result.TailPosition);
            }

            return tails;
        })).ToList();
        var all = (await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(60))).SelectMany(t => t).ToList();
        Assert.Equal(Writers * PerWriter, all.Distinct().Count());

        var text = await ReadAll(store, "many");
        for (var w = 0; w < Writers; w++)
        {
            var last = -1;
            for (var i = 0; i < PerWriter; i++)
            {
                var at = text.IndexOf($"<{w}:{i}>", StringComparison.Ordinal);
                Assert.True(at > last, $"writer {w} message {i} missing or out of order");
                last = at;
            }
        }
    }

    [Fact]
    public async Task Producer_state_expires_after_seven_idle_days_and_the_producer_then_counts_as_new()
    {
        var store = await Open();
        await Create(store, "producers");
        Assert.Equal(AppendStatus.Appended, (await Append(store, "producers", "a", new("idle", 0, 0))).Status);
        Assert.Equal(AppendStatus.Appended, (await Append(store, "producers", "b", new("busy", 0, 0))).Status);

        Clock.Advance(TimeSpan.FromDays(6));
        Assert.Equal(AppendStatus.Appended, (await Append(store, "producers", "c", new("busy", 0, 1))).Status);
        Clock.Advance(TimeSpan.FromDays(2));

        // Eight days idle: forgotten, so a continuation is a gap, exactly as for a producer never seen.
        var gap = await Append(store, "producers", "d", new("idle", 0, 1));
        Assert.Equal(AppendStatus.ProducerSeqGap, gap.Status);
        Assert.Equal(0, gap.ProducerSeq);
        Assert.Equal(AppendStatus.Appended, (await Append(store, "producers", "e", new("idle", 0, 0))).Status);

        // Two days idle: still known, duplicates still recognised.
        Assert.Equal(AppendStatus.Duplicate, (await Append(store, "producers", "c", new("busy", 0, 1))).Status);
        Assert.Equal(AppendStatus.Appended, (await Append(store, "producers", "f", new("busy", 0, 2))).Status);
        Assert.Equal("abcef", await ReadAll(store, "producers"));
    }

    [Fact]
    public async Task A_producers_sequence_and_last_use_survive_reopening_and_it_expires_a_ttl_after_its_last_append()
    {
        var store = await Open();
        await Create(store, "reopened-producer");
        Assert.Equal(AppendStatus.Appended, (await Append(store, "reopened-producer", "a", new("p", 0, 0))).Status);
        Clock.Advance(TimeSpan.FromSeconds(10));
        Assert.Equal(AppendStatus.Appended, (await Append(store, "reopened-producer", "b", new("p", 0, 1))).Status);
        await store.DisposeAsync();
        _opened.Remove(store);

        // Its last append is what counts, on disk too: a second short of seven days after it, the producer is known.
        Clock.Advance(TimeSpan.FromDays(7) - TimeSpan.FromSeconds(1));
        store = await Open();
        Assert.Equal(AppendStatus.Duplicate, (await Append(store, "reopened-producer", "b", new("p", 0, 1))).Status);
        Assert.Equal(AppendStatus.ProducerSeqGap, (await Append(store, "reopened-producer", "x", new("p", 0, 3))).Status);
        await store.DisposeAsync();
        _opened.Remove(store);

        // Well past seven idle days (the duplicate above was no accepted append): forgotten.
        Clock.Advance(TimeSpan.FromMinutes(2));
        store = await Open();
        var gap = await Append(store, "reopened-producer", "c", new("p", 0, 2));
        Assert.Equal(AppendStatus.ProducerSeqGap, gap.Status);
        Assert.Equal(0, gap.ProducerSeq);
        Assert.Equal("ab", await ReadAll(store, "reopened-producer"));
    }

    [Fact]
    public async Task Everything_acknowledged_survives_reopening()
    {
        var store = await Open();
        await Create(store, "durable", initial: "a");
        await Append(store, "durable", "b", new("w", 0, 0), seq: "1");
        await Create(store, "durable-fork", forkedFrom: "durable");
        await store.PutDocumentAsync("docs", "k", "v"u8.ToArray());
        await store.DisposeAsync();
        _opened.Remove(store);

        var reopened = await Open();
        Assert.Equal("ab", await ReadAll(reopened, "durable"));
        Assert.Equal("ab", await ReadAll(reopened, "durable-fork"));
        Assert.Equal(AppendStatus.Duplicate, (await Append(reopened, "durable", "b", new("w", 0, 0))).Status);
        Assert.Equal(AppendStatus.SequenceConflict, (await Append(reopened, "durable", "c", seq: "1")).Status);
        Assert.Equal("v"u8.ToArray(), await reopened.GetDocumentAsync("docs", "k"));
    }

    [Fact]
    public async Task Documents_can_be_written_listed_and_removed()
    {
        var store = await Open();
        await store.PutDocumentAsync("c1", "a", "1"u8.ToArray());
        await store.PutDocumentAsync("c1", "b", "2"u8.ToArray());
        await store.PutDocumentAsync("c2", "a", "3"u8.ToArray());
        await store.PutDocumentAsync("c1", "a", "4"u8.ToArray());
        var listed = new List<KeyValuePair<string, byte[]>>();
        await foreach (var item in store.ListDocumentsAsync("c1"))
        {
            listed.Add(item);
        }

        Assert.Equal(["a", "b"], listed.Select(l => l.Key).Order());
        Assert.Equal("4"u8.ToArray(), listed.Single(l => l.Key == "a").Value);
        await store.DeleteDocumentAsync("c1", "a");
        Assert.Null(await store.GetDocumentAsync("c1", "a"));
        Assert.Equal("3"u8.ToArray(), await store.GetDocumentAsync("c2", "a"));
    }

    [Fact]
    public async Task Documents_written_through_a_held_lock_are_stored_like_any_other()
    {
        var store = await Open();
        await store.PutDocumentAsync("locked", "kept", "0"u8.ToArray());
        await using (var held = await store.AcquireLockAsync("locked-section", TimeSpan.FromSeconds(30)))
        {
            await held.PutDocumentAsync("locked", "a", "1"u8.ToArray());
            await held.PutDocumentAsync("locked", "b", "2"u8.ToArray());
            await held.PutDocumentAsync("locked", "a", "3"u8.ToArray());
            await held.DeleteDocumentAsync("locked", "b");
            await held.PutDocumentAsync("locked", "empty", ReadOnlyMemory<byte>.Empty);
        }

        var listed = new Dictionary<string, byte[]>();
        await foreach (var (key, value) in store.ListDocumentsAsync("locked"))
        {
            listed[key] = value;
        }

        Assert.Equal(["a", "empty", "kept"], listed.Keys.Order());
        Assert.Equal("3"u8.ToArray(), listed["a"]);
        Assert.Empty(listed["empty"]);
        Assert.Equal("0"u8.ToArray(), listed["kept"]);
    }
}
