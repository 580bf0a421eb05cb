using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace StrategyExecution.Tests;

/// <summary>Step 5, review: generated agendas, the live meeting on the review's durable stream, decisions and actions.</summary>
public sealed class ReviewTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    [Fact]
    public async Task The_cadence_is_a_monthly_and_a_quarterly_review_and_the_agenda_puts_overdue_actions_and_reds_first()
    {
        using var reader = ApiClient.For(fixture.App);
        var reviews = (await reader.GetJson("/api/reviews?unit=1")).AsArray();
        Assert.Equal(12, reviews.Count(r => r!["kind"]!.GetValue<string>() == "monthly-operational"));
        Assert.Equal(4, reviews.Count(r => r!["kind"]!.GetValue<string>() == "quarterly-strategy"));

        // A red measure in a team, so the agenda has one.
        using var admin = ApiClient.For(fixture.App, await reader.PersonWith(1, "admin"));
        var measure = (await reader.GetJson("/api/scorecards/3"))["objectives"]![0]!["measures"]![0]!;
        var t = measure["target"]!;
        var worst = measure["direction"]!.GetValue<string>() == "lower" ? t["redFlag"]!.GetValue<double>() * 10 : -1000;
        Assert.Equal(HttpStatusCode.Created, (await admin.RecordActual(measure["id"]!.GetValue<int>(), ApiClient.LastMonth(), worst)).StatusCode);

        using var created = await admin.PostAsJsonAsync(new Uri("/api/reviews", UriKind.Relative), new { unitId = 1, kind = "monthly-operational" });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var agenda = JsonNode.Parse(await created.Content.ReadAsStringAsync())!["agenda"]!.AsArray();
        var reasons = agenda.Select(a => a!["reason"]!.GetValue<string>()).ToList();
        Assert.Contains("overdue-action", reasons);
        Assert.Contains("red", reasons);
        Assert.Contains(agenda, a => a!["subject"]!.GetValue<string>() == $"measure/{measure["id"]}" && a["reason"]!.GetValue<string>() == "red");
        // Overdue actions, then reds, then ambers, then stale.
        var rank = new Dictionary<string, int> { ["overdue-action"] = 0, ["red"] = 1, ["amber"] = 2, ["stale"] = 3 };
        Assert.Equal(reasons.OrderBy(r => rank[r]), reasons);
        Assert.InRange(agenda.Count, 1, 30);
    }

    [Fact]
    public async Task Reviews_and_role_assignments_are_listed_a_page_at_a_time_in_the_order_of_the_whole_list()
    {
        using var reader = ApiClient.For(fixture.App);
        foreach (var path in new[] { "/api/reviews?unit=1", "/api/reviews?", "/api/roles?unit=1", "/api/roles?unit=3" })
        {
            var whole = (await reader.GetJson(path)).AsArray().Select(r => r!["id"]!.GetValue<int>()).ToList();
            Assert.True(whole.Count is >= 2 and < 500, $"{path}: {whole.Count}");
            var paged = new List<int>();
            for (int? after = null; ;)
            {
                var page = (await reader.GetJson($"{path}&take=3{(after is { } a ? $"&after={a}" : "")}")).AsArray().Select(r => r!["id"]!.GetValue<int>()).ToList();
                Assert.InRange(page.Count, 0, 3);
                paged.AddRange(page);
                if (page.Count < 3)
                {
                    break;
                }

                after = page[^1];
            }

            Assert.Equal(whole, paged);
            using var badCursor = await reader.GetAsync(new Uri($"{path}&after=999999", UriKind.Relative));
            Assert.Equal(HttpStatusCode.BadRequest, badCursor.StatusCode);
        }

        Assert.InRange((await reader.GetJson("/api/roles?take=100000")).AsArray().Count, 1, 500);
    }

    [Fact]
    public async Task A_units_cadence_is_scheduled_once()
    {
        using var reader = ApiClient.For(fixture.App);
        using var owner = ApiClient.For(fixture.App, await reader.PersonWith(7, "owner"));
        using var first = await owner.PostAsJsonAsync(new Uri("/api/reviews/cadence", UriKind.Relative), new { unitId = 7 });
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Equal(16, JsonNode.Parse(await first.Content.ReadAsStringAsync())!["scheduled"]!.GetValue<int>());
        using var again = await owner.PostAsJsonAsync(new Uri("/api/reviews/cadence", UriKind.Relative), new { unitId = 7 });
        Assert.Equal(0, JsonNode.Parse(await again.Content.ReadAsStringAsync())!["scheduled"]!.GetValue<int>());
        var reviews = (await reader.GetJson("/api/reviews?unit=7")).AsArray();
        Assert.Equal(16, reviews.Count);
        Assert.All(reviews, r => Assert.StartsWith("Customer Success: ", r!["title"]!.GetValue<string>(), StringComparison.Ordinal));
        using var teamOwner = ApiClient.For(fixture.App, await reader.PersonWith(8, "owner"));
        Assert.Equal(HttpStatusCode.Forbidden, (await teamOwner.PostAsJsonAsync(new Uri("/api/reviews/cadence", UriKind.Relative), new { unitId = 7 })).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await owner.PostAsJsonAsync(new Uri("/api/reviews/cadence", UriKind.Relative), new { unitId = 999 })).StatusCode);
    }

}

