using Microsoft.Data.Sqlite;

namespace DurableSessions.Storage.Sqlite;

/// <summary>The database layout of the SQLite store.</summary>
internal static class Schema
{
    public const string Create = """
        CREATE TABLE IF NOT EXISTS streams (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            path TEXT NOT NULL UNIQUE,
            content_type TEXT NOT NULL,
            tail INTEGER NOT NULL,
            closed INTEGER NOT NULL DEFAULT 0,
            closed_by_id TEXT,
            closed_by_epoch INTEGER,
            closed_by_seq INTEGER,
            ttl_seconds INTEGER,
            expires_at INTEGER,
            created_at INTEGER NOT NULL,
            last_access INTEGER NOT NULL,
            fork_source_id INTEGER,
            fork_source_path TEXT,
            fork_position INTEGER NOT NULL DEFAULT 0,
            fork_offset INTEGER NOT NULL DEFAULT 0,
            fork_sub_offset INTEGER NOT NULL DEFAULT 0,
            soft_deleted INTEGER NOT NULL DEFAULT 0,
            last_stream_seq TEXT,
            owner TEXT,
            retained_from INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE IF NOT EXISTS documents (
            collection TEXT NOT NULL,
            key TEXT NOT NULL,
            value BLOB NOT NULL,
            PRIMARY KEY (collection, key)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS store_state (
            key TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        ) WITHOUT ROWID;
        """;

    /// <summary>Set by a store that closed cleanly, every access flushed; taken away when a store opens.</summary>
    public const string SelectClosedCleanly = "SELECT value FROM store_state WHERE key = 'closed_cleanly'";

    public const string ForgetClosedCleanly = "DELETE FROM store_state WHERE key = 'closed_cleanly'";

    public const string MarkClosedCleanly = "INSERT OR REPLACE INTO store_state (key, value) VALUES ('closed_cleanly', 1)";

    /// <summary>
    /// Tables that hold the appended data (one row per append, or per run of appends to one stream in one group commit,
    /// up to 64 KiB) and one row per producer. Each is a rowid table in the order its rows were written,
    /// with an index by stream: a group commit then writes its new rows into the last pages of the table, and a producer's
    /// update lands on the pages of recent producers, which the commits share. Keyed by stream instead (as databases
    /// created before kept them, <c>WITHOUT ROWID</c>), each append rewrote the last page of its stream, a split rewrote
    /// its neighbours too, and a commit of appends to many streams wrote about three pages per append. Those databases keep
    /// their tables as they are (unless <see cref="SqliteStreamStoreOptions.ConvertTables"/> rewrites them): every
    /// statement here works on both.
    /// </summary>
    public const string CreateChunks = """
        CREATE TABLE chunks (
            stream_id INTEGER NOT NULL,
            end_pos INTEGER NOT NULL,
            start_pos INTEGER NOT NULL,
            data BLOB NOT NULL
        );
        CREATE UNIQUE INDEX chunks_by_stream ON chunks (stream_id, end_pos);
        """;

    /// <inheritdoc cref="CreateChunks"/>
    public const string CreateProducers = """
        CREATE TABLE producers (
            stream_id INTEGER NOT NULL,
            producer_id TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            last_used INTEGER NOT NULL DEFAULT 0
        );
        CREATE UNIQUE INDEX producers_by_stream ON producers (stream_id, producer_id);
        """;

    public const string TableSql = "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = $name";

    public const string ChunkColumns = "stream_id, end_pos, start_pos, data";

    public const string ChunkKey = "stream_id, end_pos";

    public const string ProducerColumns = "stream_id, producer_id, epoch, last_seq, last_used";

    public const string ProducerKey = "stream_id, producer_id";

    /// <summary>
    /// The statements that rewrite a table keyed by stream into the layout <paramref name="create"/> makes, keeping every
    /// row. The rows already there go in grouped by stream (as they lay before, which suits reading old streams back);
    /// rows written afterwards go in write order.
    /// </summary>
    public static string ConvertTable(string table, string create, string columns, string key) => $"""
        ALTER TABLE {table} RENAME TO {table}_stream_keyed;
        {create}
        INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_stream_keyed ORDER BY {key};
        DROP TABLE {table}_stream_keyed;
        """;

    /// <summary>Databases from before producer state expired lack <c>last_used</c>; their producers count as used now.</summary>
    public const string AddProducerLastUsed = "ALTER TABLE producers ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0; UPDATE producers SET last_used = $now";

    /// <summary>Databases from before per-owner limits lack <c>owner</c>; their streams have no known owner.</summary>
    public const string AddStreamOwner = "ALTER TABLE streams ADD COLUMN owner TEXT";

    public const string HasStreamOwner = "SELECT COUNT(*) FROM pragma_table_info('streams') WHERE name = 'owner'";

