namespace StrategyExecution.Incentives;

/// <summary>
/// How a score turns into a payout, as a fraction of the target incentive: nothing below the threshold, then linear
/// from the threshold's payout to the target's and on to the maximum's, and capped there.
/// </summary>
/// <param name="ThresholdScore">The lowest score that pays.</param>
/// <param name="ThresholdPayout">What it pays, e.g. 0.5 for 50 %.</param>
/// <param name="TargetScore">The score that pays the target payout.</param>
/// <param name="TargetPayout">The target payout, usually 1.0.</param>
/// <param name="MaximumScore">The score from which the payout stops rising.</param>
/// <param name="MaximumPayout">The cap, e.g. 2.0 for 200 %.</param>
public sealed record PayoutCurve(double ThresholdScore, double ThresholdPayout, double TargetScore, double TargetPayout, double MaximumScore, double MaximumPayout)
{
    /// <summary>50 pays 50 %, 100 pays 100 %, 150 pays 200 % (the red flag, target and stretch of the score scale).</summary>
    public static PayoutCurve Default { get; } = new(50, 0.5, 100, 1.0, 150, 2.0);

    /// <summary>
    /// The largest magnitude of a curve's scores and payouts: far beyond the score scale (0 to 150) and any payout a plan
    /// makes, small enough that a payout times a target incentive stays a number.
    /// </summary>
    public const double MaxValue = 1000;

    /// <summary>What is wrong with the curve, in words a user can act on; empty when it can be used.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        double[] values = [ThresholdScore, ThresholdPayout, TargetScore, TargetPayout, MaximumScore, MaximumPayout];
        if (values.Any(v => !double.IsFinite(v)))
        {
            errors.Add("Every point of a payout curve must be a finite number.");
            return errors;
        }

        if (values.Any(v => Math.Abs(v) > MaxValue))
        {
            errors.Add($"Every point of a payout curve must be between -{MaxValue:0} and {MaxValue:0} (a payout of 1000 is 100,000 %).");
            return errors;
        }

        if (!(ThresholdScore < TargetScore && TargetScore <= MaximumScore))
        {
            errors.Add("A payout curve needs threshold score < target score <= maximum score.");
        }

        if (!(ThresholdPayout >= 0 && ThresholdPayout <= TargetPayout && TargetPayout <= MaximumPayout))
        {
            errors.Add("A payout curve needs 0 <= threshold payout <= target payout <= maximum payout.");
        }

        return errors;
    }

    /// <summary>The payout for <paramref name="score"/> as a fraction of the target incentive; no score pays nothing.</summary>
    public double PayoutAt(double? score)
    {
        if (score is not { } s || s < ThresholdScore)
        {
            return 0;
        }

        if (s >= MaximumScore)
        {
            return MaximumPayout;
        }

        return s < TargetScore
            ? ThresholdPayout + ((TargetPayout - ThresholdPayout) * (s - ThresholdScore) / (TargetScore - ThresholdScore))
            : TargetPayout + ((MaximumPayout - TargetPayout) * (s - TargetScore) / (MaximumScore - TargetScore));
    }
}
