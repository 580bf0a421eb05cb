namespace StrategyExecution.Reviews;

/// <summary>A review on the cadence: its kind and its day.</summary>
/// <param name="Kind"><see cref="ReviewCadence.Monthly"/> or <see cref="ReviewCadence.Quarterly"/>.</param>
/// <param name="Day">The day it is held.</param>
public sealed record ScheduledReview(string Kind, DateOnly Day);

/// <summary>
/// The review cadence: a monthly operational review on each month's first Monday, and a quarterly strategy review on
/// the first Thursday of January, April, July and October.
/// </summary>
/// <remarks>Pure and thread-safe.</remarks>
public static class ReviewCadence
{
    /// <summary>The monthly operational review.</summary>
    public const string Monthly = "monthly-operational";

    /// <summary>The quarterly strategy review.</summary>
    public const string Quarterly = "quarterly-strategy";

    /// <summary>Every review of the cadence from <paramref name="start"/> to <paramref name="end"/>, in day order.</summary>
    public static IReadOnlyList<ScheduledReview> Between(DateOnly start, DateOnly end)
    {
        var reviews = new List<ScheduledReview>();
        for (var month = new DateOnly(start.Year, start.Month, 1); month <= end; month = month.AddMonths(1))
        {
            reviews.Add(new ScheduledReview(Monthly, First(month, DayOfWeek.Monday)));
            if (month.Month % 3 == 1)
            {
                reviews.Add(new ScheduledReview(Quarterly, First(month, DayOfWeek.Thursday)));
            }
        }

        return reviews.Where(r => r.Day >= start && r.Day <= end).OrderBy(r => r.Day).ToList();
    }

    /// <summary>A review's title, e.g. <c>Sales: monthly operational review, 2026-03-02</c>.</summary>
    public static string Title(string unit, string kind, DateOnly day)
        => $"{unit}: {(kind == Quarterly ? "quarterly strategy review" : "monthly operational review")}, {day.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture)}";

    private static DateOnly First(DateOnly month, DayOfWeek day)
    {
        var date = month;
        while (date.DayOfWeek != day)
        {
            date = date.AddDays(1);
        }

        return date;
    }
}
