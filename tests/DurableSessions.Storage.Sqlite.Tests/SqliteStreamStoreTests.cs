using System.Text;
using DurableSessions.Live;
using DurableSessions.Storage.Specification;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Time.Testing;

namespace DurableSessions.Storage.Sqlite.Tests;

/// <summary>The SQLite store held to the storage specification.</summary>
public sealed class SqliteStreamStoreTests : StreamStoreSpecification
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "ds-sqlite-" + Guid.NewGuid().ToString("N"));

    protected override ValueTask<StreamStore> OpenStoreAsync(TimeProvider time)
        => ValueTask.FromResult<StreamStore>(SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory }, time));

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>
/// The SQLite store held to the storage specification on a database whose chunk and producer tables are keyed by stream
/// (<c>WITHOUT ROWID</c>), as databases created by earlier versions are: the store keeps those tables as they are.
/// </summary>
public sealed class SqliteStreamKeyedTablesTests : StreamStoreSpecification
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "ds-sqlite-" + Guid.NewGuid().ToString("N"));

    protected override ValueTask<StreamStore> OpenStoreAsync(TimeProvider time)
    {
        StreamKeyedDatabase.CreateIfMissing(_directory);
        return ValueTask.FromResult<StreamStore>(SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory }, time));
    }

    [Fact]
    public async Task The_tables_keep_their_layout_and_gain_no_index()
    {
        await using (var store = (SqliteStreamStore)await OpenStoreAsync(TimeProvider.System))
        {
            await store.CreateAsync(new CreateStreamRequest { Path = "s", ContentType = "text/plain" });
            var append = await store.AppendAsync(new AppendRequest { Path = "s", ContentType = "text/plain", Data = new StreamPayload("x"u8.ToArray(), 1), Producer = new ProducerStamp("p", 0, 0) });
            Assert.Equal(AppendStatus.Appended, append.Status);
        }

        var schema = StreamKeyedDatabase.Schema(_directory);
        Assert.Contains(schema, e => e.Name == "chunks" && e.Sql.Contains("WITHOUT ROWID", StringComparison.Ordinal));
        Assert.Contains(schema, e => e.Name == "producers" && e.Sql.Contains("WITHOUT ROWID", StringComparison.Ordinal));
        Assert.DoesNotContain(schema, e => e.Name is "chunks_by_stream" or "producers_by_stream");
    }

    [Fact]
    public async Task Converting_rewrites_both_tables_with_an_index_by_stream_and_keeps_every_append_and_producer()
    {
        await SeedAsync();
        var options = new SqliteStreamStoreOptions { DataDirectory = _directory, ConvertTables = true };
        await using (var store = SqliteStreamStore.Open(options))
        {
            var schema = StreamKeyedDatabase.Schema(_directory);
            Assert.Contains(schema, e => e.Name == "chunks" && e.Type == "table" && !e.Sql.Contains("WITHOUT ROWID", StringComparison.Ordinal));
            Assert.Contains(schema, e => e.Name == "producers" && e.Type == "table" && !e.Sql.Contains("WITHOUT ROWID", StringComparison.Ordinal));
            Assert.Equal(3, schema.Count(e => e.Name is "chunks_by_stream" or "producers_by_stream" or "producers_last_used"));
            Assert.DoesNotContain(schema, e => e.Name.EndsWith("_stream_keyed", StringComparison.Ordinal));

            // The rewrite went through the WAL and was checkpointed out of it.
            Assert.Equal(0, new FileInfo(Path.Combine(_directory, "streams.db-wal")).Length);

            // The rows already there lie grouped by stream, as they did.
            Assert.Equal(
                StreamKeyedDatabase.Query(_directory, "SELECT stream_id, end_pos FROM chunks ORDER BY stream_id, end_pos"),
                StreamKeyedDatabase.Query(_directory, "SELECT stream_id, end_pos FROM chunks ORDER BY rowid"));

            await ExpectSeededAsync(store);
        }

        // Once converted, opening again changes nothing.
        await using (var store = SqliteStreamStore.Open(options))
        {
            Assert.EndsWith($"b{Appends - 1};next", await ReadAll(store, "b"), StringComparison.Ordinal);
        }

        Assert.DoesNotContain(StreamKeyedDatabase.Schema(_directory), e => e.Name is "chunks" or "producers" && e.Sql.Contains("WITHOUT ROWID", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Converting_a_database_from_before_producer_expiry_adds_its_column_first()
    {
        await SeedAsync();
        StreamKeyedDatabase.Execute(_directory, "DROP INDEX producers_last_used; ALTER TABLE producers DROP COLUMN last_used;");

        await using var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory, ConvertTables = true });
        Assert.Contains(StreamKeyedDatabase.Schema(_directory), e => e.Name == "producers" && e.Type == "table" && e.Sql.Contains("last_used", StringComparison.Ordinal) && !e.Sql.Contains("WITHOUT ROWID", StringComparison.Ordinal));
        await ExpectSeededAsync(store);
    }

    [Fact]
    public async Task A_conversion_that_fails_on_its_second_table_leaves_both_as_they_were()
    {
        await SeedAsync();

        // A table in the way of the producers' rename makes the rewrite fail after the chunks were rewritten.
        StreamKeyedDatabase.Execute(_directory, "CREATE TABLE producers_stream_keyed (x INTEGER)");
        Assert.ThrowsAny<SqliteException>(() => SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory, ConvertTables = true }));

        var schema = StreamKeyedDatabase.Schema(_directory);
        Assert.Contains(schema, e => e.Name == "chunks" && e.Sql.Contains("WITHOUT ROWID", StringComparison.Ordinal));
        Assert.Contains(schema, e => e.Name == "producers" && e.Sql.Contains("WITHOUT ROWID", StringComparison.Ordinal));
        Assert.DoesNotContain(schema, e => e.Name is "chunks_stream_keyed" or "chunks_by_stream");

        StreamKeyedDatabase.Execute(_directory, "DROP TABLE producers_stream_keyed");
        await using var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        await ExpectSeededAsync(store);
    }

    private const int Appends = 300;

    /// <summary>Two streams of <see cref="Appends"/> appends each, by a producer each, in the stream-keyed layout.</summary>
    private async Task SeedAsync()
    {
        await using var store = await OpenStoreAsync(TimeProvider.System);
        foreach (var path in new[] { "a", "b" })
        {
            await store.CreateAsync(new CreateStreamRequest { Path = path, ContentType = "text/plain" });
        }

        for (var i = 0; i < Appends; i++)
        {
            Assert.Equal(AppendStatus.Appended, (await Append(store, "a", $"a{i};", "pa", i)).Status);
            Assert.Equal(AppendStatus.Appended, (await Append(store, "b", $"b{i};", "pb", i)).Status);
        }
    }

    /// <summary>Every seeded append as it was, read back in pieces, and each producer where it stood.</summary>
    private static async Task ExpectSeededAsync(StreamStore store)
    {
        Assert.Equal(string.Concat(Enumerable.Range(0, Appends).Select(i => $"a{i};")), await ReadAll(store, "a"));
        Assert.Equal(string.Concat(Enumerable.Range(0, Appends).Select(i => $"b{i};")), await ReadAll(store, "b"));
        Assert.Equal(AppendStatus.Duplicate, (await Append(store, "a", "again", "pa", Appends - 1)).Status);
        Assert.Equal(AppendStatus.Appended, (await Append(store, "b", "next", "pb", Appends)).Status);
        var gap = await Append(store, "a", "gap", "pa", Appends + 1);
        Assert.Equal(AppendStatus.ProducerSeqGap, gap.Status);
        Assert.Equal(Appends, gap.ProducerSeq);
    }

    private static Task<AppendResult> Append(StreamStore store, string path, string text, string producer, long seq)
        => store.AppendAsync(new AppendRequest { Path = path, ContentType = "text/plain", Data = new StreamPayload(System.Text.Encoding.UTF8.GetBytes(text), text.Length), Producer = new ProducerStamp(producer, 0, seq) }).AsTask();

    private static async Task<string> ReadAll(StreamStore store, string path)
    {
        var info = (await store.GetAsync(path)).Stream!;
        var text = new System.Text.StringBuilder();
        for (var from = 0L; from < info.TailPosition;)
        {
            var read = await store.ReadAsync(info, from, 256);
            Assert.True(read.NextPosition > from);
            foreach (var chunk in read.Chunks)
            {
                text.Append(System.Text.Encoding.UTF8.GetString(chunk.Data.Span));
            }

            from = read.NextPosition;
        }

        return text.ToString();
    }

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>The layout of a database the SQLite store creates.</summary>
public sealed class SqliteLayoutTests : IAsyncDisposable
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "ds-sqlite-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public async Task A_new_database_keeps_appends_and_producers_in_write_order_with_an_index_by_stream()
    {
        await using (var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory }))
        {
            await store.CreateAsync(new CreateStreamRequest { Path = "s", ContentType = "text/plain" });
        }

        var schema = StreamKeyedDatabase.Schema(_directory);
        Assert.Contains(schema, e => e.Name == "chunks" && e.Type == "table" && !e.Sql.Contains("WITHOUT ROWID", StringComparison.Ordinal));
        Assert.Contains(schema, e => e.Name == "producers" && e.Type == "table" && !e.Sql.Contains("WITHOUT ROWID", StringComparison.Ordinal));
        Assert.Contains(schema, e => e.Name == "chunks_by_stream" && e.Type == "index" && e.Sql.Contains("UNIQUE", StringComparison.Ordinal));
        Assert.Contains(schema, e => e.Name == "producers_by_stream" && e.Type == "index" && e.Sql.Contains("UNIQUE", StringComparison.Ordinal));
    }

    public ValueTask DisposeAsync()
    {
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }

        return ValueTask.CompletedTask;
    }
}

