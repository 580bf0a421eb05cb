using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;

namespace StrategyExecution.Tests;

/// <summary>Data entry and export: CSV import all or nothing, the "my updates" grid, JSON and CSV export, OpenAPI.</summary>
public sealed class DataTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    private static StringContent Csv(string text) => new(text, Encoding.UTF8, "text/csv");

    [Fact]
    public async Task A_csv_with_bad_rows_reports_each_of_them_and_imports_nothing()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        var month = ApiClient.LastMonth();
        var before = (await admin.GetJson("/api/measures/1/actuals")).AsArray().Count;
        var audit = (await admin.GetJson("/api/audit?take=1000")).AsArray().Count;
        var csv = $"measure_id,month,value\n1,{month},10\n999999,{month},5\n2,May,5\n3,{month},lots\n4,1999-01,1\n5,{month},7\n5,2099-01,7\n";
        using var response = await admin.PostAsync(new Uri("/api/actuals/import", UriKind.Relative), Csv(csv));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var body = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        Assert.Equal("INVALID_ROWS", body["error"]!["code"]!.GetValue<string>());
        var rows = body["rows"]!.AsArray().Select(r => (Row: r!["row"]!.GetValue<int>(), Field: r["field"]!.GetValue<string>())).ToList();
        Assert.Equal([(3, "measure_id"), (4, "month"), (5, "value"), (6, "month"), (8, "month")], rows);
        Assert.Contains("has not begun yet", body["rows"]![4]!["message"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.Equal(before, (await admin.GetJson("/api/measures/1/actuals")).AsArray().Count);
        Assert.Equal(audit, (await admin.GetJson("/api/audit?take=1000")).AsArray().Count);
    }

    [Fact]
    public async Task A_good_csv_is_recorded_in_one_go_with_its_source_and_one_audit_entry()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        var month = ApiClient.LastMonth();
        var csv = $"\uFEFFvalue,month,measure_id\r\n11.5,{month},6\r\n\"12\",{month},7\r\n13,\"{month}\",6\r\n\r\n";
        using var response = await admin.PostAsync(new Uri("/api/actuals/import", UriKind.Relative), Csv(csv));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(3, JsonNode.Parse(await response.Content.ReadAsStringAsync())!["recorded"]!.GetValue<int>());
        var history = (await admin.GetJson("/api/measures/6/actuals")).AsArray();
        Assert.Equal([13.0, 11.5], history.Take(2).Select(h => h!["value"]!.GetValue<double>()));
        Assert.All(history.Take(2), h => Assert.Equal("csv", h!["source"]!.GetValue<string>()));
        var card = await admin.GetJson("/api/scorecards/1");
        var latest = (await admin.GetJson("/api/audit?take=1000")).AsArray().Last()!;
        Assert.Equal("actuals.imported", latest["action"]!.GetValue<string>());
        Assert.Equal(3, latest["details"]!["rows"]!.GetValue<int>());
        Assert.NotNull(card);
    }

    [Fact]
    public async Task Imports_past_the_number_at_once_are_503_before_their_file_is_read_and_the_held_ones_finish()
    {
        // The client waits for "100 Continue" as long as the test may take: a refusal that takes the app more than the
        // default second to reach must still be answered before its held-back file is sent.
        using var admin = ApiClient.For(fixture.App, 1, new SocketsHttpHandler { Expect100ContinueTimeout = TimeSpan.FromSeconds(60) });
        var month = ApiClient.LastMonth();
        await admin.GetJson("/api/me");

        // Three imports at once whose files stop after their header line until the test lets them go on. Each asks to be
        // told to send its file (Expect: 100-continue), so one refused before its file is read gets its answer while the
        // file is still held back: two take the places, the third is the first to be answered, and it is 503.
        var gates = Enumerable.Range(0, 3).Select(_ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).ToList();
        var imports = gates.Select(g =>
        {
            var request = new HttpRequestMessage(HttpMethod.Post, "/api/actuals/import") { Content = new HeldCsv("measure_id,month,value\n", $"6,{month},21\n", g.Task) };
            request.Headers.ExpectContinue = true;
            return admin.SendAsync(request);
        }).ToList();

        var first = await Task.WhenAny(imports).WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken);
        using (var busy = await first)
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, busy.StatusCode);
            Assert.Equal(TimeSpan.FromSeconds(5), busy.Headers.RetryAfter?.Delta);
            Assert.Equal("IMPORTS_BUSY", JsonNode.Parse(await busy.Content.ReadAsStringAsync())!["error"]!["code"]!.GetValue<string>());
        }

        // Its file was never asked for; the two held ones are still waiting for theirs.
        var refused = imports.IndexOf(first);
        Assert.Equal(2, imports.Count(i => !i.IsCompleted));
        foreach (var gate in gates)
        {
            gate.SetResult();
        }

        foreach (var response in await Task.WhenAll(imports.Where((_, i) => i != refused)))
        {
            using (response)
            {
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                Assert.Equal(1, JsonNode.Parse(await response.Content.ReadAsStringAsync())!["recorded"]!.GetValue<int>());
            }
        }

        // The places are free again.
        using var after = await admin.PostAsync(new Uri("/api/actuals/import", UriKind.Relative), Csv($"measure_id,month,value\n7,{month},3\n"));
        Assert.Equal(HttpStatusCode.OK, after.StatusCode);
    }

    /// <summary>A CSV body sent in two parts, the second once <c>gate</c> completes (chunked: its length is not told).</summary>
    private sealed class HeldCsv : HttpContent
    {
        private readonly string _head;
        private readonly string _rest;
        private readonly Task _gate;

        public HeldCsv(string head, string rest, Task gate)
        {
            (_head, _rest, _gate) = (head, rest, gate);
            Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("text/csv");
        }

        protected override async Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context)
        {
            await stream.WriteAsync(Encoding.UTF8.GetBytes(_head));
            await stream.FlushAsync();
            await _gate;
            await stream.WriteAsync(Encoding.UTF8.GetBytes(_rest));
        }

        protected override bool TryComputeLength(out long length)
        {
            length = -1;
            return false;
        }
    }

    [Fact]
    public async Task Imports_are_held_to_the_same_roles_and_formats()
    {
        using var reader = ApiClient.For(fixture.App);
        var teamMeasure = (await reader.GetJson("/api/scorecards/3"))["objectives"]![0]!["measures"]![0]!["id"]!.GetValue<int>();
        var otherMeasure = (await reader.GetJson("/api/scorecards/8"))["objectives"]![0]!["measures"]![0]!["id"]!.GetValue<int>();
        using var updater = ApiClient.For(fixture.App, await reader.PersonWith(3, "updater"));
        var month = ApiClient.LastMonth();
        using var refused = await updater.PostAsync(new Uri("/api/actuals/import", UriKind.Relative), Csv($"measure_id,month,value\n{teamMeasure},{month},1\n{otherMeasure},{month},1\n"));
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        Assert.Contains("updater role", await refused.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, (await updater.PostAsync(new Uri("/api/actuals/import", UriKind.Relative), ApiClient.Json("[]"))).StatusCode);
        using var noHeader = await updater.PostAsync(new Uri("/api/actuals/import", UriKind.Relative), Csv($"{teamMeasure},{month},1\n"));
        Assert.Equal("INVALID_CSV", JsonNode.Parse(await noHeader.Content.ReadAsStringAsync())!["error"]!["code"]!.GetValue<string>());
        using var anonymous = ApiClient.Anonymous(fixture.App);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PostAsync(new Uri("/api/actuals/import", UriKind.Relative), Csv("measure_id,month,value\n"))).StatusCode);

        // Someone who may record actuals nowhere is refused before the file is read, whatever it holds.
        var before = (await reader.GetJson($"/api/measures/{teamMeasure}/actuals")).AsArray().Count;
        using var viewer = await reader.PostAsync(new Uri("/api/actuals/import", UriKind.Relative), Csv($"measure_id,month,value\n{teamMeasure},{month},1\n" + new string('#', 100_000)));
        Assert.Equal(HttpStatusCode.Forbidden, viewer.StatusCode);
        Assert.Equal("FORBIDDEN", JsonNode.Parse(await viewer.Content.ReadAsStringAsync())!["error"]!["code"]!.GetValue<string>());
        Assert.Equal(before, (await reader.GetJson($"/api/measures/{teamMeasure}/actuals")).AsArray().Count);
        using var binary = new ByteArrayContent([0xff, 0xfe, 0x00, 0x41]);
        binary.Headers.ContentType = new("text/csv");
        Assert.Equal(HttpStatusCode.BadRequest, (await updater.PostAsync(new Uri("/api/actuals/import", UriKind.Relative), binary)).StatusCode);
    }

    [Fact]
    public async Task The_my_updates_grid_lists_the_persons_measures_and_saves_them_together()
    {
        using var reader = ApiClient.For(fixture.App);
        using var updater = ApiClient.For(fixture.App, await reader.PersonWith(3, "updater"));
        var mine = (await updater.GetJson("/api/my-updates")).AsArray();
        Assert.NotEmpty(mine);
        Assert.All(mine, m => Assert.Equal(3, m!["unitId"]!.GetValue<int>()));
        var ids = mine.Select(m => m!["measure"]!["id"]!.GetValue<int>()).Take(2).ToList();
        var month = ApiClient.LastMonth();
        using var saved = await updater.PostAsJsonAsync(new Uri("/api/actuals/batch", UriKind.Relative), new { rows = ids.Select(id => new { measureId = id, month, value = 42.5 }) });
        Assert.Equal(HttpStatusCode.OK, saved.StatusCode);
        foreach (var id in ids)
        {
            var last = (await reader.GetJson($"/api/measures/{id}/actuals"))[0]!;
            Assert.Equal(42.5, last["value"]!.GetValue<double>());
            Assert.Equal("grid", last["source"]!.GetValue<string>());
        }

        using var bad = await updater.PostAsJsonAsync(new Uri("/api/actuals/batch", UriKind.Relative), new { rows = new object[] { new { measureId = ids[0], month, value = 1 }, new { measureId = ids[0], month = "x", value = 1 } } });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Equal(42.5, (await reader.GetJson($"/api/measures/{ids[0]}/actuals"))[0]!["value"]!.GetValue<double>());
    }

    [Fact]
    public async Task People_are_listed_in_pages_that_follow_on_from_the_last_id()
    {
        using var reader = ApiClient.For(fixture.App);
        var all = (await reader.GetJson("/api/people")).AsArray().Select(p => p!["id"]!.GetValue<int>()).ToList();
        Assert.True(all.Count >= 5, $"{all.Count} people");
        var paged = new List<int>();
        int? after = null;
        while (paged.Count < all.Count)
        {
            var page = (await reader.GetJson(after is null ? "/api/people?take=2" : $"/api/people?take=2&after={after}")).AsArray().Select(p => p!["id"]!.GetValue<int>()).ToList();
            Assert.InRange(page.Count, 1, 2);
            paged.AddRange(page);
            after = page[^1];
        }

        Assert.Equal(all, paged);
    }

    [Fact]
    public async Task Everything_exports_as_json_and_each_table_as_csv_and_the_api_is_described_in_openapi()
    {
        using var reader = ApiClient.For(fixture.App);
        using var admin = ApiClient.For(fixture.App, await reader.PersonWith(1, "admin"));

        // An export holds everyone's pay: it is the company admins' alone, as JSON and as any table.
        using var owner = ApiClient.For(fixture.App, await reader.PersonWith(1, "owner"));
        foreach (var (client, path) in new[] { (reader, "/api/export"), (reader, "/api/export/plan-participants.csv"), (owner, "/api/export"), (owner, "/api/export/people.csv") })
        {
            using var refused = await client.GetAsync(new Uri(path, UriKind.Relative));
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
            Assert.Equal("FORBIDDEN", JsonNode.Parse(await refused.Content.ReadAsStringAsync())!["error"]!["code"]!.GetValue<string>());
        }

        var export = await admin.GetJson("/api/export");
        var people = (await reader.GetJson("/api/people")).AsArray().Count;
        Assert.Equal(people, export["people"]!.AsArray().Count);
        foreach (var table in new[] { "units", "objectives", "measures", "targets", "actuals", "pools", "reviews", "decisions", "actions", "audit" })
        {
            Assert.True(export[table] is JsonArray, table);
        }

        var csv = await admin.GetStringAsync(new Uri("/api/export/people.csv", UriKind.Relative));
        var lines = csv.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("id,name,email,unit_id", lines[0].TrimEnd('\r'));
        Assert.Equal(people + 1, lines.Length);
        Assert.Equal(HttpStatusCode.NotFound, (await admin.GetAsync(new Uri("/api/export/passwords.csv", UriKind.Relative))).StatusCode);

        // Text a spreadsheet would take for a formula is exported as text; numbers, negative ones too, as they are.
        var day = DateTime.UtcNow.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture);
        using (var spend = await admin.PostAsJsonAsync(new Uri("/api/spend", UriKind.Relative), new { amount = 12.5m, on = day, description = "=HYPERLINK(\"http://example.invalid\",\"open\")" }))
        {
            Assert.Equal(HttpStatusCode.Created, spend.StatusCode);
        }

        var spendCsv = await admin.GetStringAsync(new Uri("/api/export/spend.csv", UriKind.Relative));
        Assert.Contains("\"'=HYPERLINK(\"\"http://example.invalid\"\",\"\"open\"\")\"", spendCsv, StringComparison.Ordinal);
        Assert.DoesNotContain(",=HYPERLINK", spendCsv, StringComparison.Ordinal);
        Assert.DoesNotContain(",\"=HYPERLINK", spendCsv, StringComparison.Ordinal);

        var openApi = await reader.GetJson("/openapi/v1.json");
        var paths = openApi["paths"]!.AsObject().Select(p => p.Key).ToList();
        Assert.Contains("/api/measures/{id}/actuals", paths);
        Assert.Contains("/api/actuals/import", paths);
        Assert.Contains("/api/reviews/{id}/decisions", paths);
    }

    [Fact]
    public async Task The_data_lives_in_the_database_the_run_selected()
    {
        await ApiClient.Until(() => Task.FromResult(fixture.App.Output.Contains("with its data in", StringComparison.Ordinal)), "the start-up line");
        Assert.Contains(PostgresServer.Selected ? "with its data in PostgreSQL database strategy_" : "with its data in SQLite " + fixture.App.DataDirectory, fixture.App.Output, StringComparison.Ordinal);
    }
}
