using StrategyExecution.Incentives;

namespace StrategyExecution.Domain.Tests;

/// <summary>The worked examples of docs/strategy.md, "Incentive payouts".</summary>
public sealed class IncentiveTests
{
    [Theory]
    [InlineData(null, 0.0)]
    [InlineData(40.0, 0.0)]
    [InlineData(50.0, 0.5)]
    [InlineData(75.0, 0.75)]
    [InlineData(100.0, 1.0)]
    [InlineData(125.0, 1.5)]
    [InlineData(150.0, 2.0)]
    [InlineData(170.0, 2.0)]
    public void The_default_curve_pays_nothing_below_threshold_interpolates_and_caps(double? score, double payout)
        => Assert.Equal(payout, PayoutCurve.Default.PayoutAt(score), 9);

    [Fact]
    public void A_custom_curve_with_a_flat_top_caps_at_its_maximum()
    {
        var curve = new PayoutCurve(ThresholdScore: 60, ThresholdPayout: 0.25, TargetScore: 100, TargetPayout: 1, MaximumScore: 120, MaximumPayout: 1.2);
        Assert.Equal(0, curve.PayoutAt(59.9));
        Assert.Equal(0.25, curve.PayoutAt(60), 9);
        Assert.Equal(0.625, curve.PayoutAt(80), 9); // 0.25 + 0.75 × 20 / 40
        Assert.Equal(1.1, curve.PayoutAt(110), 9);
        Assert.Equal(1.2, curve.PayoutAt(149), 9);
    }

    [Fact]
    public void A_plan_weights_its_components_and_an_unscored_one_pays_nothing()
    {
        var result = IncentiveCalculator.Calculate(PayoutCurve.Default, 10_000m,
        [
            new("revenue", 0.5, 125),
            new("nps", 0.3, 75),
            new("cost", 0.2, null),
        ]);

        Assert.Equal(0.975, result.PayoutFraction, 9); // 0.5 × 1.5 + 0.3 × 0.75 + 0.2 × 0
        Assert.Equal(9_750.00m, result.Amount);
        Assert.True(result.Components.Single(c => c.Id == "cost").Unscored);
        Assert.Equal([0.75, 0.225, 0], result.Components.Select(c => Math.Round(c.Contribution, 9)));
    }

    [Fact]
    public void Weights_need_not_add_up_to_one_and_amounts_round_to_cents()
    {
        var result = IncentiveCalculator.Calculate(PayoutCurve.Default, 1_000m, [new("a", 1, 80), new("b", 2, 110)]);
        // a pays 0.8, b pays 1.2: (0.8 + 2 × 1.2) / 3 = 1.0666…
        Assert.Equal(1_066.67m, result.Amount);
    }

    [Fact]
    public void Invalid_plans_are_refused()
    {
        Assert.Throws<ArgumentException>(() => IncentiveCalculator.Calculate(PayoutCurve.Default, 1m, []));
        Assert.Throws<ArgumentException>(() => IncentiveCalculator.Calculate(PayoutCurve.Default, 1m, [new("a", 0, 80)]));
        Assert.Throws<ArgumentException>(() => IncentiveCalculator.Calculate(PayoutCurve.Default, -1m, [new("a", 1, 80)]));
        Assert.Throws<ArgumentException>(() => IncentiveCalculator.Calculate(new PayoutCurve(100, 1, 50, 0.5, 150, 2), 1m, [new("a", 1, 80)]));
        Assert.NotEmpty(new PayoutCurve(50, 1.5, 100, 1, 150, 2).Validate());
    }

    [Fact]
    public void Weights_whose_sum_overflows_share_the_plan_and_curves_past_their_bounds_are_refused()
    {
        var result = IncentiveCalculator.Calculate(PayoutCurve.Default, 1000m, [new IncentiveComponent("a", 1e308, 100), new IncentiveComponent("b", 1e308, 150)]);
        Assert.Equal(1.5, result.PayoutFraction, precision: 9);
        Assert.Equal(1500m, result.Amount);
        Assert.NotEmpty((PayoutCurve.Default with { MaximumPayout = 1e21 }).Validate());
        Assert.NotEmpty((PayoutCurve.Default with { ThresholdScore = -1.7e308 }).Validate());
        Assert.Throws<ArgumentException>(() => IncentiveCalculator.Calculate(PayoutCurve.Default, IncentiveCalculator.MaxTargetIncentive + 1, [new IncentiveComponent("a", 1, 100)]));
    }
}
