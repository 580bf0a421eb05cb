using StrategyExecution.Budgets;

namespace StrategyExecution.Domain.Tests;

/// <summary>The worked examples of docs/strategy.md, "Budgets: variance, earned value and ringfenced pools".</summary>
public sealed class BudgetTests
{
    [Fact]
    public void Variance_is_budget_minus_actual_and_its_share_of_the_budget()
    {
        var under = BudgetVariance.Of(50_000m, 42_000m);
        Assert.Equal(8_000m, under.Variance);
        Assert.Equal(0.16, under.VariancePercent!.Value, 9);
        Assert.Equal(-5_000m, BudgetVariance.Of(50_000m, 55_000m).Variance);
        Assert.Null(BudgetVariance.Of(0m, 10m).VariancePercent);
    }

    [Fact]
    public void Earned_value_follows_the_pmi_definitions()
    {
        var ev = EarnedValueResult.Compute(budgetAtCompletion: 200_000m, plannedPercentComplete: 0.5, percentComplete: 0.4, actualCost: 100_000m);
        Assert.Equal(100_000m, ev.PlannedValue);
        Assert.Equal(80_000m, ev.EarnedValue);
        Assert.Equal(-20_000m, ev.CostVariance);
        Assert.Equal(-20_000m, ev.ScheduleVariance);
        Assert.Equal(0.8, ev.CostPerformanceIndex!.Value, 9);
        Assert.Equal(0.8, ev.SchedulePerformanceIndex!.Value, 9);
        Assert.Equal(250_000m, ev.EstimateAtCompletion);
        Assert.Equal(-50_000m, ev.VarianceAtCompletion);
    }

    [Fact]
    public void Earned_value_before_any_spend_or_progress_has_no_indices()
    {
        var ev = EarnedValueResult.Compute(100_000m, 0, 0, 0m);
        Assert.Null(ev.CostPerformanceIndex);
        Assert.Null(ev.SchedulePerformanceIndex);
        Assert.Null(ev.EstimateAtCompletion);
        Assert.Throws<ArgumentOutOfRangeException>(() => EarnedValueResult.Compute(1m, 1.5, 0, 0m));
        Assert.Throws<ArgumentOutOfRangeException>(() => EarnedValueResult.Compute(1m, 0, 0, -1m));
    }

    [Fact]
    public void Allocations_never_exceed_the_pool()
    {
        var over = RingfencedPool.Allocate(poolAmount: 1_000_000m, allocated: 900_000m, amount: 150_000m);
        Assert.False(over.Allowed);
        Assert.Equal(100_000m, over.Available);
        Assert.Equal("The pool has 100000.00 left; 150000.00 would over-allocate it by 50000.00.", over.Reason);
        Assert.True(RingfencedPool.Allocate(1_000_000m, 900_000m, 100_000m).Allowed);
        Assert.False(RingfencedPool.Allocate(1_000_000m, 0m, 0m).Allowed);
    }

    [Fact]
    public void Money_leaves_a_ringfenced_pool_only_with_an_approval_and_only_what_is_unallocated()
    {
        var unapproved = RingfencedPool.Release(1_000_000m, 900_000m, 50_000m, ringfenced: true, approved: false);
        Assert.False(unapproved.Allowed);
        Assert.True(unapproved.NeedsApproval);
        Assert.True(RingfencedPool.Release(1_000_000m, 900_000m, 50_000m, ringfenced: true, approved: true).Allowed);
        Assert.True(RingfencedPool.Release(1_000_000m, 900_000m, 50_000m, ringfenced: false, approved: false).Allowed);
        var tooMuch = RingfencedPool.Release(1_000_000m, 900_000m, 200_000m, ringfenced: true, approved: true);
        Assert.False(tooMuch.Allowed);
        Assert.False(tooMuch.NeedsApproval);
    }
}
