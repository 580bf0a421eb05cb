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

/// <summary>The roll-up up the cascade, docs/strategy.md "Roll-up".</summary>
public sealed class CascadeTests
{
    [Fact]
    public void An_objective_rolls_up_its_measures_and_the_objectives_aligned_to_it()
    {
        CascadeObjective[] objectives =
        [
            new(1, UnitId: 100, ParentObjectiveId: null, Weight: 1, RollupMethod.Weighted), // company: grow revenue
            new(2, UnitId: 200, ParentObjectiveId: 1, Weight: 3, RollupMethod.Weighted),    // sales: win deals
            new(3, UnitId: 300, ParentObjectiveId: 1, Weight: 1, RollupMethod.Weighted),    // service: keep customers
            new(4, UnitId: 300, ParentObjectiveId: null, Weight: 0, RollupMethod.Weighted), // service: standalone, weight 0
        ];
        CascadeMeasure[] measures =
        [
            new(10, ObjectiveId: 1, Weight: 1, Score: 100),
            new(20, ObjectiveId: 2, Weight: 1, Score: 120),
            new(30, ObjectiveId: 3, Weight: 1, Score: 40),
            new(31, ObjectiveId: 3, Weight: 1, Score: null),
            new(40, ObjectiveId: 4, Weight: 1, Score: 10),
        ];

        var result = Cascade.Compute(objectives, measures);

        Assert.Equal(40, result.Objectives[3].Score); // the measure with no score is left out
        Assert.Equal((100 + (3 * 120) + 40) / 5.0, result.Objectives[1].Score); // measure 10, objective 2 (×3), objective 3
        Assert.Equal(100, result.Units[100].Score);
        Assert.Equal(40, result.Units[300].Score); // objective 4 has weight 0 on its unit's scorecard
        Assert.Equal(["measure/10", "objective/2", "objective/3"], result.Objectives[1].Shares.Select(s => s.Id));
    }

    [Fact]
    public void An_alignment_loop_gives_no_score_instead_of_failing()
    {
        CascadeObjective[] objectives = [new(1, 1, 2, 1, RollupMethod.Weighted), new(2, 2, 1, 1, RollupMethod.Weighted)];
        var result = Cascade.Compute(objectives, [new(10, 1, 1, 80)]);
        Assert.Equal(2, result.Objectives.Count);
    }

    [Fact]
    public void Weights_whose_sum_overflows_still_roll_up_to_their_weighted_mean()
    {
        var result = Rollup.Compute([new WeightedScore("a", 1.7e308, 40), new WeightedScore("b", 1.7e308, 80), new WeightedScore("c", 0.85e308, 120)], RollupMethod.Weighted);
        Assert.Equal(72, result.Score!.Value, precision: 6);
        Assert.Equal(0.4, result.Shares[0].Share, precision: 9);
        Assert.Equal(0.2, result.Shares[2].Share, precision: 9);
    }
}
