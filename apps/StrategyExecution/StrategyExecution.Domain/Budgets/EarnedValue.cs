namespace StrategyExecution.Budgets;

/// <summary>Spend against budget.</summary>
/// <param name="Budget">What was allocated.</param>
/// <param name="Actual">What was spent.</param>
/// <param name="Variance">Budget minus actual: positive is under budget, negative is over.</param>
/// <param name="VariancePercent">Variance over budget; <see langword="null"/> for a zero budget.</param>
public sealed record BudgetVariance(decimal Budget, decimal Actual, decimal Variance, double? VariancePercent)
{
    /// <summary>The variance of <paramref name="actual"/> spend against <paramref name="budget"/>.</summary>
    public static BudgetVariance Of(decimal budget, decimal actual)
    {
        var variance = budget - actual;
        return new BudgetVariance(budget, actual, variance, budget == 0 ? null : (double)(variance / budget));
    }
}

/// <summary>
/// Earned value of an initiative (the PMI definitions): planned value <c>PV = BAC × planned %</c>, earned value
/// <c>EV = BAC × % complete</c>, actual cost <c>AC</c>; cost variance <c>CV = EV − AC</c>, schedule variance
/// <c>SV = EV − PV</c>, <c>CPI = EV / AC</c>, <c>SPI = EV / PV</c>, estimate at completion <c>EAC = BAC / CPI</c> and
/// variance at completion <c>VAC = BAC − EAC</c>. An index whose divisor is 0 is <see langword="null"/>.
/// </summary>
/// <param name="PlannedValue">PV.</param>
/// <param name="EarnedValue">EV.</param>
/// <param name="ActualCost">AC.</param>
/// <param name="CostVariance">CV: positive is under cost.</param>
/// <param name="ScheduleVariance">SV: positive is ahead of schedule.</param>
/// <param name="CostPerformanceIndex">CPI: above 1 is under cost.</param>
/// <param name="SchedulePerformanceIndex">SPI: above 1 is ahead of schedule.</param>
/// <param name="EstimateAtCompletion">EAC at the current cost performance.</param>
/// <param name="VarianceAtCompletion">VAC: positive finishes under budget.</param>
public sealed record EarnedValueResult(
    decimal PlannedValue,
    decimal EarnedValue,
    decimal ActualCost,
    decimal CostVariance,
    decimal ScheduleVariance,
    double? CostPerformanceIndex,
    double? SchedulePerformanceIndex,
    decimal? EstimateAtCompletion,
    decimal? VarianceAtCompletion)
{
    /// <summary>Computes earned value.</summary>
    /// <param name="budgetAtCompletion">BAC: the initiative's allocation.</param>
    /// <param name="plannedPercentComplete">How far it should be by now, 0..1 (from its milestones' dates).</param>
    /// <param name="percentComplete">How far it is, 0..1 (from its milestones done).</param>
    /// <param name="actualCost">AC: spend so far.</param>
    /// <exception cref="ArgumentOutOfRangeException">A percentage outside 0..1, or a negative amount.</exception>
    public static EarnedValueResult Compute(decimal budgetAtCompletion, double plannedPercentComplete, double percentComplete, decimal actualCost)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(budgetAtCompletion);
        ArgumentOutOfRangeException.ThrowIfNegative(actualCost);
        if (!(plannedPercentComplete is >= 0 and <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(plannedPercentComplete), "Must be between 0 and 1.");
        }

        if (!(percentComplete is >= 0 and <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(percentComplete), "Must be between 0 and 1.");
        }

        var pv = Math.Round(budgetAtCompletion * (decimal)plannedPercentComplete, 2, MidpointRounding.AwayFromZero);
        var ev = Math.Round(budgetAtCompletion * (decimal)percentComplete, 2, MidpointRounding.AwayFromZero);
        double? cpi = actualCost == 0 ? null : (double)(ev / actualCost);
        double? spi = pv == 0 ? null : (double)(ev / pv);
        decimal? eac = ev == 0 ? null : Math.Round(budgetAtCompletion * actualCost / ev, 2, MidpointRounding.AwayFromZero);
        return new EarnedValueResult(pv, ev, actualCost, ev - actualCost, ev - pv, cpi, spi, eac, budgetAtCompletion - eac);
    }
}
