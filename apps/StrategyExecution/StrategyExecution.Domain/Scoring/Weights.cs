namespace StrategyExecution.Scoring;

/// <summary>Weights as the weighted sums of roll-ups and incentive plans use them.</summary>
internal static class Weights
{
    /// <summary>
    /// Each item's weight for a weighted sum of values up to <paramref name="largestValue"/>: the weight itself, or,
    /// when finite weights would still add up past what a double holds, the weight relative to the largest. Shares and
    /// weighted means come out the same either way.
    /// </summary>
    public static Func<T, double> Summable<T>(IReadOnlyCollection<T> items, Func<T, double> weight, double largestValue = 1)
    {
        if (items.Count == 0 || double.IsFinite(items.Sum(i => weight(i) * largestValue)))
        {
            return weight;
        }

        var largest = items.Max(weight);
        return i => weight(i) / largest;
    }
}
