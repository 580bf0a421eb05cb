using Microsoft.EntityFrameworkCore;
using StrategyExecution.Alignment;
using StrategyExecution.Data;
using StrategyExecution.Scoring;

namespace StrategyExecution.Api;

/// <summary>The body of <c>POST /api/objectives</c>.</summary>
public sealed record CreateObjectiveRequest(
    int? UnitId, int? PeriodId, string? Name, Perspective? Perspective, int? ThemeId, int? ParentObjectiveId, string? StandaloneReason, double? Weight, string? RollupMethod);

/// <summary>The body of <c>POST /api/measures</c>.</summary>
public sealed record CreateMeasureRequest(int? ObjectiveId, string? Name, string? Unit, string? Direction, double? Baseline, double? Weight);

/// <summary>The body of <c>PUT /api/measures/{id}/target</c>.</summary>
public sealed record SetTargetRequest(double? RedFlag, double? Target, double? Stretch, double? TargetHigh, double? RedFlagHigh);

/// <summary>The body of <c>POST /api/links</c>.</summary>
public sealed record CreateLinkRequest(int? Cause, int? Effect);

/// <summary>An item the alignment health panel flags.</summary>
/// <param name="Kind"><c>orphan</c>, <c>objective-without-measures</c>, <c>measure-without-target</c>, <c>initiative-unlinked</c> or <c>spend-unlinked</c>.</param>
/// <param name="Id">The objective, measure, initiative or spend entry.</param>
/// <param name="Name">Its name.</param>
/// <param name="UnitId">The unit whose scorecard it is on.</param>
/// <param name="Message">What is wrong and what to do.</param>
public sealed record HealthItem(string Kind, int Id, string Name, int UnitId, string Message);

/// <summary>Step 2, align: building and cascading scorecards, the strategy map, and the alignment health panel.</summary>
public static class AlignmentEndpoints
{
    /// <summary>Maps the alignment API under <c>/api</c>.</summary>
    public static RouteGroupBuilder MapAlignmentApi(this RouteGroupBuilder api)
    {
        ArgumentNullException.ThrowIfNull(api);
        api.MapPost("/objectives", CreateObjectiveAsync);
        api.MapPost("/measures", CreateMeasureAsync);
        api.MapPut("/measures/{id:int}/target", SetTargetAsync);
        api.MapPost("/links", CreateLinkAsync);
        api.MapGet("/strategy-map", StrategyMapAsync);
        api.MapGet("/health", HealthAsync);
        return api;
    }

    private static async Task<IResult> CreateObjectiveAsync(HttpContext context, Acting acting, StrategyDb db, Limits limits, TimeProvider time, CancellationToken ct)
    {
        var (request, error) = await JsonBody.ReadAuthoredAsync<CreateObjectiveRequest>(context, acting, ct);
        if (error is not null)
        {
            return error;
        }

        var (person, body) = request!;

        var problems = new List<string>();
        var unit = await Checks.UnitAsync(db, body.UnitId, problems, ct);
        var name = Checks.Name(body.Name, problems);

        if (body.Perspective is not { } perspective || !Enum.IsDefined(perspective))
        {
            problems.Add("perspective must be financial, customer, internal-process or learning-and-growth.");
            perspective = default;
        }

        if (body.Weight is { } w && (!double.IsFinite(w) || w < 0 || w > ScoreScale.MaxWeight))
        {
            problems.Add($"weight must be a number from 0 to {ScoreScale.MaxWeight:0}.");
        }

        var method = body.RollupMethod ?? RollupMethod.Weighted.Value;
        if (!RollupMethod.Known.Any(m => m.Value == method))
        {
            problems.Add("rollupMethod must be weighted or worst.");
        }

        if (body.StandaloneReason is { Length: > 500 })
        {
            problems.Add("standaloneReason must be at most 500 characters.");
        }

        if (body.ThemeId is { } theme && !await db.Themes.AnyAsync(t => t.Id == theme, ct))
        {
            problems.Add("themeId must name a theme.");
        }

        if (problems.Count > 0)
        {
            return Problems.Error(400, "INVALID_OBJECTIVE", "The objective cannot be created.", problems);
        }

        if (!await acting.HasRoleAsync(person, unit!.Id, Role.Owner, ct))
        {
            return Problems.Forbidden("Building a unit's scorecard needs the owner or admin role on it or a unit above it.");
        }

        var period = await PeriodAsync(db, body.PeriodId, ct);
        if (period is null)
        {
            return Problems.Error(400, "INVALID_OBJECTIVE", "The objective cannot be created.", ["periodId must name a period."]);
        }

        if (period.Status == PeriodStatus.Locked)
        {
            return Problems.Error(409, "PERIOD_LOCKED", $"{period.Name} is locked: its scorecards no longer change.");
        }

        var onScorecard = await db.Objectives.CountAsync(o => o.UnitId == unit.Id && o.PeriodId == period.Id, ct);
        if (onScorecard >= limits.ObjectivesPerScorecard)
        {
            return Limits.Reached($"A scorecard holds at most {limits.ObjectivesPerScorecard:N0} objectives per period; this one ({unit.Name}, {period.Name}) has {onScorecard:N0}.");
        }

        db.WritesInto(period.Id);

        if (body.ParentObjectiveId is { } parentId)
        {
            var parent = await db.Objectives.AsNoTracking().FirstOrDefaultAsync(o => o.Id == parentId, ct);
            if (parent is null || parent.PeriodId != period.Id || parent.UnitId != unit.ParentId)
            {
                return Problems.Error(400, "INVALID_PARENT", "An objective aligns to an objective of the same period on its parent unit's scorecard.");
            }
        }

        var objective = new Objective
        {
            UnitId = unit.Id, PeriodId = period.Id, Name = name, Perspective = perspective, ThemeId = body.ThemeId,
            ParentObjectiveId = body.ParentObjectiveId, StandaloneReason = string.IsNullOrWhiteSpace(body.StandaloneReason) ? null : body.StandaloneReason.Trim(),
            Weight = body.Weight ?? 1, RollupMethod = method,
        };
        // The objective and its audit entry commit together; the entry needs the objective's id.
        await db.AddAuditedAsync(objective, person.Id, "objective.created", () => $"objective/{objective.Id}", () => new { objective.Id, unitId = unit.Id, periodId = period.Id, objective.Name, objective.ParentObjectiveId, objective.StandaloneReason }, time.GetUtcNow(), ct);
        context.RequestServices.GetRequiredService<Live.AuditTrail>().Notify();
        return Results.Created($"/api/objectives/{objective.Id}", objective);
    }

