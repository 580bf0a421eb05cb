using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using DurableSessions.Testing;

namespace StrategyExecution.Tests;

/// <summary>The app with the demo organisation and small count limits, so that the tests reach them in a few requests.</summary>
public sealed class SmallLimitsFixture : IAsyncLifetime
{
    public const int Objectives = 4, Measures = 3, Links = 2, Milestones = 2, Reviews = 10, Decisions = 2, Announcements = 3, SignIns = 2;

    public AppProcess App { get; private set; } = null!;

    public async ValueTask InitializeAsync() => App = await AppProcess.StartNewAsync(
        "--Limits:ObjectivesPerScorecard", $"{Objectives}",
        "--Limits:MeasuresPerObjective", $"{Measures}",
        "--Limits:LinksPerObjective", $"{Links}",
        "--Limits:MilestonesPerInitiative", $"{Milestones}",
        "--Limits:ReviewsPerUnitAndPeriod", $"{Reviews}",
        "--Limits:DecisionsPerReview", $"{Decisions}",
        "--Limits:AnnouncementsPerAuthorPerYear", $"{Announcements}",
        "--Limits:SignInsPerPerson", $"{SignIns}");

    public async ValueTask DisposeAsync() => await App.DisposeAsync();
}

/// <summary>
/// Count limits: a create up to a limit is accepted, the one past it is <c>409 LIMIT_REACHED</c> with the limit in its
/// message, and nothing more is stored.
/// </summary>
public sealed class CountLimitTests(SmallLimitsFixture fixture) : IClassFixture<SmallLimitsFixture>
{
    // The demo's periods: last year (locked), this year (active), next year (planning, with no objectives yet).
    private const int Planning = 3;

    [Fact]
    public async Task A_scorecard_takes_objectives_up_to_its_limit_and_not_one_more()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        Assert.Empty(await Objectives(admin, 1));
        for (var i = 0; i < SmallLimitsFixture.Objectives; i++)
        {
            await Created(admin, "/api/objectives", new { unitId = 1, periodId = Planning, name = $"Next year {i}", perspective = "financial" });
        }

