using System.Data.Common;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace StrategyExecution.Tests;

/// <summary>
/// A sign-in's last use is kept when the app looks the token up (what a sign-in past the limit goes by): a write made
/// while answering a read, which must not hold up or fail that read.
/// </summary>
public sealed class SignInUseTests
{
    [Fact]
    public async Task A_sign_ins_first_use_while_another_write_holds_its_row_is_answered_without_waiting_for_that_write()
    {
        // The database's own wait for a lock as long as the client's patience: a request that waited for it would fail.
        await using var app = await AppProcess.StartNewWithConnectionOptionsAsync(PostgresServer.Selected ? "Command Timeout=30" : "Default Timeout=30");
        var email = (await ApiClient.DemoPeople(app)).Single(p => p!["id"]!.GetValue<int>() == 4)!["email"]!.GetValue<string>();
        using var client = ApiClient.Anonymous(app);
        client.Timeout = TimeSpan.FromSeconds(15);
        string token;
        using (var signIn = await client.PostAsJsonAsync(new Uri("/api/sign-in", UriKind.Relative), new { email, password = "demo" }))
        {
            Assert.Equal(HttpStatusCode.OK, signIn.StatusCode);
            token = JsonNode.Parse(await signIn.Content.ReadAsStringAsync())!["token"]!.GetValue<string>();
        }

        // Another writer holds the person's tokens (on SQLite, the whole database) until the request is answered.
        await using var connection = Open(app.ConnectionString!);
        await connection.OpenAsync();
        await using var transaction = await connection.BeginTransactionAsync();
        await using (var hold = connection.CreateCommand())
        {
            hold.Transaction = transaction;
            hold.CommandText = "UPDATE \"Tokens\" SET \"Name\" = \"Name\" WHERE \"PersonId\" = 4";
            Assert.True(await hold.ExecuteNonQueryAsync() > 0);
        }

        using var request = new HttpRequestMessage(HttpMethod.Get, "/api/me");
        request.Headers.Authorization = new("Bearer", token);
        using var me = await client.SendAsync(request);
        Assert.True(me.StatusCode == HttpStatusCode.OK, app.Output);
        Assert.Equal(email, JsonNode.Parse(await me.Content.ReadAsStringAsync())!["email"]!.GetValue<string>());
        await transaction.RollbackAsync();
    }

    private static DbConnection Open(string connectionString) => PostgresServer.Selected
        ? new Npgsql.NpgsqlConnection(connectionString + ";Pooling=false")
        : new Microsoft.Data.Sqlite.SqliteConnection(new Microsoft.Data.Sqlite.SqliteConnectionStringBuilder(connectionString) { Pooling = false }.ToString());
}
