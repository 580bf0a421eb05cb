using Microsoft.EntityFrameworkCore;
using StrategyExecution.Data;
using StrategyExecution.Incentives;
using StrategyExecution.Live;
using StrategyExecution.Scoring;

namespace StrategyExecution.Api;

/// <summary>The body of <c>POST /api/incentives/simulate</c>: a what-if with scores of your choosing.</summary>
public sealed record SimulateRequest(PayoutCurve? Curve, decimal? TargetIncentive, IReadOnlyList<SimulatedComponent>? Components);

/// <summary>A component of a simulation.</summary>
public sealed record SimulatedComponent(string? Id, double? Weight, double? Score);

/// <summary>A participant's payout: computed from the current scores, or frozen when the period was locked.</summary>
public sealed record ParticipantPayout(int PersonId, string Name, decimal TargetIncentive, double PayoutFraction, decimal Amount, bool Frozen);

/// <summary>
/// Step 4, incentives: plans whose components are weighted measures or objectives, paid on a payout curve; a simulator;
/// and the period's lock, which freezes every plan's results.
/// </summary>
public static class IncentiveEndpoints
{
    /// <summary>Maps the incentive and period API under <c>/api</c>.</summary>
    public static RouteGroupBuilder MapIncentiveApi(this RouteGroupBuilder api)
    {
        ArgumentNullException.ThrowIfNull(api);
        api.MapGet("/incentives", PlansAsync);
        api.MapPost("/incentives/simulate", Simulate);
        api.MapPost("/periods/{id:int}/lock", LockAsync);
        return api;
    }

    private static async Task<IResult> PlansAsync(HttpContext context, Acting acting, StrategyDb db, Scorecards scorecards, CancellationToken ct)
    {
        // What a plan pays for is for everyone to see; what each person earns is theirs and the admins' alone.
        var person = await acting.SignedInAsync(context, ct);
        var everyone = await acting.HasCompanyRoleAsync(person, Role.Admin, ct);
        var plans = await db.Plans.AsNoTracking().OrderBy(p => p.Id).ToListAsync(ct);
        var result = new List<object>();
        foreach (var plan in plans)
        {
            var (components, payouts) = await ResultsAsync(db, scorecards, plan, ct);
            result.Add(new { plan.Id, plan.Name, plan.PeriodId, plan.Curve, Components = components, Participants = everyone ? payouts : payouts.FindAll(p => p.PersonId == person.Id) });
        }

        return Results.Ok(result);
    }

    /// <summary>The plan's components with their current scores, and every participant's payout (frozen ones as frozen).</summary>
    private static async Task<(List<IncentiveComponent> Components, List<ParticipantPayout> Payouts)> ResultsAsync(StrategyDb db, Scorecards scorecards, IncentivePlan plan, CancellationToken ct)
    {
        var scores = (await scorecards.ComputeAsync(plan.PeriodId))!;
        var components = (await db.PlanComponents.AsNoTracking().Where(c => c.PlanId == plan.Id).OrderBy(c => c.Id).ToListAsync(ct)).Select(c => new IncentiveComponent(
            c.ObjectiveId is { } o ? $"objective/{o}" : $"measure/{c.MeasureId}",
            c.Weight,
            c.ObjectiveId is { } objective ? scores.Cascade.Objectives.GetValueOrDefault(objective)?.Score : scores.MeasureScores.GetValueOrDefault(c.MeasureId ?? 0))).ToList();
        var participants = await (from p in db.Participants.AsNoTracking()
                                  join person in db.People.AsNoTracking() on p.PersonId equals person.Id
                                  where p.PlanId == plan.Id
                                  orderby p.Id
                                  select new { p, person.Name }).ToListAsync(ct);
        var payouts = participants.Select(x =>
        {
            if (x.p.FrozenFraction is { } fraction)
            {
                return new ParticipantPayout(x.p.PersonId, x.Name, x.p.TargetIncentive, fraction, x.p.FrozenAmount!.Value, Frozen: true);
            }

            var live = components.Count == 0 ? null : IncentiveCalculator.Calculate(plan.Curve, x.p.TargetIncentive, components);
            return new ParticipantPayout(x.p.PersonId, x.Name, x.p.TargetIncentive, live?.PayoutFraction ?? 0, live?.Amount ?? 0, Frozen: false);
        }).ToList();
        return (components, payouts);
    }

