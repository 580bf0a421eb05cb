namespace StrategyExecution.Scoring;

/// <summary>
/// The one scale every score is on: 0 to 150, with the red flag at 50, the target at 100 and the stretch at 150. The
/// colour is a function of the score alone, so a measure, an objective and a whole scorecard are coloured by one rule.
/// </summary>
public static class ScoreScale
{
    /// <summary>The lowest score.</summary>
    public const double Minimum = 0;

    /// <summary>The score of an actual exactly at the red flag: the start of amber.</summary>
    public const double RedFlag = 50;

    /// <summary>The score of an actual exactly at the target: the start of green.</summary>
    public const double Target = 100;

    /// <summary>The score of the stretch target and beyond: blue, and the highest score.</summary>
    public const double Stretch = 150;

    /// <summary>
    /// The largest magnitude of a threshold, baseline or actual: 10^15, beyond any quantity a scorecard tracks (money
    /// in cents included) and far inside what a double holds, so no score is computed from numbers that overflow.
    /// </summary>
    public const double MaxMagnitude = 1e15;

    /// <summary>The largest weight of a measure, an objective or an incentive component: 10^6.</summary>
    public const double MaxWeight = 1e6;

    /// <summary>The colour of <paramref name="score"/>: red below 50, amber to 100, green to 150, blue at 150.</summary>
    public static ScoreColor ColorOf(double? score) => score switch
    {
        null => ScoreColor.None,
        < RedFlag => ScoreColor.Red,
        < Target => ScoreColor.Amber,
        < Stretch => ScoreColor.Green,
        _ => ScoreColor.Blue,
    };

    /// <summary>The rule that gave <paramref name="score"/> its colour, in words.</summary>
    public static string ColorRule(double? score) => score switch
    {
        null => "no score: no colour",
        < RedFlag => $"{Format(score.Value)} is red: score < 50",
        < Target => $"{Format(score.Value)} is amber: 50 <= score < 100",
        < Stretch => $"{Format(score.Value)} is green: 100 <= score < 150",
        _ => $"{Format(score.Value)} is blue: the stretch (150) is reached",
    };

    /// <summary>A number as the explanations print it: at most two decimals, invariant culture.</summary>
    public static string Format(double value) => Math.Round(value, 2).ToString("0.##", System.Globalization.CultureInfo.InvariantCulture);
}
