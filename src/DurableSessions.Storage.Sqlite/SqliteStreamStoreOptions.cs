namespace DurableSessions.Storage.Sqlite;

/// <summary>When an append counts as durable in the SQLite store.</summary>
public enum SqliteDurability
{
    /// <summary>
    /// Each group commit is flushed to disk (fsync) before its appends are acknowledged. An acknowledged append
    /// survives a process crash and a power loss. The default.
    /// </summary>
    Fsync,

    /// <summary>
    /// Appends are acknowledged once the operating system has the write (SQLite <c>synchronous=NORMAL</c> in WAL mode).
    /// An acknowledged append survives a process crash (<c>kill -9</c>) but the last commits may be lost on power loss.
    /// </summary>
    Relaxed,
}

/// <summary>Settings of the embedded SQLite store.</summary>
public sealed class SqliteStreamStoreOptions
{
    /// <summary>The directory holding the database files. Created if missing. Default <c>./data</c>.</summary>
    public string DataDirectory { get; set; } = "data";

    /// <summary>The durability of an acknowledged append. Default <see cref="SqliteDurability.Fsync"/>.</summary>
    public SqliteDurability Durability { get; set; } = SqliteDurability.Fsync;

    /// <summary>The most write requests committed in one transaction. Default 4096; at least 1.</summary>
    public int MaxBatchSize { get; set; } = 4096;

    /// <summary>How often expired streams are swept from storage. Default 30 seconds; from 10 ms to 1 day.</summary>
    public TimeSpan ExpirySweepInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long an idle producer's state (<c>Producer-Id</c> epoch and sequence) is kept: after this long without an
    /// accepted append the producer is treated as new (protocol §5.2.1, producer state cleanup). Default 7 days. A
    /// producer read back from disk (after a restart) may be kept up to a hundredth of this (at most a minute) longer,
    /// never less: its last use is written to disk at that resolution.
    /// </summary>
    public TimeSpan ProducerStateTtl { get; set; } = TimeSpan.FromDays(7);

    /// <summary>
    /// The size past which the write-ahead log starts over (after everything in it is copied into the database) and to
    /// which SQLite truncates it then: the data directory holds the database plus about this much WAL. A smaller limit
    /// means less disk and more frequent short write pauses (one checkpoint on the writer each time). Default 256 MiB;
    /// at least 1 MiB.
    /// </summary>
    public long MaxWalBytes { get; set; } = 256 * 1024 * 1024;

    /// <summary>
    /// The most memory the writer's page cache holds. Appends touch each stream's last pages and its producers' rows
    /// over and over; a cache that holds them spares reading them back from disk (with SQLite's own default of
    /// 2,000 KiB, a few hundred active streams did so on nearly every commit). Pages are cached only once the writer
    /// touches them (appends, and also expiry sweeps, deletes and forks), not when the store opens. Default 32 MiB;
    /// from 1 MiB to 2 TiB.
    /// </summary>
    public long WriterCacheBytes { get; set; } = 32 * 1024 * 1024;

    /// <summary>
    /// Whether the store rewrites the append and producer tables of a database created by an earlier version (keyed by
    /// stream, <c>WITHOUT ROWID</c>) into the layout new databases have (rowid tables with an index by stream: new rows go
    /// in write order, about half the pages written per append; the rows already there stay grouped by stream) when it
    /// opens. Default false: such a database is used as it is. The rewrite copies every append, both tables in one
    /// transaction, before the store serves anything, so it takes time and disk in proportion to the data: the database
    /// file grows to about twice its size and keeps it (later writes reuse the pages the old tables held), and the WAL
    /// holds another copy until the rewrite is checkpointed, so allow about three times the database's size in all.
    /// Once done, opening again does nothing more. A rewrite cut short (a crash, a full disk) is rolled back, leaving the
    /// database as it was.
    /// </summary>
    public bool ConvertTables { get; set; }

    /// <summary>How often read-driven TTL refreshes are persisted. Default 5 seconds; from 10 ms to 1 day.</summary>
    public TimeSpan AccessFlushInterval { get; set; } = TimeSpan.FromSeconds(5);
}
