using DurableSessions.Storage.Specification;

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

/// <summary>Behaviour specific to the SQLite store's group commit.</summary>
public sealed class SqliteGroupCommitTests : IAsyncDisposable
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "ds-sqlite-" + Guid.NewGuid().ToString("N"));

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