/// <summary>A meeting on its own app, so the review it schedules does not change the cadence the tests above count.</summary>
public sealed class ReviewMeetingTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    [Fact]
    public async Task A_live_meeting_lands_on_the_reviews_stream_decisions_name_their_subject_and_actions_have_owners()
    {
        using var reader = ApiClient.For(fixture.App);
        var chairId = await reader.PersonWith(1, "owner");
        using var chair = ApiClient.For(fixture.App, chairId);
        using var member = ApiClient.For(fixture.App, await reader.PersonWith(1, "admin"));
        using var divisionUpdater = ApiClient.For(fixture.App, await reader.PersonWith(2, "updater"));
        using var viewer = ApiClient.For(fixture.App, await reader.PersonWith(3, "viewer"));
        // A review of its own: which seeded review sorts first depends on today's date and on other tests.
        using var scheduled = await chair.PostAsJsonAsync(new Uri("/api/reviews", UriKind.Relative), new { unitId = 1, kind = "quarterly-strategy" });
        Assert.Equal(HttpStatusCode.Created, scheduled.StatusCode);
        var scheduledReview = JsonNode.Parse(await scheduled.Content.ReadAsStringAsync())!["review"]!;
        var review = scheduledReview["id"]!.GetValue<int>();
        var dayBefore = DateOnly.Parse(scheduledReview["scheduledFor"]!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture).AddDays(-1);

        Assert.Equal(HttpStatusCode.Conflict, (await member.PostAsJsonAsync(new Uri($"/api/reviews/{review}/decisions", UriKind.Relative), new { text = "Too early", objectiveId = 1 })).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await divisionUpdater.PostAsync(new Uri($"/api/reviews/{review}/start", UriKind.Relative), null)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await divisionUpdater.PostAsJsonAsync(new Uri($"/api/reviews/{review}/decisions", UriKind.Relative), new { text = "Not mine", objectiveId = 1 })).StatusCode);
        using var started = await chair.PostAsync(new Uri($"/api/reviews/{review}/start", UriKind.Relative), null);
        Assert.Equal(HttpStatusCode.OK, started.StatusCode);
        var agenda = JsonNode.Parse(await started.Content.ReadAsStringAsync())!["agenda"]!.AsArray();
        Assert.NotEmpty(agenda);
        var second = agenda[Math.Min(1, agenda.Count - 1)]!["id"]!.GetValue<int>();
        Assert.Equal(HttpStatusCode.OK, (await chair.PostAsJsonAsync(new Uri($"/api/reviews/{review}/current", UriKind.Relative), new { itemId = second })).StatusCode);

        using var decided = await member.PostAsJsonAsync(new Uri($"/api/reviews/{review}/decisions", UriKind.Relative), new { text = "Fund a recovery sprint", agendaItemId = second });
        Assert.Equal(HttpStatusCode.Created, decided.StatusCode);
        var decision = JsonNode.Parse(await decided.Content.ReadAsStringAsync())!;
        Assert.True(decision["objectiveId"] is not null || decision["measureId"] is not null);
        var due = DateTime.UtcNow.AddDays(14).ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture);
        var ownerId = await reader.PersonWith(3, "owner");
        using var acted = await member.PostAsJsonAsync(new Uri($"/api/reviews/{review}/actions", UriKind.Relative), new { text = "Plan the sprint", ownerId, due, agendaItemId = second });
        Assert.Equal(HttpStatusCode.Created, acted.StatusCode);

        // Refusals: no subject, a viewer, bad fields.
        var noSubject = await member.PostAsJsonAsync(new Uri($"/api/reviews/{review}/decisions", UriKind.Relative), new { text = "About nothing" });
        Assert.Equal(HttpStatusCode.BadRequest, noSubject.StatusCode);
        Assert.Contains("names the objective or measure", await noSubject.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.Forbidden, (await viewer.PostAsJsonAsync(new Uri($"/api/reviews/{review}/decisions", UriKind.Relative), new { text = "x", objectiveId = 1 })).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await member.PostAsJsonAsync(new Uri($"/api/reviews/{review}/actions", UriKind.Relative), new { text = "", ownerId = 99999, due = "someday" })).StatusCode);
        using var dueBefore = await member.PostAsJsonAsync(new Uri($"/api/reviews/{review}/actions", UriKind.Relative), new { text = "Too late already", ownerId, due = dayBefore.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture), agendaItemId = second });
        Assert.Equal(HttpStatusCode.BadRequest, dueBefore.StatusCode);
        Assert.Contains("from the review's day", await dueBefore.Content.ReadAsStringAsync(), StringComparison.Ordinal);

        // An action about something that is not there is refused, not recorded without its subject.
        var goodDue = due;
        foreach (var (field, value) in new[] { ("objectiveId", 999_999), ("measureId", 999_999), ("agendaItemId", 999_999) })
        {
            using var aboutNothing = await member.PostAsJsonAsync(new Uri($"/api/reviews/{review}/actions", UriKind.Relative), new Dictionary<string, object> { ["text"] = "About nothing", ["ownerId"] = ownerId, ["due"] = goodDue, [field] = value });
            Assert.Equal(HttpStatusCode.BadRequest, aboutNothing.StatusCode);
            Assert.Contains(field, await aboutNothing.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        // The review's stream holds the meeting, in order, each change once.
        var stream = await ApiClient.ReadStream(reader, $"strategy/reviews/{review}");
        await ApiClient.Until(async () => (await ApiClient.ReadStream(reader, $"strategy/reviews/{review}")).Count >= 5, "the review stream to hold the meeting");
        stream = await ApiClient.ReadStream(reader, $"strategy/reviews/{review}");
        Assert.Equal(["review.scheduled", "review.started", "review.current", "decision.recorded", "action.created"], stream.Select(e => e["action"]!.GetValue<string>()));
        Assert.Equal("Fund a recovery sprint", stream[3]["details"]!["decision"]!["text"]!.GetValue<string>());
        Assert.Equal(ownerId, stream[4]["details"]!["action"]!["ownerId"]!.GetValue<int>());

        // The action's owner marks it done; closing ends the meeting.
        using var owner = ApiClient.For(fixture.App, ownerId);
        var actionId = JsonNode.Parse(await acted.Content.ReadAsStringAsync())!["id"]!.GetValue<int>();
        Assert.Equal(HttpStatusCode.Forbidden, (await viewer.PostAsync(new Uri($"/api/actions/{actionId}/done", UriKind.Relative), null)).StatusCode);
        // Marked done and closed by two requests at once each: one does it and answers with it, the other finds it done.
        var done = await Task.WhenAll(Enumerable.Range(0, 2).Select(async _ =>
        {
            using var response = await owner.PostAsync(new Uri($"/api/actions/{actionId}/done", UriKind.Relative), null);
            return (response.StatusCode, Body: await response.Content.ReadAsStringAsync());
        }));
        var marked = Assert.Single(done, d => d.StatusCode == HttpStatusCode.OK);
        Assert.NotNull(JsonNode.Parse(marked.Body)!["doneOn"]);
        Assert.Single(done, d => d.StatusCode == HttpStatusCode.Conflict);
        var closes = await Task.WhenAll(Enumerable.Range(0, 2).Select(async _ =>
        {
            using var response = await chair.PostAsync(new Uri($"/api/reviews/{review}/close", UriKind.Relative), null);
            return (response.StatusCode, Body: await response.Content.ReadAsStringAsync());
        }));
        var closed = Assert.Single(closes, c => c.StatusCode == HttpStatusCode.OK);
        Assert.Equal("closed", JsonNode.Parse(closed.Body)!["status"]!.GetValue<string>());
        Assert.Null(JsonNode.Parse(closed.Body)!["currentItemId"]);
        Assert.Single(closes, c => c.StatusCode == HttpStatusCode.Conflict);
        Assert.Single((await reader.GetJson("/api/audit?take=1000")).AsArray(), a => a!["action"]!.GetValue<string>() == "review.closed" && a["subject"]!.GetValue<string>() == $"review/{review}");
        Assert.Equal(HttpStatusCode.Conflict, (await member.PostAsJsonAsync(new Uri($"/api/reviews/{review}/decisions", UriKind.Relative), new { text = "Too late", objectiveId = 1 })).StatusCode);
        var view = await reader.GetJson($"/api/reviews/{review}");
        Assert.Equal("closed", view["review"]!["status"]!.GetValue<string>());
        Assert.Single(view["decisions"]!.AsArray());
        Assert.NotNull(view["actions"]![0]!["doneOn"]);
    }
}

