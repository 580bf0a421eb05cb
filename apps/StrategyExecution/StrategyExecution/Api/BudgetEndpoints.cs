using Microsoft.EntityFrameworkCore;
using StrategyExecution.Budgets;
using StrategyExecution.Data;

namespace StrategyExecution.Api;

/// <summary>The body of <c>POST /api/pools/{id}/allocations</c>.</summary>
public sealed record AllocateRequest(int? InitiativeId, decimal? Amount);

/// <summary>The body of <c>POST /api/pools/{id}/releases</c>.</summary>
public sealed record ReleaseRequest(decimal? Amount, string? Reason);

/// <summary>The body of <c>POST /api/spend</c>.</summary>
public sealed record SpendRequest(int? InitiativeId, decimal? Amount, DateOnly? On, string? Description);

/// <summary>The body of <c>POST /api/initiatives</c>.</summary>
public sealed record CreateInitiativeRequest(int? UnitId, string? Name, IReadOnlyList<int>? ObjectiveIds, IReadOnlyList<int>? MeasureIds);

/// <summary>The body of <c>POST /api/initiatives/{id}/milestones</c>.</summary>
public sealed record MilestoneRequest(string? Name, DateOnly? Due);

/// <summary>A pool with what is allocated from it.</summary>
public sealed record PoolView(int Id, string Name, int ThemeId, decimal Amount, decimal Allocated, decimal Available, bool Ringfenced);

/// <summary>An initiative's money and progress.</summary>
public sealed record InitiativeView(
    int Id, string Name, int UnitId, IReadOnlyList<int> ObjectiveIds, IReadOnlyList<int> MeasureIds, decimal Allocated, decimal Spent,
    BudgetVariance Variance, EarnedValueResult EarnedValue, int Milestones, int MilestonesDue, int MilestonesDone, IReadOnlyList<Milestone> Plan);

/// <summary>Step 3, ringfence: pools, allocations that never exceed them, spend, variance and earned value, approved releases.</summary>
public static class BudgetEndpoints
{
    private const decimal MaxAmount = 1_000_000_000_000m;

    // Allocation and release decisions read the pool's allocations and write one more: one at a time, so two decisions
    // can never both see the same room. Within a process by a semaphore; across processes sharing the database by a
    // transaction that holds the database's write lock from its start (SQLite) or an advisory lock (PostgreSQL).
    private static readonly SemaphoreSlim Decisions = new(1, 1);

    /// <summary>The advisory lock a PostgreSQL transaction making an allocation or release decision holds.</summary>
    private const int DecisionLock = 5107;

    /// <summary>Runs one allocation or release decision at a time, in one transaction, and tells the audit trail after.</summary>
    private static async Task<IResult> DecideAsync(StrategyDb db, Live.AuditTrail audit, Func<Task<IResult>> decide, CancellationToken ct)
    {
        await Decisions.WaitAsync(ct);
        try
        {
            await using var transaction = await db.Database.BeginTransactionAsync(ct);
            if (db.Database.IsNpgsql())
            {
                await db.Database.ExecuteSqlAsync($"SELECT pg_advisory_xact_lock({DecisionLock})", ct);
            }

            var result = await decide();

            // Not cancelled half way: once the decision is written, the commit decides, not the client leaving.
            await transaction.CommitAsync(CancellationToken.None);
            if (result is IStatusCodeHttpResult { StatusCode: >= 200 and < 300 })
            {
                audit.Notify();
            }

            return result;
        }
        finally
        {
            Decisions.Release();
        }
    }

    /// <summary>Maps the budget API under <c>/api</c>.</summary>
    public static RouteGroupBuilder MapBudgetApi(this RouteGroupBuilder api)
    {
        ArgumentNullException.ThrowIfNull(api);
        api.MapGet("/budgets", BudgetsAsync);
        api.MapPost("/pools/{id:int}/allocations", AllocateAsync);
        api.MapPost("/pools/{id:int}/releases", ReleaseAsync);
        api.MapPost("/releases/{id:int}/approve", ApproveAsync);
        api.MapPost("/spend", SpendAsync);
        api.MapPost("/initiatives", CreateInitiativeAsync);
        api.MapPost("/initiatives/{id:int}/milestones", AddMilestoneAsync);
        api.MapPost("/milestones/{id:int}/done", MilestoneDoneAsync);
        return api;
    }

