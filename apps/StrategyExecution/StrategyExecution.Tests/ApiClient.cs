using System.Collections.Concurrent;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace StrategyExecution.Tests;

/// <summary>Calls the app's API as a given person, signed in with the demo password.</summary>
public static class ApiClient
{
    // Keyed by the app process itself, not its address: a later app may be given the port of one already stopped, and
    // that app's tokens mean nothing to it.
    private static readonly ConcurrentDictionary<(AppProcess App, int? Person), Lazy<Task<string>>> Tokens = new();

    /// <summary>
    /// A client signed in as <paramref name="person"/>; without one, as a person who holds no role above viewer (a reader). The
    /// sign-in happens on the first request and its token is kept for the app's later clients.
    /// </summary>
    /// <param name="app">The app.</param>
    /// <param name="person">Who signs in.</param>
    /// <param name="handler">The handler to send with (a plain <see cref="SocketsHttpHandler"/> when null).</param>
    public static HttpClient For(AppProcess app, int? person = null, SocketsHttpHandler? handler = null)
        => new(new SignedIn(app, person) { InnerHandler = handler ?? new SocketsHttpHandler() }) { BaseAddress = app.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };

    /// <summary>A client that is not signed in.</summary>
    /// <remarks>It keeps no cookies, so a test can send the Cookie header it means to.</remarks>
    public static HttpClient Anonymous(AppProcess app) => new(new SocketsHttpHandler { UseCookies = false }) { BaseAddress = app.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };

    /// <summary>A token of <paramref name="person"/> (or of a reader), signing in once per app.</summary>
    public static Task<string> TokenFor(AppProcess app, int? person = null)
        => Tokens.GetOrAdd((app, person), key => new Lazy<Task<string>>(() => SignInAsync(key.App, key.Person))).Value;

    /// <summary>The demo organisation's people, as listed for the sign-in page.</summary>
    public static async Task<JsonArray> DemoPeople(AppProcess app)
    {
        using var anonymous = Anonymous(app);
        return (await anonymous.GetJson("/api/demo/people")).AsArray();
    }

    private static async Task<string> SignInAsync(AppProcess app, int? person)
    {
        var people = await DemoPeople(app);
        var who = people.First(p => person is { } id ? p!["id"]!.GetValue<int>() == id : p!["roles"]!.AsArray().All(r => r!.GetValue<string>().StartsWith("viewer", StringComparison.Ordinal)))!;
        using var anonymous = Anonymous(app);
        using var response = await anonymous.PostAsJsonAsync(new Uri("/api/sign-in", UriKind.Relative), new { email = who["email"]!.GetValue<string>(), password = "demo" });
        Assert.True(response.IsSuccessStatusCode, $"Signing in as {who["email"]} answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
        return JsonNode.Parse(await response.Content.ReadAsStringAsync())!["token"]!.GetValue<string>();
    }

    /// <summary>Adds the person's bearer token to every request.</summary>
    private sealed class SignedIn(AppProcess app, int? person) : DelegatingHandler
    {
        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", await TokenFor(app, person));
            return await base.SendAsync(request, cancellationToken);
        }
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