/// <summary>What a review's decisions and actions may be about, on an app of its own.</summary>
public sealed class ReviewScopeTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    [Fact]
    public async Task Decisions_and_actions_are_about_the_reviews_unit_or_a_unit_below_it()
    {
        using var reader = ApiClient.For(fixture.App);
        using var chair = ApiClient.For(fixture.App, await reader.PersonWith(7, "owner"));
        using var scheduled = await chair.PostAsJsonAsync(new Uri("/api/reviews", UriKind.Relative), new { unitId = 7, kind = "monthly-operational" });
        Assert.Equal(HttpStatusCode.Created, scheduled.StatusCode);
        var review = JsonNode.Parse(await scheduled.Content.ReadAsStringAsync())!["review"]!["id"]!.GetValue<int>();
        Assert.Equal(HttpStatusCode.OK, (await chair.PostAsync(new Uri($"/api/reviews/{review}/start", UriKind.Relative), null)).StatusCode);

        // Unit 8 is a team of unit 7 (Customer Success); unit 3 is a team of Sales, elsewhere in the tree.
        var below = (await reader.GetJson("/api/scorecards/8"))["objectives"]![0]!;
        var elsewhere = (await reader.GetJson("/api/scorecards/3"))["objectives"]![0]!;
        int Id(JsonNode node) => node["id"]!.GetValue<int>();
        var allowed = new object[]
        {
            new { text = "About our own team's objective", objectiveId = Id(below) },
            new { text = "About our own team's measure", measureId = Id(below["measures"]![0]!) },
            new { text = "Both, matching", objectiveId = Id(below), measureId = Id(below["measures"]![0]!) },
        };
        foreach (var body in allowed)
        {
            using var response = await chair.PostAsJsonAsync(new Uri($"/api/reviews/{review}/decisions", UriKind.Relative), body);
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        var refused = new (object Body, string Says)[]
        {
            (new { text = "About Sales' objective", objectiveId = Id(elsewhere) }, "review's unit"),
            (new { text = "About Sales' measure", measureId = Id(elsewhere["measures"]![0]!) }, "review's unit"),
            (new { text = "A measure of another objective", objectiveId = Id(below), measureId = Id(elsewhere["measures"]![0]!) }, "of the objective"),
        };
        foreach (var (body, says) in refused)
        {
            using var response = await chair.PostAsJsonAsync(new Uri($"/api/reviews/{review}/decisions", UriKind.Relative), body);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Contains(says, await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        var due = DateTime.UtcNow.AddDays(14).ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture);
        var ownerId = await reader.PersonWith(8, "owner");
        using var action = await chair.PostAsJsonAsync(new Uri($"/api/reviews/{review}/actions", UriKind.Relative), new { text = "Fix Sales' pipeline", ownerId, due, objectiveId = Id(elsewhere) });
        Assert.Equal(HttpStatusCode.BadRequest, action.StatusCode);
        Assert.Contains("review's unit", await action.Content.ReadAsStringAsync(), StringComparison.Ordinal);

        var decisions = (await reader.GetJson($"/api/reviews/{review}"))["decisions"]!.AsArray();
        Assert.Equal(allowed.Length, decisions.Count);
        Assert.Empty((await reader.GetJson($"/api/reviews/{review}"))["actions"]!.AsArray());
    }
}

/// <summary>Requests that arrive at once, on an app of their own: each change is made once.</summary>
public sealed class ReviewConcurrencyTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    [Fact]
    public async Task A_cadence_asked_for_several_times_at_once_is_scheduled_once()
    {
        using var reader = ApiClient.For(fixture.App);
        using var owner = ApiClient.For(fixture.App, await reader.PersonWith(7, "owner"));
        var answers = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => owner.PostAsJsonAsync(new Uri("/api/reviews/cadence", UriKind.Relative), new { unitId = 7 })));
        var scheduled = 0;
        foreach (var answer in answers)
        {
            Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
            scheduled += JsonNode.Parse(await answer.Content.ReadAsStringAsync())!["scheduled"]!.GetValue<int>();
            answer.Dispose();
        }

        Assert.Equal(16, scheduled);
        Assert.Equal(16, (await reader.GetJson("/api/reviews?unit=7")).AsArray().Count);
    }

    [Fact]
    public async Task A_review_started_several_times_at_once_is_started_once_with_one_agenda()
    {
        using var reader = ApiClient.For(fixture.App);
        using var chair = ApiClient.For(fixture.App, await reader.PersonWith(1, "owner"));
        using var scheduled = await chair.PostAsJsonAsync(new Uri("/api/reviews", UriKind.Relative), new { unitId = 1, kind = "quarterly-strategy" });
        Assert.Equal(HttpStatusCode.Created, scheduled.StatusCode);
        var review = JsonNode.Parse(await scheduled.Content.ReadAsStringAsync())!["review"]!["id"]!.GetValue<int>();

        var answers = await Task.WhenAll(Enumerable.Range(0, 3).Select(_ => chair.PostAsync(new Uri($"/api/reviews/{review}/start", UriKind.Relative), null)));
        Assert.Single(answers, a => a.StatusCode == HttpStatusCode.OK);
        Assert.Equal(2, answers.Count(a => a.StatusCode == HttpStatusCode.Conflict));
        var agenda = JsonNode.Parse(await answers.Single(a => a.StatusCode == HttpStatusCode.OK).Content.ReadAsStringAsync())!["agenda"]!.AsArray().Count;
        foreach (var answer in answers)
        {
            answer.Dispose();
        }

        var audit = (await reader.GetJson("/api/audit?take=1000")).AsArray();
        Assert.Single(audit, a => a!["action"]!.GetValue<string>() == "review.started" && a["subject"]!.GetValue<string>() == $"review/{review}");
        Assert.Equal(agenda, (await reader.GetJson($"/api/reviews/{review}"))["agenda"]!.AsArray().Count);
    }
}