    private static async Task<IResult> BudgetsAsync(StrategyDb db, TimeProvider time, int? period, CancellationToken ct)
    {
        var p = period is { } id
            ? await db.Periods.AsNoTracking().FirstOrDefaultAsync(x => x.Id == id, ct)
            : await db.Periods.AsNoTracking().Where(x => x.Status == PeriodStatus.Active).OrderByDescending(x => x.Start).FirstOrDefaultAsync(ct);
        if (p is null)
        {
            return Problems.NotFound("No such period.");
        }

        var today = DateOnly.FromDateTime(time.GetUtcNow().UtcDateTime);
        var pools = await db.Pools.AsNoTracking().Where(x => x.PeriodId == p.Id).OrderBy(x => x.Id).ToListAsync(ct);
        var initiatives = await db.Initiatives.AsNoTracking().Where(x => x.PeriodId == p.Id).OrderBy(x => x.Id).ToListAsync(ct);
        var ids = initiatives.Select(i => i.Id).ToHashSet();
        // Amounts are summed here, not in SQL: SQLite keeps decimals as text.
        var allocations = (await db.Allocations.AsNoTracking().ToListAsync(ct)).Where(a => ids.Contains(a.InitiativeId)).ToList();
        var spend = await db.Spend.AsNoTracking().Where(s => s.PeriodId == p.Id).ToListAsync(ct);
        var links = (await db.InitiativeLinks.AsNoTracking().ToListAsync(ct)).Where(l => ids.Contains(l.InitiativeId)).ToLookup(l => l.InitiativeId);
        var milestones = (await db.Milestones.AsNoTracking().ToListAsync(ct)).Where(m => ids.Contains(m.InitiativeId)).ToLookup(m => m.InitiativeId);
        var spentBy = spend.Where(s => s.InitiativeId is not null).GroupBy(s => s.InitiativeId!.Value).ToDictionary(g => g.Key, g => g.Sum(s => s.Amount));

        var views = initiatives.Select(i =>
        {
            var allocated = allocations.Where(a => a.InitiativeId == i.Id).Sum(a => a.Amount);
            var spent = spentBy.GetValueOrDefault(i.Id);
            var ms = milestones[i.Id].ToList();
            var due = ms.Count(m => m.Due <= today);
            var done = ms.Count(m => m.DoneOn is not null);
            var ev = EarnedValueResult.Compute(allocated, ms.Count == 0 ? 0 : (double)due / ms.Count, ms.Count == 0 ? 0 : (double)done / ms.Count, spent);
            return new InitiativeView(i.Id, i.Name, i.UnitId, links[i.Id].Where(l => l.ObjectiveId is not null).Select(l => l.ObjectiveId!.Value).ToList(),
                links[i.Id].Where(l => l.MeasureId is not null).Select(l => l.MeasureId!.Value).ToList(), allocated, spent, BudgetVariance.Of(allocated, spent), ev, ms.Count, due, done, ms.OrderBy(m => m.Due).ThenBy(m => m.Id).ToList());
        }).ToList();
        var poolViews = pools.Select(x =>
        {
            var allocated = allocations.Where(a => a.PoolId == x.Id).Sum(a => a.Amount);
            return new PoolView(x.Id, x.Name, x.ThemeId, x.Amount, allocated, x.Amount - allocated, x.Ringfenced);
        }).ToList();
        var poolIds = pools.Select(x => x.Id).ToHashSet();
        var releases = (await db.Releases.AsNoTracking().OrderBy(r => r.Id).ToListAsync(ct)).Where(r => poolIds.Contains(r.PoolId)).ToList();
        return Results.Ok(new
        {
            PeriodId = p.Id,
            Pools = poolViews,
            Initiatives = views,
            UnlinkedSpend = spend.Where(s => s.InitiativeId is null).OrderBy(s => s.On).ToList(),
            Releases = releases,
        });
    }

