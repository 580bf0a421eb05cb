using StrategyExecution.Scoring;

namespace StrategyExecution.Domain.Tests;

/// <summary>The worked examples of docs/strategy.md, "Scores and colours".</summary>
public sealed class ScorerTests
{
    private static readonly TargetThresholds Revenue = TargetThresholds.HigherIsBetter(redFlag: 80, target: 100, stretch: 120);
    private static readonly TargetThresholds Defects = TargetThresholds.LowerIsBetter(redFlag: 10, target: 5, stretch: 2);
    private static readonly TargetThresholds InventoryDays = TargetThresholds.Band(redFlagLow: 90, targetLow: 95, targetHigh: 105, redFlagHigh: 110);

    [Theory]
    [InlineData(90, 75, "amber")]
    [InlineData(80, 50, "amber")]
    [InlineData(100, 100, "green")]
    [InlineData(110, 125, "green")]
    [InlineData(120, 150, "blue")]
    [InlineData(130, 150, "blue")]
    [InlineData(70, 25, "red")]
    [InlineData(55, 0, "red")]
    public void Higher_is_better_scores_through_red_flag_target_and_stretch(double actual, double score, string color)
        => AssertScore(Revenue, actual, score, color);

    [Theory]
    [InlineData(7.5, 75, "amber")]
    [InlineData(5, 100, "green")]
    [InlineData(3.5, 125, "green")]
    [InlineData(2, 150, "blue")]
    [InlineData(12, 30, "red")]
    [InlineData(25, 0, "red")]
    public void Lower_is_better_mirrors_the_same_line(double actual, double score, string color)
        => AssertScore(Defects, actual, score, color);

    [Theory]
    [InlineData(100, 100, "green")]
    [InlineData(95, 100, "green")]
    [InlineData(105, 100, "green")]
    [InlineData(92.5, 75, "amber")]
    [InlineData(107.5, 75, "amber")]
    [InlineData(88, 30, "red")]
    [InlineData(120, 0, "red")]
    public void A_band_scores_100_inside_its_range_and_falls_on_both_sides(double actual, double score, string color)
        => AssertScore(InventoryDays, actual, score, color);

    private static void AssertScore(TargetThresholds thresholds, double actual, double score, string color)
    {
        var result = Scorer.Evaluate(thresholds, actual);
        Assert.Equal(score, result.Value!.Value, 9);
        Assert.Equal(color, result.Color.Value);
        Assert.Equal(result.Value, Scorer.ScoreOf(thresholds, actual)); // the roll-up's fast path agrees
    }

    [Fact]
    public void Without_a_stretch_the_score_stops_at_the_target()
    {
        var result = Scorer.Evaluate(TargetThresholds.HigherIsBetter(80, 100), 130);
        Assert.Equal(100, result.Value);
        Assert.Equal(ScoreColor.Green, result.Color);
        Assert.Contains("no stretch", result.Why.Position, StringComparison.Ordinal);
    }

    [Fact]
    public void No_actual_gives_no_score_and_no_colour()
    {
        var result = Scorer.Evaluate(Revenue, null);
        Assert.Null(result.Value);
        Assert.Equal(ScoreColor.None, result.Color);
    }

    [Fact]
    public void Why_this_colour_shows_the_position_the_formula_with_its_numbers_and_the_rule()
    {
        var why = Scorer.Evaluate(Revenue, 90).Why;
        Assert.Equal("Actual 90 lies between the red flag 80 (score 50) and the target 100 (score 100).", why.Position);
        Assert.Equal("50 + 50 × (90 − 80) / (100 − 80) = 75", why.Formula);
        Assert.Equal("75 is amber: 50 <= score < 100", why.ColorRule);

        var clamped = Scorer.Evaluate(Revenue, 55).Why;
        Assert.Equal("50 + 50 × (55 − 80) / (100 − 80) = -12.5, clamped to 0", clamped.Formula);
        Assert.Contains("worse than the red flag", clamped.Position, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(InvalidThresholds))]
    public void Thresholds_in_the_wrong_order_are_refused_with_a_reason(TargetThresholds thresholds, string reason)
    {
        Assert.Contains(thresholds.Validate(), e => e.Contains(reason, StringComparison.Ordinal));
        Assert.Throws<ArgumentException>(() => Scorer.Evaluate(thresholds, 1));
    }

    public static TheoryData<TargetThresholds, string> InvalidThresholds() => new()
    {
        { TargetThresholds.HigherIsBetter(100, 80), "red flag must be below the target" },
        { TargetThresholds.HigherIsBetter(80, 100, 90), "stretch must be above the target" },
        { TargetThresholds.LowerIsBetter(5, 10), "red flag must be above the target" },
        { TargetThresholds.LowerIsBetter(10, 5, 7), "stretch must be below the target" },
        { TargetThresholds.Band(90, 95, 94, 110), "red flag low < target low <= target high < red flag high" },
        { TargetThresholds.HigherIsBetter(double.NaN, 100), "finite" },
        { new TargetThresholds { Direction = new MeasureDirection("sideways"), RedFlag = 1, Target = 2 }, "higher, lower or band" },
    };

    [Fact]
    public void Thresholds_whose_differences_overflow_still_give_a_score_on_the_scale()
    {
        // (actual - red flag) and (target - red flag) are both infinite in plain arithmetic: their ratio was NaN, which
        // no clamp catches and no JSON can hold.
        var extreme = TargetThresholds.HigherIsBetter(redFlag: -1.7e308, target: 1.7e308);
        Assert.Equal(75, Scorer.ScoreOf(extreme, 0)!.Value, precision: 6);
        Assert.Equal(75, Scorer.Evaluate(extreme, 0).Value!.Value, precision: 6);
        Assert.Equal(100, Scorer.ScoreOf(extreme, 1.7e308));
        Assert.Equal(0, Scorer.ScoreOf(TargetThresholds.HigherIsBetter(redFlag: 0, target: 1), -1.7e308));
        Assert.False(TargetThresholds.HigherIsBetter(redFlag: -1.7e308, target: 1.7e308).IsWithinRange);
        Assert.True(TargetThresholds.HigherIsBetter(redFlag: -1e15, target: 1e15).IsWithinRange);
    }
}