        await Refused(admin, "/api/objectives", new { unitId = 1, periodId = Planning, name = "One too many", perspective = "financial" },
            $"at most {SmallLimitsFixture.Objectives} objectives per period", $"has {SmallLimitsFixture.Objectives}.");
        Assert.Equal(SmallLimitsFixture.Objectives, (await Objectives(admin, 1)).Count);
    }

    [Fact]
    public async Task An_objective_takes_measures_up_to_its_limit_and_not_one_more()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        var objective = await Created(admin, "/api/objectives", new { unitId = 3, periodId = Planning, name = "Measured", perspective = "customer" });
        for (var i = 0; i < SmallLimitsFixture.Measures; i++)
        {
            await Created(admin, "/api/measures", new { objectiveId = objective, name = $"Measure {i}", unit = "%", direction = "higher" });
        }

        await Refused(admin, "/api/measures", new { objectiveId = objective, name = "One too many", unit = "%", direction = "higher" },
            $"at most {SmallLimitsFixture.Measures} measures", $"\"Measured\" has {SmallLimitsFixture.Measures}.");
        var stored = (await Objectives(admin, 3)).Single(o => o!["id"]!.GetValue<int>() == objective)!["measures"]!.AsArray();
        Assert.Equal(SmallLimitsFixture.Measures, stored.Count);
    }

    [Fact]
    public async Task An_objective_takes_links_as_cause_and_effect_together_up_to_its_limit()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        var (a, b, c, d) = (await Objective("Link a"), await Objective("Link b"), await Objective("Link c"), await Objective("Link d"));
        await Created(admin, "/api/links", new { cause = a, effect = b });
        await Created(admin, "/api/links", new { cause = a, effect = c });
        await Refused(admin, "/api/links", new { cause = a, effect = d }, $"at most {SmallLimitsFixture.Links} cause→effect links", $"\"Link a\" has {SmallLimitsFixture.Links}.");

        // b is an effect once, and takes one more link as an effect; then it is full, whichever end the next link names.
        await Created(admin, "/api/links", new { cause = d, effect = b });
        await Refused(admin, "/api/links", new { cause = c, effect = b }, $"at most {SmallLimitsFixture.Links} cause→effect links", $"\"Link b\" has {SmallLimitsFixture.Links}.");
        await Refused(admin, "/api/links", new { cause = b, effect = d }, $"at most {SmallLimitsFixture.Links} cause→effect links", $"\"Link b\" has {SmallLimitsFixture.Links}.");
        await Created(admin, "/api/links", new { cause = d, effect = c });

        var links = (await admin.GetJson($"/api/strategy-map?period={Planning}&unit=2"))["links"]!.AsArray()
            .Select(l => (l!["causeId"]!.GetValue<int>(), l["effectId"]!.GetValue<int>())).Order().ToList();
        Assert.Equal([(a, b), (a, c), (d, b), (d, c)], links);

        async Task<int> Objective(string name) => await Created(admin, "/api/objectives", new { unitId = 2, periodId = Planning, name, perspective = "internal-process" });
    }

    [Fact]
    public async Task An_initiative_takes_milestones_up_to_its_limit_and_not_one_more()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        var initiative = await Created(admin, "/api/initiatives", new { unitId = 3, name = "Limited" });
        var due = DateTime.UtcNow.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture);
        for (var i = 0; i < SmallLimitsFixture.Milestones; i++)
        {
            await Created(admin, $"/api/initiatives/{initiative}/milestones", new { name = $"Step {i}", due });
        }

        await Refused(admin, $"/api/initiatives/{initiative}/milestones", new { name = "One too many", due },
            $"at most {SmallLimitsFixture.Milestones} milestones", $"\"Limited\" has {SmallLimitsFixture.Milestones}.");
        var stored = (await admin.GetJson("/api/budgets"))["initiatives"]!.AsArray().Single(i => i!["id"]!.GetValue<int>() == initiative)!;
        Assert.Equal(SmallLimitsFixture.Milestones, stored["milestones"]!.GetValue<int>());
    }

    [Fact]
    public async Task A_cadence_that_would_pass_a_units_review_limit_schedules_nothing_and_single_reviews_stop_at_it()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        Assert.Empty((await admin.GetJson("/api/reviews?unit=7")).AsArray());

        // The cadence is sixteen reviews a year: past the limit of ten, so none of them is scheduled.
        await Refused(admin, "/api/reviews/cadence", new { unitId = 7 }, $"at most {SmallLimitsFixture.Reviews} reviews per period", "the cadence would add 16");
        Assert.Empty((await admin.GetJson("/api/reviews?unit=7")).AsArray());

        for (var i = 0; i < SmallLimitsFixture.Reviews; i++)
        {
            await Created(admin, "/api/reviews", new { unitId = 7, kind = "monthly-operational" }, "review");
        }

        await Refused(admin, "/api/reviews", new { unitId = 7, kind = "quarterly-strategy" }, $"at most {SmallLimitsFixture.Reviews} reviews per period", $"has {SmallLimitsFixture.Reviews} in");
        Assert.Equal(SmallLimitsFixture.Reviews, (await admin.GetJson("/api/reviews?unit=7")).AsArray().Count);
    }

    [Fact]
    public async Task A_review_records_decisions_up_to_its_limit_and_not_one_more()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        var review = await Created(admin, "/api/reviews", new { unitId = 8, kind = "quarterly-strategy" }, "review");
        using (var started = await admin.PostAsync(new Uri($"/api/reviews/{review}/start", UriKind.Relative), null))
        {
            Assert.Equal(HttpStatusCode.OK, started.StatusCode);
        }

        var objective = (await admin.GetJson("/api/scorecards/8"))["objectives"]![0]!["id"]!.GetValue<int>();
        for (var i = 0; i < SmallLimitsFixture.Decisions; i++)
        {
            await Created(admin, $"/api/reviews/{review}/decisions", new { text = $"Decision {i}", objectiveId = objective });
        }

        await Refused(admin, $"/api/reviews/{review}/decisions", new { text = "One too many", objectiveId = objective },
            $"at most {SmallLimitsFixture.Decisions} decisions", $"has {SmallLimitsFixture.Decisions}.");
        Assert.Equal(SmallLimitsFixture.Decisions, (await admin.GetJson($"/api/reviews/{review}"))["decisions"]!.AsArray().Count);
    }

    [Fact]
    public async Task Decisions_sent_at_once_stop_at_the_limit_and_a_close_sent_with_them_leaves_none_after_it()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        var objective = (await admin.GetJson("/api/scorecards/8"))["objectives"]![0]!["id"]!.GetValue<int>();

        // Eight at once on a live review: the count is taken under the review's lock, so exactly the limit get in.
        var review = await StartedReview(admin);
        var answers = await Task.WhenAll(Enumerable.Range(0, 8).Select(i => admin.PostAsJsonAsync(new Uri($"/api/reviews/{review}/decisions", UriKind.Relative), new { text = $"At once {i}", objectiveId = objective })));
        Assert.Equal(SmallLimitsFixture.Decisions, answers.Count(a => a.StatusCode == HttpStatusCode.Created));
        Assert.All(answers.Where(a => a.StatusCode != HttpStatusCode.Created), a => Assert.Equal(HttpStatusCode.Conflict, a.StatusCode));
        Assert.Equal(SmallLimitsFixture.Decisions, (await admin.GetJson($"/api/reviews/{review}"))["decisions"]!.AsArray().Count);

        // A decision and a move of the current item sent together with the close: each lands before the close or is
        // refused (409 REVIEW_NOT_LIVE). A closed review holds no current item and only the decisions its answers created.
        for (var round = 0; round < 5; round++)
        {
            review = await StartedReview(admin);
            var item = (await admin.GetJson($"/api/reviews/{review}"))["agenda"]!.AsArray().Select(a => a!["id"]!.GetValue<int>()).Last();
            var decided = admin.PostAsJsonAsync(new Uri($"/api/reviews/{review}/decisions", UriKind.Relative), new { text = "Racing the close", objectiveId = objective });
            var moved = admin.PostAsJsonAsync(new Uri($"/api/reviews/{review}/current", UriKind.Relative), new { itemId = item });
            var closed = admin.PostAsync(new Uri($"/api/reviews/{review}/close", UriKind.Relative), null);
            await Task.WhenAll(decided, moved, closed);
            Assert.Equal(HttpStatusCode.OK, (await closed).StatusCode);
            Assert.Contains((await decided).StatusCode, new[] { HttpStatusCode.Created, HttpStatusCode.Conflict });
            Assert.Contains((await moved).StatusCode, new[] { HttpStatusCode.OK, HttpStatusCode.Conflict });
            var after = await admin.GetJson($"/api/reviews/{review}");
            Assert.Equal("closed", after["review"]!["status"]!.GetValue<string>());
            Assert.Null(after["review"]!["currentItemId"]);
            Assert.Equal((await decided).StatusCode == HttpStatusCode.Created ? 1 : 0, after["decisions"]!.AsArray().Count);
        }
    }

    [Fact]
    public async Task A_decision_locks_its_live_review_and_on_postgresql_writes_no_new_version_of_it()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        var objective = (await admin.GetJson("/api/scorecards/8"))["objectives"]![0]!["id"]!.GetValue<int>();
        var review = await StartedReview(admin);
        var before = await ReviewRowVersionAsync(review);
        using (var decided = await admin.PostAsJsonAsync(new Uri($"/api/reviews/{review}/decisions", UriKind.Relative), new { text = "Locked, not rewritten", objectiveId = objective }))
        {
            Assert.Equal(HttpStatusCode.Created, decided.StatusCode);
        }

        Assert.Single((await admin.GetJson($"/api/reviews/{review}"))["decisions"]!.AsArray());

        // PostgreSQL's row version (xmin) is the one before: the review was locked, not updated. SQLite keeps no row
        // versions to compare (and takes its write lock by an update that changes nothing).
        Assert.Equal(before, await ReviewRowVersionAsync(review));
    }

    private async Task<string?> ReviewRowVersionAsync(int review)
    {
        if (!PostgresServer.Selected)
        {
            return null;
        }

        await using var connection = new Npgsql.NpgsqlConnection(fixture.App.ConnectionString + ";Pooling=false");
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = $"SELECT xmin::text FROM \"Reviews\" WHERE \"Id\" = {review}";
        return (string?)await command.ExecuteScalarAsync() ?? throw new InvalidOperationException($"no review {review}");
    }

    private static async Task<int> StartedReview(HttpClient admin)
    {
        var review = await Created(admin, "/api/reviews", new { unitId = 8, kind = "quarterly-strategy" }, "review");
        using var started = await admin.PostAsync(new Uri($"/api/reviews/{review}/start", UriKind.Relative), null);
        Assert.Equal(HttpStatusCode.OK, started.StatusCode);
        return review;
    }

    [Fact]
    public async Task An_author_publishes_announcements_up_to_the_limit_of_the_last_365_days()
    {
        using var admin = ApiClient.For(fixture.App, 1);
        var before = (await admin.GetJson("/api/announcements")).AsArray();
        var recent = before.Count(a => a!["authorId"]!.GetValue<int>() == 1 && a["publishedAt"]!.GetValue<DateTimeOffset>() > DateTimeOffset.UtcNow.AddDays(-365));
        Assert.InRange(recent, 0, SmallLimitsFixture.Announcements - 1);
        for (var i = recent; i < SmallLimitsFixture.Announcements; i++)
        {
            await Created(admin, "/api/announcements", new { title = $"News {i}", body = "Read this.", unitIds = new[] { 1 } });
        }

        await Refused(admin, "/api/announcements", new { title = "One too many", body = "Read this too.", unitIds = new[] { 1 } },
            $"One person publishes at most {SmallLimitsFixture.Announcements} announcements in any 365 days", $"has published {SmallLimitsFixture.Announcements} since");
        Assert.Equal(before.Count + SmallLimitsFixture.Announcements - recent, (await admin.GetJson("/api/announcements")).AsArray().Count);
    }

    [Fact]
    public async Task A_sign_in_past_a_persons_limit_ends_their_oldest_and_is_not_refused()
    {
        var email = (await ApiClient.DemoPeople(fixture.App)).Single(p => p!["id"]!.GetValue<int>() == 2)!["email"]!.GetValue<string>();
        using var anonymous = ApiClient.Anonymous(fixture.App);
        Task<string> SignIn() => SignInAsync(anonymous, email);
        Task<HttpStatusCode> Me(string token) => MeAsync(anonymous, token);

        var tokens = new List<string>();
        for (var i = 0; i < SmallLimitsFixture.SignIns; i++)
        {
            tokens.Add(await SignIn());
        }

        // Each works, and is remembered by the app for a while: ending one must forget it at once.
        foreach (var token in tokens)
        {
            Assert.Equal(HttpStatusCode.OK, await Me(token));
        }

        var newest = await SignIn();
        Assert.Equal(HttpStatusCode.Unauthorized, await Me(tokens[0]));
        foreach (var token in tokens.Skip(1).Append(newest))
        {
            Assert.Equal(HttpStatusCode.OK, await Me(token));
        }
    }

    [Fact]
    public async Task A_sign_in_past_a_persons_limit_ends_the_one_unused_the_longest_not_the_browser_in_use()
    {
        var email = (await ApiClient.DemoPeople(fixture.App)).Single(p => p!["id"]!.GetValue<int>() == 3)!["email"]!.GetValue<string>();
        using var anonymous = ApiClient.Anonymous(fixture.App);
        Task<string> SignIn() => SignInAsync(anonymous, email);
        Task<HttpStatusCode> Me(string token) => MeAsync(anonymous, token);

        // The first sign-in is made first but used last (the browser in use); the second is made later and used before it.
        var inUse = await SignIn();
        var idle = await SignIn();
        Assert.Equal(2, SmallLimitsFixture.SignIns);
        Assert.Equal(HttpStatusCode.OK, await Me(idle));
        Assert.Equal(HttpStatusCode.OK, await Me(inUse));

        var newest = await SignIn();
        Assert.Equal(HttpStatusCode.Unauthorized, await Me(idle));
        Assert.Equal(HttpStatusCode.OK, await Me(inUse));
        Assert.Equal(HttpStatusCode.OK, await Me(newest));
    }

    private static async Task<string> SignInAsync(HttpClient anonymous, string email)
    {
        using var response = await anonymous.PostAsJsonAsync(new Uri("/api/sign-in", UriKind.Relative), new { email, password = "demo" });
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        return JsonNode.Parse(text)!["token"]!.GetValue<string>();
    }

    private static async Task<HttpStatusCode> MeAsync(HttpClient anonymous, string token)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/api/me");
        request.Headers.Authorization = new("Bearer", token);
        using var response = await anonymous.SendAsync(request);
        return response.StatusCode;
    }

    [Theory]
    [InlineData("--Limits:MeasuresPerObjective", "0", "Limits:MeasuresPerObjective must be a whole number from 1 up")]
    [InlineData("--Limits:MeasuresPerObjective", "lots", "Limits:MeasuresPerObjective must be a whole number from 1 up")]
    [InlineData("--Limits:MeasurePerObjective", "80", "Limits:MeasurePerObjective is not a limit the app knows")]
    public async Task A_limit_set_wrong_stops_the_start_with_a_message_that_names_it(string key, string value, string message)
    {
        var dll = ChildProcess.Locate("apps/StrategyExecution/StrategyExecution", "StrategyExecution.dll", "Build the app first (dotnet build).");
        var data = Path.Combine(Path.GetTempPath(), "strategy-test-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var app = ChildProcess.Start(ChildProcess.Dotnet(dll, ["--urls", $"http://127.0.0.1:{LoopbackPorts.Free()}", "--Data", data, key, value]));
            await app.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
            Assert.NotEqual(0, app.Process.ExitCode);
            await ApiClient.Until(() => Task.FromResult(app.RecentOutput.Contains(message, StringComparison.Ordinal)), $"the message '{message}'");

            // Nothing was created before the start stopped.
            Assert.False(Directory.Exists(data), "the data directory was created");
        }
        finally
        {
            if (Directory.Exists(data))
            {
                Directory.Delete(data, recursive: true);
            }
        }
    }

    private static async Task<JsonArray> Objectives(HttpClient client, int unit)
        => (await client.GetJson($"/api/scorecards/{unit}?period={Planning}"))["objectives"]!.AsArray();

    /// <summary>Posts <paramref name="body"/>, expects 201 and answers the id of what was created (under <paramref name="within"/>, if given).</summary>
    private static async Task<int> Created(HttpClient client, string path, object body, string? within = null)
    {
        using var response = await client.PostAsJsonAsync(new Uri(path, UriKind.Relative), body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, $"POST {path}: {(int)response.StatusCode} {text}");
        var created = JsonNode.Parse(text)!;
        return (within is null ? created : created[within]!)["id"]!.GetValue<int>();
    }

    /// <summary>Posts <paramref name="body"/> and expects <c>409 LIMIT_REACHED</c> with a message holding each of <paramref name="says"/>.</summary>
    private static async Task Refused(HttpClient client, string path, object body, params string[] says)
    {
        using var response = await client.PostAsJsonAsync(new Uri(path, UriKind.Relative), body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Conflict, $"POST {path}: {(int)response.StatusCode} {text}");
        var error = JsonNode.Parse(text)!["error"]!;
        Assert.Equal("LIMIT_REACHED", error["code"]!.GetValue<string>());
        foreach (var part in says)
        {
            Assert.Contains(part, error["message"]!.GetValue<string>(), StringComparison.Ordinal);
        }
    }
}
