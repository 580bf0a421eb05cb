using System.Globalization;
using System.Text.Json;
using Microsoft.EntityFrameworkCore;
using StrategyExecution.Data;
using StrategyExecution.Live;

namespace StrategyExecution.Api;

/// <summary>The body of <c>POST /api/measures/{id}/actuals</c>.</summary>
/// <param name="Month">The month it is for, <c>yyyy-MM</c>.</param>
/// <param name="Value">The value.</param>
/// <param name="Source">How it was entered: <c>form</c> (default), <c>grid</c> or <c>api</c>.</param>
public sealed record RecordActualRequest(string? Month, double? Value, string? Source);

/// <summary>An actual as recorded.</summary>
public sealed record ActualView(long Id, int MeasureId, string Month, double Value, int RecordedBy, string RecordedByName, DateTimeOffset RecordedAt, string Source);

/// <summary>The answer to a recorded actual: it, the measure's new score, and the scores it moved up the cascade.</summary>
public sealed record ActualRecorded(ActualView Actual, MeasureView Measure, IReadOnlyList<UnitScoreView> Units);

/// <summary>The acting person and their roles.</summary>
public sealed record MeView(int Id, string Name, string Email, int UnitId, IReadOnlyList<RoleView> Roles);

/// <summary>A role on a unit.</summary>
public sealed record RoleView(int UnitId, string Role);

/// <summary>The HTTP API of the strategy execution app, under <c>/api</c> (OpenAPI at <c>/openapi/v1.json</c>).</summary>
public static class StrategyEndpoints
{
    private static readonly string[] Sources = ["form", "grid", "api"];

    /// <summary>Maps the API.</summary>
    public static RouteGroupBuilder MapStrategyApi(this IEndpointRouteBuilder endpoints)
    {
        var api = endpoints.MapGroup("/api");

        // Changes sent with the sign-in cookie come from this origin; everything needs a signed-in person, except what is
        // marked anonymous (signing in, the demo's people).
        api.AddEndpointFilter(async (context, next) =>
        {
            var http = context.HttpContext;
            if (Acting.IsCrossSiteCookieWrite(http.Request))
            {
                return Problems.Error(403, "CROSS_SITE", "A change sent with the sign-in cookie must come from this app's own pages.");
            }

            return http.GetEndpoint()?.Metadata.GetMetadata<Microsoft.AspNetCore.Authorization.IAllowAnonymous>() is null
                && await http.RequestServices.GetRequiredService<Acting>().PersonAsync(http, http.RequestAborted) is null
                    ? Problems.Unauthenticated()
                    : await next(context);
        });
        api.MapSignInApi();
        api.MapGet("/me", MeAsync);
        api.MapGet("/people", PeopleAsync);
        api.MapGet("/roles", RolesAsync);
        api.MapGet("/strategy", async (StrategyDb db, CancellationToken ct) => Results.Ok(new
        {
            Statement = await db.Strategy.AsNoTracking().FirstOrDefaultAsync(ct),
            Themes = await db.Themes.AsNoTracking().OrderBy(t => t.Id).ToListAsync(ct),
        }));
        api.MapGet("/periods", async (StrategyDb db, CancellationToken ct) => Results.Ok(await db.Periods.AsNoTracking().OrderBy(p => p.Start).ToListAsync(ct)));
        api.MapGet("/units", UnitsAsync);
        api.MapGet("/scorecards/{unitId:int}", ScorecardAsync);
        api.MapGet("/measures/{id:int}/actuals", HistoryAsync);
        api.MapPost("/measures/{id:int}/actuals", RecordActualAsync);
        api.MapGet("/audit", AuditAsync);
        api.MapAlignmentApi();
        api.MapBudgetApi();
        api.MapReviewApi();
        api.MapCommunicationApi();
        api.MapDataApi();
        api.MapIncentiveApi();
        return api;
    }

    private static async Task<IResult> MeAsync(HttpContext context, Acting acting, StrategyDb db, CancellationToken ct)
    {
        var person = await acting.SignedInAsync(context, ct);

        var roles = await db.Roles.AsNoTracking().Where(r => r.PersonId == person.Id).OrderBy(r => r.Role)
            .Select(r => new RoleView(r.UnitId, r.Role.ToString().ToLowerInvariant())).ToListAsync(ct);
        return Results.Ok(new MeView(person.Id, person.Name, person.Email, person.UnitId, roles));
    }

