namespace StrategyExecution.Scoring;

/// <summary>A measure's score for one period, its colour, and why.</summary>
/// <param name="Value">The score on <see cref="ScoreScale"/>, or <see langword="null"/> without an actual.</param>
/// <param name="Color">The colour of <paramref name="Value"/>.</param>
/// <param name="Why">How the score and colour were reached ("why this colour").</param>
public sealed record MeasureScore(double? Value, ScoreColor Color, ScoreExplanation Why);

/// <summary>The drill-down behind a score: where the actual lies, the formula with its numbers, and the colour rule.</summary>
/// <param name="Position">Where the actual lies against the thresholds.</param>
/// <param name="Formula">The computation with its numbers, e.g. <c>50 + 50 × (90 − 80) / (100 − 80) = 75</c>.</param>
/// <param name="ColorRule">The rule that gave the colour.</param>
public sealed record ScoreExplanation(string Position, string Formula, string ColorRule);