    /// <summary>Databases from before retention lack <c>retained_from</c>; their streams hold all their data.</summary>
    public const string AddRetainedFrom = "ALTER TABLE streams ADD COLUMN retained_from INTEGER NOT NULL DEFAULT 0";

    public const string HasRetainedFrom = "SELECT COUNT(*) FROM pragma_table_info('streams') WHERE name = 'retained_from'";

    /// <summary>The end of the stream's last chunk at or before <c>$before</c>: where a trim can cut.</summary>
    public const string SelectTrimPoint = "SELECT MAX(end_pos) FROM chunks WHERE stream_id = $id AND end_pos <= $before";

    public const string DeleteChunksBefore = "DELETE FROM chunks WHERE stream_id = $id AND end_pos <= $cut";

    public const string SelectRetainedFrom = "SELECT retained_from FROM streams WHERE id = $id";

    public const string HasProducerLastUsed = "SELECT COUNT(*) FROM pragma_table_info('producers') WHERE name = 'last_used'";

    public const string CreateProducerIndex = "CREATE INDEX IF NOT EXISTS producers_last_used ON producers (last_used)";

    public const string DeleteIdleProducers = "DELETE FROM producers WHERE last_used < $cutoff";

    public const string SelectStreams = """
        SELECT id, path, content_type, tail, closed, closed_by_id, closed_by_epoch, closed_by_seq, ttl_seconds, expires_at,
               created_at, last_access, fork_source_id, fork_source_path, fork_position, fork_offset, fork_sub_offset,
               soft_deleted, last_stream_seq, owner, retained_from
        FROM streams
        """;

    public const string SelectTails = "SELECT stream_id, MAX(end_pos) FROM chunks GROUP BY stream_id";

    public const string InsertStream = """
        INSERT INTO streams (path, content_type, tail, closed, ttl_seconds, expires_at, created_at, last_access,
                             fork_source_id, fork_source_path, fork_position, fork_offset, fork_sub_offset, owner, retained_from)
        VALUES ($path, $content_type, $tail, $closed, $ttl, $expires_at, $now, $now,
                $fork_source_id, $fork_source_path, $fork_position, $fork_offset, $fork_sub_offset, $owner, $retained_from)
        RETURNING id
        """;

    public const string UpdateStream = """
        UPDATE streams SET tail = $tail, closed = $closed, closed_by_id = $closed_by_id, closed_by_epoch = $closed_by_epoch,
                           closed_by_seq = $closed_by_seq, last_access = $last_access, last_stream_seq = $last_stream_seq,
                           soft_deleted = $soft_deleted, retained_from = $retained_from
        WHERE id = $id
        """;

    public const string InsertChunk = "INSERT INTO chunks (stream_id, end_pos, start_pos, data) VALUES ($id, $end, $start, $data)";

    public const string UpsertProducer = """
        INSERT INTO producers (stream_id, producer_id, epoch, last_seq, last_used) VALUES ($id, $producer, $epoch, $seq, $now)
        ON CONFLICT (stream_id, producer_id) DO UPDATE SET epoch = excluded.epoch, last_seq = excluded.last_seq, last_used = excluded.last_used
        """;

    /// <summary>A producer's new sequence number (and epoch), leaving <c>last_used</c> (and so its index) as it is.</summary>
    public const string UpdateProducerSeq = "UPDATE producers SET epoch = $epoch, last_seq = $seq WHERE stream_id = $id AND producer_id = $producer";

    public const string SelectProducer = "SELECT epoch, last_seq, last_used FROM producers WHERE stream_id = $id AND producer_id = $producer";

    public const string DeleteStream = """
        DELETE FROM chunks WHERE stream_id = $id;
        DELETE FROM producers WHERE stream_id = $id;
        DELETE FROM streams WHERE id = $id;
        """;

    public const string TouchStream = "UPDATE streams SET last_access = $last_access WHERE id = $id";

    public const string SelectChunks = "SELECT start_pos, end_pos, data FROM chunks WHERE stream_id = $id AND end_pos > $from ORDER BY end_pos LIMIT $limit";

    public const string PutDocument = """
        INSERT INTO documents (collection, key, value) VALUES ($collection, $key, $value)
        ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value
        """;

    public const string DeleteDocument = "DELETE FROM documents WHERE collection = $collection AND key = $key";

    public const string SelectDocument = "SELECT value FROM documents WHERE collection = $collection AND key = $key";

    public const string ListDocuments = "SELECT key, value FROM documents WHERE collection = $collection ORDER BY key";