    /// <summary>People by id, at most 500 a page: <c>after</c> (the last id of the page before) reads the next.</summary>
    private static async Task<IResult> PeopleAsync(StrategyDb db, int? unit, int? take, int? after, CancellationToken ct)
    {
        var query = db.People.AsNoTracking();
        if (unit is { } u)
        {
            query = query.Where(p => p.UnitId == u);
        }

        if (after is { } last)
        {
            query = query.Where(p => p.Id > last);
        }

        return Results.Ok(await query.OrderBy(p => p.Id).Take(Math.Clamp(take ?? 500, 1, 500)).ToListAsync(ct));
    }

    /// <summary>
    /// Role assignments by unit, role and person, at most <paramref name="take"/> (500) at a time; the next page starts
    /// after the last one's <c>id</c> (<c>after</c>).
    /// </summary>
    private static async Task<IResult> RolesAsync(StrategyDb db, int? unit, int? take, int? after, CancellationToken ct)
    {
        var roles = db.Roles.AsNoTracking();
        if (unit is { } u)
        {
            roles = roles.Where(r => r.UnitId == u);
        }

        if (after is { } last)
        {
            if (await db.Roles.AsNoTracking().FirstOrDefaultAsync(r => r.Id == last, ct) is not { } a)
            {
                return Problems.Error(400, "INVALID_CURSOR", "after must be the id of a role assignment of an earlier page.");
            }

            roles = roles.Where(r => r.UnitId > a.UnitId
                || (r.UnitId == a.UnitId && (r.Role > a.Role || (r.Role == a.Role && (r.PersonId > a.PersonId || (r.PersonId == a.PersonId && r.Id > a.Id))))));
        }

        var query = from r in roles
                    join p in db.People.AsNoTracking() on r.PersonId equals p.Id
                    orderby r.UnitId, r.Role, r.PersonId, r.Id
                    select new { r.Id, r.UnitId, r.PersonId, p.Name, r.Role };
        return Results.Ok(await query.Take(Math.Clamp(take ?? 500, 1, 500)).ToListAsync(ct));
    }

    private static async Task<int?> PeriodOrActiveAsync(StrategyDb db, ScoreCache cache, int? period, CancellationToken ct)
        => period ?? await cache.ActivePeriodAsync(() => db.Periods.AsNoTracking().Where(p => p.Status == PeriodStatus.Active).OrderByDescending(p => p.Start).Select(p => (int?)p.Id).FirstOrDefaultAsync(ct));

    private static async Task<IResult> UnitsAsync(StrategyDb db, Scorecards scorecards, ScoreCache cache, int? period, CancellationToken ct)
    {
        if (await PeriodOrActiveAsync(db, cache, period, ct) is not { } periodId || await scorecards.ComputeAsync(periodId) is not { } scores)
        {
            return Problems.NotFound("No such period.");
        }

        return Results.Ok(scores.Units.Select(scores.UnitView).ToList());
    }

    private static async Task<IResult> ScorecardAsync(int unitId, StrategyDb db, Scorecards scorecards, ScoreCache cache, int? period, CancellationToken ct)
    {
        if (await PeriodOrActiveAsync(db, cache, period, ct) is not { } periodId || await scorecards.ComputeAsync(periodId) is not { } scores)
        {
            return Problems.NotFound("No such period.");
        }

        return Scorecards.Scorecard(scores, unitId) is { } card ? Results.Ok(card) : Problems.NotFound("No such unit.");
    }

    private static async Task<IResult> HistoryAsync(int id, StrategyDb db, CancellationToken ct)
    {
        if (!await db.Measures.AnyAsync(m => m.Id == id, ct))
        {
            return Problems.NotFound("No such measure.");
        }

        var rows = await (from a in db.Actuals.AsNoTracking()
                          join p in db.People.AsNoTracking() on a.RecordedBy equals p.Id
                          where a.MeasureId == id
                          orderby a.Id descending
                          select new { a, p.Name }).Take(500).ToListAsync(ct);
        return Results.Ok(rows.Select(r => View(r.a, r.Name)).ToList());
    }