    private static async Task<IResult> AllocateAsync(int id, HttpContext context, Acting acting, StrategyDb db, Limits limits, TimeProvider time, Live.AuditTrail audit, CancellationToken ct)
    {
        var (request, error) = await JsonBody.ReadAuthoredAsync<AllocateRequest>(context, acting, ct);
        if (error is not null)
        {
            return error;
        }

        var (person, body) = request!;
        if (AmountProblem(body.Amount) is { } problem)
        {
            return Problems.Error(400, "INVALID_ALLOCATION", "The allocation cannot be made.", [problem]);
        }

        if (!await acting.HasCompanyRoleAsync(person, Role.Owner, ct))
        {
            return Problems.Forbidden("Allocating strategic funds needs the owner or admin role on the company.");
        }

        return await DecideAsync(db, audit, async () =>
        {
            var pool = await db.Pools.AsNoTracking().FirstOrDefaultAsync(x => x.Id == id, ct);
            if (pool is null)
            {
                return Problems.NotFound("No such pool.");
            }

            if (await Checks.LockedAsync(db, pool.PeriodId, ct) is { } locked)
            {
                return locked;
            }

            db.WritesInto(pool.PeriodId);
            var initiative = body.InitiativeId is { } initiativeId ? await db.Initiatives.AsNoTracking().FirstOrDefaultAsync(i => i.Id == initiativeId, ct) : null;
            if (initiative is null || initiative.PeriodId != pool.PeriodId)
            {
                return Problems.Error(400, "INVALID_ALLOCATION", "The allocation cannot be made.", ["initiativeId must name an initiative of the pool's period."]);
            }

            var amounts = await db.Allocations.AsNoTracking().Where(a => a.PoolId == id).Select(a => a.Amount).ToListAsync(ct);
            if (amounts.Count >= limits.AllocationsPerPool)
            {
                return Limits.Reached($"A pool makes at most {limits.AllocationsPerPool:N0} allocations; \"{pool.Name}\" has made {amounts.Count:N0}.");
            }

            var allocated = amounts.Sum();
            var decision = RingfencedPool.Allocate(pool.Amount, allocated, body.Amount!.Value);
            if (!decision.Allowed)
            {
                return Results.Json(new Problems.ErrorBody(new Problems.ErrorDetail("OVER_ALLOCATED", decision.Reason!)), statusCode: 409);
            }

            var allocation = new Allocation { PoolId = id, InitiativeId = initiative.Id, Amount = body.Amount.Value };
            db.Allocations.Add(allocation);
            db.AddAudit(person.Id, "allocation.made", $"pool/{id}", new { poolId = id, initiativeId = initiative.Id, amount = body.Amount.Value, availableBefore = decision.Available }, time.GetUtcNow());
            await db.SaveChangesAsync(ct);
            return Results.Created($"/api/pools/{id}/allocations", new { allocation.Id, allocation.PoolId, allocation.InitiativeId, allocation.Amount, Available = decision.Available - allocation.Amount });
        }, ct);
    }

