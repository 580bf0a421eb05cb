using System.Net;
using System.Text.Json.Nodes;

namespace StrategyExecution.Tests;

/// <summary>
/// A database another writer holds locked past the app's command timeout: the request is answered 503 with
/// <c>Retry-After</c>, not 500, and sent again once the lock is gone it is recorded once.
/// </summary>
public sealed class DatabaseBusyTests
{
    private const int Team = 3;

    [Fact]
    public async Task A_write_that_waits_out_a_locked_database_is_answered_503_and_succeeds_when_sent_again()
    {
        await using var app = await AppProcess.StartNewWithConnectionOptionsAsync(PostgresServer.Selected ? "Command Timeout=2" : "Default Timeout=2");
        using var reader = ApiClient.For(app);
        var updater = await reader.PersonWith(Team, "updater");
        using var client = ApiClient.For(app, updater);
        var measure = (await reader.GetJson($"/api/scorecards/{Team}"))["objectives"]![0]!["measures"]![0]!["id"]!.GetValue<int>();
        var before = (await reader.GetJson($"/api/measures/{measure}/actuals")).AsArray().Count;
        var month = ApiClient.LastMonth();
        await client.GetJson("/api/me"); // Signed in before the lock: a sign-in is a write too.

        await using (var locker = await LockAsync(app.ConnectionString!))
        {
            using var busy = await client.RecordActual(measure, month, 4242);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, busy.StatusCode);
            Assert.Equal(TimeSpan.FromSeconds(1), busy.Headers.RetryAfter?.Delta);
            Assert.Equal("DATABASE_BUSY", JsonNode.Parse(await busy.Content.ReadAsStringAsync())!["error"]!["code"]!.GetValue<string>());
        }

        using var again = await client.RecordActual(measure, month, 4242);
        Assert.Equal(HttpStatusCode.Created, again.StatusCode);
        var actuals = (await reader.GetJson($"/api/measures/{measure}/actuals")).AsArray();
        Assert.Equal(before + 1, actuals.Count);
    }

    /// <summary>Opens a connection of the test's own (not pooled, so closing it ends its transaction) that holds the actuals' table locked for writes until disposed.</summary>
    private static async Task<IAsyncDisposable> LockAsync(string connectionString)
    {
        if (PostgresServer.Selected)
        {
            var connection = new Npgsql.NpgsqlConnection(connectionString + ";Pooling=false");
            await connection.OpenAsync();
            await using var command = new Npgsql.NpgsqlCommand("BEGIN; LOCK TABLE \"Actuals\" IN EXCLUSIVE MODE;", connection);
            await command.ExecuteNonQueryAsync();
            return connection;
        }

        var sqlite = new Microsoft.Data.Sqlite.SqliteConnection(new Microsoft.Data.Sqlite.SqliteConnectionStringBuilder(connectionString) { DefaultTimeout = 2, Pooling = false }.ToString());
        await sqlite.OpenAsync();
        await using var begin = sqlite.CreateCommand();
        begin.CommandText = "BEGIN IMMEDIATE;";
        await begin.ExecuteNonQueryAsync();
        return sqlite;
    }
}
