using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace StrategyExecution.Tests;

/// <summary>Step 3, ringfence: allocations never exceed a pool, money leaves a ringfenced pool only with an approval.</summary>
public sealed class BudgetTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    [Fact]
    public async Task A_pool_is_allocated_up_to_its_amount_and_not_a_cent_more()
    {
        using var reader = ApiClient.For(fixture.App);
        using var owner = ApiClient.For(fixture.App, await reader.PersonWith(1, "owner"));
        var (pool, available, initiative) = await PoolAndInitiative(reader, 1);

        var over = await owner.PostAsJsonAsync(new Uri($"/api/pools/{pool}/allocations", UriKind.Relative), new { initiativeId = initiative, amount = available + 1 });
        Assert.Equal(HttpStatusCode.Conflict, over.StatusCode);
        var error = JsonNode.Parse(await over.Content.ReadAsStringAsync())!["error"]!;
        Assert.Equal("OVER_ALLOCATED", error["code"]!.GetValue<string>());
        Assert.Contains("would over-allocate it by 1.00", error["message"]!.GetValue<string>(), StringComparison.Ordinal);

        var exact = await owner.PostAsJsonAsync(new Uri($"/api/pools/{pool}/allocations", UriKind.Relative), new { initiativeId = initiative, amount = available });
        Assert.Equal(HttpStatusCode.Created, exact.StatusCode);
        var cent = await owner.PostAsJsonAsync(new Uri($"/api/pools/{pool}/allocations", UriKind.Relative), new { initiativeId = initiative, amount = 0.01m });
        Assert.Equal(HttpStatusCode.Conflict, cent.StatusCode);
        var after = (await reader.GetJson("/api/budgets"))["pools"]!.AsArray().Single(p => p!["id"]!.GetValue<int>() == pool)!;
        Assert.Equal(0m, after["available"]!.GetValue<decimal>());
        Assert.Equal(after["amount"]!.GetValue<decimal>(), after["allocated"]!.GetValue<decimal>());

        // Concurrent allocations never overshoot together either.
        var (pool2, available2, initiative2) = await PoolAndInitiative(reader, 2);
        var share = decimal.Round(available2 / 3, 2) + 0.01m;
        var answers = await Task.WhenAll(Enumerable.Range(0, 6).Select(_ => owner.PostAsJsonAsync(new Uri($"/api/pools/{pool2}/allocations", UriKind.Relative), new { initiativeId = initiative2, amount = share })));
        Assert.Equal(2, answers.Count(a => a.StatusCode == HttpStatusCode.Created));
        Assert.Equal(4, answers.Count(a => a.StatusCode == HttpStatusCode.Conflict));
    }

    [Fact]
    public async Task Only_company_owners_allocate_and_bad_amounts_are_refused()
    {
        using var reader = ApiClient.For(fixture.App);
        var (pool, _, initiative) = await PoolAndInitiative(reader, 3);
        using var teamOwner = ApiClient.For(fixture.App, await reader.PersonWith(3, "owner"));
        using var owner = ApiClient.For(fixture.App, await reader.PersonWith(1, "owner"));
        Assert.Equal(HttpStatusCode.Forbidden, (await teamOwner.PostAsJsonAsync(new Uri($"/api/pools/{pool}/allocations", UriKind.Relative), new { initiativeId = initiative, amount = 10 })).StatusCode);
        foreach (var amount in new object?[] { 0, -5, 0.001, 2e12, null })
        {
            using var response = await owner.PostAsJsonAsync(new Uri($"/api/pools/{pool}/allocations", UriKind.Relative), new { initiativeId = initiative, amount });
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"amount {amount}: {response.StatusCode}");
        }

        Assert.Equal(HttpStatusCode.NotFound, (await owner.PostAsJsonAsync(new Uri("/api/pools/999/allocations", UriKind.Relative), new { initiativeId = initiative, amount = 10 })).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await owner.PostAsJsonAsync(new Uri($"/api/pools/{pool}/allocations", UriKind.Relative), new { initiativeId = 999, amount = 10 })).StatusCode);
    }

    [Fact]
    public async Task Money_leaves_a_ringfenced_pool_only_when_someone_else_approves()
    {
        using var reader = ApiClient.For(fixture.App);
        var ownerId = await reader.PersonWith(1, "owner");
        using var owner = ApiClient.For(fixture.App, ownerId);
        using var admin = ApiClient.For(fixture.App, await reader.PersonWith(1, "admin"));
        var (pool, available, _) = await PoolAndInitiative(reader, 4);
        var amountBefore = await PoolAmount(reader, pool);

        Assert.Equal(HttpStatusCode.Conflict, (await owner.PostAsJsonAsync(new Uri($"/api/pools/{pool}/releases", UriKind.Relative), new { amount = available + 1, reason = "Too much" })).StatusCode);
        using var requested = await owner.PostAsJsonAsync(new Uri($"/api/pools/{pool}/releases", UriKind.Relative), new { amount = 1000, reason = "Fund the winter campaign" });
        Assert.Equal(HttpStatusCode.Accepted, requested.StatusCode);
        var release = JsonNode.Parse(await requested.Content.ReadAsStringAsync())!;
        Assert.True(release["needsApproval"]!.GetValue<bool>());
        var id = release["release"]!["id"]!.GetValue<int>();
        Assert.Equal(amountBefore, await PoolAmount(reader, pool));

        Assert.Equal(HttpStatusCode.Forbidden, (await owner.PostAsync(new Uri($"/api/releases/{id}/approve", UriKind.Relative), null)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await admin.PostAsync(new Uri($"/api/releases/{id}/approve", UriKind.Relative), null)).StatusCode);
        Assert.Equal(amountBefore - 1000, await PoolAmount(reader, pool));
        Assert.Equal(HttpStatusCode.Conflict, (await admin.PostAsync(new Uri($"/api/releases/{id}/approve", UriKind.Relative), null)).StatusCode);
        var actions = (await reader.GetJson("/api/audit?take=1000")).AsArray().Where(a => a!["subject"]!.GetValue<string>() == $"pool/{pool}").Select(a => a!["action"]!.GetValue<string>());
        Assert.Equal(["release.requested", "release.approved"], actions);
    }

    [Fact]
    public async Task Variance_and_earned_value_follow_allocations_spend_and_milestones_and_unlinked_work_is_flagged()
    {
        using var reader = ApiClient.For(fixture.App);
        using var admin = ApiClient.For(fixture.App, await reader.PersonWith(1, "admin"));
        var initiative = (await reader.GetJson("/api/budgets"))["initiatives"]![0]!;
        var allocated = initiative["allocated"]!.GetValue<decimal>();
        var spent = initiative["spent"]!.GetValue<decimal>();
        Assert.Equal(allocated - spent, initiative["variance"]!["variance"]!.GetValue<decimal>());
        var done = initiative["milestonesDone"]!.GetValue<int>();
        var total = initiative["milestones"]!.GetValue<int>();
        Assert.Equal(decimal.Round(allocated * done / total, 2), initiative["earnedValue"]!["earnedValue"]!.GetValue<decimal>());

        // A day of this year already past (spend is money spent: a day still to come is refused).
        var today = DateOnly.FromDateTime(DateTime.UtcNow);
        var day = (today.DayOfYear > 15 ? new DateOnly(today.Year, 1, 15) : today).ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture);
        using (var spend = await admin.PostAsJsonAsync(new Uri("/api/spend", UriKind.Relative), new { initiativeId = initiative["id"]!.GetValue<int>(), amount = 1234.5m, on = day, description = "Consultants" }))
        {
            Assert.Equal(HttpStatusCode.Created, spend.StatusCode);
        }

        var updated = (await reader.GetJson("/api/budgets"))["initiatives"]![0]!;
        Assert.Equal(spent + 1234.5m, updated["spent"]!.GetValue<decimal>());
        Assert.Equal(HttpStatusCode.BadRequest, (await admin.PostAsJsonAsync(new Uri("/api/spend", UriKind.Relative), new { amount = 0, on = day, description = "x" })).StatusCode);

        // Spend is money spent: a day still to come is refused, and nothing is recorded.
        var ahead = DateOnly.FromDateTime(DateTime.UtcNow).AddDays(10).ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture);
        using (var future = await admin.PostAsJsonAsync(new Uri("/api/spend", UriKind.Relative), new { initiativeId = initiative["id"]!.GetValue<int>(), amount = 10m, on = ahead, description = "Not spent yet" }))
        {
            Assert.Equal(HttpStatusCode.BadRequest, future.StatusCode);
            Assert.Contains("must not be later than today", await future.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        Assert.Equal(spent + 1234.5m, (await reader.GetJson("/api/budgets"))["initiatives"]![0]!["spent"]!.GetValue<decimal>());

        var health = (await reader.GetJson("/api/health?unit=1"))["items"]!.AsArray();
        Assert.Equal(2, health.Count(i => i!["kind"]!.GetValue<string>() == "spend-unlinked"));
        using var created = await admin.PostAsJsonAsync(new Uri("/api/initiatives", UriKind.Relative), new { unitId = 2, name = "A pet project" });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var newId = JsonNode.Parse(await created.Content.ReadAsStringAsync())!["id"]!.GetValue<int>();
        Assert.Contains((await reader.GetJson("/api/health?unit=2"))["items"]!.AsArray(), i => i!["kind"]!.GetValue<string>() == "initiative-unlinked" && i["id"]!.GetValue<int>() == newId);
    }

    [Fact]
    public async Task Milestones_give_an_initiatives_planned_and_actual_progress()
    {
        using var reader = ApiClient.For(fixture.App);
        using var owner = ApiClient.For(fixture.App, await reader.PersonWith(2, "owner"));
        using var updater = ApiClient.For(fixture.App, await reader.PersonWith(2, "updater"));
        using var created = await owner.PostAsJsonAsync(new Uri("/api/initiatives", UriKind.Relative), new { unitId = 2, name = "Partner portal", objectiveIds = new[] { 5 } });
        var initiative = JsonNode.Parse(await created.Content.ReadAsStringAsync())!["id"]!.GetValue<int>();
        var year = DateTime.UtcNow.Year;
        var today = DateOnly.FromDateTime(DateTime.UtcNow);
        var past = new DateOnly(year, 1, 1) < today ? new DateOnly(year, 1, 1) : today;
        var future = new DateOnly(year, 12, 31);
        using var first = await owner.PostAsJsonAsync(new Uri($"/api/initiatives/{initiative}/milestones", UriKind.Relative), new { name = "Design", due = past.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture) });
        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await owner.PostAsJsonAsync(new Uri($"/api/initiatives/{initiative}/milestones", UriKind.Relative), new { name = "Launch", due = future.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture) })).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await owner.PostAsJsonAsync(new Uri($"/api/initiatives/{initiative}/milestones", UriKind.Relative), new { name = "Later", due = $"{year + 5}-01-01" })).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await updater.PostAsJsonAsync(new Uri($"/api/initiatives/{initiative}/milestones", UriKind.Relative), new { name = "x", due = future.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture) })).StatusCode);

        async Task<JsonNode> Current() => (await reader.GetJson("/api/budgets"))["initiatives"]!.AsArray().Single(i => i!["id"]!.GetValue<int>() == initiative)!;
        var before = await Current();
        Assert.Equal(2, before["milestones"]!.GetValue<int>());
        Assert.Equal(1, before["milestonesDue"]!.GetValue<int>());
        Assert.Equal(0, before["milestonesDone"]!.GetValue<int>());

        // Marked done by several requests at once: one marks it, the others find it done, and it is audited once.
        var milestone = JsonNode.Parse(await first.Content.ReadAsStringAsync())!["id"]!.GetValue<int>();
        var audited = (await reader.GetJson("/api/audit?take=1000")).AsArray().Count(a => a!["action"]!.GetValue<string>() == "milestone.done");
        var answers = await Task.WhenAll(Enumerable.Range(0, 6).Select(async _ =>
        {
            using var response = await updater.PostAsync(new Uri($"/api/milestones/{milestone}/done", UriKind.Relative), null);
            var body = await response.Content.ReadAsStringAsync();
            if (response.StatusCode == HttpStatusCode.OK)
            {
                // The answer shows the milestone done.
                Assert.NotNull(JsonNode.Parse(body)!["doneOn"]);
            }

            return response.StatusCode;
        }));
        Assert.Equal(1, answers.Count(a => a == HttpStatusCode.OK));
        Assert.Equal(5, answers.Count(a => a == HttpStatusCode.Conflict));
        Assert.Equal(HttpStatusCode.Conflict, (await updater.PostAsync(new Uri($"/api/milestones/{milestone}/done", UriKind.Relative), null)).StatusCode);
        Assert.Equal(1, (await Current())["milestonesDone"]!.GetValue<int>());
        Assert.Equal(audited + 1, (await reader.GetJson("/api/audit?take=1000")).AsArray().Count(a => a!["action"]!.GetValue<string>() == "milestone.done"));
    }

    internal static async Task<(int Pool, decimal Available, int Initiative)> PoolAndInitiative(HttpClient reader, int pool)
    {
        var budgets = await reader.GetJson("/api/budgets");
        var view = budgets["pools"]!.AsArray().Single(p => p!["id"]!.GetValue<int>() == pool)!;
        return (pool, view["available"]!.GetValue<decimal>(), budgets["initiatives"]![pool]!["id"]!.GetValue<int>());
    }

    private static async Task<decimal> PoolAmount(HttpClient reader, int pool)
        => (await reader.GetJson("/api/budgets"))["pools"]!.AsArray().Single(p => p!["id"]!.GetValue<int>() == pool)!["amount"]!.GetValue<decimal>();
}

