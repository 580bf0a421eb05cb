using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace StrategyExecution.Tests;

/// <summary>Recording an actual, over real HTTP against the app with its demo organisation.</summary>
public sealed class ActualsTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    private const int Team = 3; // Enterprise Sales, under Sales (2), under the company (1)

    [Fact]
    public async Task Of_actuals_recorded_at_once_for_different_months_the_later_month_stays_the_measures_latest()
    {
        using var reader = ApiClient.For(fixture.App);
        using var admin = ApiClient.For(fixture.App, 1);
        var objective = (await reader.GetJson($"/api/scorecards/{Team}"))["objectives"]![0]!["id"]!.GetValue<int>();
        var later = ApiClient.LastMonth();
        var earlier = later[..5] + "01";

        // New measures, each given two actuals at once: the period's first month and a later one. Whichever commits
        // last, each measure's latest is the later month (it was the earlier one whenever that request decided from
        // what it had read before the other wrote).
        var measures = new List<int>();
        for (var round = 0; round < 20; round++)
        {
            using var created = await admin.PostAsJsonAsync(new Uri("/api/measures", UriKind.Relative), new { objectiveId = objective, name = $"Raced {round}", unit = "%", direction = "higher" });
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
            var id = JsonNode.Parse(await created.Content.ReadAsStringAsync())!["id"]!.GetValue<int>();
            measures.Add(id);
            var answers = await Task.WhenAll(admin.RecordActual(id, earlier, 1000 + round), admin.RecordActual(id, later, round));
            Assert.All(answers, a => Assert.Equal(HttpStatusCode.Created, a.StatusCode));
            foreach (var answer in answers)
            {
                answer.Dispose();
            }
        }

        var views = (await reader.GetJson($"/api/scorecards/{Team}"))["objectives"]!.AsArray().SelectMany(o => o!["measures"]!.AsArray()).ToDictionary(m => m!["id"]!.GetValue<int>());
        Assert.All(measures, id => Assert.Equal(later, views[id]!["month"]!.GetValue<string>()));
    }

    [Fact]
    public async Task An_actual_moves_the_score_colour_and_roll_up_up_the_cascade_and_is_audited_with_its_actor()
    {
        using var reader = ApiClient.For(fixture.App);
        var updater = await reader.PersonWith(Team, "updater");
        using var client = ApiClient.For(fixture.App, updater);
        var before = (await reader.GetJson($"/api/scorecards/{Team}"))!;
        var measure = before["objectives"]![0]!["measures"]![0]!;
        var id = measure["id"]!.GetValue<int>();
        var unitsBefore = (await reader.GetJson("/api/units")).AsArray().ToDictionary(u => u!["id"]!.GetValue<int>(), u => u!["score"]!.GetValue<double>());

        // A value far on the wrong side of the red flag: score 0, red.
        var worst = Worst(measure["direction"]!.GetValue<string>(), measure["target"]!);
        using var response = await client.RecordActual(id, ApiClient.LastMonth(), worst);
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var answer = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        Assert.Equal(0, answer["measure"]!["score"]!.GetValue<double>());
        Assert.Equal("red", answer["measure"]!["color"]!.GetValue<string>());
        Assert.Contains("clamped to 0", answer["measure"]!["why"]!["formula"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.Equal(worst, answer["actual"]!["value"]!.GetValue<double>());
        Assert.Equal(updater, answer["actual"]!["recordedBy"]!.GetValue<int>());

        // The team, its division and the company all moved down, and the API's scores agree with the answer.
        var moved = answer["units"]!.AsArray().Select(u => (Id: u!["id"]!.GetValue<int>(), Score: u["score"]!.GetValue<double>())).ToList();
        Assert.Equal([Team, 2, 1], moved.Select(m => m.Id));
        var unitsAfter = (await reader.GetJson("/api/units")).AsArray().ToDictionary(u => u!["id"]!.GetValue<int>(), u => u!["score"]!.GetValue<double>());
        foreach (var (unit, score) in moved)
        {
            Assert.True(score < unitsBefore[unit], $"unit {unit}: {unitsBefore[unit]} -> {score}");
            Assert.Equal(score, unitsAfter[unit], 9);
        }

        // The history keeps who, when and how; the audit stream has the change with its actor.
        var history = (await reader.GetJson($"/api/measures/{id}/actuals")).AsArray();
        Assert.Equal(worst, history[0]!["value"]!.GetValue<double>());
        Assert.Equal(updater, history[0]!["recordedBy"]!.GetValue<int>());
        await ApiClient.Until(async () => (await reader.AuditStream()).Any(e => e["subject"]!.GetValue<string>() == $"measure/{id}" && e["actorId"]!.GetValue<int>() == updater), "the audit stream to hold the change");
    }

    private static double Worst(string direction, JsonNode target)
    {
        var red = target["redFlag"]!.GetValue<double>();
        var goal = target["target"]!.GetValue<double>();
        return direction == "lower" ? red + (3 * (red - goal)) : red - (3 * Math.Abs(goal - red));
    }
}
