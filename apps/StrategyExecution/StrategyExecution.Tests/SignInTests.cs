using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace StrategyExecution.Tests;

/// <summary>Signing in and out, API tokens, passwords, throttling, and the first admin of an empty app.</summary>
public sealed class SignInTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    private static readonly Uri SignIn = new("/api/sign-in", UriKind.Relative);

    [Fact]
    public async Task A_sign_in_sets_a_strict_http_only_cookie_that_works_until_sign_out()
    {
        var person = (await ApiClient.DemoPeople(fixture.App)).First(p => p!["roles"]!.AsArray().Count > 0)!;
        using var handler = new HttpClientHandler { UseCookies = true };
        using var browser = new HttpClient(handler) { BaseAddress = fixture.App.BaseAddress };
        using (var signedIn = await browser.PostAsJsonAsync(SignIn, new { email = person["email"]!.GetValue<string>().ToUpperInvariant(), password = "demo" }))
        {
            Assert.Equal(HttpStatusCode.OK, signedIn.StatusCode);
            var cookie = Assert.Single(signedIn.Headers.GetValues("Set-Cookie"));
            Assert.StartsWith("strategy_token=st_", cookie, StringComparison.Ordinal);
            Assert.Contains("httponly", cookie, StringComparison.OrdinalIgnoreCase);
            Assert.Contains("samesite=strict", cookie, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("passwordHash", await signedIn.Content.ReadAsStringAsync(), StringComparison.OrdinalIgnoreCase);
        }

        Assert.Equal(person["id"]!.GetValue<int>(), (await browser.GetJson("/api/me"))["id"]!.GetValue<int>());
        using (var stream = await browser.GetAsync(new Uri("/v1/stream/strategy/audit?offset=-1", UriKind.Relative)))
        {
            Assert.Equal(HttpStatusCode.OK, stream.StatusCode);
        }

        var token = handler.CookieContainer.GetCookies(fixture.App.BaseAddress)["strategy_token"]!.Value;
        using (var signedOut = await browser.PostAsync(new Uri("/api/sign-out", UriKind.Relative), null))
        {
            Assert.Equal(HttpStatusCode.NoContent, signedOut.StatusCode);
        }

        // The token is gone from the server, not only from the browser.
        using var replay = ApiClient.Anonymous(fixture.App);
        replay.DefaultRequestHeaders.Authorization = new("Bearer", token);
        using var me = await replay.GetAsync(new Uri("/api/me", UriKind.Relative));
        Assert.Equal(HttpStatusCode.Unauthorized, me.StatusCode);
        using var anonymousStream = await ApiClient.Anonymous(fixture.App).GetAsync(new Uri("/v1/stream/strategy/audit?offset=-1", UriKind.Relative));
        Assert.Equal(HttpStatusCode.Unauthorized, anonymousStream.StatusCode);
    }

    [Fact]
    public async Task Wrong_passwords_and_unknown_addresses_get_the_same_answer_and_five_failures_lock_the_address()
    {
        var email = (await ApiClient.DemoPeople(fixture.App))[^1]!["email"]!.GetValue<string>();
        using var client = ApiClient.Anonymous(fixture.App);
        async Task<(HttpStatusCode Status, string Code, HttpResponseMessage Response)> Try(string address, string password)
        {
            var response = await client.PostAsJsonAsync(SignIn, new { email = address, password });
            var body = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
            return (response.StatusCode, body["error"]?["code"]?.GetValue<string>() ?? "", response);
        }

        var unknown = await Try("nobody@nowhere.example", "demo");
        Assert.Equal((HttpStatusCode.Unauthorized, "SIGN_IN_FAILED"), (unknown.Status, unknown.Code));
        for (var i = 0; i < 5; i++)
        {
            var wrong = await Try(email, "not the password");
            Assert.Equal((HttpStatusCode.Unauthorized, "SIGN_IN_FAILED"), (wrong.Status, wrong.Code));
        }

        // Locked: even the right password waits out the window, and the answer says how long.
        var locked = await Try(email, "demo");
        Assert.Equal((HttpStatusCode.TooManyRequests, "TOO_MANY_ATTEMPTS"), (locked.Status, locked.Code));
        Assert.InRange(int.Parse(locked.Response.Headers.GetValues("Retry-After").Single(), System.Globalization.CultureInfo.InvariantCulture), 1, 900);

        foreach (var body in new[] { "{}", "{\"email\":\"a@b.c\"}", "{\"email\":\"a@b.c\",\"password\":\"" + new string('x', 300) + "\"}", "[1]", "not json" })
        {
            using var bad = await client.PostAsync(SignIn, ApiClient.Json(body));
            Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        }
    }

    [Fact]
    public async Task An_api_token_works_as_a_bearer_is_listed_without_its_secret_and_stops_when_revoked()
    {
        using var me = ApiClient.For(fixture.App);
        // Making a token takes the password, not only a sign-in.
        foreach (var (password, status) in new[] { ((string?)null, HttpStatusCode.BadRequest), ("not it", HttpStatusCode.Forbidden) })
        {
            using var refused = await me.PostAsJsonAsync(new Uri("/api/tokens", UriKind.Relative), new { name = "nightly import", password });
            Assert.Equal(status, refused.StatusCode);
        }

        using var created = await me.PostAsJsonAsync(new Uri("/api/tokens", UriKind.Relative), new { name = "nightly import", expiresInDays = 30, password = "demo" });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var made = JsonNode.Parse(await created.Content.ReadAsStringAsync())!;
        var token = made["token"]!.GetValue<string>();

        using var script = ApiClient.Anonymous(fixture.App);
        script.DefaultRequestHeaders.Authorization = new("Bearer", token);
        Assert.Equal((await me.GetJson("/api/me"))["id"]!.GetValue<int>(), (await script.GetJson("/api/me"))["id"]!.GetValue<int>());

        var listed = (await me.GetJson("/api/tokens")).AsArray();
        var entry = Assert.Single(listed, t => t!["id"]!.GetValue<int>() == made["id"]!.GetValue<int>())!;
        Assert.Equal("nightly import", entry["name"]!.GetValue<string>());
        Assert.DoesNotContain(token, listed.ToJsonString(), StringComparison.Ordinal);

        // Nobody else can revoke it; its owner can.
        using var other = ApiClient.For(fixture.App, await me.PersonWith(1, "admin"));
        using (var foreign = await other.DeleteAsync(new Uri($"/api/tokens/{made["id"]}", UriKind.Relative)))
        {
            Assert.Equal(HttpStatusCode.NotFound, foreign.StatusCode);
        }

        // Sign-ins are not API tokens: one's own (made before this token) cannot be revoked here.
        for (var id = 1; id < made["id"]!.GetValue<int>(); id++)
        {
            using var notAnApiToken = await me.DeleteAsync(new Uri($"/api/tokens/{id}", UriKind.Relative));
            Assert.Equal(HttpStatusCode.NotFound, notAnApiToken.StatusCode);
        }

        using (var stillSignedIn = await me.GetAsync(new Uri("/api/me", UriKind.Relative)))
        {
            Assert.Equal(HttpStatusCode.OK, stillSignedIn.StatusCode);
        }

        using (var revoked = await me.DeleteAsync(new Uri($"/api/tokens/{made["id"]}", UriKind.Relative)))
        {
            Assert.Equal(HttpStatusCode.NoContent, revoked.StatusCode);
        }

        using var after = await script.GetAsync(new Uri("/api/me", UriKind.Relative));
        Assert.Equal(HttpStatusCode.Unauthorized, after.StatusCode);

        foreach (var bad in new object[] { new { name = "", password = "demo" }, new { name = "sign-in", password = "demo" }, new { name = "x", expiresInDays = 0, password = "demo" }, new { name = "x", expiresInDays = 366, password = "demo" } })
        {
            using var refused = await me.PostAsJsonAsync(new Uri("/api/tokens", UriKind.Relative), bad);
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        }
    }

    [Fact]
    public async Task Neither_passwords_nor_tokens_leave_the_app_in_people_lists_or_exports()
    {
        using var reader = ApiClient.For(fixture.App);
        using var admin = ApiClient.For(fixture.App, await reader.PersonWith(1, "admin"));
        var everything = (await admin.GetJson("/api/export")).ToJsonString();
        var people = (await admin.GetJson("/api/people")).ToJsonString();
        foreach (var text in new[] { everything, people })
        {
            Assert.DoesNotContain("pbkdf2", text, StringComparison.Ordinal);
            Assert.DoesNotContain("passwordHash", text, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotMatch("st_[A-Za-z0-9_-]{43}", text);
        }
    }

    [Fact]
    public async Task An_app_without_the_demo_starts_with_the_configured_admin_whose_new_password_ends_other_sign_ins()
    {
        await using var app = await AppProcess.StartNewAsync("--Demo:Size", "none", "--Admin:Email", "Founder@Example.com", "--Admin:Password", "correct horse battery", "--Admin:Name", "The Founder");
        using var client = ApiClient.Anonymous(app);
        using (var demo = await client.GetAsync(new Uri("/api/demo/people", UriKind.Relative)))
        {
            Assert.Equal(HttpStatusCode.NotFound, demo.StatusCode);
        }

        using (var wrong = await client.PostAsJsonAsync(SignIn, new { email = "founder@example.com", password = "demo" }))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        }

        using var signedIn = await client.PostAsJsonAsync(SignIn, new { email = "founder@example.com", password = "correct horse battery" });
        Assert.Equal(HttpStatusCode.OK, signedIn.StatusCode);
        client.DefaultRequestHeaders.Authorization = new("Bearer", JsonNode.Parse(await signedIn.Content.ReadAsStringAsync())!["token"]!.GetValue<string>());
        var me = await client.GetJson("/api/me");
        Assert.Equal("The Founder", me["name"]!.GetValue<string>());
        var role = Assert.Single(me["roles"]!.AsArray())!;
        Assert.Equal("admin", role["role"]!.GetValue<string>());

        // A second sign-in (another device), used once so that the app remembers it.
        using var otherDevice = ApiClient.Anonymous(app);
        using (var second = await otherDevice.PostAsJsonAsync(SignIn, new { email = "founder@example.com", password = "correct horse battery" }))
        {
            otherDevice.DefaultRequestHeaders.Authorization = new("Bearer", JsonNode.Parse(await second.Content.ReadAsStringAsync())!["token"]!.GetValue<string>());
        }

        Assert.Equal("The Founder", (await otherDevice.GetJson("/api/me"))["name"]!.GetValue<string>());

        // The admin changes the password: the old one stops working, the new one works, and the other device's sign-in
        // ends at once while this one goes on.
        using (var changed = await client.PostAsJsonAsync(new Uri("/api/me/password", UriKind.Relative), new { current = "correct horse battery", @new = "a longer new password" }))
        {
            Assert.Equal(HttpStatusCode.NoContent, changed.StatusCode);
        }

        using (var ended = await otherDevice.GetAsync(new Uri("/api/me", UriKind.Relative)))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, ended.StatusCode);
        }

        Assert.Equal("The Founder", (await client.GetJson("/api/me"))["name"]!.GetValue<string>());

        using var anonymous = ApiClient.Anonymous(app);
        using (var old = await anonymous.PostAsJsonAsync(SignIn, new { email = "founder@example.com", password = "correct horse battery" }))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, old.StatusCode);
        }

        using (var fresh = await anonymous.PostAsJsonAsync(SignIn, new { email = "founder@example.com", password = "a longer new password" }))
        {
            Assert.Equal(HttpStatusCode.OK, fresh.StatusCode);
        }

        using (var tooShort = await client.PostAsJsonAsync(new Uri("/api/me/password", UriKind.Relative), new { current = "a longer new password", @new = "short" }))
        {
            Assert.Equal(HttpStatusCode.BadRequest, tooShort.StatusCode);
        }

        // Five wrong current passwords, and the sixth try waits, right or wrong.
        for (var i = 0; i < 5; i++)
        {
            using var wrong = await client.PostAsJsonAsync(new Uri("/api/me/password", UriKind.Relative), new { current = "guess " + i, @new = "another new password" });
            Assert.Equal(HttpStatusCode.Forbidden, wrong.StatusCode);
        }

        using (var waits = await client.PostAsJsonAsync(new Uri("/api/me/password", UriKind.Relative), new { current = "a longer new password", @new = "another new password" }))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, waits.StatusCode);
        }

        // Started again without saying "no demo": the data says it holds real people, so nobody signed out sees them.
        app.Settings = ["--Admin:Email", "founder@example.com", "--Admin:Password", "correct horse battery"];
        await app.KillAsync();
        await app.StartAsync();
        using var afterRestart = await ApiClient.Anonymous(app).GetAsync(new Uri("/api/demo/people", UriKind.Relative));
        Assert.Equal(HttpStatusCode.NotFound, afterRestart.StatusCode);
        Assert.Equal("The Founder", (await client.GetJson("/api/me"))["name"]!.GetValue<string>());
    }

    [Fact]
    public async Task Every_endpoint_but_signing_in_needs_a_sign_in()
    {
        using var reader = ApiClient.For(fixture.App);
        var openApi = await reader.GetJson("/openapi/v1.json");
        string[] open = ["/api/sign-in", "/api/sign-out", "/api/demo/people"];
        var operations = openApi["paths"]!.AsObject().Where(p => p.Key.StartsWith("/api/", StringComparison.Ordinal) && !open.Contains(p.Key))
            .SelectMany(p => p.Value!.AsObject().Select(m => (Path: p.Key.Replace("{id}", "1", StringComparison.Ordinal).Replace("{unitId}", "1", StringComparison.Ordinal).Replace("{table}", "units", StringComparison.Ordinal), Method: m.Key.ToUpperInvariant())))
            .ToList();
        Assert.True(operations.Count >= 40, $"only {operations.Count} operations documented");
        using var anonymous = ApiClient.Anonymous(fixture.App);
        foreach (var (path, method) in operations)
        {
            using var request = new HttpRequestMessage(new HttpMethod(method), path);
            if (method is "POST" or "PUT")
            {
                request.Content = ApiClient.Json("{}");
            }

            using var response = await anonymous.SendAsync(request);
            Assert.True(response.StatusCode == HttpStatusCode.Unauthorized, $"{method} {path} answered {(int)response.StatusCode} to nobody");
        }

        // The streams too, for every method that reads, with no token or a revoked one.
        using var revoked = ApiClient.Anonymous(fixture.App);
        revoked.DefaultRequestHeaders.Authorization = new("Bearer", "st_" + new string('A', 43));
        foreach (var client in new[] { anonymous, revoked })
        {
            foreach (var method in new[] { HttpMethod.Get, HttpMethod.Head })
            {
                using var response = await client.SendAsync(new HttpRequestMessage(method, "/v1/stream/strategy/audit?offset=-1"));
                Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            }
        }
    }

    [Fact]
    public async Task A_change_sent_with_the_cookie_from_another_origin_is_refused_and_changes_nothing()
    {
        using var reader = ApiClient.For(fixture.App);
        var updater = await reader.PersonWith(3, "updater");
        var token = await ApiClient.TokenFor(fixture.App, updater);
        var measure = (await reader.GetJson("/api/scorecards/3"))["objectives"]![0]!["measures"]![0]!["id"]!.GetValue<int>();
        var history = (await reader.GetJson($"/api/measures/{measure}/actuals")).AsArray().Count;
        var origin = fixture.App.BaseAddress.GetLeftPart(UriPartial.Authority);
        (string Header, string Value, HttpStatusCode Expected)[] cases =
        [
            ("Origin", "http://127.0.0.1:1", HttpStatusCode.Forbidden),
            ("Origin", "null", HttpStatusCode.Forbidden),
            ("Sec-Fetch-Site", "same-site", HttpStatusCode.Forbidden),
            ("Sec-Fetch-Site", "cross-site", HttpStatusCode.Forbidden),
            ("Origin", origin, HttpStatusCode.Created),
            ("Sec-Fetch-Site", "same-origin", HttpStatusCode.Created),
        ];
        foreach (var (header, value, expected) in cases)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/measures/{measure}/actuals") { Content = JsonContent.Create(new { month = ApiClient.LastMonth(), value = 42 }) };
            request.Headers.Add("Cookie", $"strategy_token={token}");
            request.Headers.Add(header, value);
            using var response = await ApiClient.Anonymous(fixture.App).SendAsync(request);
            Assert.True(expected == response.StatusCode, $"{header}: {value} answered {(int)response.StatusCode}");
            if (expected == HttpStatusCode.Forbidden)
            {
                Assert.Equal("CROSS_SITE", JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!["code"]!.GetValue<string>());
            }
        }

        Assert.Equal(history + 2, (await reader.GetJson($"/api/measures/{measure}/actuals")).AsArray().Count);
    }
}
