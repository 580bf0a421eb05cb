using System.Text.Json.Serialization;

namespace StrategyExecution.Scoring;

/// <summary>Which way a measure improves. A string-valued enumeration.</summary>
/// <param name="Value">The value as written on the wire.</param>
[JsonConverter(typeof(StringValueConverter<MeasureDirection>))]
public readonly record struct MeasureDirection(string Value) : IStringValue<MeasureDirection>
{
    /// <summary><c>higher</c>: more is better (revenue, satisfaction).</summary>
    public static MeasureDirection Higher { get; } = new("higher");

    /// <summary><c>lower</c>: less is better (cost, defects, churn).</summary>
    public static MeasureDirection Lower { get; } = new("lower");

    /// <summary><c>band</c>: best inside a range, worse the further outside it (inventory days, utilisation).</summary>
    public static MeasureDirection Band { get; } = new("band");

    /// <inheritdoc/>
    public static IReadOnlyList<MeasureDirection> Known { get; } = [Higher, Lower, Band];

    /// <inheritdoc/>
    static MeasureDirection IStringValue<MeasureDirection>.Create(string value) => new(value);

    /// <inheritdoc/>
    public override string ToString() => Value ?? string.Empty;
}
