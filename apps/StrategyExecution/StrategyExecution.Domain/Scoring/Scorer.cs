namespace StrategyExecution.Scoring;

/// <summary>
/// Scores an actual against its thresholds: piecewise linear through the red flag (50), the target (100) and the
/// stretch (150), clamped to 0..150. Worse than the red flag continues the red-flag-to-target line down to 0. Without
/// a stretch the score stops at 100; a band scores 100 anywhere inside its target range and never more.
/// </summary>
/// <remarks>Pure and thread-safe. docs/strategy.md has the formulas with worked examples.</remarks>
public static class Scorer
{
    /// <summary>Scores <paramref name="actual"/> against <paramref name="thresholds"/>.</summary>
    /// <exception cref="ArgumentException">The thresholds are not valid (<see cref="TargetThresholds.Validate"/>).</exception>
    public static MeasureScore Evaluate(TargetThresholds thresholds, double? actual)
    {
        ArgumentNullException.ThrowIfNull(thresholds);
        if (thresholds.Validate() is [var first, ..])
        {
            throw new ArgumentException(first, nameof(thresholds));
        }

        if (actual is not { } a || !double.IsFinite(a))
        {
            return new MeasureScore(null, ScoreColor.None, new ScoreExplanation("No actual for this period.", "no score", ScoreScale.ColorRule(null)));
        }

        var (score, position, formula) = thresholds.Direction == MeasureDirection.Band ? Band(thresholds, a, explain: true) : Directional(thresholds, a, explain: true);
        return new MeasureScore(score, ScoreScale.ColorOf(score), new ScoreExplanation(position!, formula!, ScoreScale.ColorRule(score)));
    }

    /// <summary>
    /// The score alone, without its explanation, for thresholds already known to be valid: what a roll-up over
    /// thousands of measures needs. Same rules as <see cref="Evaluate"/>.
    /// </summary>
    public static double? ScoreOf(TargetThresholds thresholds, double? actual)
    {
        ArgumentNullException.ThrowIfNull(thresholds);
        if (actual is not { } a || !double.IsFinite(a))
        {
            return null;
        }

        return (thresholds.Direction == MeasureDirection.Band ? Band(thresholds, a, explain: false) : Directional(thresholds, a, explain: false)).Score;
    }

    private static (double Score, string? Position, string? Formula) Directional(TargetThresholds t, double a, bool explain)
    {
        var better = t.Direction == MeasureDirection.Higher ? "above" : "below";
        var progress = Fraction(a, t.RedFlag, t.Target);
        if (progress < 1)
        {
            var raw = Line(ScoreScale.RedFlag, a, t.RedFlag, t.Target);
            var position = !explain ? null
                : progress < 0 ? $"Actual {F(a)} is worse than the red flag {F(t.RedFlag)}: the red-flag-to-target line is continued, down to 0."
                : $"Actual {F(a)} lies between the red flag {F(t.RedFlag)} (score 50) and the target {F(t.Target)} (score 100).";
            return Clamped(raw, position, (explain ? $"50 + 50 × ({F(a)} − {F(t.RedFlag)}) / ({F(t.Target)} − {F(t.RedFlag)})" : null));
        }

        if (t.Stretch is not { } stretch)
        {
            return (ScoreScale.Target, (explain ? $"Actual {F(a)} meets the target {F(t.Target)}; there is no stretch target, so the score stops at 100." : null), explain ? "100" : null);
        }

        var beyond = Fraction(a, t.Target, stretch);
        if (beyond >= 1)
        {
            return (ScoreScale.Stretch, (explain ? $"Actual {F(a)} reaches the stretch {F(stretch)}: the score stops at 150." : null), explain ? "150" : null);
        }

        return Clamped(
            Line(ScoreScale.Target, a, t.Target, stretch),
            (explain ? $"Actual {F(a)} is {better} the target {F(t.Target)} (score 100), short of the stretch {F(stretch)} (score 150)." : null),
            (explain ? $"100 + 50 × ({F(a)} − {F(t.Target)}) / ({F(stretch)} − {F(t.Target)})" : null));
    }

    private static (double Score, string? Position, string? Formula) Band(TargetThresholds t, double a, bool explain)
    {
        var high = t.TargetHigh!.Value;
        var redHigh = t.RedFlagHigh!.Value;
        if (a >= t.Target && a <= high)
        {
            return (ScoreScale.Target, (explain ? $"Actual {F(a)} is inside the target range {F(t.Target)}..{F(high)}." : null), explain ? "100" : null);
        }

        if (a < t.Target)
        {
            return Clamped(
                Line(ScoreScale.RedFlag, a, t.RedFlag, t.Target),
                (explain ? $"Actual {F(a)} is below the target range, whose low red flag is {F(t.RedFlag)} (score 50) and low end {F(t.Target)} (score 100)." : null),
                (explain ? $"50 + 50 × ({F(a)} − {F(t.RedFlag)}) / ({F(t.Target)} − {F(t.RedFlag)})" : null));
        }

        return Clamped(
            Line(ScoreScale.RedFlag, a, redHigh, high),
            (explain ? $"Actual {F(a)} is above the target range, whose high end is {F(high)} (score 100) and high red flag {F(redHigh)} (score 50)." : null),
            (explain ? $"50 + 50 × ({F(redHigh)} − {F(a)}) / ({F(redHigh)} − {F(high)})" : null));
    }

    /// <summary>The score on the line through (<paramref name="from"/>, <paramref name="baseScore"/>) and (<paramref name="to"/>, <paramref name="baseScore"/> + 50).</summary>
    private static double Line(double baseScore, double actual, double from, double to)
        => baseScore + (50 * Fraction(actual, from, to));

    /// <summary>
    /// How far <paramref name="actual"/> lies from <paramref name="from"/> towards <paramref name="to"/> (0 at from, 1 at
    /// to). Computed on values scaled down first when they are large, so that no difference overflows to infinity
    /// (which would make the score NaN) whatever finite numbers are stored.
    /// </summary>
    private static double Fraction(double actual, double from, double to)
    {
        var scale = Math.Max(Math.Abs(actual), Math.Max(Math.Abs(from), Math.Abs(to)));
        if (scale > 1e300)
        {
            actual /= scale;
            from /= scale;
            to /= scale;
        }

        return (actual - from) / (to - from);
    }

    private static (double, string?, string?) Clamped(double raw, string? position, string? formula)
    {
        // NaN compares false with everything, so Math.Clamp would pass it on: it scores as the bottom of the scale.
        var score = double.IsNaN(raw) ? ScoreScale.Minimum : Math.Clamp(raw, ScoreScale.Minimum, ScoreScale.Stretch);
        if (formula is null)
        {
            return (score, position, null);
        }

        var shown = score == raw ? $"{formula} = {F(score)}" : $"{formula} = {F(raw)}, clamped to {F(score)}";
        return (score, position, shown);
    }

    private static string F(double value) => ScoreScale.Format(value);
}