    private static async Task<IResult> ReleaseAsync(int id, HttpContext context, Acting acting, StrategyDb db, Limits limits, TimeProvider time, Live.AuditTrail audit, CancellationToken ct)
    {
        var (request, error) = await JsonBody.ReadAuthoredAsync<ReleaseRequest>(context, acting, ct);
        if (error is not null)
        {
            return error;
        }

        var (person, body) = request!;
        var problems = new List<string>();
        if (AmountProblem(body.Amount) is { } problem)
        {
            problems.Add(problem);
        }

        if (string.IsNullOrWhiteSpace(body.Reason) || body.Reason.Length > 500)
        {
            problems.Add("reason must be 1 to 500 characters.");
        }

        if (problems.Count > 0)
        {
            return Problems.Error(400, "INVALID_RELEASE", "The money cannot be moved.", problems);
        }

        if (!await acting.HasCompanyRoleAsync(person, Role.Owner, ct))
        {
            return Problems.Forbidden("Moving strategic funds needs the owner or admin role on the company.");
        }

        return await DecideAsync(db, audit, async () =>
        {
            var pool = await db.Pools.FirstOrDefaultAsync(x => x.Id == id, ct);
            if (pool is null)
            {
                return Problems.NotFound("No such pool.");
            }

            if (await Checks.LockedAsync(db, pool.PeriodId, ct) is { } locked)
            {
                return locked;
            }

            var releases = await db.Releases.CountAsync(r => r.PoolId == id, ct);
            if (releases >= limits.ReleasesPerPool)
            {
                return Limits.Reached($"A pool takes at most {limits.ReleasesPerPool:N0} releases, applied or waiting for approval; \"{pool.Name}\" has {releases:N0}.");
            }

            db.WritesInto(pool.PeriodId);
            var allocated = (await db.Allocations.AsNoTracking().Where(a => a.PoolId == id).Select(a => a.Amount).ToListAsync(ct)).Sum();
            var decision = RingfencedPool.Release(pool.Amount, allocated, body.Amount!.Value, pool.Ringfenced, approved: false);
            if (!decision.Allowed && !decision.NeedsApproval)
            {
                return Problems.Error(409, "NOT_AVAILABLE", decision.Reason!);
            }

            var release = new PoolRelease { PoolId = id, Amount = body.Amount.Value, Reason = body.Reason!.Trim(), RequestedBy = person.Id, Applied = decision.Allowed };
            if (decision.Allowed)
            {
                pool.Amount -= release.Amount;
            }

            db.Releases.Add(release);
            db.AddAudit(person.Id, decision.Allowed ? "release.applied" : "release.requested", $"pool/{id}", new { poolId = id, amount = release.Amount, release.Reason }, time.GetUtcNow());
            await db.SaveChangesAsync(ct);
            return decision.Allowed
                ? Results.Created($"/api/releases/{release.Id}", release)
                : Results.Json(new { release, NeedsApproval = true, Message = decision.Reason }, statusCode: 202);
        }, ct);
    }

    private static async Task<IResult> ApproveAsync(int id, HttpContext context, Acting acting, StrategyDb db, TimeProvider time, Live.AuditTrail audit, CancellationToken ct)
    {
        var person = await acting.SignedInAsync(context, ct);

        if (!await acting.HasCompanyRoleAsync(person, Role.Admin, ct))
        {
            return Problems.Forbidden("Approving a release from a ringfenced pool needs the admin role on the company.");
        }

        return await DecideAsync(db, audit, async () =>
        {
            var release = await db.Releases.FirstOrDefaultAsync(r => r.Id == id, ct);
            if (release is null)
            {
                return Problems.NotFound("No such release.");
            }

            if (release.Applied)
            {
                return Problems.Error(409, "ALREADY_APPLIED", "This release has already been applied.");
            }

            if (release.RequestedBy == person.Id)
            {
                return Problems.Forbidden("A release is approved by someone other than who asked for it.");
            }

            var pool = await db.Pools.FirstAsync(x => x.Id == release.PoolId, ct);
            if (await Checks.LockedAsync(db, pool.PeriodId, ct) is { } locked)
            {
                return locked;
            }

            db.WritesInto(pool.PeriodId);
            var allocated = (await db.Allocations.AsNoTracking().Where(a => a.PoolId == pool.Id).Select(a => a.Amount).ToListAsync(ct)).Sum();
            var decision = RingfencedPool.Release(pool.Amount, allocated, release.Amount, pool.Ringfenced, approved: true);
            if (!decision.Allowed)
            {
                return Problems.Error(409, "NOT_AVAILABLE", decision.Reason!);
            }

            (release.ApprovedBy, release.Applied) = (person.Id, true);
            pool.Amount -= release.Amount;
            db.AddAudit(person.Id, "release.approved", $"pool/{pool.Id}", new { releaseId = id, poolId = pool.Id, amount = release.Amount }, time.GetUtcNow());
            await db.SaveChangesAsync(ct);
            return Results.Ok(release);
        }, ct);
    }

