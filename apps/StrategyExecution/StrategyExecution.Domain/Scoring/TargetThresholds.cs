namespace StrategyExecution.Scoring;

/// <summary>
/// A measure's thresholds for one period: where red ends, where the target is, and how far the stretch goes. Which
/// fields apply depends on <see cref="Direction"/>; build one with <see cref="HigherIsBetter"/>,
/// <see cref="LowerIsBetter"/> or <see cref="Band"/> and check it with <see cref="Validate"/>.
/// </summary>
public sealed record TargetThresholds
{
    /// <summary>Which way the measure improves.</summary>
    public required MeasureDirection Direction { get; init; }

    /// <summary>The red flag: worse than this is red. For a band, the low red flag.</summary>
    public required double RedFlag { get; init; }

    /// <summary>The target. For a band, the low end of the target range.</summary>
    public required double Target { get; init; }

    /// <summary>The stretch target, beyond the target (higher and lower only). Without one, a score stops at 100.</summary>
    public double? Stretch { get; init; }

    /// <summary>For a band: the high end of the target range.</summary>
    public double? TargetHigh { get; init; }

    /// <summary>For a band: the high red flag.</summary>
    public double? RedFlagHigh { get; init; }

    /// <summary>More is better: <paramref name="redFlag"/> &lt; <paramref name="target"/> &lt; <paramref name="stretch"/>.</summary>
    public static TargetThresholds HigherIsBetter(double redFlag, double target, double? stretch = null)
        => new() { Direction = MeasureDirection.Higher, RedFlag = redFlag, Target = target, Stretch = stretch };

    /// <summary>Less is better: <paramref name="redFlag"/> &gt; <paramref name="target"/> &gt; <paramref name="stretch"/>.</summary>
    public static TargetThresholds LowerIsBetter(double redFlag, double target, double? stretch = null)
        => new() { Direction = MeasureDirection.Lower, RedFlag = redFlag, Target = target, Stretch = stretch };

    /// <summary>Best inside [<paramref name="targetLow"/>, <paramref name="targetHigh"/>], red outside the red flags.</summary>
    public static TargetThresholds Band(double redFlagLow, double targetLow, double targetHigh, double redFlagHigh)
        => new() { Direction = MeasureDirection.Band, RedFlag = redFlagLow, Target = targetLow, TargetHigh = targetHigh, RedFlagHigh = redFlagHigh };

    /// <summary>Whether every value set is within ±<see cref="ScoreScale.MaxMagnitude"/>, as a new target must be.</summary>
    public bool IsWithinRange
        => new[] { RedFlag, Target, Stretch, TargetHigh, RedFlagHigh }.All(v => v is not { } x || Math.Abs(x) <= ScoreScale.MaxMagnitude);

    /// <summary>What is wrong with these thresholds, in words a user can act on; empty when they can be scored.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        double?[] values = [RedFlag, Target, Stretch, TargetHigh, RedFlagHigh];
        if (values.Any(v => v is { } x && !double.IsFinite(x)))
        {
            errors.Add("Thresholds must be finite numbers.");
            return errors;
        }

        if (Direction == MeasureDirection.Higher)
        {
            if (!(RedFlag < Target))
            {
                errors.Add("For a higher-is-better measure the red flag must be below the target.");
            }

            if (Stretch is { } stretch && !(stretch > Target))
            {
                errors.Add("For a higher-is-better measure the stretch must be above the target.");
            }
        }
        else if (Direction == MeasureDirection.Lower)
        {
            if (!(RedFlag > Target))
            {
                errors.Add("For a lower-is-better measure the red flag must be above the target.");
            }

            if (Stretch is { } stretch && !(stretch < Target))
            {
                errors.Add("For a lower-is-better measure the stretch must be below the target.");
            }
        }
        else if (Direction == MeasureDirection.Band)
        {
            if (TargetHigh is not { } high || RedFlagHigh is not { } redHigh)
            {
                errors.Add("A band needs the high end of its target range and a high red flag.");
            }
            else if (!(RedFlag < Target && Target <= high && high < redHigh))
            {
                errors.Add("A band needs red flag low < target low <= target high < red flag high.");
            }

            if (Stretch is not null)
            {
                errors.Add("A band has no stretch target.");
            }
        }
        else
        {
            errors.Add("The direction must be higher, lower or band.");
        }

        return errors;
    }
}