    private static async Task<IResult> CreateMeasureAsync(HttpContext context, Acting acting, StrategyDb db, Limits limits, TimeProvider time, CancellationToken ct)
    {
        var (request, error) = await JsonBody.ReadAuthoredAsync<CreateMeasureRequest>(context, acting, ct);
        if (error is not null)
        {
            return error;
        }

        var (person, body) = request!;

        var problems = new List<string>();
        var objective = body.ObjectiveId is { } objectiveId ? await db.Objectives.AsNoTracking().FirstOrDefaultAsync(o => o.Id == objectiveId, ct) : null;
        if (objective is null)
        {
            problems.Add("objectiveId must name an objective.");
        }

        var name = Checks.Name(body.Name, problems);

        var unit = body.Unit?.Trim();
        if (string.IsNullOrEmpty(unit) || unit.Length > 40)
        {
            problems.Add("unit must be 1 to 40 characters, e.g. %, EUR, days.");
        }

        if (!MeasureDirection.Known.Any(d => d.Value == body.Direction))
        {
            problems.Add("direction must be higher, lower or band.");
        }

        if (body.Weight is { } w && (!double.IsFinite(w) || w < 0 || w > ScoreScale.MaxWeight))
        {
            problems.Add($"weight must be a number from 0 to {ScoreScale.MaxWeight:0}.");
        }

        if (body.Baseline is { } b && (!double.IsFinite(b) || Math.Abs(b) > ScoreScale.MaxMagnitude))
        {
            problems.Add("baseline must be a number between -1e15 and 1e15.");
        }

        if (problems.Count > 0)
        {
            return Problems.Error(400, "INVALID_MEASURE", "The measure cannot be created.", problems);
        }

        if (!await acting.HasRoleAsync(person, objective!.UnitId, Role.Owner, ct))
        {
            return Problems.Forbidden("Adding measures needs the owner or admin role on the objective's unit or a unit above it.");
        }

        if (await Checks.LockedAsync(db, objective.PeriodId, ct) is { } locked)
        {
            return locked;
        }

        var measures = await db.Measures.CountAsync(m => m.ObjectiveId == objective.Id, ct);
        if (measures >= limits.MeasuresPerObjective)
        {
            return Limits.Reached($"An objective has at most {limits.MeasuresPerObjective:N0} measures; \"{objective.Name}\" has {measures:N0}.");
        }

        db.WritesInto(objective.PeriodId);

        var measure = new Measure { ObjectiveId = objective.Id, Name = name, Unit = unit!, Direction = body.Direction!, Baseline = body.Baseline, Weight = body.Weight ?? 1 };
        await db.AddAuditedAsync(measure, person.Id, "measure.created", () => $"measure/{measure.Id}", () => new { measure.Id, objectiveId = objective.Id, unitId = objective.UnitId, measure.Name, measure.Direction }, time.GetUtcNow(), ct);
        context.RequestServices.GetRequiredService<Live.AuditTrail>().Notify();
        return Results.Created($"/api/measures/{measure.Id}", measure);
    }

