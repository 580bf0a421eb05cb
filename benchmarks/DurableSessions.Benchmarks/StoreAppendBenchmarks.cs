using BenchmarkDotNet.Attributes;
using DurableSessions.Storage.Sqlite;

namespace DurableSessions.Benchmarks;

/// <summary>
/// Appends into the SQLite store without HTTP: one append at a time (latency of a group commit of one) and 64
/// concurrent appends (group commit), plain and as idempotent producers (a producer's sequence number is stored with
/// each append), with and without fsync.
/// </summary>
public class StoreAppendBenchmarks
{
    private SqliteStreamStore _store = null!;
    private string _directory = null!;
    private StreamPayload _event;
    private long _seq;

    [Params(SqliteDurability.Fsync, SqliteDurability.Relaxed)]
    public SqliteDurability Durability { get; set; }

    [GlobalSetup]
    public async Task Setup()
    {
        _directory = Path.Combine(Path.GetTempPath(), "ds-bench-" + Guid.NewGuid().ToString("N"));
        _store = SqliteStreamStore.Open(new SqliteStreamStoreOptions { DataDirectory = _directory, Durability = Durability });
        for (var i = 0; i < 64; i++)
        {
            await _store.CreateAsync(new CreateStreamRequest { Path = $"s{i}", ContentType = "application/json" });
        }

        _event = new StreamPayload(System.Text.Encoding.UTF8.GetBytes("{\"text\":\"" + new string('x', 240) + "\"}"), 1);

    }

    [GlobalCleanup]
    public async Task Cleanup()
    {
        await _store.DisposeAsync();
        Directory.Delete(_directory, recursive: true);
    }

    [Benchmark]
    public async Task<long> AppendOne()
        => (await _store.AppendAsync(new AppendRequest { Path = "s0", ContentType = "application/json", Data = _event })).TailPosition;

    [Benchmark(OperationsPerInvoke = 64)]
    public async Task Append64Concurrently()
    {
        var tasks = new Task<AppendResult>[64];
        for (var i = 0; i < tasks.Length; i++)
        {
            tasks[i] = _store.AppendAsync(new AppendRequest { Path = $"s{i}", ContentType = "application/json", Data = _event }).AsTask();
        }

        await Task.WhenAll(tasks);
    }

    [Benchmark(OperationsPerInvoke = 64)]
    public async Task Append64ConcurrentlyAsProducers()
    {
        var seq = _seq++;
        var tasks = new Task<AppendResult>[64];
        for (var i = 0; i < tasks.Length; i++)
        {
            tasks[i] = _store.AppendAsync(new AppendRequest
            {
                Path = $"s{i}",
                ContentType = "application/json",
                Data = _event,
                Producer = new ProducerStamp($"producer-{i}", 0, seq),
            }).AsTask();
        }

        await Task.WhenAll(tasks);
    }
}
