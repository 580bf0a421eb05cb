using System.Net;
using System.Text.Json.Nodes;
using DurableSessions.Testing;

namespace StrategyExecution.Tests;

/// <summary>Bad input gets a clear 4xx with a code, and changes nothing.</summary>
public sealed class BadInputTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    public static TheoryData<string, string, int, string> BadActuals() => new()
    {
        { "text/plain", "{\"month\":\"2026-05\",\"value\":1}", 415, "UNSUPPORTED_MEDIA_TYPE" },
        { "application/json", "{", 400, "INVALID_JSON" },
        { "application/json", "[]", 400, "INVALID_JSON" },
        { "application/json", "null", 400, "INVALID_BODY" },
        { "application/json", "{\"month\":\"2026-05\",\"value\":\"ten\"}", 400, "INVALID_JSON" },
        { "application/json", "{}", 400, "INVALID_ACTUAL" },
        { "application/json", "{\"month\":\"2026-13\",\"value\":1}", 400, "INVALID_ACTUAL" },
        { "application/json", "{\"month\":\"May 2026\",\"value\":1}", 400, "INVALID_ACTUAL" },
        { "application/json", "{\"month\":\"1999-05\",\"value\":1}", 400, "MONTH_OUTSIDE_PERIOD" },
        { "application/json", "{\"month\":\"2099-01\",\"value\":1}", 400, "INVALID_ACTUAL" }, // a month still to come
        { "application/json", "{\"month\":\"2026-05\",\"value\":1e999}", 400, "INVALID_ACTUAL" },
        { "application/json", "{\"month\":\"2026-05\",\"value\":1,\"source\":\"seed\"}", 400, "INVALID_ACTUAL" },
        { "application/json", "{\"month\":\"2026-05\",\"value\":1,\"pad\":\"" + new string('x', 70_000) + "\"}", 413, "BODY_TOO_LARGE" },
    };

    [Theory]
    [MemberData(nameof(BadActuals))]
    public async Task A_bad_actual_is_refused_with_its_code_and_nothing_is_recorded(string contentType, string body, int status, string code)
    {
        using var admin = ApiClient.For(fixture.App, 1);
        var before = (await admin.GetJson("/api/audit?take=1000")).AsArray().Count;
        var history = (await admin.GetJson("/api/measures/1/actuals")).AsArray().Count;
        // The month in the bodies is the active period's year.
        var year = DateTime.UtcNow.Year.ToString(System.Globalization.CultureInfo.InvariantCulture);
        using var content = new StringContent(body.Replace("2026-", year + "-", StringComparison.Ordinal), System.Text.Encoding.UTF8, contentType);
        using var response = await admin.PostAsync(new Uri("/api/measures/1/actuals", UriKind.Relative), content);
        Assert.Equal(status, (int)response.StatusCode);
        var error = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!;
        Assert.Equal(code, error["code"]!.GetValue<string>());
        Assert.False(string.IsNullOrWhiteSpace(error["message"]!.GetValue<string>()));
        Assert.Equal(before, (await admin.GetJson("/api/audit?take=1000")).AsArray().Count);
        Assert.Equal(history, (await admin.GetJson("/api/measures/1/actuals")).AsArray().Count);
    }

    [Theory]
    [InlineData("/api/scorecards/9999", 404)]
    [InlineData("/api/scorecards/1?period=99", 404)]
    [InlineData("/api/scorecards/1?period=abc", 400)]
    [InlineData("/api/scorecards/abc", 404)]
    [InlineData("/api/measures/999999/actuals", 404)]
    [InlineData("/api/units?period=99", 404)]
    [InlineData("/api/me", 401)]
    public async Task Bad_reads_get_a_4xx(string path, int status)
    {
        using var client = status == 401 ? ApiClient.Anonymous(fixture.App) : ApiClient.For(fixture.App);
        using var response = await client.GetAsync(new Uri(path, UriKind.Relative));
        Assert.Equal(status, (int)response.StatusCode);
    }

    [Fact]
    public async Task An_unknown_measure_is_404_after_the_body_is_checked()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        using var response = await admin.RecordActual(999_999, ApiClient.LastMonth(), 1);
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
    }

    [Fact]
    public async Task The_audit_stream_cannot_be_written_over_http()
    {
        using var client = ApiClient.For(fixture.App, 1);
        var before = (await client.AuditStream()).Count;
        using var post = await client.PostAsync(new Uri("/v1/stream/strategy/audit", UriKind.Relative), ApiClient.Json("[{\"forged\":true}]"));
        using var put = await client.PutAsync(new Uri("/v1/stream/strategy/forged", UriKind.Relative), ApiClient.Json("[]"));
        using var delete = await client.DeleteAsync(new Uri("/v1/stream/strategy/audit", UriKind.Relative));
        Assert.All(new[] { post, put, delete }, r => Assert.Equal(HttpStatusCode.Forbidden, r.StatusCode));
        Assert.Equal(before, (await client.AuditStream()).Count);
        using var forged = await client.GetAsync(new Uri("/v1/stream/strategy/forged", UriKind.Relative));
        Assert.Equal(HttpStatusCode.NotFound, forged.StatusCode);
    }

    [Fact]
    public async Task A_port_taken_by_another_process_stops_the_app_with_a_clear_message_and_exit_code_1()
    {
        using var taken = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        var url = $"http://127.0.0.1:{((IPEndPoint)taken.LocalEndpoint).Port}";
        var dll = ChildProcess.Locate("apps/StrategyExecution/StrategyExecution", "StrategyExecution.dll", "Build the app first (dotnet build).");
        var data = Path.Combine(Path.GetTempPath(), "strategy-test-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var app = ChildProcess.Start(ChildProcess.Dotnet(dll, ["--urls", url, "--Data", data]));
            await app.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
            Assert.Equal(1, app.Process.ExitCode);
            await ApiClient.Until(() => Task.FromResult(app.RecentOutput.Contains($"{url} is already in use by another process", StringComparison.Ordinal)), "the message");
        }
        finally
        {
            if (Directory.Exists(data))
            {
                Directory.Delete(data, recursive: true);
            }
        }
    }
}
