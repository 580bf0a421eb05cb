using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace StrategyExecution.Tests;

/// <summary>Step 2, align: building and cascading a scorecard, the health panel, and the strategy map's rule.</summary>
public sealed class AlignmentTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    private const int Sales = 2;
    private const int Team = 3; // Enterprise Sales, under Sales

    [Fact]
    public async Task A_cascaded_objective_is_flagged_until_it_has_a_measure_and_a_target_then_rolls_up_into_its_parent()
    {
        using var reader = ApiClient.For(fixture.App);
        var owner = await reader.PersonWith(Team, "owner");
        using var client = ApiClient.For(fixture.App, owner);
        var parent = (await reader.GetJson($"/api/scorecards/{Sales}"))["objectives"]![0]!["id"]!.GetValue<int>();

        var objective = await Created(client, "/api/objectives", new { unitId = Team, name = "Win three lighthouse accounts", perspective = "customer", parentObjectiveId = parent });
        Assert.Contains(await Health(reader, Team), i => i.Kind == "objective-without-measures" && i.Id == objective);
        Assert.DoesNotContain(await Health(reader, Team), i => i.Kind == "orphan" && i.Id == objective);

        var measure = await Created(client, "/api/measures", new { objectiveId = objective, name = "Lighthouse accounts signed", unit = "accounts", direction = "higher" });
        Assert.Contains(await Health(reader, Team), i => i.Kind == "measure-without-target" && i.Id == measure);
        Assert.DoesNotContain(await Health(reader, Team), i => i.Id == objective && i.Kind == "objective-without-measures");

        using (var target = await client.PutAsJsonAsync(new Uri($"/api/measures/{measure}/target", UriKind.Relative), new { redFlag = 1, target = 3, stretch = 4 }))
        {
            Assert.Equal(HttpStatusCode.OK, target.StatusCode);
        }

        Assert.DoesNotContain(await Health(reader, Team), i => i.Id == measure || i.Id == objective);
        using (var actual = await client.RecordActual(measure, ApiClient.LastMonth(), 2))
        {
            Assert.Equal(HttpStatusCode.Created, actual.StatusCode);
        }

        // 2 accounts: halfway from the red flag (1) to the target (3) scores 75; the parent objective counts it.
        var card = await reader.GetJson($"/api/scorecards/{Team}");
        var created = card["objectives"]!.AsArray().Single(o => o!["id"]!.GetValue<int>() == objective)!;
        Assert.Equal(75, created["score"]!.GetValue<double>());
        Assert.Equal("Win three lighthouse accounts", created["name"]!.GetValue<string>());
        var parentView = (await reader.GetJson($"/api/scorecards/{Sales}"))["objectives"]!.AsArray().Single(o => o!["id"]!.GetValue<int>() == parent)!;
        Assert.Contains(parentView["shares"]!.AsArray(), s => s!["id"]!.GetValue<string>() == $"objective/{objective}" && s["score"]!.GetValue<double>() == 75);

        var subjects = new[] { $"objective/{objective}", $"measure/{measure}" };
        var audit = (await reader.GetJson("/api/audit?take=1000")).AsArray()
            .Where(a => subjects.Contains(a!["subject"]!.GetValue<string>()))
            .Select(a => (Action: a!["action"]!.GetValue<string>(), Actor: a["actorId"]!.GetValue<int>())).ToList();
        Assert.All(audit, a => Assert.Equal(owner, a.Actor));
        Assert.Equal(["objective.created", "measure.created", "target.set", "actual.recorded"], audit.Select(a => a.Action));
    }

    [Fact]
    public async Task An_objective_aligned_to_nothing_is_an_orphan_unless_it_says_why_it_stands_alone()
    {
        using var reader = ApiClient.For(fixture.App);
        using var client = ApiClient.For(fixture.App, await reader.PersonWith(Team, "owner"));
        var orphan = await Created(client, "/api/objectives", new { unitId = Team, name = "Tidy the CRM", perspective = "internal-process" });
        var standalone = await Created(client, "/api/objectives", new { unitId = Team, name = "Pass the ISO audit", perspective = "internal-process", standaloneReason = "A regulatory duty." });
        var flagged = await Health(reader, Team);
        Assert.Contains(flagged, i => i.Kind == "orphan" && i.Id == orphan);
        Assert.DoesNotContain(flagged, i => i.Kind == "orphan" && i.Id == standalone);
        // The health panel of a unit above sees it too.
        Assert.Contains(await Health(reader, 1), i => i.Kind == "orphan" && i.Id == orphan);
    }

    [Fact]
    public async Task Scorecards_are_built_only_by_owners_and_bad_bodies_get_their_reasons()
    {
        using var reader = ApiClient.For(fixture.App);
        var otherDivision = (await reader.GetJson("/api/scorecards/7"))["objectives"]![0]!["id"]!.GetValue<int>();
        using var viewer = ApiClient.For(fixture.App, await reader.PersonWith(Team, "viewer"));
        using var updater = ApiClient.For(fixture.App, await reader.PersonWith(Team, "updater"));
        using var owner = ApiClient.For(fixture.App, await reader.PersonWith(Team, "owner"));
        var body = new { unitId = Team, name = "Grow", perspective = "financial" };
        Assert.Equal(HttpStatusCode.Forbidden, (await viewer.PostAsJsonAsync(new Uri("/api/objectives", UriKind.Relative), body)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await updater.PostAsJsonAsync(new Uri("/api/objectives", UriKind.Relative), body)).StatusCode);

        await Refused(owner, "/api/objectives", new { unitId = Team, name = "Grow", perspective = "financial", parentObjectiveId = otherDivision }, 400, "INVALID_PARENT");
        await Refused(owner, "/api/objectives", new { unitId = 999, name = "", perspective = "financial", weight = -1 }, 400, "INVALID_OBJECTIVE", 3);
        await Refused(owner, "/api/objectives", new { unitId = Team, name = "Grow", perspective = "sideways" }, 400, "INVALID_JSON");
        await Refused(owner, "/api/measures", new { objectiveId = 1, name = "x", unit = "", direction = "up" }, 400, "INVALID_MEASURE", 2);
        var measure = (await reader.GetJson($"/api/scorecards/{Team}"))["objectives"]![0]!["measures"]![0]!;
        var id = measure["id"]!.GetValue<int>();
        var wrongWay = measure["direction"]!.GetValue<string>() == "lower" ? new { redFlag = 1, target = 5 } : new { redFlag = 5, target = 1 };
        using var bad = await owner.PutAsJsonAsync(new Uri($"/api/measures/{id}/target", UriKind.Relative), wrongWay);
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Contains("red flag", (await bad.Content.ReadAsStringAsync()), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_link_that_would_close_a_loop_in_the_strategy_map_is_refused_with_the_loop()
    {
        using var reader = ApiClient.For(fixture.App);
        using var admin = ApiClient.For(fixture.App, await reader.PersonWith(1, "admin"));
        var map = await reader.GetJson("/api/strategy-map");
        var ids = map["objectives"]!.AsArray().Select(o => o!["id"]!.GetValue<int>()).ToList();
        // The demo map: learning → process → customer → financial.
        Assert.Equal(3, map["links"]!.AsArray().Count);
        Assert.Equal(4, ids.Count);

        using var cycle = await admin.PostAsJsonAsync(new Uri("/api/links", UriKind.Relative), new { cause = ids[0], effect = ids[3] });
        Assert.Equal(HttpStatusCode.Conflict, cycle.StatusCode);
        var error = JsonNode.Parse(await cycle.Content.ReadAsStringAsync())!["error"]!;
        Assert.Equal("CYCLE", error["code"]!.GetValue<string>());
        Assert.Equal(new[] { ids[3], ids[2], ids[1], ids[0] }.Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)), error["details"]!.AsArray().Select(d => d!.GetValue<string>()));
        await Refused(admin, "/api/links", new { cause = ids[3], effect = ids[2] }, 409, "LINK_EXISTS");
        await Refused(admin, "/api/links", new { cause = ids[1], effect = 999_999 }, 400, "INVALID_LINK");
        await Created(admin, "/api/links", new { cause = ids[3], effect = ids[0] }); // a shortcut is not a loop
        Assert.Equal(4, (await reader.GetJson("/api/strategy-map"))["links"]!.AsArray().Count);
    }

    private sealed record Flag(string Kind, int Id);

    private static async Task<List<Flag>> Health(HttpClient client, int unit)
        => (await client.GetJson($"/api/health?unit={unit}"))["items"]!.AsArray().Select(i => new Flag(i!["kind"]!.GetValue<string>(), i["id"]!.GetValue<int>())).ToList();

    private static async Task<int> Created(HttpClient client, string path, object body)
    {
        using var response = await client.PostAsJsonAsync(new Uri(path, UriKind.Relative), body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Created, $"POST {path}: {(int)response.StatusCode} {text}");
        return JsonNode.Parse(text)!["id"]!.GetValue<int>();
    }

    private static async Task Refused(HttpClient client, string path, object body, int status, string code, int details = 0)
    {
        using var response = await client.PostAsJsonAsync(new Uri(path, UriKind.Relative), body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True((int)response.StatusCode == status, $"POST {path}: expected {status}, got {(int)response.StatusCode} {text}");
        var error = JsonNode.Parse(text)!["error"]!;
        Assert.Equal(code, error["code"]!.GetValue<string>());
        if (details > 0)
        {
            Assert.Equal(details, error["details"]!.AsArray().Count);
        }
    }
}