    private static async Task<IResult> SpendAsync(HttpContext context, Acting acting, StrategyDb db, Limits limits, TimeProvider time, Live.AuditTrail audit, CancellationToken ct)
    {
        var (request, error) = await JsonBody.ReadAuthoredAsync<SpendRequest>(context, acting, ct);
        if (error is not null)
        {
            return error;
        }

        var (person, body) = request!;
        var problems = new List<string>();
        if (AmountProblem(body.Amount) is { } problem)
        {
            problems.Add(problem);
        }

        if (body.On is null)
        {
            problems.Add("on must be a date, yyyy-MM-dd.");
        }
        else if (body.On > DateOnly.FromDateTime(time.GetUtcNow().UtcDateTime).AddDays(1))
        {
            // Spend is money spent: a day still to come is a mistake (a day ahead is allowed for time zones east of UTC).
            problems.Add("on must not be later than today: spend is recorded once the money is spent.");
        }

        if (string.IsNullOrWhiteSpace(body.Description) || body.Description.Length > 300)
        {
            problems.Add("description must be 1 to 300 characters.");
        }

        var initiative = body.InitiativeId is { } initiativeId ? await db.Initiatives.AsNoTracking().FirstOrDefaultAsync(i => i.Id == initiativeId, ct) : null;
        if (body.InitiativeId is not null && initiative is null)
        {
            problems.Add("initiativeId must name an initiative.");
        }

        var period = body.On is { } on ? await db.Periods.AsNoTracking().FirstOrDefaultAsync(p => p.Start <= on && p.End >= on, ct) : null;
        if (body.On is not null && (period is null || (initiative is not null && initiative.PeriodId != period.Id)))
        {
            problems.Add("on must fall in a period (the initiative's, for initiative spend).");
        }

        if (problems.Count > 0)
        {
            return Problems.Error(400, "INVALID_SPEND", "The spend cannot be recorded.", problems);
        }

        var unit = initiative?.UnitId ?? await CompanyAsync(db, ct);
        if (!await acting.HasRoleAsync(person, unit, initiative is null ? Role.Owner : Role.Updater, ct))
        {
            return Problems.Forbidden("Recording spend needs the updater role on the initiative's unit (owner on the company for spend on no initiative).");
        }

        if (period!.Status == PeriodStatus.Locked)
        {
            return Problems.Error(409, "PERIOD_LOCKED", $"{period.Name} is locked.");
        }

        // An initiative's spend is in its own period: both counts read the (period, initiative) index.
        if (initiative is not null)
        {
            var entries = await db.Spend.CountAsync(x => x.PeriodId == period.Id && x.InitiativeId == initiative.Id, ct);
            if (entries >= limits.SpendPerInitiative)
            {
                return Limits.Reached($"An initiative has at most {limits.SpendPerInitiative:N0} spend entries; \"{initiative.Name}\" has {entries:N0}.");
            }
        }
        else
        {
            var entries = await db.Spend.CountAsync(x => x.PeriodId == period.Id && x.InitiativeId == null, ct);
            if (entries >= limits.UnlinkedSpendPerPeriod)
            {
                return Limits.Reached($"A period has at most {limits.UnlinkedSpendPerPeriod:N0} spend entries on no initiative; {period.Name} has {entries:N0}.");
            }
        }

        db.WritesInto(period.Id);

        var spend = new Spend { InitiativeId = initiative?.Id, PeriodId = period.Id, Amount = body.Amount!.Value, On = body.On!.Value, Description = body.Description!.Trim() };
        db.Spend.Add(spend);
        db.AddAudit(person.Id, "spend.recorded", initiative is null ? "spend/unlinked" : $"initiative/{initiative.Id}", new { initiativeId = initiative?.Id, amount = spend.Amount, on = spend.On, spend.Description }, time.GetUtcNow());
        await db.SaveChangesAsync(ct);
        audit.Notify();
        return Results.Created($"/api/spend/{spend.Id}", spend);
    }

