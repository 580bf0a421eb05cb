using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace StrategyExecution.Tests;

/// <summary>Step 1, communicate: announcements to chosen units, acknowledgement coverage per unit, reminders.</summary>
public sealed class CommunicationTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    [Fact]
    public async Task An_announcement_to_a_division_is_acknowledged_by_its_people_with_coverage_per_unit_and_reminders_for_the_rest()
    {
        using var reader = ApiClient.For(fixture.App);
        using var head = ApiClient.For(fixture.App, await reader.PersonWith(2, "owner"));
        using var published = await head.PostAsJsonAsync(new Uri("/api/announcements", UriKind.Relative), new { title = "Sales priorities", body = "Lighthouse accounts first.", unitIds = new[] { 2 } });
        Assert.Equal(HttpStatusCode.Created, published.StatusCode);
        var id = JsonNode.Parse(await published.Content.ReadAsStringAsync())!["id"]!.GetValue<int>();

        var people = (await reader.GetJson("/api/people")).AsArray();
        var inSales = people.Where(p => p!["unitId"]!.GetValue<int>() is >= 2 and <= 6).Select(p => p!["id"]!.GetValue<int>()).ToList();
        var outside = people.First(p => p!["unitId"]!.GetValue<int>() == 8)!["id"]!.GetValue<int>();
        var view = await Announcement(reader, id);
        Assert.Equal(inSales.Count, view["audience"]!.GetValue<int>());
        Assert.Equal(0, view["acknowledged"]!.GetValue<int>());
        Assert.Equal([2, 3, 4, 5, 6], view["coverage"]!.AsArray().Select(c => c!["unitId"]!.GetValue<int>()));

        foreach (var person in inSales.Take(2))
        {
            using var client = ApiClient.For(fixture.App, person);
            Assert.Equal(HttpStatusCode.Created, (await client.PostAsync(new Uri($"/api/announcements/{id}/acknowledge", UriKind.Relative), null)).StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await client.PostAsync(new Uri($"/api/announcements/{id}/acknowledge", UriKind.Relative), null)).StatusCode);
        }

        using (var stranger = ApiClient.For(fixture.App, outside))
        {
            Assert.Equal(HttpStatusCode.Forbidden, (await stranger.PostAsync(new Uri($"/api/announcements/{id}/acknowledge", UriKind.Relative), null)).StatusCode);
        }

        view = await Announcement(reader, id);
        Assert.Equal(2, view["acknowledged"]!.GetValue<int>());
        Assert.Equal(2, view["coverage"]!.AsArray().Sum(c => c!["acknowledged"]!.GetValue<int>()));

        using var reminded = await head.PostAsync(new Uri($"/api/announcements/{id}/remind", UriKind.Relative), null);
        Assert.Equal(HttpStatusCode.OK, reminded.StatusCode);
        var pending = JsonNode.Parse(await reminded.Content.ReadAsStringAsync())!["personIds"]!.AsArray().Select(p => p!.GetValue<int>()).ToList();
        Assert.Equal(inSales.Skip(2).Order(), pending.Order());
        using var teamOwner = ApiClient.For(fixture.App, await reader.PersonWith(3, "owner"));
        Assert.Equal(HttpStatusCode.Forbidden, (await teamOwner.PostAsync(new Uri($"/api/announcements/{id}/remind", UriKind.Relative), null)).StatusCode);

        var actions = (await reader.GetJson("/api/audit?take=1000")).AsArray().Where(a => a!["subject"]!.GetValue<string>() == $"announcement/{id}").Select(a => a!["action"]!.GetValue<string>());
        Assert.Equal(["announcement.published", "announcement.acknowledged", "announcement.acknowledged", "announcement.reminded"], actions);
    }

    [Fact]
    public async Task Only_owners_of_every_unit_announce_and_bad_announcements_are_refused()
    {
        using var reader = ApiClient.For(fixture.App);
        using var teamOwner = ApiClient.For(fixture.App, await reader.PersonWith(3, "owner"));
        Assert.Equal(HttpStatusCode.Forbidden, (await teamOwner.PostAsJsonAsync(new Uri("/api/announcements", UriKind.Relative), new { title = "Hi", body = "All", unitIds = new[] { 3, 4 } })).StatusCode);
        using var bad = await teamOwner.PostAsJsonAsync(new Uri("/api/announcements", UriKind.Relative), new { title = "", body = "", unitIds = Array.Empty<int>() });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Equal(3, JsonNode.Parse(await bad.Content.ReadAsStringAsync())!["error"]!["details"]!.AsArray().Count);
        Assert.Equal(HttpStatusCode.NotFound, (await teamOwner.PostAsync(new Uri("/api/announcements/999/acknowledge", UriKind.Relative), null)).StatusCode);
    }

    private static async Task<JsonNode> Announcement(HttpClient client, int id)
        => (await client.GetJson("/api/announcements")).AsArray().Single(a => a!["id"]!.GetValue<int>() == id)!;
}
