using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;

namespace StrategyExecution.Tests;

/// <summary>Every endpoint the OpenAPI document lists, sent hostile input: never a 5xx, and nothing recorded.</summary>
public sealed class HostileInputTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    private static readonly string[] Bodies =
    [
        "", "{", "[]", "null", "42", "\"text\"", "{\"a\":", "{}",
        "{\"unitId\":\"x\",\"name\":[],\"amount\":\"lots\",\"month\":{},\"value\":true,\"rows\":7,\"components\":\"none\"}",
        "{\"unitId\":-1,\"name\":\"" + new string('n', 5000) + "\",\"amount\":-1e308,\"objectiveIds\":[1e20],\"due\":\"31-31-31\"}",
        "{\"curve\":{\"thresholdScore\":\"NaN\"},\"targetIncentive\":1e400}",
        new string('[', 10_000),
    ];

    [Fact]
    public async Task Every_endpoint_answers_hostile_bodies_and_ids_with_a_4xx_and_records_nothing()
    {
        using var reader = ApiClient.For(fixture.App);
        var openApi = await reader.GetJson("/openapi/v1.json");
        var operations = openApi["paths"]!.AsObject()
            .SelectMany(p => p.Value!.AsObject().Select(m => (Path: p.Key, Method: m.Key.ToUpperInvariant())))
            .Where(o => o.Path != "/api/sign-out") // It would end the sign-ins the loop uses; SignInTests covers it.
            .ToList();
        Assert.True(operations.Count >= 40, $"only {operations.Count} operations documented");
        var auditBefore = (await reader.GetJson("/api/audit?take=1000")).AsArray().Count;
        var failures = new List<string>();
        foreach (var identity in new int?[] { null, 1 })
        {
            using var client = identity is null ? ApiClient.Anonymous(fixture.App) : ApiClient.For(fixture.App, identity);
            foreach (var (path, method) in operations)
            {
                // Ids that name nothing, or are not ids at all.
                foreach (var id in new[] { "0", "999999", "-1", "abc", "2147483648" })
                {
                    var target = path.Replace("{id}", id, StringComparison.Ordinal).Replace("{unitId}", id, StringComparison.Ordinal).Replace("{table}", id, StringComparison.Ordinal);
                    foreach (var body in method is "POST" or "PUT" ? Bodies : [""])
                    {
                        using var request = new HttpRequestMessage(new HttpMethod(method), target + "?period=abc&unit=-5&take=999999999&after=x");
                        if (method is "POST" or "PUT")
                        {
                            request.Content = new StringContent(body, Encoding.UTF8, target.EndsWith("/import", StringComparison.Ordinal) ? "text/csv" : "application/json");
                        }

                        using var response = await client.SendAsync(request);
                        if ((int)response.StatusCode >= 500)
                        {
                            failures.Add($"{method} {target} as {identity?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "nobody"} with {body[..Math.Min(body.Length, 40)]}: {(int)response.StatusCode}");
                        }
                    }
                }
            }
        }

        Assert.True(failures.Count == 0, string.Join('\n', failures.Take(30)));
        // Some bodies are valid for some endpoints with id 0 or 999999 (none exists), so nothing can have been recorded.
        Assert.Equal(auditBefore, (await reader.GetJson("/api/audit?take=1000")).AsArray().Count);
        Assert.Equal(HttpStatusCode.OK, (await reader.GetAsync(new Uri("/health", UriKind.Relative))).StatusCode);
    }

    [Fact]
    public async Task Numbers_too_large_to_score_are_refused_and_every_view_still_answers()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        var measure = (await admin.GetJson("/api/scorecards/1"))["objectives"]![0]!["measures"]![0]!["id"]!.GetValue<int>();
        var objective = (await admin.GetJson("/api/scorecards/1"))["objectives"]![0]!["id"]!.GetValue<int>();
        async Task Refused(HttpMethod method, string path, string body, string code)
        {
            using var request = new HttpRequestMessage(method, path) { Content = ApiClient.Json(body) };
            using var response = await admin.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{method} {path} {body}: {(int)response.StatusCode} {text}");
            Assert.Equal(code, JsonNode.Parse(text)!["error"]!["code"]!.GetValue<string>());
        }

        // Thresholds and weights whose arithmetic overflows a double made every later scorecard view fail.
        await Refused(HttpMethod.Put, $"/api/measures/{measure}/target", "{\"redFlag\":-1.7e308,\"target\":1.7e308}", "INVALID_THRESHOLDS");
        await Refused(HttpMethod.Post, "/api/objectives", "{\"unitId\":1,\"name\":\"Huge\",\"perspective\":\"financial\",\"weight\":1.7e308}", "INVALID_OBJECTIVE");
        await Refused(HttpMethod.Post, "/api/measures", $"{{\"objectiveId\":{objective},\"name\":\"Huge\",\"unit\":\"x\",\"direction\":\"higher\",\"weight\":1e307}}", "INVALID_MEASURE");
        await Refused(HttpMethod.Post, "/api/measures", $"{{\"objectiveId\":{objective},\"name\":\"Huge\",\"unit\":\"x\",\"direction\":\"higher\",\"baseline\":1e300}}", "INVALID_MEASURE");

        // A payout past what a decimal holds, and null in place of an object, were answered 500.
        await Refused(HttpMethod.Post, "/api/incentives/simulate", "{\"curve\":{\"thresholdScore\":50,\"thresholdPayout\":0.5,\"targetScore\":100,\"targetPayout\":1,\"maximumScore\":150,\"maximumPayout\":1e21},\"targetIncentive\":1000000000,\"components\":[{\"id\":\"a\",\"weight\":1,\"score\":150}]}", "INVALID_SIMULATION");
        await Refused(HttpMethod.Post, "/api/incentives/simulate", "{\"targetIncentive\":1000,\"components\":[null]}", "INVALID_SIMULATION");
        await Refused(HttpMethod.Post, "/api/incentives/simulate", "{\"targetIncentive\":1000,\"components\":[{\"weight\":1e308,\"score\":100},{\"weight\":1e308,\"score\":100}]}", "INVALID_SIMULATION");
        await Refused(HttpMethod.Post, "/api/actuals/batch", "{\"rows\":[null]}", "INVALID_ROWS");

        foreach (var path in new[] { "/api/units", "/api/scorecards/1", "/api/strategy-map", "/api/incentives", "/api/my-updates" })
        {
            using var response = await admin.GetAsync(new Uri(path, UriKind.Relative));
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"GET {path}: {(int)response.StatusCode}");
        }
    }

    [Fact]
    public async Task Links_drawn_at_the_same_moment_are_stored_once_and_never_close_a_loop()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        async Task<int> Objective(string name)
        {
            using var response = await admin.PostAsJsonAsync(new Uri("/api/objectives", UriKind.Relative), new { unitId = 1, name, perspective = "financial" });
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.Created, text);
            return JsonNode.Parse(text)!["id"]!.GetValue<int>();
        }

        async Task<HttpStatusCode[]> Together(params object[] bodies)
        {
            var answers = await Task.WhenAll(bodies.Select(async body =>
            {
                using var response = await admin.PostAsJsonAsync(new Uri("/api/links", UriKind.Relative), body);
                return response.StatusCode;
            }));
            Assert.DoesNotContain(answers, a => (int)a >= 500);
            return answers;
        }

        var (a, b) = (await Objective("Race a"), await Objective("Race b"));
        var same = await Together([.. Enumerable.Repeat<object>(new { cause = a, effect = b }, 6)]);
        Assert.Equal(1, same.Count(s => s == HttpStatusCode.Created));
        Assert.Equal(5, same.Count(s => s == HttpStatusCode.Conflict));

        for (var i = 0; i < 3; i++)
        {
            var (c, d) = (await Objective($"Loop c{i}"), await Objective($"Loop d{i}"));
            var opposite = await Together(new { cause = c, effect = d }, new { cause = d, effect = c });
            Assert.Equal(1, opposite.Count(s => s == HttpStatusCode.Created));
            Assert.Equal(1, opposite.Count(s => s == HttpStatusCode.Conflict));
        }
    }

    [Fact]
    public async Task A_measures_first_target_set_twice_at_once_is_stored_once_and_both_are_answered()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        var objective = (await admin.GetJson("/api/scorecards/1"))["objectives"]![0]!["id"]!.GetValue<int>();
        for (var round = 0; round < 3; round++)
        {
            using var created = await admin.PostAsJsonAsync(new Uri("/api/measures", UriKind.Relative), new { objectiveId = objective, name = $"Raced target {round}", unit = "deals", direction = "higher" });
            var text = await created.Content.ReadAsStringAsync();
            Assert.True(created.StatusCode == HttpStatusCode.Created, text);
            var measure = JsonNode.Parse(text)!["id"]!.GetValue<int>();

            // The first target of a measure, set by six requests at once: each is answered as a set, none as a failure.
            var answers = await Task.WhenAll(Enumerable.Range(1, 6).Select(async i =>
            {
                using var response = await admin.PutAsJsonAsync(new Uri($"/api/measures/{measure}/target", UriKind.Relative), new { redFlag = 1, target = 10 + i });
                return (response.StatusCode, await response.Content.ReadAsStringAsync());
            }));
            Assert.All(answers, a => Assert.True(a.StatusCode == HttpStatusCode.OK, $"{(int)a.StatusCode} {a.Item2}"));

            // One target, and it is one of those sent.
            var target = (await admin.GetJson($"/api/scorecards/1"))["objectives"]!.AsArray()
                .SelectMany(o => o!["measures"]!.AsArray()).Single(m => m!["id"]!.GetValue<int>() == measure)!["target"]!;
            Assert.InRange(target["target"]!.GetValue<double>(), 11, 16);
        }
    }

    [Fact]
    public async Task A_simulation_body_past_the_apps_bound_and_a_csv_line_of_too_many_fields_are_refused()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        var components = string.Join(',', Enumerable.Repeat("{\"weight\":1,\"score\":100}", 5_000));
        using (var simulate = await admin.PostAsync(new Uri("/api/incentives/simulate", UriKind.Relative), ApiClient.Json($"{{\"targetIncentive\":1000,\"components\":[{components}]}}")))
        {
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, simulate.StatusCode);
            Assert.Equal("BODY_TOO_LARGE", JsonNode.Parse(await simulate.Content.ReadAsStringAsync())!["error"]!["code"]!.GetValue<string>());
        }

        using var csv = new StringContent("measure_id,month,value\n1,2026-01," + new string(',', 100_000) + "\n", System.Text.Encoding.UTF8, "text/csv");
        using var import = await admin.PostAsync(new Uri("/api/actuals/import", UriKind.Relative), csv);
        var body = await import.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadRequest, import.StatusCode);
        Assert.Contains("at most 64 fields", body, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_csv_of_millions_of_empty_lines_is_refused_without_holding_a_list_per_line()
    {
        await using var app = await AppProcess.StartNewAsync();
        using var admin = ApiClient.For(app, 1);
        long PeakRss() => long.Parse(File.ReadAllLines($"/proc/{app.ProcessId}/status").Single(l => l.StartsWith("VmHWM:", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        var before = PeakRss();

        // 23 MiB of line breaks after the header: 24 million records, each of which used to become a list of its own.
        var csv = new byte[23 * 1024 * 1024];
        Array.Fill(csv, (byte)'\n');
        var header = "measure_id,month,value\n"u8.ToArray();
        using var content = new ByteArrayContent([.. header, .. csv]);
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("text/csv");
        using var response = await admin.PostAsync(new Uri("/api/actuals/import", UriKind.Relative), content);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);

        // The body itself (24 MiB, and twice that as text) is held; a list per line took gigabytes.
        var grown = PeakRss() - before;
        Assert.True(grown < 1024L * 1024 * 1024, $"peak memory grew {grown / (1024 * 1024)} MiB");

        // As many rows as the limit allows, and one more, is refused for the row that is one too many.
        var rows = new StringBuilder("measure_id,month,value\n");
        for (var i = 0; i <= 200_000; i++)
        {
            rows.Append("1,2020-01,1\n");
        }

        using var tooMany = await admin.PostAsync(new Uri("/api/actuals/import", UriKind.Relative), new StringContent(rows.ToString(), Encoding.UTF8, "text/csv"));
        var text = await tooMany.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadRequest, tooMany.StatusCode);
        Assert.Contains("At most 200,000 rows", text, StringComparison.Ordinal);
    }
}
