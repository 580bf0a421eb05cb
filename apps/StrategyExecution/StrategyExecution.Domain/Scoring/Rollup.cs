using System.Text.Json.Serialization;

namespace StrategyExecution.Scoring;

/// <summary>How children's scores combine into their parent's. A string-valued enumeration.</summary>
/// <param name="Value">The value as written on the wire.</param>
[JsonConverter(typeof(StringValueConverter<RollupMethod>))]
public readonly record struct RollupMethod(string Value) : IStringValue<RollupMethod>
{
    /// <summary><c>weighted</c>: the weighted mean of the children's scores (the default).</summary>
    public static RollupMethod Weighted { get; } = new("weighted");

    /// <summary><c>worst</c>: the lowest child's score, for objectives that are only as good as their weakest measure.</summary>
    public static RollupMethod Worst { get; } = new("worst");

    /// <inheritdoc/>
    public static IReadOnlyList<RollupMethod> Known { get; } = [Weighted, Worst];

    /// <inheritdoc/>
    static RollupMethod IStringValue<RollupMethod>.Create(string value) => new(value);

    /// <inheritdoc/>
    public override string ToString() => Value ?? string.Empty;
}

/// <summary>A child in a roll-up: a measure under an objective, an objective under a scorecard, a unit under its parent.</summary>
/// <param name="Id">The child's id, for the drill-down.</param>
/// <param name="Weight">Its weight: 0 excludes it; negative is not allowed.</param>
/// <param name="Score">Its score, or <see langword="null"/> when it has none (it is then left out).</param>
public sealed record WeightedScore(string Id, double Weight, double? Score);

/// <summary>A child's part in a roll-up.</summary>
/// <param name="Id">The child's id.</param>
/// <param name="Weight">Its weight.</param>
/// <param name="Score">Its score, if it has one.</param>
/// <param name="Share">Its share of the result (weight over the counted weight), 0 when left out.</param>
/// <param name="LeftOutBecause">Why it does not count (<c>weight 0</c>, <c>no score</c>), or <see langword="null"/>.</param>
public sealed record RollupShare(string Id, double Weight, double? Score, double Share, string? LeftOutBecause);

/// <summary>A parent's score from its children.</summary>
/// <param name="Score">The rolled-up score, or <see langword="null"/> when no child counts.</param>
/// <param name="Color">Its colour, by the same rule as a measure's.</param>
/// <param name="CountedWeight">The weight of the children that count.</param>
/// <param name="TotalWeight">The weight of all children; <c>CountedWeight / TotalWeight</c> is the roll-up's coverage.</param>
/// <param name="Shares">Every child's part, in the order given.</param>
public sealed record RollupResult(double? Score, ScoreColor Color, double CountedWeight, double TotalWeight, IReadOnlyList<RollupShare> Shares);

/// <summary>
/// Rolls children's scores up to their parent. Only children with a score and a weight above 0 count; a parent with
/// none (no children, all weights 0, no scores yet) has no score rather than a made-up one.
/// </summary>
/// <remarks>Pure and thread-safe. docs/strategy.md has the formulas with worked examples.</remarks>
public static class Rollup
{
    /// <summary>Rolls <paramref name="children"/> up with <paramref name="method"/>.</summary>
    /// <exception cref="ArgumentException">A weight is negative or not a finite number, or the method is unknown.</exception>
    public static RollupResult Compute(IEnumerable<WeightedScore> children, RollupMethod method)
    {
        ArgumentNullException.ThrowIfNull(children);
        var list = children.ToList();
        if (list.FirstOrDefault(c => !double.IsFinite(c.Weight) || c.Weight < 0) is { } bad)
        {
            throw new ArgumentException($"The weight of {bad.Id} must be a number of at least 0.", nameof(children));
        }

        if (method != RollupMethod.Weighted && method != RollupMethod.Worst)
        {
            throw new ArgumentException($"Unknown roll-up method '{method}'.", nameof(method));
        }

        var counted = list.Where(Counts).ToList();
        var countedWeight = counted.Sum(c => c.Weight);
        var totalWeight = list.Sum(c => c.Weight);

        var weightOf = Weights.Summable(counted, c => c.Weight, ScoreScale.Stretch);
        var countedBy = counted.Sum(weightOf);
        double? score = counted.Count == 0 ? null
            : method == RollupMethod.Worst ? counted.Min(c => c.Score!.Value)
            : counted.Sum(c => weightOf(c) * c.Score!.Value) / countedBy;

        var worst = method == RollupMethod.Worst && score is not null ? counted.First(c => c.Score == score).Id : null;
        var shares = list.Select(c => new RollupShare(
            c.Id,
            c.Weight,
            c.Score,
            !Counts(c) ? 0 : method == RollupMethod.Worst ? (c.Id == worst ? 1 : 0) : weightOf(c) / countedBy,
            c.Weight == 0 ? "weight 0" : c.Score is null ? "no score" : null)).ToList();
        return new RollupResult(score, ScoreScale.ColorOf(score), countedWeight, totalWeight, shares);
    }

    private static bool Counts(WeightedScore child) => child.Weight > 0 && child.Score is not null;
}