    private static async Task<IResult> Simulate(HttpRequest request, CancellationToken ct)
    {
        // Read with the app's bound (JsonBody.MaxBytes), not bound by the framework: its 30 MB would let one request hold
        // millions of components before their count is checked.
        var (body, error) = await JsonBody.ReadAsync<SimulateRequest>(request, ct);
        if (error is not null)
        {
            return error;
        }

        var problems = new List<string>();
        var curve = body?.Curve ?? PayoutCurve.Default;
        problems.AddRange(curve.Validate());
        var components = body?.Components ?? [];
        if (components.Count is 0 or > 50)
        {
            problems.Add("components must list 1 to 50 components.");
        }

        if (components.Any(c => c is null))
        {
            problems.Add("every component must be an object with a weight.");
        }
        else
        {
            if (components.Any(c => c.Weight is not { } w || !double.IsFinite(w) || w <= 0 || w > ScoreScale.MaxWeight))
            {
                problems.Add($"every component needs a weight above 0, at most {ScoreScale.MaxWeight:0}.");
            }

            if (components.Any(c => c.Score is { } s && (!double.IsFinite(s) || s < 0)))
            {
                problems.Add("a score is a number of at least 0, or left out for no score.");
            }
        }

        if (body?.TargetIncentive is not { } target || target < 0 || target > 1_000_000_000m)
        {
            problems.Add("targetIncentive must be an amount from 0 to 1000000000.");
        }

        if (problems.Count > 0)
        {
            return Problems.Error(400, "INVALID_SIMULATION", "The simulation cannot run.", problems);
        }

        return Results.Ok(IncentiveCalculator.Calculate(curve, body!.TargetIncentive!.Value, components.Select((c, i) => new IncentiveComponent(c.Id ?? $"component/{i + 1}", c.Weight!.Value, c.Score))));
    }

    private static async Task<IResult> LockAsync(int id, HttpContext context, Acting acting, StrategyDb db, Scorecards scorecards, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var person = await acting.SignedInAsync(context, ct);

        if (!await acting.HasCompanyRoleAsync(person, Role.Admin, ct))
        {
            return Problems.Forbidden("Locking a period needs the admin role on the company.");
        }

        // Every plan's results are computed from the final scores and written down with the lock, in one transaction
        // that first waits for the writes into the period in flight and holds new ones off (they are refused after it).
        await using var transaction = await db.Database.BeginTransactionAsync(ct);
        await db.LockPeriodForWritesAsync(id, ct);
        var period = await db.Periods.FirstOrDefaultAsync(p => p.Id == id, ct);
        if (period is null)
        {
            return Problems.NotFound("No such period.");
        }

        if (period.Status != PeriodStatus.Active)
        {
            return Problems.Error(409, "PERIOD_NOT_ACTIVE", $"{period.Name} is {period.Status.ToString().ToLowerInvariant()}: only an active period is locked.");
        }

        var frozen = 0;
        foreach (var plan in await db.Plans.AsNoTracking().Where(p => p.PeriodId == id).ToListAsync(ct))
        {
            var (_, payouts) = await ResultsAsync(db, scorecards, plan, ct);
            foreach (var participant in await db.Participants.Where(p => p.PlanId == plan.Id).ToListAsync(ct))
            {
                var payout = payouts.First(p => p.PersonId == participant.PersonId);
                (participant.FrozenFraction, participant.FrozenAmount) = (payout.PayoutFraction, payout.Amount);
                frozen++;
            }
        }

        period.Status = PeriodStatus.Locked;
        db.AddAudit(person.Id, "period.locked", $"period/{id}", new { periodId = id, period.Name, frozenPayouts = frozen }, time.GetUtcNow());
        await db.SaveChangesAsync(ct);
        await transaction.CommitAsync(ct);
        audit.Notify();
        return Results.Ok(new { Period = period, FrozenPayouts = frozen });
    }
}
