using Microsoft.EntityFrameworkCore;
using StrategyExecution.Data;
using StrategyExecution.Scoring;

namespace StrategyExecution.Api;

/// <summary>A measure's thresholds as shown.</summary>
public sealed record TargetView(double RedFlag, double Target, double? Stretch, double? TargetHigh, double? RedFlagHigh);

/// <summary>A measure on a scorecard.</summary>
public sealed record MeasureView(
    int Id, string Name, string Unit, string Direction, double Weight, double? Baseline,
    double? Actual, string? Month, DateTimeOffset? RecordedAt, TargetView? Target,
    double? Score, ScoreColor Color, ScoreExplanation Why, bool Stale);

/// <summary>An objective on a scorecard, with its measures and what its score is made of.</summary>
public sealed record ObjectiveView(
    int Id, string Name, Perspective Perspective, int? ThemeId, int? ParentObjectiveId, string? ParentObjectiveName, string? StandaloneReason,
    double Weight, string RollupMethod, double? Score, ScoreColor Color, IReadOnlyList<MeasureView> Measures, IReadOnlyList<RollupShare> Shares);

/// <summary>A unit with its score.</summary>
public sealed record UnitScoreView(int Id, string Name, int? ParentId, double? Score, ScoreColor Color);

/// <summary>A unit's scorecard for a period.</summary>
public sealed record ScorecardView(UnitScoreView Unit, int PeriodId, string PeriodName, IReadOnlyList<ObjectiveView> Objectives, IReadOnlyList<UnitScoreView> Children);

/// <summary>Every score of a period, computed from the stored measures, targets and latest actuals.</summary>
/// <param name="Period">The period.</param>
/// <param name="Units">Every unit.</param>
/// <param name="Objectives">The period's objectives.</param>
/// <param name="Measures">Their measures.</param>
/// <param name="Targets">The targets by measure.</param>
/// <param name="MeasureScores">The scores by measure (without their explanation: <see cref="PeriodScores.MeasureView"/> gives it).</param>
/// <param name="Cascade">The roll-ups.</param>
/// <param name="Today">The day the scores were computed, for staleness.</param>
public sealed record PeriodScores(
    Period Period, IReadOnlyList<OrgUnit> Units, IReadOnlyList<Objective> Objectives, IReadOnlyList<Measure> Measures,
    IReadOnlyDictionary<int, MeasureTarget> Targets, IReadOnlyDictionary<int, double?> MeasureScores, CascadeResult Cascade, DateOnly Today)
{
    /// <summary>A unit with its score.</summary>
    public UnitScoreView UnitView(OrgUnit unit)
    {
        ArgumentNullException.ThrowIfNull(unit);
        var rollup = Cascade.Units.GetValueOrDefault(unit.Id);
        return new UnitScoreView(unit.Id, unit.Name, unit.ParentId, rollup?.Score, rollup?.Color ?? ScoreColor.None);
    }

    /// <summary>A measure as shown.</summary>
    public MeasureView MeasureView(Measure m)
    {
        ArgumentNullException.ThrowIfNull(m);
        var t = Targets.GetValueOrDefault(m.Id);
        var inPeriod = m.LatestMonth is { } month && month >= Period.Start && month <= Period.End;
        var score = t is not null && t.ToThresholds(m.Direction).Validate().Count == 0
            ? Scorer.Evaluate(t.ToThresholds(m.Direction), inPeriod ? m.LatestValue : null)
            : new MeasureScore(null, ScoreColor.None, new ScoreExplanation("No target for this period.", "no score", ScoreScale.ColorRule(null)));
        // Stale: the active period's latest actual is more than one full month old (or there is none).
        var stale = Period.Status == PeriodStatus.Active && (!inPeriod || m.LatestMonth!.Value.AddMonths(2) <= Today);
        return new MeasureView(
            m.Id, m.Name, m.Unit, m.Direction, m.Weight, m.Baseline,
            inPeriod ? m.LatestValue : null, inPeriod ? m.LatestMonth!.Value.ToString("yyyy-MM", System.Globalization.CultureInfo.InvariantCulture) : null,
            inPeriod ? m.LatestAt : null,
            t is null ? null : new TargetView(t.RedFlag, t.Target, t.Stretch, t.TargetHigh, t.RedFlagHigh),
            score.Value, score.Color, score.Why, stale);
    }
}