    private static async Task<IResult> SetTargetAsync(int id, HttpContext context, Acting acting, StrategyDb db, TimeProvider time, CancellationToken ct)
    {
        var (request, error) = await JsonBody.ReadAuthoredAsync<SetTargetRequest>(context, acting, ct);
        if (error is not null)
        {
            return error;
        }

        var (person, body) = request!;

        var measure = await db.Measures.AsNoTracking().FirstOrDefaultAsync(m => m.Id == id, ct);
        if (measure is null)
        {
            return Problems.NotFound("No such measure.");
        }

        if (body.RedFlag is not { } redFlag || body.Target is not { } target)
        {
            return Problems.Error(400, "INVALID_THRESHOLDS", "The target cannot be set.", ["redFlag and target are required."]);
        }

        var thresholds = new TargetThresholds
        {
            Direction = new MeasureDirection(measure.Direction), RedFlag = redFlag, Target = target, Stretch = body.Stretch, TargetHigh = body.TargetHigh, RedFlagHigh = body.RedFlagHigh,
        };
        if (!thresholds.IsWithinRange)
        {
            return Problems.Error(400, "INVALID_THRESHOLDS", "The target cannot be set.", ["Thresholds must be numbers between -1e15 and 1e15."]);
        }

        if (thresholds.Validate() is { Count: > 0 } problems)
        {
            return Problems.Error(400, "INVALID_THRESHOLDS", "The target cannot be set.", problems);
        }

        var objective = await db.Objectives.AsNoTracking().FirstAsync(o => o.Id == measure.ObjectiveId, ct);
        if (!await acting.HasRoleAsync(person, objective.UnitId, Role.Owner, ct))
        {
            return Problems.Forbidden("Setting targets needs the owner or admin role on the measure's unit or a unit above it.");
        }

        var period = await db.Periods.AsNoTracking().FirstAsync(p => p.Id == objective.PeriodId, ct);
        if (period.Status == PeriodStatus.Locked)
        {
            return Problems.Error(409, "PERIOD_LOCKED", $"{period.Name} is locked: its targets no longer change.");
        }

        db.WritesInto(period.Id);

        // A measure's first target is an insert: two set at once must not both find none and both insert (the second
        // would break the unique index). So the read and the write are one transaction that holds the database's write
        // lock from its start (SQLite) or the measure's advisory lock (PostgreSQL), taken before anything else.
        await using var transaction = await db.Database.BeginTransactionAsync(ct);
        if (db.Database.IsNpgsql())
        {
            await db.Database.ExecuteSqlAsync($"SELECT pg_advisory_xact_lock({TargetWriteLock}, {id})", ct);
        }

        var row = await db.Targets.FirstOrDefaultAsync(t => t.MeasureId == id && t.PeriodId == period.Id, ct);
        if (row is null)
        {
            row = new MeasureTarget { MeasureId = id, PeriodId = period.Id };
            db.Targets.Add(row);
        }

        (row.RedFlag, row.Target, row.Stretch, row.TargetHigh, row.RedFlagHigh) = (redFlag, target, body.Stretch, body.TargetHigh, body.RedFlagHigh);
        db.AddAudit(person.Id, "target.set", $"measure/{id}", new { measureId = id, unitId = objective.UnitId, periodId = period.Id, redFlag, target, body.Stretch, body.TargetHigh, body.RedFlagHigh }, time.GetUtcNow());
        await db.SaveChangesAsync(ct);

        // Not cancelled half way: once the target is written, the commit decides, not the client leaving.
        await transaction.CommitAsync(CancellationToken.None);
        context.RequestServices.GetRequiredService<Live.AuditTrail>().Notify();
        return Results.Ok(new TargetView(row.RedFlag, row.Target, row.Stretch, row.TargetHigh, row.RedFlagHigh));
    }

