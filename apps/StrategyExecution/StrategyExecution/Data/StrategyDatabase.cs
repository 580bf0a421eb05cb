using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Metadata;

namespace StrategyExecution.Data;

/// <summary>
/// Where the app keeps its data: SQLite in the data directory by default, or PostgreSQL when <c>Database:Provider</c>
/// is <c>postgres</c> and <c>ConnectionStrings:Strategy</c> names the server. The schema and every query are the same on
/// both; only what a provider needs differently lives here.
/// </summary>
public sealed partial class StrategyDatabase
{
    private StrategyDatabase(string provider, string connectionString)
    {
        Provider = provider;
        ConnectionString = connectionString;
    }

    /// <summary>The provider's name: <c>sqlite</c> or <c>postgres</c>.</summary>
    public string Provider { get; }

    /// <summary>The connection string.</summary>
    public string ConnectionString { get; }

    /// <summary>Whether the data lives in PostgreSQL.</summary>
    public bool IsPostgres => Provider == "postgres";

    /// <summary>
    /// Reads the choice from <paramref name="configuration"/>. A misconfiguration stops the start with a message that
    /// says what to set, rather than starting on a database nobody meant.
    /// </summary>
    public static StrategyDatabase FromConfiguration(IConfiguration configuration, string dataDirectory)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        var provider = (configuration["Database:Provider"] ?? "sqlite").Trim().ToLowerInvariant();
        var connectionString = configuration.GetConnectionString("Strategy");
        return provider switch
        {
            "sqlite" => new StrategyDatabase(provider, connectionString ?? $"Data Source={Path.Combine(dataDirectory, "strategy.db")}"),
            "postgres" or "postgresql" => new StrategyDatabase("postgres", string.IsNullOrWhiteSpace(connectionString)
                ? throw new InvalidOperationException("Database:Provider is postgres: set ConnectionStrings:Strategy to the server's connection string, e.g. \"Host=127.0.0.1;Username=strategy;Password=...;Database=strategy\".")
                : connectionString),
            _ => throw new InvalidOperationException($"Database:Provider '{provider}' is not known: use sqlite (the default) or postgres."),
        };
    }

    /// <summary>Where the data lives, for the start-up line: never the password.</summary>
    public string Describe()
    {
        if (IsPostgres)
        {
            var builder = new Npgsql.NpgsqlConnectionStringBuilder(ConnectionString);
            return $"PostgreSQL database {builder.Database} on {builder.Host}:{builder.Port}";
        }

        return $"SQLite {new Microsoft.Data.Sqlite.SqliteConnectionStringBuilder(ConnectionString).DataSource}";
    }

    /// <summary>
    /// Whether <paramref name="exception"/> (or one inside it) says the database could not take the request now rather
    /// than that the request is wrong: SQLite still locked by another writer once its busy timeout is up, a PostgreSQL
    /// lock, deadlock or serialization conflict, a statement cancelled by its timeout, too many connections, or a
    /// connection that failed or timed out. Whether the request may be sent again also depends on what of it was
    /// written before (<see cref="StrategyDb.MayHaveWritten"/>).
    /// </summary>
    public static bool IsBusy(Exception exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (RefusedBeforeApplying(e) || e is Npgsql.NpgsqlException { IsTransient: true } and not Npgsql.PostgresException)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Whether <paramref name="exception"/> (or one inside it) is the database's refusal of a statement or commit that
    /// therefore applied nothing: SQLITE_BUSY or SQLITE_LOCKED; on PostgreSQL a serialization failure, a deadlock, a lock
    /// not available, a statement cancelled by its timeout, too many connections, or a server that cannot take
    /// connections now. Other PostgreSQL errors a driver calls transient (a disk full, an administrator's shutdown) are
    /// not a busy database but a failing one.
    /// </summary>
    public static bool RefusedBeforeApplying(Exception exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is Microsoft.Data.Sqlite.SqliteException { SqliteErrorCode: 5 or 6 }
                || e is Npgsql.PostgresException { SqlState: "40001" or "40P01" or "55P03" or "57014" or "53300" or "57P03" })
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Says that a request was answered 503 because the database was busy.</summary>
    [LoggerMessage(20, LogLevel.Warning, "The database was busy; {Method} {Path} was answered 503")]
    public static partial void LogBusy(ILogger logger, string method, string path, Exception exception);

    /// <summary>Points <paramref name="options"/> at the database.</summary>
    public void Configure(DbContextOptionsBuilder options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (IsPostgres)
        {
            options.UseNpgsql(ConnectionString);
        }
        else
        {
            options.UseSqlite(ConnectionString);
        }
    }

    /// <summary>
    /// Adds the model's columns that a database made by an earlier version lacks, when the model lets them be empty (as
    /// every column added since is): the schema is made whole by <c>EnsureCreated</c> only when the database is new. A
    /// missing column that must hold a value cannot be added so, and stops the start with what to do. A column another
    /// process added meanwhile counts as added.
    /// </summary>
    public static void EnsureColumns(StrategyDb db)
    {
        ArgumentNullException.ThrowIfNull(db);
        var postgres = db.Database.IsNpgsql();
        foreach (var entity in db.Model.GetEntityTypes())
        {
            if (entity.GetTableName() is not { } table)
            {
                continue;
            }

#pragma warning disable EF1002 // Table and column names come from the model, not from input.
            var existing = db.Database.SqlQueryRaw<string>(postgres
                    ? $"SELECT column_name AS \"Value\" FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = '{table}'"
                    : $"SELECT name AS \"Value\" FROM pragma_table_info('{table}')")
                .ToHashSet(StringComparer.Ordinal);
            var store = StoreObjectIdentifier.Table(table, entity.GetSchema());
            foreach (var property in entity.GetProperties())
            {
                if (property.GetColumnName(store) is not { } column || existing.Contains(column))
                {
                    continue;
                }

                if (!property.IsColumnNullable(store))
                {
                    throw new InvalidOperationException($"The database was made by an earlier version of the app and its table {table} lacks the column {column}, which must hold a value. Start with a new --Data directory (or an empty PostgreSQL database); the demo organisation is loaded afresh.");
                }

                try
                {
                    db.Database.ExecuteSqlRaw(postgres
                        ? $"ALTER TABLE \"{table}\" ADD COLUMN IF NOT EXISTS \"{column}\" {property.GetColumnType(store)} NULL"
                        : $"ALTER TABLE \"{table}\" ADD COLUMN \"{column}\" {property.GetColumnType(store)} NULL");
                }
                catch (Microsoft.Data.Sqlite.SqliteException ex) when (ex.Message.Contains("duplicate column name", StringComparison.Ordinal))
                {
                    // Another app process starting on the same database added it at the same moment.
                }
                catch (Npgsql.PostgresException ex) when (ex.SqlState is Npgsql.PostgresErrorCodes.DuplicateColumn or Npgsql.PostgresErrorCodes.UniqueViolation)
                {
                    // The same, on PostgreSQL (IF NOT EXISTS races with a concurrent ALTER).
                }
            }
#pragma warning restore EF1002
        }
    }

    /// <summary>
    /// Makes the model's plain (not unique) indexes that a database made by an earlier version lacks: the schema is made
    /// whole by <c>EnsureCreated</c> only when the database is new, and a read that an index serves should not turn into
    /// a scan of its table after an upgrade. Only the missing ones are made (a <c>CREATE INDEX</c> locks its table against
    /// writes while it runs); one that another process made meanwhile counts as made.
    /// </summary>
    public static void EnsureIndexes(StrategyDb db)
    {
        ArgumentNullException.ThrowIfNull(db);
        var postgres = db.Database.IsNpgsql();
        var existing = db.Database.SqlQueryRaw<string>(postgres
                ? "SELECT indexname AS \"Value\" FROM pg_indexes WHERE schemaname = current_schema()"
                : "SELECT name AS \"Value\" FROM sqlite_master WHERE type = 'index' AND name IS NOT NULL")
            .ToHashSet(StringComparer.Ordinal);
        foreach (var entity in db.Model.GetEntityTypes())
        {
            var table = entity.GetTableName();
            foreach (var index in entity.GetIndexes())
            {
                // Made as plain column lists, as every index of the model is (none has a filter or a sort order of its
                // own; a model that gains one makes that index itself).
                if (index.IsUnique || table is null || index.GetDatabaseName() is not { } name || existing.Contains(name))
                {
                    continue;
                }

                var columns = string.Join(", ", index.Properties.Select(p => $"\"{p.GetColumnName()}\""));
                try
                {
#pragma warning disable EF1002 // Index, table and column names come from the model, not from input.
                    db.Database.ExecuteSqlRaw($"CREATE INDEX IF NOT EXISTS \"{name}\" ON \"{table}\" ({columns})");
#pragma warning restore EF1002
                }
                catch (Npgsql.PostgresException ex) when (ex.SqlState is Npgsql.PostgresErrorCodes.DuplicateTable or Npgsql.PostgresErrorCodes.UniqueViolation)
                {
                    // Another app process starting on the same database made it at the same moment.
                }
            }
        }
    }

    /// <summary>
    /// Moves every identity past the largest id in its table. The demo organisations insert rows with chosen ids;
    /// SQLite's rowids follow on their own, but a PostgreSQL identity sequence would hand those ids out again.
    /// </summary>
    public static void AfterSeeding(StrategyDb db)
    {
        ArgumentNullException.ThrowIfNull(db);
        if (!db.Database.IsNpgsql())
        {
            return;
        }

        foreach (var entity in db.Model.GetEntityTypes())
        {
            var key = entity.FindPrimaryKey();
            if (key is not { Properties: [{ ValueGenerated: Microsoft.EntityFrameworkCore.Metadata.ValueGenerated.OnAdd } id] } || (id.ClrType != typeof(int) && id.ClrType != typeof(long)))
            {
                continue;
            }

            var table = entity.GetTableName()!;
            var column = id.GetColumnName();
#pragma warning disable EF1002 // Table and column names come from the model, not from input.
            db.Database.ExecuteSqlRaw($"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{column}'), COALESCE((SELECT MAX(\"{column}\") FROM \"{table}\"), 0) + 1, false)");
#pragma warning restore EF1002
        }
    }
}
