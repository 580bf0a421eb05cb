using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace StrategyExecution.Tests;

/// <summary>Calls the app's API as a given person.</summary>
public static class ApiClient
{
    public static HttpClient For(AppProcess app, int? person = null)
    {
        var client = new HttpClient { BaseAddress = app.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        if (person is { } id)
        {
            client.DefaultRequestHeaders.Add("X-Person-Id", id.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        return client;
    }

    public static async Task<JsonNode> GetJson(this HttpClient client, string path)
    {
        using var response = await client.GetAsync(new Uri(path, UriKind.Relative));
        Assert.True(response.IsSuccessStatusCode, $"GET {path} answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
        return JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
    }

    public static Task<HttpResponseMessage> RecordActual(this HttpClient client, int measure, string month, double value)
        => client.PostAsJsonAsync(new Uri($"/api/measures/{measure}/actuals", UriKind.Relative), new { month, value });

    public static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    /// <summary>The person holding <paramref name="role"/> directly on <paramref name="unit"/>.</summary>
    public static async Task<int> PersonWith(this HttpClient client, int unit, string role)
    {
        var roles = (await client.GetJson($"/api/roles?unit={unit}")).AsArray();
        return roles.First(r => r!["role"]!.GetValue<string>() == role)!["personId"]!.GetValue<int>();
    }

    /// <summary>Everything in the audit stream, read over the Durable Streams protocol.</summary>
    public static Task<List<JsonNode>> AuditStream(this HttpClient client) => ReadStream(client, "strategy/audit");

    /// <summary>Everything in a stream of the app, read over the Durable Streams protocol.</summary>
    public static async Task<List<JsonNode>> ReadStream(HttpClient client, string path)
    {
        var all = new List<JsonNode>();
        var offset = "-1";
        while (true)
        {
            using var response = await client.GetAsync(new Uri($"/v1/stream/{path}?offset={offset}", UriKind.Relative));
            response.EnsureSuccessStatusCode();
            all.AddRange(JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsArray().Select(n => n!.DeepClone()));
            offset = response.Headers.GetValues("Stream-Next-Offset").Single();
            if (response.Headers.Contains("Stream-Up-To-Date"))
            {
                return all;
            }
        }
    }

    /// <summary>Waits until <paramref name="condition"/> holds, polling; fails with <paramref name="what"/> after the timeout.</summary>
    public static async Task Until(Func<Task<bool>> condition, string what, int timeoutMs = 20_000)
    {
        var deadline = DateTime.UtcNow.AddMilliseconds(timeoutMs);
        while (DateTime.UtcNow < deadline)
        {
            if (await condition())
            {
                return;
            }

            await Task.Delay(25);
        }

        Assert.Fail($"Timed out waiting for {what}.");
    }

    public static string LastMonth()
    {
        // Last month, unless that is in last year's (locked) period: then this month.
        var now = DateTime.UtcNow;
        var month = new DateTime(now.Year, now.Month, 1, 0, 0, 0, DateTimeKind.Utc);
        return (month.Month == 1 ? month : month.AddMonths(-1)).ToString("yyyy-MM", System.Globalization.CultureInfo.InvariantCulture);
    }

    public static readonly JsonSerializerOptions Web = new(JsonSerializerDefaults.Web);
}