/// <summary>Computes scorecards: measure scores from targets and actuals, then the roll-up up the cascade.</summary>
public sealed class Scorecards(StrategyDb db, TimeProvider time, ScoreCache cache)
{
    /// <summary>Every score of <paramref name="periodId"/>, or <see langword="null"/> for an unknown period.</summary>
    /// <remarks>
    /// A computation started here may be shared by other readers, and it runs on this request's database context: so it
    /// takes no cancellation, and the request waits for its end, which keeps the context alive for them.
    /// </remarks>
    public Task<PeriodScores?> ComputeAsync(int periodId)
        => cache.GetOrComputeAsync(periodId, () => ComputeFreshAsync(periodId, CancellationToken.None));

    private async Task<PeriodScores?> ComputeFreshAsync(int periodId, CancellationToken cancellationToken)
    {
        var period = await db.Periods.AsNoTracking().FirstOrDefaultAsync(p => p.Id == periodId, cancellationToken);
        if (period is null)
        {
            return null;
        }

        var units = await db.Units.AsNoTracking().OrderBy(u => u.Id).ToListAsync(cancellationToken);
        var objectives = await db.Objectives.AsNoTracking().Where(o => o.PeriodId == periodId).OrderBy(o => o.Perspective).ThenBy(o => o.Id).ToListAsync(cancellationToken);
        var inPeriodObjectives = objectives.Select(o => o.Id).ToHashSet();
        var measures = (await db.Measures.AsNoTracking().OrderBy(m => m.Id).ToListAsync(cancellationToken)).Where(m => inPeriodObjectives.Contains(m.ObjectiveId)).ToList();
        var targets = await db.Targets.AsNoTracking().Where(t => t.PeriodId == periodId).ToDictionaryAsync(t => t.MeasureId, cancellationToken);
        var scores = new Dictionary<int, double?>(measures.Count);
        foreach (var m in measures)
        {
            var inPeriod = m.LatestMonth is { } month && month >= period.Start && month <= period.End;
            scores[m.Id] = targets.TryGetValue(m.Id, out var target) && target.ToThresholds(m.Direction) is var thresholds && thresholds.Validate().Count == 0
                ? Scorer.ScoreOf(thresholds, inPeriod ? m.LatestValue : null)
                : null;
        }

        var cascade = Cascade.Compute(
            objectives.Select(o => new CascadeObjective(o.Id, o.UnitId, o.ParentObjectiveId, o.Weight, new RollupMethod(o.RollupMethod))).ToList(),
            measures.Select(m => new CascadeMeasure(m.Id, m.ObjectiveId, m.Weight, scores[m.Id])));
        return new PeriodScores(period, units, objectives, measures, targets, scores, cascade, DateOnly.FromDateTime(time.GetUtcNow().UtcDateTime));
    }

    /// <summary>The scorecard of <paramref name="unitId"/> in <paramref name="scores"/>, or <see langword="null"/> for an unknown unit.</summary>
    public static ScorecardView? Scorecard(PeriodScores scores, int unitId)
    {
        ArgumentNullException.ThrowIfNull(scores);
        var unit = scores.Units.FirstOrDefault(u => u.Id == unitId);
        if (unit is null)
        {
            return null;
        }

        var measuresOf = scores.Measures.ToLookup(m => m.ObjectiveId);
        var names = scores.Objectives.ToDictionary(o => o.Id, o => o.Name);
        var objectives = scores.Objectives.Where(o => o.UnitId == unitId).Select(o =>
        {
            var rollup = scores.Cascade.Objectives[o.Id];
            var parent = o.ParentObjectiveId is { } p ? names.GetValueOrDefault(p) : null;
            return new ObjectiveView(o.Id, o.Name, o.Perspective, o.ThemeId, o.ParentObjectiveId, parent, o.StandaloneReason, o.Weight, o.RollupMethod,
                rollup.Score, rollup.Color, measuresOf[o.Id].Select(scores.MeasureView).ToList(), rollup.Shares);
        }).ToList();
        var children = scores.Units.Where(u => u.ParentId == unitId).Select(scores.UnitView).ToList();
        return new ScorecardView(scores.UnitView(unit), scores.Period.Id, scores.Period.Name, objectives, children);
    }
}
