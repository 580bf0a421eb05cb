using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace StrategyExecution.Tests;

/// <summary>Step 4, incentives: the simulator, plans paid from the current scores.</summary>
public sealed class IncentiveTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    [Fact]
    public async Task The_simulator_pays_the_documented_worked_example_and_refuses_a_bad_curve()
    {
        using var client = ApiClient.For(fixture.App, 1);
        using var response = await client.PostAsJsonAsync(new Uri("/api/incentives/simulate", UriKind.Relative), new
        {
            targetIncentive = 10_000,
            components = new object[] { new { id = "revenue", weight = 0.5, score = 125 }, new { id = "nps", weight = 0.3, score = 75 }, new { id = "cost", weight = 0.2 } },
        });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var result = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        Assert.Equal(9_750.00m, result["amount"]!.GetValue<decimal>());
        Assert.Equal(0.975, result["payoutFraction"]!.GetValue<double>(), 9);

        using var bad = await client.PostAsJsonAsync(new Uri("/api/incentives/simulate", UriKind.Relative), new
        {
            targetIncentive = 10_000,
            curve = new { thresholdScore = 100, thresholdPayout = 1, targetScore = 50, targetPayout = 0.5, maximumScore = 150, maximumPayout = 2 },
            components = new[] { new { weight = 1, score = 80 } },
        });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Contains("threshold score < target score", await bad.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_plan_pays_each_participant_from_the_current_scores_of_its_components()
    {
        using var reader = ApiClient.For(fixture.App);
        using var admin = ApiClient.For(fixture.App, await reader.PersonWith(1, "admin"));
        var plan = (await admin.GetJson("/api/incentives"))[0]!;
        var card = await reader.GetJson("/api/scorecards/1");
        var objectiveScores = card["objectives"]!.AsArray().ToDictionary(o => $"objective/{o!["id"]}", o => o!["score"]!.GetValue<double>());
        var components = plan["components"]!.AsArray();
        Assert.Equal(4, components.Count);
        double weighted = 0, weights = 0;
        foreach (var c in components)
        {
            var score = c!["score"]!.GetValue<double>();
            Assert.Equal(objectiveScores[c["id"]!.GetValue<string>()], score, 9);
            weighted += c["weight"]!.GetValue<double>() * Payout(score);
            weights += c["weight"]!.GetValue<double>();
        }

        var participants = plan["participants"]!.AsArray();
        Assert.Equal(5, participants.Count);
        Assert.All(participants, p =>
        {
            Assert.False(p!["frozen"]!.GetValue<bool>());
            Assert.Equal(Math.Round(20_000m * (decimal)(weighted / weights), 2, MidpointRounding.AwayFromZero), p["amount"]!.GetValue<decimal>());
        });
    }

    [Fact]
    public async Task Everyone_sees_what_a_plan_pays_for_but_only_their_own_pay_and_the_admins_everyones()
    {
        using var reader = ApiClient.For(fixture.App);
        using var admin = ApiClient.For(fixture.App, await reader.PersonWith(1, "admin"));
        var all = (await admin.GetJson("/api/incentives"))[0]!["participants"]!.AsArray();
        Assert.Equal(5, all.Count);

        // A division head is paid by the plan: they see their own line, not their peers'.
        var division = (await reader.GetJson("/api/units")).AsArray().First(u => u!["parentId"]?.GetValue<int>() == 1)!["id"]!.GetValue<int>();
        var headId = await reader.PersonWith(division, "owner");
        using var head = ApiClient.For(fixture.App, headId);
        var own = (await head.GetJson("/api/incentives"))[0]!;
        Assert.Equal(4, own["components"]!.AsArray().Count);
        var line = Assert.Single(own["participants"]!.AsArray())!;
        Assert.Equal(headId, line["personId"]!.GetValue<int>());
        Assert.Equal(all.Single(p => p!["personId"]!.GetValue<int>() == headId)!["amount"]!.GetValue<decimal>(), line["amount"]!.GetValue<decimal>());

        // Someone the plan does not pay sees what it pays for, and nobody's pay.
        var plan = (await reader.GetJson("/api/incentives"))[0]!;
        Assert.Equal(4, plan["components"]!.AsArray().Count);
        Assert.Empty(plan["participants"]!.AsArray());
    }

    /// <summary>The default curve, as docs/strategy.md states it.</summary>
    private static double Payout(double score) => score < 50 ? 0 : score >= 150 ? 2 : score < 100 ? 0.5 + (0.5 * (score - 50) / 50) : 1 + ((score - 100) / 50);
}

/// <summary>Locking a period freezes every plan's results and stops every change to the period.</summary>
public sealed class PeriodLockTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    [Fact]
    public async Task Locking_the_period_freezes_the_payouts_and_refuses_every_change_to_it()
    {
        using var reader = ApiClient.For(fixture.App);
        using var admin = ApiClient.For(fixture.App, await reader.PersonWith(1, "admin"));
        using var owner = ApiClient.For(fixture.App, await reader.PersonWith(1, "owner"));
        var before = (await admin.GetJson("/api/incentives"))[0]!["participants"]!.AsArray().Select(p => p!["amount"]!.GetValue<decimal>()).ToList();

        // Work of the period under way when it is locked: a release waiting for approval, a milestone not yet done.
        var budgets = await reader.GetJson("/api/budgets");
        var pool = budgets["pools"]!.AsArray().First(p => p!["ringfenced"]!.GetValue<bool>())!["id"]!.GetValue<int>();
        var initiative = budgets["initiatives"]![0]!["id"]!.GetValue<int>();
        using var requested = await owner.PostAsJsonAsync(new Uri($"/api/pools/{pool}/releases", UriKind.Relative), new { amount = 1, reason = "Asked before the lock" });
        Assert.Equal(HttpStatusCode.Accepted, requested.StatusCode);
        var releaseId = JsonNode.Parse(await requested.Content.ReadAsStringAsync())!["release"]!["id"]!.GetValue<int>();
        var due = DateTime.UtcNow.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture);
        using var planned = await admin.PostAsJsonAsync(new Uri($"/api/initiatives/{initiative}/milestones", UriKind.Relative), new { name = "Before the lock", due });
        Assert.Equal(HttpStatusCode.Created, planned.StatusCode);
        var milestone = JsonNode.Parse(await planned.Content.ReadAsStringAsync())!["id"]!.GetValue<int>();
        var objectives = (await reader.GetJson("/api/strategy-map"))["objectives"]!.AsArray().Select(o => o!["id"]!.GetValue<int>()).ToList();

        Assert.Equal(HttpStatusCode.Forbidden, (await owner.PostAsync(new Uri("/api/periods/2/lock", UriKind.Relative), null)).StatusCode);
        using var locked = await admin.PostAsync(new Uri("/api/periods/2/lock", UriKind.Relative), null);
        Assert.Equal(HttpStatusCode.OK, locked.StatusCode);
        Assert.Equal(5, JsonNode.Parse(await locked.Content.ReadAsStringAsync())!["frozenPayouts"]!.GetValue<int>());

        var after = (await admin.GetJson("/api/incentives"))[0]!["participants"]!.AsArray();
        Assert.All(after, p => Assert.True(p!["frozen"]!.GetValue<bool>()));
        Assert.Equal(before, after.Select(p => p!["amount"]!.GetValue<decimal>()));
        Assert.Equal(HttpStatusCode.Conflict, (await admin.RecordActual(1, ApiClient.LastMonth(), 1)).StatusCode);

        // Nothing else in the period changes either: budgets, initiatives, measures and the strategy map.
        var changes = new Func<Task<HttpResponseMessage>>[]
        {
            () => admin.PostAsJsonAsync(new Uri($"/api/pools/{pool}/allocations", UriKind.Relative), new { initiativeId = initiative, amount = 1 }),
            () => admin.PostAsJsonAsync(new Uri($"/api/pools/{pool}/releases", UriKind.Relative), new { amount = 1, reason = "After the lock" }),
            () => admin.PostAsync(new Uri($"/api/releases/{releaseId}/approve", UriKind.Relative), null),
            () => admin.PostAsJsonAsync(new Uri($"/api/initiatives/{initiative}/milestones", UriKind.Relative), new { name = "After the lock", due }),
            () => admin.PostAsync(new Uri($"/api/milestones/{milestone}/done", UriKind.Relative), null),
            () => admin.PostAsJsonAsync(new Uri("/api/measures", UriKind.Relative), new { objectiveId = objectives[0], name = "After the lock", unit = "%", direction = "higher" }),
            () => admin.PostAsJsonAsync(new Uri("/api/links", UriKind.Relative), new { cause = objectives[3], effect = objectives[0] }),
        };
        var auditBefore = (await reader.GetJson("/api/audit?take=1000")).AsArray().Count;
        var budgetsBefore = (await reader.GetJson("/api/budgets?period=2")).ToJsonString();
        foreach (var change in changes)
        {
            using var refused = await change();
            var body = await refused.Content.ReadAsStringAsync();
            Assert.True(refused.StatusCode == HttpStatusCode.Conflict, body);
            Assert.Equal("PERIOD_LOCKED", JsonNode.Parse(body)!["error"]!["code"]!.GetValue<string>());
        }

        Assert.Equal(auditBefore, (await reader.GetJson("/api/audit?take=1000")).AsArray().Count);
        Assert.Equal(budgetsBefore, (await reader.GetJson("/api/budgets?period=2")).ToJsonString());
        Assert.Equal(HttpStatusCode.Conflict, (await admin.PostAsync(new Uri("/api/periods/2/lock", UriKind.Relative), null)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await admin.PostAsync(new Uri("/api/periods/99/lock", UriKind.Relative), null)).StatusCode);
        var audit = (await reader.GetJson("/api/audit?take=1000")).AsArray().Last()!;
        Assert.Equal("period.locked", audit["action"]!.GetValue<string>());
    }
}