    private static async Task<IResult> CreateInitiativeAsync(HttpContext context, Acting acting, StrategyDb db, Limits limits, TimeProvider time, Live.AuditTrail audit, CancellationToken ct)
    {
        var (request, error) = await JsonBody.ReadAuthoredAsync<CreateInitiativeRequest>(context, acting, ct);
        if (error is not null)
        {
            return error;
        }

        var (person, body) = request!;
        var problems = new List<string>();
        var unit = await Checks.UnitAsync(db, body.UnitId, problems, ct);
        var name = Checks.Name(body.Name, problems);

        var period = await db.Periods.AsNoTracking().Where(p => p.Status == PeriodStatus.Active).OrderByDescending(p => p.Start).FirstOrDefaultAsync(ct);
        if (period is null)
        {
            problems.Add("there is no active period.");
        }

        // An initiative belongs to the active period: what it serves must be of that period too.
        var objectiveIds = body.ObjectiveIds?.Distinct().ToList() ?? [];
        var measureIds = body.MeasureIds?.Distinct().ToList() ?? [];
        var periodId = period?.Id ?? 0;
        if (objectiveIds.Count + measureIds.Count > 100)
        {
            problems.Add("an initiative links to at most 100 objectives and measures.");
        }
        else if (await db.Objectives.CountAsync(o => objectiveIds.Contains(o.Id) && o.PeriodId == periodId, ct) != objectiveIds.Count
            || await db.Measures.CountAsync(m => measureIds.Contains(m.Id) && db.Objectives.Any(o => o.Id == m.ObjectiveId && o.PeriodId == periodId), ct) != measureIds.Count)
        {
            problems.Add("objectiveIds and measureIds must name objectives and measures of the active period.");
        }

        if (problems.Count > 0)
        {
            return Problems.Error(400, "INVALID_INITIATIVE", "The initiative cannot be created.", problems);
        }

        if (!await acting.HasRoleAsync(person, unit!.Id, Role.Owner, ct))
        {
            return Problems.Forbidden("Creating initiatives needs the owner or admin role on the unit or a unit above it.");
        }

        var initiatives = await db.Initiatives.CountAsync(i => i.UnitId == unit.Id && i.PeriodId == period!.Id, ct);
        if (initiatives >= limits.InitiativesPerUnitAndPeriod)
        {
            return Limits.Reached($"A unit runs at most {limits.InitiativesPerUnitAndPeriod:N0} initiatives per period; {unit.Name} has {initiatives:N0} in {period!.Name}.");
        }

        db.WritesInto(period!.Id);
        await using var transaction = await db.Database.BeginTransactionAsync(ct);
        var initiative = new Initiative { UnitId = unit.Id, PeriodId = period.Id, Name = name };
        db.Initiatives.Add(initiative);
        await db.SaveChangesAsync(ct);
        db.InitiativeLinks.AddRange(objectiveIds.Select(o => new InitiativeLink { InitiativeId = initiative.Id, ObjectiveId = o }));
        db.InitiativeLinks.AddRange(measureIds.Select(m => new InitiativeLink { InitiativeId = initiative.Id, MeasureId = m }));
        db.AddAudit(person.Id, "initiative.created", $"initiative/{initiative.Id}", new { initiative.Id, unitId = unit.Id, initiative.Name, objectiveIds, measureIds }, time.GetUtcNow());
        await db.SaveChangesAsync(ct);
        await transaction.CommitAsync(ct);
        audit.Notify();
        return Results.Created($"/api/initiatives/{initiative.Id}", initiative);
    }

