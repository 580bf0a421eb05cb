using Microsoft.EntityFrameworkCore;

namespace StrategyExecution.Data;

/// <summary>
/// Where the app keeps its data: SQLite in the data directory by default, or PostgreSQL when <c>Database:Provider</c>
/// is <c>postgres</c> and <c>ConnectionStrings:Strategy</c> names the server. The schema and every query are the same on
/// both; only what a provider needs differently lives here.
/// </summary>
public sealed class StrategyDatabase
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
