namespace StrategyExecution.Incentives;

/// <summary>A component of an incentive plan: a measure or an objective, weighted, with the score it reached.</summary>
/// <param name="Id">The measure or objective.</param>
/// <param name="Weight">Its weight in the plan (more than 0).</param>
/// <param name="Score">Its score for the period; without one it pays nothing.</param>
/// <param name="Curve">Its own payout curve, or <see langword="null"/> for the plan's.</param>
public sealed record IncentiveComponent(string Id, double Weight, double? Score, PayoutCurve? Curve = null);

/// <summary>What one component pays.</summary>
/// <param name="Id">The component.</param>
/// <param name="WeightShare">Its weight over the plan's total weight.</param>
/// <param name="Payout">Its payout, as a fraction of the target incentive, before weighting.</param>
/// <param name="Contribution">Its weighted payout (<c>WeightShare × Payout</c>).</param>
/// <param name="Unscored">Whether it had no score (and paid nothing).</param>
public sealed record ComponentPayout(string Id, double WeightShare, double Payout, double Contribution, bool Unscored);

/// <summary>What a plan pays one participant.</summary>
/// <param name="PayoutFraction">The weighted payout, as a fraction of the target incentive.</param>
/// <param name="Amount">The payout: the target incentive times the fraction, rounded to cents (half away from zero).</param>
/// <param name="Components">Each component's part.</param>
public sealed record IncentiveResult(double PayoutFraction, decimal Amount, IReadOnlyList<ComponentPayout> Components);

/// <summary>Computes incentive payouts from scores; the same function serves the simulator and the period close.</summary>
/// <remarks>Pure and thread-safe. docs/strategy.md has the formulas with worked examples.</remarks>
public static class IncentiveCalculator
{
    /// <summary>The largest target incentive: with a curve's payouts at most <see cref="PayoutCurve.MaxValue"/>, any payout fits a decimal.</summary>
    public const decimal MaxTargetIncentive = 1_000_000_000_000m;

    /// <summary>The payout of <paramref name="components"/> under <paramref name="curve"/> for a target incentive of <paramref name="targetIncentive"/>.</summary>
    /// <exception cref="ArgumentException">No component, a weight that is not above 0, a negative target incentive or an invalid curve.</exception>
    public static IncentiveResult Calculate(PayoutCurve curve, decimal targetIncentive, IEnumerable<IncentiveComponent> components)
    {
        ArgumentNullException.ThrowIfNull(curve);
        ArgumentNullException.ThrowIfNull(components);
        var list = components.ToList();
        if (list.Count == 0)
        {
            throw new ArgumentException("An incentive plan needs at least one component.", nameof(components));
        }

        if (list.FirstOrDefault(c => !double.IsFinite(c.Weight) || c.Weight <= 0) is { } bad)
        {
            throw new ArgumentException($"The weight of {bad.Id} must be above 0.", nameof(components));
        }

        if (targetIncentive < 0 || targetIncentive > MaxTargetIncentive)
        {
            throw new ArgumentException($"The target incentive must be from 0 to {MaxTargetIncentive:0}.", nameof(targetIncentive));
        }

        foreach (var c in list.Select(c => c.Curve ?? curve).Distinct())
        {
            if (c.Validate() is [var error, ..])
            {
                throw new ArgumentException(error, nameof(curve));
            }
        }

        var weightOf = Scoring.Weights.Summable(list, c => c.Weight);
        var total = list.Sum(weightOf);
        var parts = list.Select(c =>
        {
            var share = weightOf(c) / total;
            var payout = (c.Curve ?? curve).PayoutAt(c.Score);
            return new ComponentPayout(c.Id, share, payout, share * payout, c.Score is null);
        }).ToList();
        var fraction = parts.Sum(p => p.Contribution);
        var amount = Math.Round(targetIncentive * (decimal)fraction, 2, MidpointRounding.AwayFromZero);
        return new IncentiveResult(fraction, amount, parts);
    }
}