    private static async Task<IResult> RecordActualAsync(
        int id, HttpContext context, Acting acting, StrategyDb db, Scorecards scorecards, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var (request, error) = await JsonBody.ReadAuthoredAsync<RecordActualRequest>(context, acting, ct);
        if (error is not null)
        {
            return error;
        }

        var (person, body) = request!;

        var problems = new List<string>();
        if (!DateOnly.TryParseExact(body.Month, "yyyy-MM", CultureInfo.InvariantCulture, DateTimeStyles.None, out var month))
        {
            problems.Add("month must be a month as yyyy-MM.");
        }
        else if (month > ActualImport.LatestMonth(time.GetUtcNow()))
        {
            problems.Add($"{body.Month} has not begun yet: actuals are recorded for months up to the current one.");
        }

        if (body.Value is not { } value || !double.IsFinite(value) || Math.Abs(value) > 1e15)
        {
            problems.Add("value must be a finite number.");
            value = 0;
        }

        var source = body.Source ?? "form";
        if (!Sources.Contains(source))
        {
            problems.Add("source must be form, grid or api.");
        }

        if (problems.Count > 0)
        {
            return Problems.Error(400, "INVALID_ACTUAL", "The actual cannot be recorded.", problems);
        }

        var measure = await db.Measures.FirstOrDefaultAsync(m => m.Id == id, ct);
        if (measure is null)
        {
            return Problems.NotFound("No such measure.");
        }

        var objective = await db.Objectives.AsNoTracking().FirstAsync(o => o.Id == measure.ObjectiveId, ct);
        if (!await acting.HasRoleAsync(person, objective.UnitId, Role.Updater, ct))
        {
            return Problems.Forbidden("Recording actuals for this unit needs the updater, owner or admin role on it or a unit above it.");
        }

        var period = await db.Periods.AsNoTracking().FirstAsync(p => p.Id == objective.PeriodId, ct);
        if (month < period.Start || month > period.End)
        {
            return Problems.Error(400, "MONTH_OUTSIDE_PERIOD", $"The measure belongs to {period.Name} ({period.Start:yyyy-MM} to {period.End:yyyy-MM}).");
        }

        if (period.Status != PeriodStatus.Active)
        {
            return Problems.Error(409, "PERIOD_NOT_ACTIVE", $"{period.Name} is {period.Status.ToString().ToLowerInvariant()}: actuals are recorded only in an active period.");
        }

        db.WritesInto(period.Id);

        var now = time.GetUtcNow();
        var actual = new Actual { MeasureId = id, Month = month, Value = value, RecordedBy = person.Id, RecordedAt = now, Source = source };
        var previous = measure.LatestValue;
        await using (var transaction = await db.Database.BeginTransactionAsync(ct))
        {
            await ActualImport.MoveLatestAsync(db, id, month, value, now, ct);
            db.Actuals.Add(actual);
            db.AddAudit(person.Id, "actual.recorded", $"measure/{id}", new { measureId = id, unitId = objective.UnitId, month = body.Month, value, previous, source }, now);
            await db.SaveChangesAsync(ct);
            await transaction.CommitAsync(ct);
        }

        audit.Notify();
        await db.Entry(measure).ReloadAsync(ct);

        var scores = (await scorecards.ComputeAsync(period.Id))!;
        var moved = new List<UnitScoreView>();
        var parents = scores.Units.ToDictionary(u => u.Id);
        for (int? at = objective.UnitId; at is { } unitId && parents.TryGetValue(unitId, out var unit); at = unit.ParentId)
        {
            moved.Add(scores.UnitView(unit));
        }

        return Results.Created($"/api/measures/{id}/actuals", new ActualRecorded(View(actual, person.Name), scores.MeasureView(measure), moved));
    }

    private static async Task<IResult> AuditAsync(StrategyDb db, long? after, int? take, CancellationToken ct)
    {
        var rows = await db.Audit.AsNoTracking().Where(a => a.Id > (after ?? 0)).OrderBy(a => a.Id).Take(Math.Clamp(take ?? 100, 1, 1000)).ToListAsync(ct);
        return Results.Ok(rows.Select(a => new { a.Id, a.At, a.ActorId, a.Action, a.Subject, Details = JsonSerializer.Deserialize<JsonElement>(a.Details) }));
    }

    private static ActualView View(Actual a, string name)
        => new(a.Id, a.MeasureId, a.Month.ToString("yyyy-MM", CultureInfo.InvariantCulture), a.Value, a.RecordedBy, name, a.RecordedAt, a.Source);
}