/// <summary>Writes racing the period's lock, on an app of their own: each lands before the lock or is refused.</summary>
public sealed class PeriodLockRaceTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    [Fact]
    public async Task Actuals_recorded_while_the_period_is_locked_all_commit_before_the_lock_or_are_refused()
    {
        using var reader = ApiClient.For(fixture.App);
        using var admin = ApiClient.For(fixture.App, await reader.PersonWith(1, "admin"));
        var measures = (await reader.GetJson("/api/scorecards/1"))["objectives"]!.AsArray().SelectMany(o => o!["measures"]!.AsArray()).Select(m => m!["id"]!.GetValue<int>()).ToList();

        // Writers keep recording while the lock is asked for; each stops at its first refusal.
        var writers = Enumerable.Range(0, 6).Select(async writer =>
        {
            var answers = new List<HttpStatusCode>();
            for (var i = 0; i < 200; i++)
            {
                using var response = await admin.RecordActual(measures[writer % measures.Count], ApiClient.LastMonth(), i);
                answers.Add(response.StatusCode);
                if (response.StatusCode != HttpStatusCode.Created)
                {
                    break;
                }
            }

            return answers;
        }).ToList();
        await ApiClient.Until(async () => (await reader.GetJson("/api/audit?take=1000")).AsArray().Count(a => a!["action"]!.GetValue<string>() == "actual.recorded") >= 12, "the writers to be under way");
        using var locked = await admin.PostAsync(new Uri("/api/periods/2/lock", UriKind.Relative), null);
        Assert.Equal(HttpStatusCode.OK, locked.StatusCode);
        var answered = (await Task.WhenAll(writers)).SelectMany(a => a).ToList();

        // Every writer was stopped by the lock, and no actual committed after it: the payouts it froze saw them all.
        Assert.Equal(6, answered.Count(a => a == HttpStatusCode.Conflict));
        Assert.All(answered, a => Assert.True(a is HttpStatusCode.Created or HttpStatusCode.Conflict, a.ToString()));
        var audit = (await reader.GetJson("/api/audit?take=1000")).AsArray().Select(a => a!["action"]!.GetValue<string>()).ToList();
        var lockAt = audit.IndexOf("period.locked");
        Assert.True(lockAt > 0);
        Assert.DoesNotContain("actual.recorded", audit.Skip(lockAt));
        Assert.Equal(answered.Count(a => a == HttpStatusCode.Created), audit.Count(a => a == "actual.recorded"));
    }
}
