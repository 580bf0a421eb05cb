using System.Data.Common;

namespace StrategyExecution.Tests;

/// <summary>
/// A database made by an earlier version, which lacks an index the model now has (the schema is made whole only when the
/// database is new): the next start makes it, and the app serves as before.
/// </summary>
public sealed class SchemaUpgradeTests
{
    private const string Index = "IX_Releases_PoolId";

    [Fact]
    public async Task A_database_without_an_index_the_model_has_gets_it_at_the_next_start()
    {
        await using var app = await AppProcess.StartNewWithConnectionOptionsAsync(PostgresServer.Selected ? "Command Timeout=30" : "Default Timeout=30");
        Assert.True(await HasIndexAsync(app.ConnectionString!));

        // As an earlier version left it: without the index.
        await app.KillAsync();
        await ExecuteAsync(app.ConnectionString!, $"DROP INDEX \"{Index}\"");
        Assert.False(await HasIndexAsync(app.ConnectionString!));

        await app.StartAsync();
        Assert.True(await HasIndexAsync(app.ConnectionString!));
        using var reader = ApiClient.For(app);
        Assert.NotNull((await reader.GetJson("/api/budgets"))["pools"]);
    }

    [Fact]
    public async Task A_database_without_a_column_the_model_has_gets_it_at_the_next_start_and_keeps_its_rows()
    {
        await using var app = await AppProcess.StartNewWithConnectionOptionsAsync(PostgresServer.Selected ? "Command Timeout=30" : "Default Timeout=30");
        using (var before = ApiClient.For(app, 1))
        {
            Assert.NotNull((await before.GetJson("/api/me"))["name"]);
        }

        // As an earlier version left it: sign-ins without their last use.
        await app.KillAsync();
        await ExecuteAsync(app.ConnectionString!, "ALTER TABLE \"Tokens\" DROP COLUMN \"LastUsedAt\"");
        Assert.False(await HasColumnAsync(app.ConnectionString!, "Tokens", "LastUsedAt"));
        var tokens = await CountAsync(app.ConnectionString!, "SELECT COUNT(*) FROM \"Tokens\"");
        Assert.True(tokens > 0);

        await app.StartAsync();
        Assert.True(await HasColumnAsync(app.ConnectionString!, "Tokens", "LastUsedAt"));
        Assert.Equal(tokens, await CountAsync(app.ConnectionString!, "SELECT COUNT(*) FROM \"Tokens\""));
        using var after = ApiClient.For(app, 1);
        Assert.NotNull((await after.GetJson("/api/me"))["name"]);
        Assert.True(await CountAsync(app.ConnectionString!, "SELECT COUNT(*) FROM \"Tokens\" WHERE \"LastUsedAt\" IS NOT NULL") > 0);
    }

    private static async Task<bool> HasColumnAsync(string connectionString, string table, string column)
        => await CountAsync(connectionString, PostgresServer.Selected
            ? $"SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = '{table}' AND column_name = '{column}'"
            : $"SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = '{column}'") == 1;

    private static async Task<long> CountAsync(string connectionString, string sql)
    {
        await using var connection = Open(connectionString);
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        return Convert.ToInt64(await command.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture);
    }

    private static async Task<bool> HasIndexAsync(string connectionString)
    {
        await using var connection = Open(connectionString);
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = PostgresServer.Selected
            ? $"SELECT COUNT(*) FROM pg_indexes WHERE indexname = '{Index}'"
            : $"SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = '{Index}'";
        return Convert.ToInt64(await command.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture) == 1;
    }

    private static async Task ExecuteAsync(string connectionString, string sql)
    {
        await using var connection = Open(connectionString);
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        await command.ExecuteNonQueryAsync();
    }

    private static DbConnection Open(string connectionString) => PostgresServer.Selected
        ? new Npgsql.NpgsqlConnection(connectionString + ";Pooling=false")
        : new Microsoft.Data.Sqlite.SqliteConnection(new Microsoft.Data.Sqlite.SqliteConnectionStringBuilder(connectionString) { Pooling = false }.ToString());
}
