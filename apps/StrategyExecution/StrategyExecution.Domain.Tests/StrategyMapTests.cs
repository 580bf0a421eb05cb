using StrategyExecution.Alignment;

namespace StrategyExecution.Domain.Tests;

public sealed class StrategyMapTests
{
    private static readonly CauseEffectLink[] Links = [new("skills", "quality"), new("quality", "retention"), new("retention", "revenue")];

    [Fact]
    public void A_link_that_closes_a_loop_is_refused_with_the_loop()
    {
        Assert.Equal(["skills", "quality", "retention", "revenue"], StrategyMap.CycleThrough(Links, new("revenue", "skills")));
        Assert.Equal(["quality", "retention"], StrategyMap.CycleThrough(Links, new("retention", "quality")));
        Assert.Equal(["revenue"], StrategyMap.CycleThrough(Links, new("revenue", "revenue")));
    }

    [Fact]
    public void Links_that_keep_the_map_acyclic_are_allowed()
    {
        Assert.Empty(StrategyMap.CycleThrough(Links, new("skills", "revenue")));
        Assert.Empty(StrategyMap.CycleThrough(Links, new("brand", "revenue")));
        Assert.Empty(StrategyMap.CycleThrough([], new("a", "b")));
    }
}
