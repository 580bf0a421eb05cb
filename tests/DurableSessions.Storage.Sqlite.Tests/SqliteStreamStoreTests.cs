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
