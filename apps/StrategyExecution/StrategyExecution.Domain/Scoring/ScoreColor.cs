using System.Text.Json.Serialization;

namespace StrategyExecution.Scoring;

/// <summary>
/// The colour of a score. Always computed from the score (<see cref="ScoreScale.ColorOf"/>), never chosen by hand. A
/// string-valued enumeration.
/// </summary>
/// <param name="Value">The value as written on the wire.</param>
[JsonConverter(typeof(StringValueConverter<ScoreColor>))]
public readonly record struct ScoreColor(string Value) : IStringValue<ScoreColor>
{
    /// <summary><c>red</c>: worse than the red flag (score below 50).</summary>
    public static ScoreColor Red { get; } = new("red");

    /// <summary><c>amber</c>: between the red flag and the target (50 up to 100).</summary>
    public static ScoreColor Amber { get; } = new("amber");

    /// <summary><c>green</c>: on or past the target (100 up to 150).</summary>
    public static ScoreColor Green { get; } = new("green");

    /// <summary><c>blue</c>: the stretch target reached (150).</summary>
    public static ScoreColor Blue { get; } = new("blue");

    /// <summary><c>none</c>: no score (no actual, no target, or nothing to roll up).</summary>
    public static ScoreColor None { get; } = new("none");

    /// <inheritdoc/>
    public static IReadOnlyList<ScoreColor> Known { get; } = [Red, Amber, Green, Blue, None];

    /// <inheritdoc/>
    static ScoreColor IStringValue<ScoreColor>.Create(string value) => new(value);

    /// <inheritdoc/>
    public override string ToString() => Value ?? string.Empty;
}