    public static StreamInfo ReadStream(SqliteDataReader r)
    {
        ProducerStamp? closedBy = r.IsDBNull(5) ? null : new ProducerStamp(r.GetString(5), r.GetInt64(6), r.GetInt64(7));
        return new StreamInfo
        {
            Id = r.GetInt64(0),
            Path = r.GetString(1),
            ContentType = r.GetString(2),
            TailPosition = r.GetInt64(3),
            Closed = r.GetInt64(4) != 0,
            ClosedBy = closedBy,
            TtlSeconds = r.IsDBNull(8) ? null : r.GetInt64(8),
            ExpiresAt = r.IsDBNull(9) ? null : DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(9)),
            CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(10)),
            LastAccessAt = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(11)),
            ForkSourceId = r.IsDBNull(12) ? null : r.GetInt64(12),
            ForkSourcePath = r.IsDBNull(13) ? null : r.GetString(13),
            ForkPosition = r.GetInt64(14),
            ForkOffset = r.GetInt64(15),
            ForkSubOffset = r.GetInt64(16),
            SoftDeleted = r.GetInt64(17) != 0,
            LastStreamSeq = r.IsDBNull(18) ? null : r.GetString(18),
            Owner = r.IsDBNull(19) ? null : r.GetString(19),
            RetainedFrom = r.GetInt64(20),
        };
    }

    public static object Db(object? value) => value ?? DBNull.Value;
}

/// <summary>A chunk row as stored.</summary>
internal readonly record struct ChunkRow(long Start, long End, byte[] Data);

/// <summary>A pooled read-only connection with its prepared statements.</summary>
internal sealed class ReaderConnection : IDisposable
{
    private readonly SqliteConnection _connection;
    private readonly SqliteCommand _chunks;
    private readonly SqliteParameter _id;
    private readonly SqliteParameter _from;
    private readonly SqliteParameter _limit;

    public ReaderConnection(string connectionString)
    {
        _connection = new SqliteConnection(connectionString);
        _connection.Open();
        using (var pragma = _connection.CreateCommand())
        {
            pragma.CommandText = "PRAGMA query_only=1; PRAGMA busy_timeout=5000;";
            pragma.ExecuteNonQuery();
        }

        // A reader never checkpoints on close, even when it is the last connection to close (one returned by a read that
        // ends after the store closed): the writer checkpoints at close itself, and not at all after a failed flush.
        SqliteException.ThrowExceptionForRC(
            SQLitePCL.raw.sqlite3_db_config(_connection.Handle, SQLitePCL.raw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, out _), _connection.Handle);

        _chunks = _connection.CreateCommand();
        _chunks.CommandText = Schema.SelectChunks;
        _id = _chunks.Parameters.Add("$id", SqliteType.Integer);
        _from = _chunks.Parameters.Add("$from", SqliteType.Integer);
        _limit = _chunks.Parameters.Add("$limit", SqliteType.Integer);
        _chunks.Prepare();
    }

    /// <summary>
    /// Reads up to <paramref name="limit"/> chunks from <paramref name="from"/>, and stops early once
    /// <paramref name="maxBytes"/> are read: a row's data is loaded only when it is taken, so a read of large appends
    /// holds about one read's worth of them, not the whole batch. <paramref name="more"/> says whether rows may follow.
    /// </summary>
    public List<ChunkRow> Read(long streamId, long from, int limit, long maxBytes, out bool more)
    {
        _id.Value = streamId;
        _from.Value = from;
        _limit.Value = limit;
        var rows = new List<ChunkRow>();
        long bytes = 0;
        more = false;
        using var reader = _chunks.ExecuteReader();
        while (reader.Read())
        {
            if (rows.Count > 0 && bytes >= maxBytes)
            {
                more = true;
                break;
            }

            var data = (byte[])reader.GetValue(2);
            rows.Add(new ChunkRow(reader.GetInt64(0), reader.GetInt64(1), data));
            bytes += data.Length;
        }

        more |= rows.Count == limit;
        return rows;
    }

    /// <summary>Where a stream's data starts as committed now, or null when the stream was deleted.</summary>
    public long? RetainedFrom(long streamId)
    {
        using var command = _connection.CreateCommand();
        command.CommandText = Schema.SelectRetainedFrom;
        command.Parameters.AddWithValue("$id", streamId);
        return command.ExecuteScalar() is long retainedFrom ? retainedFrom : null;
    }

    public byte[]? GetDocument(string collection, string key)
    {
        using var command = _connection.CreateCommand();
        command.CommandText = Schema.SelectDocument;
        command.Parameters.AddWithValue("$collection", collection);
        command.Parameters.AddWithValue("$key", key);
        return command.ExecuteScalar() as byte[];
    }

    public List<KeyValuePair<string, byte[]>> ListDocuments(string collection)
    {
        using var command = _connection.CreateCommand();
        command.CommandText = Schema.ListDocuments;
        command.Parameters.AddWithValue("$collection", collection);
        var result = new List<KeyValuePair<string, byte[]>>();
        using var reader = command.ExecuteReader();
        while (reader.Read())
        {
            result.Add(new(reader.GetString(0), (byte[])reader.GetValue(1)));
        }

        return result;
    }

    public void Dispose()
    {
        _chunks.Dispose();
        _connection.Dispose();
    }
}
