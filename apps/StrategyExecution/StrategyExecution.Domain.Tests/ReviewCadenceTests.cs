using StrategyExecution.Reviews;

namespace StrategyExecution.Domain.Tests;

public sealed class ReviewCadenceTests
{
    [Fact]
    public void A_year_has_twelve_monthly_reviews_on_first_mondays_and_four_quarterly_ones_on_first_thursdays()
    {
        var year = ReviewCadence.Between(new DateOnly(2026, 1, 1), new DateOnly(2026, 12, 31));
        var monthly = year.Where(r => r.Kind == ReviewCadence.Monthly).Select(r => r.Day).ToList();
        var quarterly = year.Where(r => r.Kind == ReviewCadence.Quarterly).Select(r => r.Day).ToList();
        Assert.Equal(12, monthly.Count);
        Assert.All(monthly, d => Assert.True(d.DayOfWeek == DayOfWeek.Monday && d.Day <= 7));
        Assert.Equal(new DateOnly(2026, 1, 5), monthly[0]);
        Assert.Equal([new DateOnly(2026, 1, 1), new DateOnly(2026, 4, 2), new DateOnly(2026, 7, 2), new DateOnly(2026, 10, 1)], quarterly);
        Assert.Equal(year.OrderBy(r => r.Day).ToList(), year);
    }

    [Fact]
    public void A_part_year_keeps_only_the_reviews_inside_it()
        // November's first Monday (the 2nd) is before the start; December's (the 7th) is in; no quarter starts.
        => Assert.Equal([new ScheduledReview(ReviewCadence.Monthly, new DateOnly(2026, 12, 7))], ReviewCadence.Between(new DateOnly(2026, 11, 15), new DateOnly(2026, 12, 31)));
}
