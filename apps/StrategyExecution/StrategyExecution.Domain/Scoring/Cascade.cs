namespace StrategyExecution.Scoring;

/// <summary>An objective in the cascade.</summary>
/// <param name="Id">The objective.</param>
/// <param name="UnitId">The unit whose scorecard it is on.</param>
/// <param name="ParentObjectiveId">The parent unit's objective it is aligned to, if any.</param>
/// <param name="Weight">Its weight in its parent objective and in its unit.</param>
/// <param name="Method">How its measures and aligned objectives roll up into it.</param>
public sealed record CascadeObjective(int Id, int UnitId, int? ParentObjectiveId, double Weight, RollupMethod Method);

/// <summary>A scored measure in the cascade.</summary>
/// <param name="Id">The measure.</param>
/// <param name="ObjectiveId">Its objective.</param>
/// <param name="Weight">Its weight in the objective.</param>
/// <param name="Score">Its score, if it has one.</param>
public sealed record CascadeMeasure(int Id, int ObjectiveId, double Weight, double? Score);

/// <summary>Every objective's and unit's score in a period.</summary>
/// <param name="Objectives">Each objective's roll-up: its measures (<c>measure/{id}</c>) and aligned objectives (<c>objective/{id}</c>).</param>
/// <param name="Units">Each unit's roll-up of the objectives on its scorecard (<c>objective/{id}</c>).</param>
public sealed record CascadeResult(IReadOnlyDictionary<int, RollupResult> Objectives, IReadOnlyDictionary<int, RollupResult> Units);

/// <summary>
/// The weighted roll-up up the cascade: an objective rolls up from its own measures and from the objectives aligned to
/// it on the scorecards below; a unit rolls up from the objectives on its scorecard. The company's score therefore
/// reflects every team's measures through the alignment, each at the weights chosen at every level.
/// </summary>
/// <remarks>Pure and thread-safe; linear in the number of objectives and measures.</remarks>
public static class Cascade
{
    /// <summary>Computes every objective's and unit's roll-up.</summary>
    public static CascadeResult Compute(IReadOnlyCollection<CascadeObjective> objectives, IEnumerable<CascadeMeasure> measures)
    {
        ArgumentNullException.ThrowIfNull(objectives);
        ArgumentNullException.ThrowIfNull(measures);
        var byId = objectives.ToDictionary(o => o.Id);
        var measuresOf = measures.ToLookup(m => m.ObjectiveId);
        var alignedTo = objectives.Where(o => o.ParentObjectiveId is { } p && byId.ContainsKey(p)).ToLookup(o => o.ParentObjectiveId!.Value);
        var results = new Dictionary<int, RollupResult>(objectives.Count);
        var inProgress = new HashSet<int>();

        RollupResult Of(CascadeObjective objective)
        {
            if (results.TryGetValue(objective.Id, out var done))
            {
                return done;
            }

            // Alignment is checked when it is recorded; a loop that slipped in anyway counts as no score, not a stack overflow.
            if (!inProgress.Add(objective.Id))
            {
                return new RollupResult(null, ScoreColor.None, 0, 0, []);
            }

            var children = measuresOf[objective.Id].Select(m => new WeightedScore($"measure/{m.Id}", m.Weight, m.Score))
                .Concat(alignedTo[objective.Id].Select(c => new WeightedScore($"objective/{c.Id}", c.Weight, Of(c).Score)))
                .ToList();
            var result = Rollup.Compute(children, objective.Method);
            inProgress.Remove(objective.Id);
            results[objective.Id] = result;
            return result;
        }

        foreach (var objective in objectives)
        {
            Of(objective);
        }

        var units = objectives.GroupBy(o => o.UnitId).ToDictionary(
            g => g.Key,
            g => Rollup.Compute(g.Select(o => new WeightedScore($"objective/{o.Id}", o.Weight, results[o.Id].Score)), RollupMethod.Weighted));
        return new CascadeResult(results, units);
    }
}