    private static async Task<IResult> CreateLinkAsync(HttpContext context, Acting acting, StrategyDb db, Limits limits, TimeProvider time, CancellationToken ct)
    {
        var (request, error) = await JsonBody.ReadAuthoredAsync<CreateLinkRequest>(context, acting, ct);
        if (error is not null)
        {
            return error;
        }

        var (person, body) = request!;

        var cause = body.Cause is { } c ? await db.Objectives.AsNoTracking().FirstOrDefaultAsync(o => o.Id == c, ct) : null;
        var effect = body.Effect is { } e ? await db.Objectives.AsNoTracking().FirstOrDefaultAsync(o => o.Id == e, ct) : null;
        if (cause is null || effect is null || cause.PeriodId != effect.PeriodId)
        {
            return Problems.Error(400, "INVALID_LINK", "cause and effect must name two objectives of the same period.");
        }

        if (!await acting.HasRoleAsync(person, effect.UnitId, Role.Owner, ct))
        {
            return Problems.Forbidden("Drawing the strategy map needs the owner or admin role on the effect's unit or a unit above it.");
        }

        if (await Checks.LockedAsync(db, effect.PeriodId, ct) is { } locked)
        {
            return locked;
        }

        db.WritesInto(effect.PeriodId);

        // The check for a loop reads every link and then writes one: one at a time, so two links drawn at once (a→b and
        // b→a) cannot each pass the check and close a loop together, nor the same link be stored twice. Within a
        // process by a semaphore; across processes sharing the database by a transaction that takes the database's
        // write lock at its start (SQLite) or an advisory lock (PostgreSQL).
        await MapEdits.WaitAsync(ct);
        try
        {
            await using var transaction = await db.Database.BeginTransactionAsync(ct);
            if (db.Database.IsNpgsql())
            {
                await db.Database.ExecuteSqlRawAsync("SELECT pg_advisory_xact_lock(5101)", ct);
            }

            var result = await AddLinkAsync(db, limits, person, cause, effect, time, ct);

            // Not cancelled half way: once the link is written, the commit decides, not the client leaving.
            await transaction.CommitAsync(CancellationToken.None);
            if (result is IStatusCodeHttpResult { StatusCode: StatusCodes.Status201Created })
            {
                context.RequestServices.GetRequiredService<Live.AuditTrail>().Notify();
            }

            return result;
        }
        finally
        {
            MapEdits.Release();
        }
    }

    private static readonly SemaphoreSlim MapEdits = new(1, 1);

    /// <summary>The advisory lock (with the measure's id as its second key) a PostgreSQL transaction setting a target holds.</summary>
    private const int TargetWriteLock = 5106;