/// <summary>A database as earlier versions of the store created it, and a look at any database's schema.</summary>
internal static class StreamKeyedDatabase
{
    public static void CreateIfMissing(string directory)
    {
        var file = Path.Combine(directory, "streams.db");
        if (File.Exists(file))
        {
            return;
        }

        Directory.CreateDirectory(directory);
        using var connection = new SqliteConnection($"Data Source={file};Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = """
            CREATE TABLE chunks (
                stream_id INTEGER NOT NULL,
                end_pos INTEGER NOT NULL,
                start_pos INTEGER NOT NULL,
                data BLOB NOT NULL,
                PRIMARY KEY (stream_id, end_pos)
            ) WITHOUT ROWID;
            CREATE TABLE producers (
                stream_id INTEGER NOT NULL,
                producer_id TEXT NOT NULL,
                epoch INTEGER NOT NULL,
                last_seq INTEGER NOT NULL,
                last_used INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (stream_id, producer_id)
            ) WITHOUT ROWID;
            """;
        command.ExecuteNonQuery();
    }

    public static void Execute(string directory, string sql)
    {
        using var connection = new SqliteConnection($"Data Source={Path.Combine(directory, "streams.db")};Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    /// <summary>The rows of a query on two integer columns.</summary>
    public static List<(long, long)> Query(string directory, string sql)
    {
        using var connection = new SqliteConnection($"Data Source={Path.Combine(directory, "streams.db")};Mode=ReadOnly;Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        using var reader = command.ExecuteReader();
        var rows = new List<(long, long)>();
        while (reader.Read())
        {
            rows.Add((reader.GetInt64(0), reader.GetInt64(1)));
        }

        return rows;
    }

    public static List<(string Type, string Name, string Sql)> Schema(string directory)
    {
        using var connection = new SqliteConnection($"Data Source={Path.Combine(directory, "streams.db")};Mode=ReadOnly;Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT type, name, COALESCE(sql, '') FROM sqlite_schema";
        using var reader = command.ExecuteReader();
        var entries = new List<(string Type, string Name, string Sql)>();
        while (reader.Read())
        {
            entries.Add((reader.GetString(0), reader.GetString(1), reader.GetString(2)));
        }

        return entries;
    }
}

/// <summary>Behaviour specific to the SQLite store's group commit.</summary>
public sealed class SqliteGroupCommitTests : IAsyncDisposable
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "ds-sqlite-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public async Task A_chain_of_forks_far_deeper_than_a_stack_reads_whole_and_is_removed_in_one_cascade()
    {
        // No depth limit asked for (the server asks for one): reads and deletes walk the chain in loops, so no depth can
        // exhaust a thread's stack and kill the process.
        const int Depth = 40_000;
        await using var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory, Durability = SqliteDurability.Relaxed });
        await store.CreateAsync(new CreateStreamRequest { Path = "c/0", ContentType = "text/plain", InitialData = new StreamPayload("x"u8.ToArray(), 1) });
        for (var level = 1; level <= Depth; level++)
        {
            var created = await store.CreateAsync(new CreateStreamRequest { Path = $"c/{level}", ContentType = "text/plain", ForkedFrom = $"c/{level - 1}", InitialData = new StreamPayload("x"u8.ToArray(), 1) });
            Assert.Equal(CreateStreamStatus.Created, created.Status);
        }

        // Read from the start of the deepest fork, on a pool thread (whose stack is the smallest).
        var deepest = (await store.GetAsync($"c/{Depth}")).Stream!;
        var read = await Task.Run(async () => await store.ReadAsync(deepest, 0, 64));
        Assert.Equal(64, read.Chunks.Sum(c => c.Data.Length));
        Assert.Equal(0, read.Chunks[0].Start);

        // Every source deleted while a fork reads from it stays, soft-deleted; deleting the deepest fork removes them all.
        for (var level = 0; level < Depth; level++)
        {
            Assert.Equal(DeleteStreamStatus.Deleted, await store.DeleteAsync($"c/{level}"));
        }

        Assert.Equal(DeleteStreamStatus.Deleted, await store.DeleteAsync($"c/{Depth}"));
        Assert.Equal(StreamLookupStatus.NotFound, (await store.GetAsync("c/0")).Status);
        Assert.Equal(CreateStreamStatus.Created, (await store.CreateAsync(new CreateStreamRequest { Path = "c/0", ContentType = "text/plain" })).Status);
    }

    /// <summary>Where a descriptor points; null for one closed meanwhile (other tests open and close files beside this one).</summary>
    private static string? LinkTargetOf(FileSystemInfo descriptor)
    {
        try
        {
            return descriptor.LinkTarget;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    [Fact]
    public async Task A_burst_of_concurrent_reads_leaves_at_most_the_pools_bound_of_connections_open()
    {
        await using var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        var database = Path.GetFullPath(Path.Combine(_directory, "streams.db"));

        // As many readers out at once as a burst of reads on 40 threads would take; then all given back.
        const int Burst = 40;
        var readers = Enumerable.Range(0, Burst).Select(_ => store.RentReader()).ToList();
        Assert.Equal(Burst, store.OpenReaders);
        foreach (var reader in readers)
        {
            store.ReturnReader(reader);
        }

        Assert.Equal(SqliteStreamStore.MaxPooledReaders, store.OpenReaders);

        // The pool serves the next reads without opening more, and closes what it kept when the store is disposed: then
        // no descriptor of the database is left.
        await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(async () => Assert.Null(await store.GetDocumentAsync("c", "k")))));
        Assert.Equal(SqliteStreamStore.MaxPooledReaders, store.OpenReaders);
        await store.DisposeAsync();
        Assert.Equal(0, store.OpenReaders);
        Assert.DoesNotContain(new DirectoryInfo("/proc/self/fd").EnumerateFileSystemInfos(), fd => LinkTargetOf(fd) == database);
    }

    [Fact]
    public async Task Concurrent_appends_share_transactions_and_are_all_acknowledged_after_commit()
    {
        await using var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        await store.CreateAsync(new CreateStreamRequest { Path = "g", ContentType = "text/plain" });
        var before = store.CommitCount;
        const int Tasks = 64;
        const int PerTask = 20;
        await Task.WhenAll(Enumerable.Range(0, Tasks).Select(t => Task.Run(async () =>
        {
            for (var i = 0; i < PerTask; i++)
            {
                var result = await store.AppendAsync(new AppendRequest { Path = "g", ContentType = "text/plain", Data = new StreamPayload(new byte[10], 10) });
                Assert.Equal(AppendStatus.Appended, result.Status);
            }
        }))).WaitAsync(TimeSpan.FromSeconds(60));

        var commits = store.CommitCount - before;
        Assert.True(commits < Tasks * PerTask / 4, $"{Tasks * PerTask} appends took {commits} commits; group commit should batch them");
        Assert.Equal(Tasks * PerTask * 10, (await store.GetAsync("g")).Stream!.TailPosition);
    }

    [Theory]
    [InlineData("application/json", 0)]
    [InlineData("text/plain", 8)]
    [InlineData("text/plain", 9000)]
    public async Task Appends_to_one_stream_in_one_commit_share_a_row_and_read_back_from_every_offset_after_reopening(string contentType, int textBytes)
    {
        var json = contentType == "application/json";
        const int Tasks = 64;
        const int PerTask = 20;

        // Each append is one JSON message, or textBytes of text, put where its acknowledged tail says it went.
        var messages = new string?[json ? Tasks * PerTask : 0];
        var text = new byte[json ? 0 : Tasks * PerTask * textBytes];
        await using (var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory }))
        {
            await store.CreateAsync(new CreateStreamRequest { Path = "s", ContentType = contentType });
            await Task.WhenAll(Enumerable.Range(0, Tasks).Select(t => Task.Run(async () =>
            {
                for (var i = 0; i < PerTask; i++)
                {
                    var unit = json ? $$"""{"t":{{t}},"i":{{i}}}""" : $"{t:D4}{i:D4}".PadRight(textBytes, (char)('a' + ((t + i) % 26)));
                    var data = Encoding.UTF8.GetBytes(unit);
                    var result = await store.AppendAsync(new AppendRequest { Path = "s", ContentType = contentType, Data = new StreamPayload(data, json ? 1 : data.Length) });
                    Assert.Equal(AppendStatus.Appended, result.Status);
                    if (json)
                    {
                        messages[result.TailPosition - 1] = unit;
                    }
                    else
                    {
                        data.CopyTo(text, result.TailPosition - data.Length);
                    }
                }
            }))).WaitAsync(TimeSpan.FromSeconds(60));
        }

        Assert.All(messages, Assert.NotNull);
        var (rows, longest) = StreamKeyedDatabase.Query(_directory, "SELECT COUNT(*), MAX(LENGTH(data)) FROM chunks").Single();

        // A row takes appends up to 64 KiB: small ones share a row per commit, large ones a few to a row.
        Assert.True(rows < Tasks * PerTask / (textBytes > 1000 ? 2 : 4), $"{Tasks * PerTask} appends to one stream took {rows} rows; those of one commit should share rows");
        Assert.InRange(longest, 1, 64 * 1024);

        // Read back on a store opened afresh, from offsets all through the stream, each up to 128 KiB on: a row is sliced
        // wherever a read starts in it. Every JSON message is a start; text is read from ~300 offsets, most of them inside
        // an append.
        await using var reopened = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        var info = (await reopened.GetAsync("s")).Stream!;
        var length = json ? messages.Length : text.Length;
        Assert.Equal(length, info.TailPosition);
        for (var from = 0; from < length; from += json ? 1 : (length / 300) + 3)
        {
            var units = new List<string>();
            var bytes = new List<byte>();
            var position = (long)from;
            while (position < info.TailPosition && (json || bytes.Count < 128 * 1024))
            {
                var read = await reopened.ReadAsync(info, position, 4096);
                Assert.True(read.NextPosition > position, "a read below the tail must make progress");
                foreach (var chunk in read.Chunks)
                {
                    if (json)
                    {
                        units.AddRange(JsonFraming.ParseMessages(chunk.Data.Span).Select(m => m!.ToJsonString()));
                    }
                    else
                    {
                        bytes.AddRange(chunk.Data.Span);
                    }
                }

                position = read.NextPosition;
            }

            if (json)
            {
                Assert.Equal(messages[from..], units);
            }
            else
            {
                Assert.True(text.AsSpan(from, bytes.Count).SequenceEqual(bytes.ToArray()), $"the text read from {from} differs from what was appended there");
            }
        }
    }

    [Fact]
    public async Task A_commit_SQLite_refuses_fails_its_appends_alone_and_the_writer_goes_on_with_the_next()
    {
        AppendRequest Append(string path, string text, long seq)
            => new() { Path = path, ContentType = "text/plain", Data = new StreamPayload(Encoding.UTF8.GetBytes(text), text.Length), Producer = new ProducerStamp("p-" + path, 0, seq) };

        await using (var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory }))
        {
            await store.CreateAsync(new CreateStreamRequest { Path = "a", ContentType = "text/plain" });
            await store.CreateAsync(new CreateStreamRequest { Path = "b", ContentType = "text/plain" });
            Assert.Equal(3, (await store.AppendAsync(Append("a", "one", 0))).TailPosition);

            // Another connection takes the row the next append to "a" writes (its stream and end): SQLite refuses that
            // append's row with a constraint error when its group commits.
            var id = StreamKeyedDatabase.Query(_directory, "SELECT id, tail FROM streams WHERE path = 'a'").Single().Item1;
            StreamKeyedDatabase.Execute(_directory, $"INSERT INTO chunks (stream_id, end_pos, start_pos, data) VALUES ({id}, 6, 3, x'21')");
            var refused = await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => store.AppendAsync(Append("a", "two", 1)).AsTask());
            Assert.IsType<SqliteException>(refused.InnerException);

            // The writer and its statements go on: other streams, then the same append once the row is free.
            Assert.Equal(3, (await store.AppendAsync(Append("b", "bee", 0))).TailPosition);
            StreamKeyedDatabase.Execute(_directory, $"DELETE FROM chunks WHERE stream_id = {id} AND end_pos = 6");
            var retried = await store.AppendAsync(Append("a", "two", 1));
            Assert.Equal((AppendStatus.Appended, 6L), (retried.Status, retried.TailPosition));
        }

        // What was acknowledged is on disk, producers included (a retry is a duplicate); the refused commit left nothing.
        await using var reopened = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        foreach (var (path, text, seq) in new[] { ("a", "onetwo", 1L), ("b", "bee", 0L) })
        {
            var info = (await reopened.GetAsync(path)).Stream!;
            var read = await reopened.ReadAsync(info, 0, 4096);
            Assert.Equal(text, string.Concat(read.Chunks.Select(c => Encoding.UTF8.GetString(c.Data.Span))));
            Assert.Equal(AppendStatus.Duplicate, (await reopened.AppendAsync(Append(path, "again", seq))).Status);
        }
    }

    [Fact]
    public async Task An_empty_producer_id_is_stored_as_given_with_its_close_and_read_back_after_reopening()
    {
        // An empty string is text, not NULL: the producer's row and the stream's closer both keep it.
        var append = new AppendRequest { Path = "e", ContentType = "text/plain", Data = new StreamPayload("x"u8.ToArray(), 1), Close = true, Producer = new ProducerStamp(string.Empty, 0, 0) };
        await using (var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory }))
        {
            await store.CreateAsync(new CreateStreamRequest { Path = "e", ContentType = "text/plain" });
            Assert.Equal(AppendStatus.Appended, (await store.AppendAsync(append)).Status);
        }

        await using var reopened = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        var info = (await reopened.GetAsync("e")).Stream!;
        Assert.True(info.Closed);
        Assert.Equal(string.Empty, info.ClosedBy?.ProducerId);

        // The same append again is the one that closed the stream, not a write to a closed stream.
        Assert.Equal(AppendStatus.Duplicate, (await reopened.AppendAsync(append)).Status);
    }

    [Fact]
    public async Task Trims_queued_with_the_appends_they_cut_leave_a_stream_that_reads_back_whole_from_where_they_cut()
    {
        const int Appends = 200;
        var messages = new string?[Appends];
        await using (var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory }))
        {
            await store.CreateAsync(new CreateStreamRequest { Path = "t", ContentType = "application/json" });

            // Appends and trims queued together, unawaited, so that trims land in the commits of appends before them.
            var appends = Enumerable.Range(0, Appends).Select(async i =>
            {
                var unit = $$"""{"i":{{i}}}""";
                var result = await store.AppendAsync(new AppendRequest { Path = "t", ContentType = "application/json", Data = new StreamPayload(Encoding.UTF8.GetBytes(unit), 1) });
                Assert.Equal(AppendStatus.Appended, result.Status);
                messages[result.TailPosition - 1] = unit;
            }).ToList();
            var trims = new List<Task<TrimResult>>();
            for (var before = 20; before < Appends; before += 40)
            {
                trims.Add(store.TrimAsync("t", before).AsTask());
            }

            await Task.WhenAll(appends).WaitAsync(TimeSpan.FromSeconds(60));
            await Task.WhenAll(trims).WaitAsync(TimeSpan.FromSeconds(60));
            Assert.All(trims, t => Assert.Equal(TrimStatus.Trimmed, t.Result.Status));
        }

        await using var reopened = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        var info = (await reopened.GetAsync("t")).Stream!;
        Assert.Equal(Appends, info.TailPosition);
        Assert.InRange(info.RetainedFrom, 0, 180);
        if (info.RetainedFrom > 0)
        {
            Assert.Equal(info.RetainedFrom, (await reopened.ReadAsync(info, 0, 4096)).GoneBefore);
        }

        // Whatever the trims left is there whole, in order, from where they cut to the tail.
        var units = new List<string>();
        var position = info.RetainedFrom;
        while (position < info.TailPosition)
        {
            var read = await reopened.ReadAsync(info, position, 4096);
            Assert.True(read.NextPosition > position, "a read below the tail must make progress");
            units.AddRange(read.Chunks.SelectMany(c => JsonFraming.ParseMessages(c.Data.Span)).Select(m => m!.ToJsonString()));
            position = read.NextPosition;
        }

        Assert.Equal(messages[(int)info.RetainedFrom..], units);
    }

    [Fact]
    public async Task A_stream_deleted_in_the_commit_of_its_appends_leaves_no_rows_behind()
    {
        await using (var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory }))
        {
            for (var round = 0; round < 20; round++)
            {
                await store.CreateAsync(new CreateStreamRequest { Path = "d", ContentType = "text/plain" });

                // Queued together, unawaited: the delete lands in the commit of appends before it, whose row is not
                // written yet when it runs.
                var appends = Enumerable.Range(0, 50)
                    .Select(_ => store.AppendAsync(new AppendRequest { Path = "d", ContentType = "text/plain", Data = new StreamPayload(new byte[16], 16) }).AsTask())
                    .ToList();
                var deleted = store.DeleteAsync("d").AsTask();
                await Task.WhenAll(appends).WaitAsync(TimeSpan.FromSeconds(60));
                Assert.Equal(DeleteStreamStatus.Deleted, await deleted.WaitAsync(TimeSpan.FromSeconds(60)));
            }
        }

        Assert.Equal((0L, 0L), StreamKeyedDatabase.Query(_directory, "SELECT COUNT(*), 0 FROM chunks WHERE stream_id NOT IN (SELECT id FROM streams)").Single());
    }

    [Fact]
    public async Task Each_commit_has_its_own_flush_and_appends_that_arrive_during_it_share_the_next_commit()
    {
        await using var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        for (var s = 0; s < 16; s++)
        {
            await store.CreateAsync(new CreateStreamRequest { Path = $"f{s}", ContentType = "text/plain" });
        }

        var commitsBefore = store.CommitCount;
        var flushesBefore = store.FlushCount;
        const int Tasks = 64;
        const int PerTask = 30;
        await Task.WhenAll(Enumerable.Range(0, Tasks).Select(t => Task.Run(async () =>
        {
            for (var i = 0; i < PerTask; i++)
            {
                var result = await store.AppendAsync(new AppendRequest { Path = $"f{(t + i) % 16}", ContentType = "text/plain", Data = new StreamPayload(new byte[10], 10) });
                Assert.Equal(AppendStatus.Appended, result.Status);
            }
        }))).WaitAsync(TimeSpan.FromSeconds(60));

        // Every commit had its own flush (a store background write, committed and not yet flushed when the counters are
        // read, may be one ahead).
        var commits = store.CommitCount - commitsBefore;
        var flushes = store.FlushCount - flushesBefore;
        Assert.InRange(commits - flushes, 0, 1);
        Assert.True(commits < Tasks * PerTask / 4, $"{Tasks * PerTask} appends took {commits} commits; group commit should batch them");
        var tails = 0L;
        for (var s = 0; s < 16; s++)
        {
            tails += (await store.GetAsync($"f{s}")).Stream!.TailPosition;
        }

        Assert.Equal(Tasks * PerTask * 10, tails);
    }

    [Fact]
    public async Task Commits_to_a_stream_with_many_live_readers_and_to_others_reach_every_reader_in_order_and_are_readable_once_acknowledged()
    {
        // The hot stream's commits are offered to more readers than the writer publishes to itself, so they go through
        // the publisher thread, while commits to the cold streams alone are published on the writer: every reader still
        // gets each of its stream's appends once, in order, and an acknowledged append is already visible to readers.
        await using var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        const int Cold = 8;
        const int HotReaders = 2000;
        await store.CreateAsync(new CreateStreamRequest { Path = "hot", ContentType = "text/plain" });
        for (var c = 0; c < Cold; c++)
        {
            await store.CreateAsync(new CreateStreamRequest { Path = $"cold{c}", ContentType = "text/plain" });
        }

        var hotId = (await store.GetAsync("hot")).Stream!.Id;
        var hot = Enumerable.Range(0, HotReaders).Select(_ => store.Fanout.Subscribe(hotId)).ToList();
        var cold = new List<LiveSubscription>();
        for (var c = 0; c < Cold; c++)
        {
            cold.Add(store.Fanout.Subscribe((await store.GetAsync($"cold{c}")).Stream!.Id));
        }

        const int Tasks = 32;
        const int PerTask = 40;
        await Task.WhenAll(Enumerable.Range(0, Tasks).Select(t => Task.Run(async () =>
        {
            for (var i = 0; i < PerTask; i++)
            {
                var path = (t + i) % 4 == 0 ? "hot" : $"cold{(t + i) % Cold}";
                var result = await store.AppendAsync(new AppendRequest { Path = path, ContentType = "text/plain", Data = new StreamPayload(new byte[10], 10) });
                Assert.Equal(AppendStatus.Appended, result.Status);
                Assert.True((await store.GetAsync(path)).Stream!.TailPosition >= result.TailPosition, "an acknowledged append is visible to readers");
            }
        }))).WaitAsync(TimeSpan.FromSeconds(60));

        var hotTail = (await store.GetAsync("hot")).Stream!.TailPosition;
        Assert.Equal(Tasks * PerTask / 4 * 10, hotTail);
        foreach (var subscription in hot)
        {
            Assert.Equal(hotTail, await ReceivedInOrder(subscription, hotTail));
        }

        for (var c = 0; c < Cold; c++)
        {
            var tail = (await store.GetAsync($"cold{c}")).Stream!.TailPosition;
            Assert.Equal(tail, await ReceivedInOrder(cold[c], tail));
        }

        var total = hotTail;
        for (var c = 0; c < Cold; c++)
        {
            total += (await store.GetAsync($"cold{c}")).Stream!.TailPosition;
        }

        Assert.Equal(Tasks * PerTask * 10, total);
        foreach (var subscription in hot.Concat(cold))
        {
            subscription.Dispose();
        }

        static async Task<long> ReceivedInOrder(LiveSubscription subscription, long tail)
        {
            var position = 0L;
            while (position < tail)
            {
                var change = await subscription.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
                Assert.Equal(position, change.Chunk.Start);
                position = change.Chunk.End;
            }

            Assert.False(subscription.Reader.TryRead(out _), "no change beyond the tail");
            Assert.False(subscription.FellBehind);
            return position;
        }
    }

    [Fact]
    public async Task A_commit_behind_one_still_being_published_to_many_readers_waits_for_it()
    {
        // The hot stream's commit goes to more live readers than the writer offers changes to itself, so the publisher
        // thread takes it, and an observer holds it there. The cold stream's commit after it is flushed meanwhile, but is
        // published (and acknowledged) only after the hot one: never while the hot one is held.
        await using var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        await store.CreateAsync(new CreateStreamRequest { Path = "hot", ContentType = "text/plain" });
        await store.CreateAsync(new CreateStreamRequest { Path = "cold", ContentType = "text/plain" });
        var hotId = (await store.GetAsync("hot")).Stream!.Id;
        var hot = Enumerable.Range(0, 200).Select(_ => store.Fanout.Subscribe(hotId)).ToList();
        using var cold = store.Fanout.Subscribe((await store.GetAsync("cold")).Stream!.Id);

        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var release = new ManualResetEventSlim();
        var published = new System.Collections.Concurrent.ConcurrentQueue<(string Path, bool WhileHeld)>();
        store.Fanout.AddObserver(change =>
        {
            published.Enqueue((change.Path, !release.IsSet));
            if (change.StreamId == hotId && !held.Task.IsCompleted)
            {
                held.SetResult();
                release.Wait(TimeSpan.FromSeconds(30));
            }
        });

        var hotAppend = store.AppendAsync(new AppendRequest { Path = "hot", ContentType = "text/plain", Data = new StreamPayload(new byte[10], 10) }).AsTask();
        await held.Task.WaitAsync(TimeSpan.FromSeconds(30));
        var flushes = store.FlushCount;
        var coldAppend = store.AppendAsync(new AppendRequest { Path = "cold", ContentType = "text/plain", Data = new StreamPayload(new byte[10], 10) }).AsTask();

        // Once the cold commit is flushed, a writer that published it at once would have done so before this reads on.
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (store.FlushCount == flushes)
        {
            await Task.Delay(1, timeout.Token);
        }

        try
        {
            Assert.False(coldAppend.IsCompleted, "the cold append is acknowledged only after the hot commit before it");
        }
        finally
        {
            release.Set();
        }

        Assert.Equal(AppendStatus.Appended, (await hotAppend.WaitAsync(TimeSpan.FromSeconds(30))).Status);
        Assert.Equal(AppendStatus.Appended, (await coldAppend.WaitAsync(TimeSpan.FromSeconds(30))).Status);
        Assert.Equal([("hot", true), ("cold", false)], published.ToArray());
        Assert.Equal(10, (await cold.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30))).Chunk.End);
        foreach (var subscription in hot)
        {
            Assert.Equal(10, (await subscription.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30))).Chunk.End);
            subscription.Dispose();
        }
    }

    [Fact]
    public async Task A_document_read_while_its_write_is_committed_but_not_yet_flushed_answers_only_after_the_flush()
    {
        // SQLite shows a commit to readers before the writer flushes it. A read made in that moment (here, on the writer
        // thread just before the flush) must not answer with a write that is not yet acknowledged, and could be lost. No
        // background commit (sweeps, access times) may take the flush the hook acts on.
        await using var store = SqliteStreamStore.Open(QuietOptions());
        await store.PutDocumentAsync("c", "k", "one"u8.ToArray()).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Task<byte[]?>? get = null;
        IAsyncEnumerator<KeyValuePair<string, byte[]>>? list = null;
        Task<bool>? listed = null;
        bool? getAnsweredBeforeFlush = null, listAnsweredBeforeFlush = null;
        store.BeforeFlush = () =>
        {
            if (get is not null)
            {
                return;
            }

            get = store.GetDocumentAsync("c", "k").AsTask();
            getAnsweredBeforeFlush = get.IsCompleted;
            list = store.ListDocumentsAsync("c").GetAsyncEnumerator();
            listed = list.MoveNextAsync().AsTask();
            listAnsweredBeforeFlush = listed.IsCompleted;
        };

        await store.PutDocumentAsync("c", "k", "two"u8.ToArray()).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(getAnsweredBeforeFlush, "a read of the document answered before its commit was flushed");
        Assert.False(listAnsweredBeforeFlush, "a listing answered before the commit it read was flushed");
        Assert.Equal("two"u8.ToArray(), await get!.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.True(await listed!.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal("two"u8.ToArray(), list!.Current.Value);
        await list.DisposeAsync();

        // With nothing unflushed, a read answers at once.
        store.BeforeFlush = null;
        Assert.True(store.GetDocumentAsync("c", "k").IsCompleted);
    }

    [Fact]
    public async Task A_document_read_of_a_commit_whose_flush_failed_is_refused_rather_than_answered_or_left_waiting()
    {
        await using var store = SqliteStreamStore.Open(QuietOptions());
        await store.PutDocumentAsync("c", "k", "one"u8.ToArray()).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Task<byte[]?>? get = null;
        store.BeforeFlush = () =>
        {
            get = store.GetDocumentAsync("c", "k").AsTask();
            throw new IOException("the disk refused the flush");
        };

        await Assert.ThrowsAnyAsync<Exception>(() => store.PutDocumentAsync("c", "k", "two"u8.ToArray()).AsTask().WaitAsync(TimeSpan.FromSeconds(30)));
        var refused = await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => get!.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal("the disk refused the flush", refused.InnerException?.Message);

        // Later reads see the same unflushed commit, and are refused the same way.
        await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => store.GetDocumentAsync("c", "k").AsTask().WaitAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task A_stream_read_that_meets_a_trim_not_yet_flushed_answers_it_gone_only_after_the_flush()
    {
        // The reader holds the stream as it was before the trim, and the published state does not know of the trim yet:
        // the read finds the rows gone in the database and asks it where the stream starts now.
        await using var store = SqliteStreamStore.Open(QuietOptions());
        await store.CreateAsync(new CreateStreamRequest { Path = "t", ContentType = "text/plain" }).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        await store.AppendAsync(new AppendRequest { Path = "t", ContentType = "text/plain", Data = new StreamPayload(new byte[10], 10) }).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        var untrimmed = (await store.GetAsync("t")).Stream!;
        Task<ReadResult>? read = null;
        bool? answeredBeforeFlush = null;
        store.BeforeFlush = () =>
        {
            if (read is null)
            {
                read = store.ReadAsync(untrimmed, 0, 1024).AsTask();
                answeredBeforeFlush = read.IsCompleted;
            }
        };

        Assert.Equal(TrimStatus.Trimmed, (await store.TrimAsync("t", 10).AsTask().WaitAsync(TimeSpan.FromSeconds(30))).Status);
        Assert.False(answeredBeforeFlush, "a read answered a trim gone before the trim was flushed");
        Assert.Equal(10, (await read!.WaitAsync(TimeSpan.FromSeconds(30))).GoneBefore);
    }

    private SqliteStreamStoreOptions QuietOptions() => new()
    {
        DataDirectory = _directory,
        ExpirySweepInterval = TimeSpan.FromDays(1),
        AccessFlushInterval = TimeSpan.FromDays(1),
    };

    [Fact]
    public async Task Appends_in_flight_when_the_store_closes_are_each_acknowledged_or_refused_and_every_acknowledged_one_is_kept()
    {
        var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        await store.CreateAsync(new CreateStreamRequest { Path = "c", ContentType = "application/octet-stream" });
        var acknowledged = new System.Collections.Concurrent.ConcurrentBag<long>();
        var enough = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var refused = 0;
        var writers = Enumerable.Range(0, 32).Select(t => Task.Run(async () =>
        {
            for (var i = 0; ; i++)
            {
                var data = BitConverter.GetBytes(((long)t << 32) | (uint)i);
                try
                {
                    var result = await store.AppendAsync(new AppendRequest { Path = "c", ContentType = "application/octet-stream", Data = new StreamPayload(data, data.Length) });
                    Assert.Equal(AppendStatus.Appended, result.Status);
                    acknowledged.Add(BitConverter.ToInt64(data));
                    if (acknowledged.Count >= 500)
                    {
                        enough.TrySetResult();
                    }
                }
                catch (ObjectDisposedException)
                {
                    Interlocked.Increment(ref refused);
                    return;
                }
            }
        })).ToList();

        await enough.Task.WaitAsync(TimeSpan.FromSeconds(60));
        await store.DisposeAsync();

        // No append is left waiting on a store that stopped reading its queue.
        await Task.WhenAll(writers).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(32, refused);

        await using var reopened = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        var stream = (await reopened.GetAsync("c")).Stream!;
        var read = await reopened.ReadAsync(stream, 0, int.MaxValue);
        var bytes = read.Chunks.SelectMany(c => c.Data.ToArray()).ToArray();
        var stored = Enumerable.Range(0, bytes.Length / 8).Select(k => BitConverter.ToInt64(bytes, k * 8)).ToHashSet();
        Assert.Equal(bytes.Length / 8, stored.Count);
        Assert.Subset(stored, acknowledged.ToHashSet());
    }

    [Fact]
    public async Task The_write_ahead_log_starts_over_near_its_limit_under_steady_appends_and_nothing_is_lost()
    {
        const long Limit = 1024 * 1024;
        await using var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory, MaxWalBytes = Limit });
        var wal = Path.Combine(_directory, "streams.db-wal");
        const int Streams = 20;
        const int PerStream = 300;
        for (var s = 0; s < Streams; s++)
        {
            await store.CreateAsync(new CreateStreamRequest { Path = $"w{s}", ContentType = "text/plain" });
        }

        // Four writers, one append each at a time: many small commits, each rewriting whole pages of the WAL, far more
        // WAL in all than the limit. The file is sampled after every append.
        long largest = 0;
        var shrank = false;
        var gate = new object();
        await Task.WhenAll(Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
        {
            for (var i = w; i < Streams * PerStream; i += 4)
            {
                var data = new byte[200];
                BitConverter.TryWriteBytes(data, i);
                var result = await store.AppendAsync(new AppendRequest { Path = $"w{i % Streams}", ContentType = "text/plain", Data = new StreamPayload(data, data.Length) });
                Assert.Equal(AppendStatus.Appended, result.Status);
                lock (gate)
                {
                    // Read under the lock, so the readings are in order: a smaller one means the file really shrank.
                    var length = new FileInfo(wal).Length;
                    shrank |= length < largest;
                    largest = Math.Max(largest, length);
                }
            }
        }))).WaitAsync(TimeSpan.FromSeconds(120));

        // Past the limit by some commits' pages at most (checked every 8 commits, and after 64 when a checkpoint could not
        // complete at once), and it did start over.
        Assert.InRange(largest, Limit, Limit + (4 * 1024 * 1024));
        Assert.True(shrank, "the WAL never started over");
        for (var s = 0; s < Streams; s++)
        {
            var stream = (await store.GetAsync($"w{s}")).Stream!;
            Assert.Equal(PerStream * 200, stream.TailPosition);
            var read = await store.ReadAsync(stream, 0, int.MaxValue);
            var bytes = read.Chunks.SelectMany(c => c.Data.ToArray()).ToArray();
            Assert.Equal(PerStream * 200, bytes.Length);
            var seen = Enumerable.Range(0, PerStream).Select(k => BitConverter.ToInt32(bytes, k * 200)).Order().ToArray();
            Assert.Equal(Enumerable.Range(0, PerStream).Select(k => (k * Streams) + s), seen);
        }
    }

    [Fact]
    public async Task A_second_store_on_an_open_data_directory_is_refused_until_the_first_is_disposed()
    {
        var first = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        await first.CreateAsync(new CreateStreamRequest { Path = "owned", ContentType = "text/plain" });

        var refused = Assert.Throws<DataDirectoryLockedException>(() => SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory }));
        Assert.Equal(Path.GetFullPath(_directory), refused.Directory);
        Assert.Contains(Path.GetFullPath(_directory), refused.Message, StringComparison.Ordinal);
        Assert.Equal(StreamLookupStatus.Found, (await first.GetAsync("owned")).Status);

        await first.DisposeAsync();
        await using var second = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        Assert.Equal(StreamLookupStatus.Found, (await second.GetAsync("owned")).Status);
    }

    public ValueTask DisposeAsync()
    {
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }

        return ValueTask.CompletedTask;
    }
}

/// <summary>What the SQLite writer keeps of producers in memory.</summary>
public sealed class SqliteProducerCacheTests : IAsyncDisposable
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "ds-sqlite-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public async Task Producers_idle_for_a_minute_leave_memory_and_are_read_back_from_disk_as_they_were()
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        await using var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory }, clock);
        await store.CreateAsync(new CreateStreamRequest { Path = "runs", ContentType = "text/plain" });

        // An agent writes each run as a producer of its own: the store sees a new producer for every reply.
        const int Runs = 2000;
        for (var i = 0; i < Runs; i++)
        {
            Assert.Equal(AppendStatus.Appended, (await Append(store, $"agent/run-{i}", 0)).Status);
        }

        Assert.Equal(Runs, store.CachedProducerCount);

        // One run goes on appending; the others are done. The sweeps at 30 and 60 s find nothing idle for a minute (each
        // is queued before the append after it, so that append returns once it has run); the one at 90 s drops them.
        clock.Advance(TimeSpan.FromSeconds(45));
        Assert.Equal(AppendStatus.Appended, (await Append(store, "agent/run-0", 1)).Status);
        clock.Advance(TimeSpan.FromSeconds(15));
        Assert.Equal(AppendStatus.Appended, (await Append(store, "agent/run-0", 2)).Status);
        Assert.Equal(Runs, store.CachedProducerCount);
        clock.Advance(TimeSpan.FromSeconds(30));
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (store.CachedProducerCount != 1 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10);
        }

        Assert.Equal(1, store.CachedProducerCount);

        // Read back from disk as they were: a retry is still a duplicate, the next sequence number is taken, a gap is one.
        Assert.Equal(AppendStatus.Duplicate, (await Append(store, "agent/run-5", 0)).Status);
        Assert.Equal(AppendStatus.Appended, (await Append(store, "agent/run-6", 1)).Status);
        var gap = await Append(store, "agent/run-7", 2);
        Assert.Equal(AppendStatus.ProducerSeqGap, gap.Status);
        Assert.Equal(1, gap.ProducerSeq);

        // And still forgotten once the TTL has passed since their last append, as if they had never left memory.
        clock.Advance(TimeSpan.FromDays(7) + TimeSpan.FromMinutes(2));
        var forgotten = await Append(store, "agent/run-8", 1);
        Assert.Equal(AppendStatus.ProducerSeqGap, forgotten.Status);
        Assert.Equal(0, forgotten.ProducerSeq);
        Assert.Equal(Runs + 3, (await store.GetAsync("runs")).Stream!.TailPosition);
    }

    [Fact]
    public async Task A_sweep_queued_into_a_commit_that_fails_is_queued_again_at_the_next_interval()
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        await using var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory }, clock);
        await store.CreateAsync(new CreateStreamRequest { Path = "runs", ContentType = "text/plain" }).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        await store.CreateAsync(new CreateStreamRequest { Path = "hold", ContentType = "text/plain" }).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(AppendStatus.Appended, (await Append(store, "agent/run-0", 0).WaitAsync(TimeSpan.FromSeconds(30))).Status);
        Assert.Equal(AppendStatus.Appended, (await Append(store, "agent/run-1", 0).WaitAsync(TimeSpan.FromSeconds(30))).Status);
        Assert.Equal(2, store.CachedProducerCount);

        // The writer is held while it publishes an append to "hold" (an observer runs on it), so that what is queued
        // meanwhile forms one group: a create SQLite refuses as it runs (another connection took its path), then the
        // sweep, which so never runs.
        var holdId = (await store.GetAsync("hold")).Stream!.Id;
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var release = new ManualResetEventSlim();
        store.Fanout.AddObserver(change =>
        {
            if (change.StreamId == holdId && !held.Task.IsCompleted)
            {
                held.SetResult();
                release.Wait(TimeSpan.FromSeconds(30));
            }
        });
        var holding = store.AppendAsync(new AppendRequest { Path = "hold", ContentType = "text/plain", Data = new StreamPayload("h"u8.ToArray(), 1) }).AsTask();
        await held.Task.WaitAsync(TimeSpan.FromSeconds(30));
        StreamKeyedDatabase.Execute(_directory, "INSERT INTO streams (path, content_type, tail, created_at, last_access) VALUES ('taken', 'text/plain', 0, 0, 0)");
        var refused = store.CreateAsync(new CreateStreamRequest { Path = "taken", ContentType = "text/plain" }).AsTask();
        clock.Advance(TimeSpan.FromSeconds(30));
        release.Set();
        await holding.WaitAsync(TimeSpan.FromSeconds(30));
        await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => refused.WaitAsync(TimeSpan.FromSeconds(30)));

        // The failed group's sweep did not run. Both producers are idle for a minute at 90 s: the sweep then drops them,
        // which it can only do if the failed one was not left pending (the append after it returns once it has run).
        clock.Advance(TimeSpan.FromSeconds(60));
        Assert.Equal(AppendStatus.Appended, (await Append(store, "agent/run-2", 0).WaitAsync(TimeSpan.FromSeconds(30))).Status);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (store.CachedProducerCount != 1 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10);
        }

        Assert.Equal(1, store.CachedProducerCount);

        // Read back from disk as they were.
        Assert.Equal(AppendStatus.Appended, (await Append(store, "agent/run-0", 1).WaitAsync(TimeSpan.FromSeconds(30))).Status);
        Assert.Equal(AppendStatus.Duplicate, (await Append(store, "agent/run-1", 0).WaitAsync(TimeSpan.FromSeconds(30))).Status);
    }

    private static Task<AppendResult> Append(StreamStore store, string producer, long seq)
        => store.AppendAsync(new AppendRequest { Path = "runs", ContentType = "text/plain", Data = new StreamPayload("x"u8.ToArray(), 1), Producer = new ProducerStamp(producer, 0, seq) }).AsTask();

    public ValueTask DisposeAsync()
    {
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }

        return ValueTask.CompletedTask;
    }
}

/// <summary>The SQLite writer under loggers and metrics listeners that throw: it goes on, and answers every request.</summary>
public sealed class SqliteWriterResilienceTests : IAsyncDisposable
{
    // Metrics listeners are process-wide: the one in these tests throws only for the store this flow opens (its writer
    // thread starts with this flow's values).
    private static readonly AsyncLocal<bool> s_throwing = new();

    // Every wait on the store is bounded: a writer that stopped would leave it waiting for ever.
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private readonly string _directory = Path.Combine(Path.GetTempPath(), "ds-sqlite-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public async Task A_logger_that_throws_neither_stops_the_writer_nor_leaves_a_refused_commit_unanswered()
    {
        await using var store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory }, logger: new ThrowingLogger());
        await store.CreateAsync(new CreateStreamRequest { Path = "a", ContentType = "text/plain" }).AsTask().WaitAsync(Timeout);
        await store.CreateAsync(new CreateStreamRequest { Path = "b", ContentType = "text/plain" }).AsTask().WaitAsync(Timeout);
        Assert.Equal(3, (await store.AppendAsync(Append("a", "one", 0)).AsTask().WaitAsync(Timeout)).TailPosition);

        // Another connection takes the row the next append to "a" writes: SQLite refuses it when its group runs, and
        // the store logs the failed commit through a logger that throws.
        var id = StreamKeyedDatabase.Query(_directory, "SELECT id, tail FROM streams WHERE path = 'a'").Single().Item1;
        StreamKeyedDatabase.Execute(_directory, $"INSERT INTO chunks (stream_id, end_pos, start_pos, data) VALUES ({id}, 6, 3, x'21')");
        var refused = await Assert.ThrowsAsync<StreamStoreUnavailableException>(() => store.AppendAsync(Append("a", "two", 1)).AsTask().WaitAsync(Timeout));
        Assert.IsType<SqliteException>(refused.InnerException);

        // The writer goes on.
        Assert.Equal(3, (await store.AppendAsync(Append("b", "bee", 0)).AsTask().WaitAsync(Timeout)).TailPosition);
        Assert.True(store.IsAvailable);
    }

    [Fact]
    public async Task A_metrics_listener_that_throws_does_not_keep_commits_from_being_acknowledged()
    {
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "DurableSessions.Storage.Sqlite" || instrument.Meter.Name == "DurableSessions.Core")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        var thrown = 0;
        void ThrowIfAsked()
        {
            if (s_throwing.Value)
            {
                Interlocked.Increment(ref thrown);
                throw new InvalidOperationException("A metrics listener that throws.");
            }
        }

        listener.SetMeasurementEventCallback<long>((_, _, _, _) => ThrowIfAsked());
        listener.SetMeasurementEventCallback<int>((_, _, _, _) => ThrowIfAsked());
        listener.SetMeasurementEventCallback<double>((_, _, _, _) => ThrowIfAsked());
        listener.Start();

        SqliteStreamStore store;
        s_throwing.Value = true;
        try
        {
            store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        }
        finally
        {
            s_throwing.Value = false;
        }

        await using (store)
        {
            await store.CreateAsync(new CreateStreamRequest { Path = "a", ContentType = "text/plain" }).AsTask().WaitAsync(Timeout);
            using var reader = store.Fanout.Subscribe((await store.GetAsync("a")).Stream!.Id);
            for (var seq = 0; seq < 3; seq++)
            {
                var appended = await store.AppendAsync(Append("a", "x", seq)).AsTask().WaitAsync(Timeout);
                Assert.Equal((AppendStatus.Appended, seq + 1L), (appended.Status, appended.TailPosition));
                Assert.Equal(seq + 1L, (await reader.Reader.ReadAsync().AsTask().WaitAsync(Timeout)).Chunk.End);
            }
        }

        // The listener did throw on the store's threads (commits, group sizes, the fan-out's appends).
        Assert.True(Volatile.Read(ref thrown) >= 6, $"the listener threw {thrown} times");
        await using var reopened = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory });
        Assert.Equal(3, (await reopened.GetAsync("a")).Stream!.TailPosition);
    }

    private static AppendRequest Append(string path, string text, long seq)
        => new() { Path = path, ContentType = "text/plain", Data = new StreamPayload(Encoding.UTF8.GetBytes(text), text.Length), Producer = new ProducerStamp("p-" + path, 0, seq) };

    public ValueTask DisposeAsync()
    {
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>Throws on every warning or worse.</summary>
    private sealed class ThrowingLogger : Microsoft.Extensions.Logging.ILogger<SqliteStreamStore>
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;

        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel >= Microsoft.Extensions.Logging.LogLevel.Warning)
            {
                throw new InvalidOperationException("A logger that throws.");
            }
        }
    }
}
