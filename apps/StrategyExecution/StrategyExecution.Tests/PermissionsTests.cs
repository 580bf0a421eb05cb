using System.Net;

namespace StrategyExecution.Tests;

/// <summary>Who may record actuals where: a role on a unit covers the units below it; viewers and other units may not.</summary>
public sealed class PermissionsTests(AppFixture fixture) : IClassFixture<AppFixture>
{
    private const int Company = 1;
    private const int Sales = 2;
    private const int Team = 3;        // Enterprise Sales, under Sales
    private const int SiblingTeam = 4; // Mid-Market Sales
    private const int OtherDivision = 7;

    [Fact]
    public async Task The_permissions_matrix_for_recording_an_actual_on_a_team_measure()
    {
        using var reader = ApiClient.For(fixture.App);
        var measure = (await reader.GetJson($"/api/scorecards/{Team}"))["objectives"]![0]!["measures"]![0]!["id"]!.GetValue<int>();
        (string Who, int Person, HttpStatusCode Expected)[] matrix =
        [
            ("company admin", await reader.PersonWith(Company, "admin"), HttpStatusCode.Created),
            ("company owner", await reader.PersonWith(Company, "owner"), HttpStatusCode.Created),
            ("division owner", await reader.PersonWith(Sales, "owner"), HttpStatusCode.Created),
            ("division updater", await reader.PersonWith(Sales, "updater"), HttpStatusCode.Created),
            ("team owner", await reader.PersonWith(Team, "owner"), HttpStatusCode.Created),
            ("team updater", await reader.PersonWith(Team, "updater"), HttpStatusCode.Created),
            ("team viewer", await reader.PersonWith(Team, "viewer"), HttpStatusCode.Forbidden),
            ("division viewer", await reader.PersonWith(Sales, "viewer"), HttpStatusCode.Forbidden),
            ("sibling team updater", await reader.PersonWith(SiblingTeam, "updater"), HttpStatusCode.Forbidden),
            ("sibling team owner", await reader.PersonWith(SiblingTeam, "owner"), HttpStatusCode.Forbidden),
            ("other division owner", await reader.PersonWith(OtherDivision, "owner"), HttpStatusCode.Forbidden),
        ];

        var auditBefore = (await reader.GetJson("/api/audit?take=1000")).AsArray().Count;
        var value = 1.0;
        foreach (var (who, person, expected) in matrix)
        {
            using var client = ApiClient.For(fixture.App, person);
            using var response = await client.RecordActual(measure, ApiClient.LastMonth(), value++);
            Assert.True(expected == response.StatusCode, $"{who} (person {person}): expected {expected}, got {response.StatusCode}");
        }

        // No sign-in, or one that is forged, names nobody: the header and cookie a page could set are not credentials.
        (string Header, string Value)?[] forged =
        [
            null,
            ("X-Person-Id", AllowedPerson(matrix)),
            ("Cookie", $"person={AllowedPerson(matrix)}"),
            ("Cookie", "strategy_token=st_not-a-token"),
            ("Authorization", "Bearer st_not-a-token"),
            ("Authorization", "Bearer " + new string('a', 5000)),
            ("Authorization", "Basic YWRtaW46ZGVtbw=="),
        ];
        foreach (var header in forged)
        {
            using var anonymous = ApiClient.Anonymous(fixture.App);
            if (header is { } h)
            {
                anonymous.DefaultRequestHeaders.TryAddWithoutValidation(h.Header, h.Value);
            }

            using var response = await anonymous.RecordActual(measure, ApiClient.LastMonth(), 1);
            Assert.True(HttpStatusCode.Unauthorized == response.StatusCode, $"{header}: expected 401, got {response.StatusCode}");
        }

        // Every accepted change is audited with its actor, in order; refused ones leave no trace.
        var audit = (await reader.GetJson("/api/audit?take=1000")).AsArray().Skip(auditBefore).ToList();
        var allowed = matrix.Where(m => m.Expected == HttpStatusCode.Created).Select(m => m.Person).ToList();
        Assert.Equal(allowed, audit.Select(a => a!["actorId"]!.GetValue<int>()));
        Assert.All(audit, a => Assert.Equal($"measure/{measure}", a!["subject"]!.GetValue<string>()));
        var history = (await reader.GetJson($"/api/measures/{measure}/actuals")).AsArray().Take(allowed.Count).Reverse();
        Assert.Equal(allowed, history.Select(h => h!["recordedBy"]!.GetValue<int>()));
    }

    private static string AllowedPerson((string Who, int Person, HttpStatusCode Expected)[] matrix)
        => matrix.First(m => m.Expected == HttpStatusCode.Created).Person.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