    private static async Task<IResult> AddLinkAsync(StrategyDb db, Limits limits, Person person, Objective cause, Objective effect, TimeProvider time, CancellationToken ct)
    {
        var links = await db.Links.AsNoTracking().Select(l => new CauseEffectLink(l.CauseId.ToString(System.Globalization.CultureInfo.InvariantCulture), l.EffectId.ToString(System.Globalization.CultureInfo.InvariantCulture))).ToListAsync(ct);
        var proposed = new CauseEffectLink(cause.Id.ToString(System.Globalization.CultureInfo.InvariantCulture), effect.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (links.Contains(proposed))
        {
            return Problems.Error(409, "LINK_EXISTS", "These objectives are already linked.");
        }

        // Counted here, where links are drawn one at a time: two links drawn at once cannot both take an objective's last
        // place.
        foreach (var (objective, id) in new[] { (cause, proposed.Cause), (effect, proposed.Effect) })
        {
            var count = links.Count(l => l.Cause == id || l.Effect == id);
            if (count >= limits.LinksPerObjective)
            {
                return Limits.Reached($"An objective has at most {limits.LinksPerObjective:N0} cause→effect links, as cause and effect together; \"{objective.Name}\" has {count:N0}.");
            }
        }

        if (StrategyMap.CycleThrough(links, proposed) is [_, ..] loop)
        {
            return Problems.Error(409, "CYCLE", $"The link would close a loop: {string.Join(" → ", loop)} → {loop[0]}. Cause→effect links never form a cycle.", loop);
        }

        var link = new ObjectiveLink { CauseId = cause.Id, EffectId = effect.Id };
        db.Links.Add(link);
        db.AddAudit(person.Id, "link.created", $"objective/{effect.Id}", new { cause = cause.Id, effect = effect.Id }, time.GetUtcNow());
        await db.SaveChangesAsync(ct);
        return Results.Created($"/api/links/{link.Id}", link);
    }

    private static async Task<IResult> StrategyMapAsync(StrategyDb db, Scorecards scorecards, int? period, int? unit, CancellationToken ct)
    {
        if (await PeriodAsync(db, period, ct) is not { } p || await scorecards.ComputeAsync(p.Id) is not { } scores)
        {
            return Problems.NotFound("No such period.");
        }

        var unitId = unit ?? scores.Units.First(u => u.ParentId is null).Id;
        var objectives = scores.Objectives.Where(o => o.UnitId == unitId).Select(o => new
        {
            o.Id, o.Name, o.Perspective, scores.Cascade.Objectives[o.Id].Score, scores.Cascade.Objectives[o.Id].Color,
        }).ToList();
        var ids = objectives.Select(o => o.Id).ToHashSet();
        var links = await db.Links.AsNoTracking().ToListAsync(ct);
        return Results.Ok(new { UnitId = unitId, Objectives = objectives, Links = links.Where(l => ids.Contains(l.CauseId) && ids.Contains(l.EffectId)).Select(l => new { l.CauseId, l.EffectId }) });
    }

    private static async Task<IResult> HealthAsync(StrategyDb db, int? period, int? unit, CancellationToken ct)
    {
        if (await PeriodAsync(db, period, ct) is not { } p)
        {
            return Problems.NotFound("No such period.");
        }

        var units = await db.Units.AsNoTracking().ToListAsync(ct);
        var root = unit ?? units.First(u => u.ParentId is null).Id;
        if (units.All(u => u.Id != root))
        {
            return Problems.NotFound("No such unit.");
        }

        var scope = Checks.Subtree(units, root);
        var companyId = units.First(u => u.ParentId is null).Id;
        var objectives = await db.Objectives.AsNoTracking().Where(o => o.PeriodId == p.Id).ToListAsync(ct);
        objectives = objectives.Where(o => scope.Contains(o.UnitId)).ToList();
        var objectiveIds = objectives.Select(o => o.Id).ToHashSet();
        var measures = (await db.Measures.AsNoTracking().ToListAsync(ct)).Where(m => objectiveIds.Contains(m.ObjectiveId)).ToList();
        var targeted = (await db.Targets.AsNoTracking().Where(t => t.PeriodId == p.Id).Select(t => t.MeasureId).ToListAsync(ct)).ToHashSet();
        var measured = measures.Select(m => m.ObjectiveId).ToHashSet();
        var unitOf = objectives.ToDictionary(o => o.Id, o => o.UnitId);

        var items = new List<HealthItem>();
        items.AddRange(objectives.Where(o => o.UnitId != companyId && o.ParentObjectiveId is null && o.StandaloneReason is null)
            .Select(o => new HealthItem("orphan", o.Id, o.Name, o.UnitId, "Aligned to nothing: align it to a parent objective, or mark it standalone with a reason.")));
        items.AddRange(objectives.Where(o => !measured.Contains(o.Id))
            .Select(o => new HealthItem("objective-without-measures", o.Id, o.Name, o.UnitId, "No measure: nothing says whether it is achieved.")));
        items.AddRange(measures.Where(m => !targeted.Contains(m.Id))
            .Select(m => new HealthItem("measure-without-target", m.Id, m.Name, unitOf[m.ObjectiveId], $"No target for {p.Name}: it cannot be scored.")));
        var initiatives = (await db.Initiatives.AsNoTracking().Where(i => i.PeriodId == p.Id).ToListAsync(ct)).Where(i => scope.Contains(i.UnitId)).ToList();
        var linked = (await db.InitiativeLinks.AsNoTracking().Select(l => l.InitiativeId).Distinct().ToListAsync(ct)).ToHashSet();
        items.AddRange(initiatives.Where(i => !linked.Contains(i.Id))
            .Select(i => new HealthItem("initiative-unlinked", i.Id, i.Name, i.UnitId, "Linked to no objective or measure: nothing says what it is for.")));
        if (root == companyId)
        {
            var unlinkedSpend = await db.Spend.AsNoTracking().Where(x => x.PeriodId == p.Id && x.InitiativeId == null).OrderBy(x => x.Id).ToListAsync(ct);
            items.AddRange(unlinkedSpend.Select(x => new HealthItem("spend-unlinked", x.Id, x.Description, companyId, $"{x.Amount:N2} spent on {x.On:yyyy-MM-dd} on no initiative: not linked to strategy.")));
        }

        return Results.Ok(new { UnitId = root, PeriodId = p.Id, Items = items });
    }

    private static async Task<Period?> PeriodAsync(StrategyDb db, int? period, CancellationToken ct)
        => period is { } id
            ? await db.Periods.AsNoTracking().FirstOrDefaultAsync(p => p.Id == id, ct)
            : await db.Periods.AsNoTracking().Where(p => p.Status == PeriodStatus.Active).OrderByDescending(p => p.Start).FirstOrDefaultAsync(ct);
}
