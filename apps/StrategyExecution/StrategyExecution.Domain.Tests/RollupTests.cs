using StrategyExecution.Scoring;

namespace StrategyExecution.Domain.Tests;

/// <summary>The worked examples of docs/strategy.md, "Roll-up".</summary>
public sealed class RollupTests
{
    [Fact]
    public void The_weighted_mean_counts_children_with_a_score_and_a_weight_above_zero()
    {
        var result = Rollup.Compute(
            [new("A", 2, 75), new("B", 1, 125), new("C", 0, 10), new("D", 1, null)],
            RollupMethod.Weighted);

        Assert.Equal(275.0 / 3, result.Score!.Value, 9); // (2 × 75 + 1 × 125) / 3 = 91.67
        Assert.Equal(ScoreColor.Amber, result.Color);
        Assert.Equal(3, result.CountedWeight);
        Assert.Equal(4, result.TotalWeight);
        Assert.Equal([2.0 / 3, 1.0 / 3, 0, 0], result.Shares.Select(s => s.Share));
        Assert.Equal([null, null, "weight 0", "no score"], result.Shares.Select(s => s.LeftOutBecause));
    }

    [Fact]
    public void A_weight_of_zero_excludes_a_child_even_a_red_one()
    {
        var with = Rollup.Compute([new("A", 1, 120), new("B", 1, 10)], RollupMethod.Weighted);
        var excluded = Rollup.Compute([new("A", 1, 120), new("B", 0, 10)], RollupMethod.Weighted);
        Assert.Equal(65, with.Score);
        Assert.Equal(120, excluded.Score);
        Assert.Equal(ScoreColor.Green, excluded.Color);
    }

    [Fact]
    public void No_children_all_zero_weights_or_no_scores_give_no_score()
    {
        Assert.Null(Rollup.Compute([], RollupMethod.Weighted).Score);
        Assert.Equal(ScoreColor.None, Rollup.Compute([new("A", 0, 90)], RollupMethod.Weighted).Color);
        Assert.Null(Rollup.Compute([new("A", 1, null), new("B", 2, null)], RollupMethod.Weighted).Score);
    }

    [Fact]
    public void Worst_takes_the_lowest_counted_child()
    {
        var result = Rollup.Compute([new("A", 2, 75), new("B", 1, 125), new("C", 0, 10)], RollupMethod.Worst);
        Assert.Equal(75, result.Score);
        Assert.Equal([1.0, 0, 0], result.Shares.Select(s => s.Share));
    }

    [Fact]
    public void Rolled_up_scores_roll_up_again_the_same_way()
    {
        // Two units under a division, each rolled up from its objectives.
        var sales = Rollup.Compute([new("win-deals", 3, 110), new("grow-pipeline", 1, 70)], RollupMethod.Weighted);
        var service = Rollup.Compute([new("resolve-fast", 1, 40)], RollupMethod.Weighted);
        var division = Rollup.Compute([new("sales", 2, sales.Score), new("service", 1, service.Score)], RollupMethod.Weighted);
        Assert.Equal(100, sales.Score);
        Assert.Equal(80, division.Score!.Value, 9); // (2 × 100 + 1 × 40) / 3
        Assert.Equal(ScoreColor.Amber, division.Color);
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    public void A_negative_or_non_finite_weight_is_refused(double weight)
    {
        Assert.Throws<ArgumentException>(() => Rollup.Compute([new("A", weight, 50)], RollupMethod.Weighted));
    }
}
