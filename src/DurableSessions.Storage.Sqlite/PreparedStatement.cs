using System.Text;
using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace DurableSessions.Storage.Sqlite;

/// <summary>
/// A statement the writer runs for nearly every append (a chunk's row, a producer's sequence number), prepared once on
/// the writer's connection and run through SQLite's own API, in whatever transaction the connection has open.
/// </summary>
/// <remarks>
/// Run as a <see cref="SqliteCommand"/>, each execution allocates a binder per parameter, a boxed value per number, a
/// data reader and the enumerators that find its statements: about a tenth of what the server allocates under a load
/// of streamed replies. Not thread-safe: the writer thread alone uses it. Dispose it before the connection closes.
/// </remarks>
internal sealed class PreparedStatement : IDisposable
{
    private readonly sqlite3 _db;
    private readonly sqlite3_stmt _statement;
    private readonly int[] _parameters;

    /// <summary>Prepares <paramref name="sql"/>, whose parameters are bound by their position in <paramref name="parameters"/>.</summary>
    public PreparedStatement(SqliteConnection connection, string sql, params string[] parameters)
    {
        _db = connection.Handle ?? throw new InvalidOperationException("The connection is not open.");
        SqliteException.ThrowExceptionForRC(raw.sqlite3_prepare_v3(_db, sql, raw.SQLITE_PREPARE_PERSISTENT, out _statement), _db);
        if (raw.sqlite3_bind_parameter_count(_statement) != parameters.Length)
        {
            _statement.Dispose();
            throw new ArgumentException("Name every parameter of the statement once.", nameof(parameters));
        }

        _parameters = new int[parameters.Length];
        for (var i = 0; i < parameters.Length; i++)
        {
            _parameters[i] = raw.sqlite3_bind_parameter_index(_statement, parameters[i]);
            if (_parameters[i] <= 0)
            {
                _statement.Dispose();
                throw new ArgumentException($"The statement has no parameter {parameters[i]}.", nameof(parameters));
            }
        }
    }

    public void Bind(int position, long value) => Check(raw.sqlite3_bind_int64(_statement, _parameters[position], value));

    public void Bind(int position, long? value)
        => Check(value is { } v ? raw.sqlite3_bind_int64(_statement, _parameters[position], v) : raw.sqlite3_bind_null(_statement, _parameters[position]));

    public void Bind(int position, string? value)
    {
        if (value is null)
        {
            Check(raw.sqlite3_bind_null(_statement, _parameters[position]));
            return;
        }

        // SQLite copies what it binds: a short string is encoded on the stack.
        var length = Encoding.UTF8.GetByteCount(value);
        Span<byte> buffer = length <= 256 ? stackalloc byte[length] : new byte[length];
        Encoding.UTF8.GetBytes(value, buffer);
        Check(raw.sqlite3_bind_text(_statement, _parameters[position], buffer));
    }

    /// <summary>Binds a blob (copied by SQLite); an empty one is bound as a zero-length blob, not as NULL.</summary>
    public void Bind(int position, ReadOnlySpan<byte> value)
        => Check(value.IsEmpty ? raw.sqlite3_bind_zeroblob(_statement, _parameters[position], 0) : raw.sqlite3_bind_blob(_statement, _parameters[position], value));

    /// <summary>Runs the statement with what is bound, then clears it for the next run.</summary>
    /// <returns>The number of rows it changed.</returns>
    /// <exception cref="SqliteException">SQLite refused it (a constraint, a full disk, a broken file).</exception>
    public int Execute()
    {
        try
        {
            var result = raw.sqlite3_step(_statement);
            if (result != raw.SQLITE_DONE)
            {
                SqliteException.ThrowExceptionForRC(result == raw.SQLITE_ROW ? raw.SQLITE_MISUSE : result, _db);
            }

            return raw.sqlite3_changes(_db);
        }
        finally
        {
            raw.sqlite3_reset(_statement);
            raw.sqlite3_clear_bindings(_statement);
        }
    }

    public void Dispose() => _statement.Dispose();

    private void Check(int result)
    {
        if (result != raw.SQLITE_OK)
        {
            SqliteException.ThrowExceptionForRC(result, _db);
        }
    }
}