/// <summary>Budget decisions made by two app processes sharing one database, on an app of their own.</summary>
public sealed class BudgetAcrossProcessesTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    [Fact]
    public async Task Two_app_processes_on_one_database_never_allocate_past_a_pool_together()
    {
        await using var beside = await AppProcess.StartBesideAsync(fixture.App);
        using var reader = ApiClient.For(fixture.App);
        var ownerId = await reader.PersonWith(1, "owner");
        using var owner = ApiClient.For(fixture.App, ownerId);
        using var besideOwner = ApiClient.For(beside, ownerId);
        var (pool, available, initiative) = await BudgetTests.PoolAndInitiative(reader, 1);

        // Both signed in first (a sign-in takes longer than a decision), so that the requests below meet.
        await owner.GetJson("/api/budgets");
        await besideOwner.GetJson("/api/budgets");

        // Twenty requests to each process at once, each for a twentieth of the room and a cent: 19 fit, wherever they land.
        var share = decimal.Round(available / 20, 2) + 0.01m;
        var answers = await Task.WhenAll(Enumerable.Range(0, 40).Select(async i =>
        {
            using var response = await (i % 2 == 0 ? owner : besideOwner).PostAsJsonAsync(new Uri($"/api/pools/{pool}/allocations", UriKind.Relative), new { initiativeId = initiative, amount = share });
            return response.StatusCode;
        }));
        Assert.Equal(19, answers.Count(a => a == HttpStatusCode.Created));
        Assert.Equal(21, answers.Count(a => a == HttpStatusCode.Conflict));
        var after = (await reader.GetJson("/api/budgets"))["pools"]!.AsArray().Single(p => p!["id"]!.GetValue<int>() == pool)!;
        Assert.Equal(19 * share, after["allocated"]!.GetValue<decimal>() - (after["amount"]!.GetValue<decimal>() - available));
    }
}
