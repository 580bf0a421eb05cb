using System.Net;
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
}