    private static async Task<IResult> AddMilestoneAsync(int id, HttpContext context, Acting acting, StrategyDb db, Limits limits, TimeProvider time, Live.AuditTrail audit, CancellationToken ct)
    {
        var (request, error) = await JsonBody.ReadAuthoredAsync<MilestoneRequest>(context, acting, ct);
        if (error is not null)
        {
            return error;
        }

        var (person, body) = request!;
        var initiative = await db.Initiatives.AsNoTracking().FirstOrDefaultAsync(i => i.Id == id, ct);
        if (initiative is null)
        {
            return Problems.NotFound("No such initiative.");
        }

        var problems = new List<string>();
        var name = Checks.Name(body.Name, problems);
        var period = await db.Periods.AsNoTracking().FirstAsync(p => p.Id == initiative.PeriodId, ct);
        if (body.Due is not { } due || due < period.Start || due > period.End)
        {
            problems.Add($"due must be a date in {period.Name}, yyyy-MM-dd.");
        }

        if (problems.Count > 0)
        {
            return Problems.Error(400, "INVALID_MILESTONE", "The milestone cannot be added.", problems);
        }

        if (!await acting.HasRoleAsync(person, initiative.UnitId, Role.Owner, ct))
        {
            return Problems.Forbidden("Planning an initiative's milestones needs the owner role on its unit or a unit above it.");
        }

        if (period.Status == PeriodStatus.Locked)
        {
            return Problems.Error(409, "PERIOD_LOCKED", $"{period.Name} is locked: nothing in it changes any more.");
        }

        var milestones = await db.Milestones.CountAsync(m => m.InitiativeId == id, ct);
        if (milestones >= limits.MilestonesPerInitiative)
        {
            return Limits.Reached($"An initiative has at most {limits.MilestonesPerInitiative:N0} milestones; \"{initiative.Name}\" has {milestones:N0}.");
        }

        db.WritesInto(period.Id);

        var milestone = new Milestone { InitiativeId = id, Name = name, Due = body.Due!.Value };
        await db.AddAuditedAsync(milestone, person.Id, "milestone.added", () => $"initiative/{id}", () => new { milestone.Id, initiativeId = id, milestone.Name, milestone.Due }, time.GetUtcNow(), ct);
        audit.Notify();
        return Results.Created($"/api/milestones/{milestone.Id}", milestone);
    }

    private static async Task<IResult> MilestoneDoneAsync(int id, HttpContext context, Acting acting, StrategyDb db, TimeProvider time, Live.AuditTrail audit, CancellationToken ct)
    {
        var person = await acting.SignedInAsync(context, ct);

        var milestone = await db.Milestones.FirstOrDefaultAsync(m => m.Id == id, ct);
        if (milestone is null)
        {
            return Problems.NotFound("No such milestone.");
        }

        var initiative = await db.Initiatives.AsNoTracking().FirstAsync(i => i.Id == milestone.InitiativeId, ct);
        if (!await acting.HasRoleAsync(person, initiative.UnitId, Role.Updater, ct))
        {
            return Problems.Forbidden("Marking milestones done needs the updater role on the initiative's unit or a unit above it.");
        }

        if (await Checks.LockedAsync(db, initiative.PeriodId, ct) is { } locked)
        {
            return locked;
        }

        db.WritesInto(initiative.PeriodId);

        // Marked done only if it is not yet, in the same statement: of two requests at once, one marks it and the other
        // finds it done, so it is audited once.
        var today = DateOnly.FromDateTime(time.GetUtcNow().UtcDateTime);
        await using var transaction = await db.Database.BeginTransactionAsync(ct);
        if (milestone.DoneOn is not null
            || await db.Milestones.Where(m => m.Id == id && m.DoneOn == null).ExecuteUpdateAsync(m => m.SetProperty(x => x.DoneOn, today), ct) == 0)
        {
            return Problems.Error(409, "ALREADY_DONE", "The milestone is already done.");
        }

        // Written by the statement above: the entity answered with shows it, and the save below does not write it again.
        db.Entry(milestone).State = EntityState.Detached;
        milestone.DoneOn = today;
        db.AddAudit(person.Id, "milestone.done", $"initiative/{initiative.Id}", new { milestoneId = id, initiativeId = initiative.Id }, time.GetUtcNow());
        await db.SaveChangesAsync(ct);
        await transaction.CommitAsync(ct);
        audit.Notify();
        return Results.Ok(milestone);
    }

    private static string? AmountProblem(decimal? amount) => amount switch
    {
        null => "amount is required.",
        <= 0 => "amount must be more than 0.",
        > MaxAmount => "amount must be at most 1,000,000,000,000.",
        { } a when decimal.Round(a, 2) != a => "amount has at most two decimals.",
        _ => null,
    };

    private static Task<int> CompanyAsync(StrategyDb db, CancellationToken ct)
        => db.Units.AsNoTracking().Where(u => u.ParentId == null).Select(u => u.Id).FirstAsync(ct);
}
