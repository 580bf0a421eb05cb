using System.Diagnostics;
using DurableSessions.AspNetCore.Subscriptions;

namespace DurableSessions.FunctionalTests;

/// <summary>The glob matcher shared by access grants and subscriptions: its semantics, and its bounded cost.</summary>
public sealed class PathGlobTests
{
    [Theory]
    [InlineData("a/b", "a/b", true)]
    [InlineData("a/b", "a/c", false)]
    [InlineData("a/b", "a/b/c", false)]
    [InlineData("a/*", "a/b", true)]
    [InlineData("a/*", "a", false)]
    [InlineData("a/*", "a/b/c", false)]
    [InlineData("*", "a", true)]
    [InlineData("*", "a/b", false)]
    [InlineData("**", "a", true)]
    [InlineData("**", "a/b/c", true)]
    [InlineData("a/**", "a", true)]
    [InlineData("a/**", "a/b/c", true)]
    [InlineData("a/**", "b/a", false)]
    [InlineData("**/z", "z", true)]
    [InlineData("**/z", "a/b/z", true)]
    [InlineData("**/z", "a/b/z/y", false)]
    [InlineData("a/**/z", "a/z", true)]
    [InlineData("a/**/z", "a/b/c/z", true)]
    [InlineData("a/**/z", "a/b/c/y", false)]
    [InlineData("**/**/z", "a/z", true)]
    [InlineData("a/**/b/**/c", "a/x/b/y/y/c", true)]
    [InlineData("a/**/b/**/c", "a/x/c/y/b", false)]
    [InlineData("team-*", "team-red", true)]
    [InlineData("team-*", "team-", true)]
    [InlineData("team-*", "teams", false)]
    [InlineData("*-log", "x-log", true)]
    [InlineData("a*b*c", "abc", true)]
    [InlineData("a*b*c", "axxbyyc", true)]
    [InlineData("a*b*c", "acb", false)]
    [InlineData("a*a", "a", false)]
    [InlineData("sessions/team-*/x", "sessions/team-a/x", true)]
    [InlineData("sessions/team-*/x", "sessions/team-a/b/x", false)]
    public void IsMatch_keeps_star_within_one_segment_and_double_star_across_any_number(string pattern, string path, bool expected)
        => Assert.Equal(expected, PathGlob.IsMatch(pattern, path));

    [Theory]
    [InlineData("**", "anything/*/**", true)]
    [InlineData("jobs/**", "jobs/*", true)]
    [InlineData("jobs/**", "jobs/**", true)]
    [InlineData("jobs/**", "jobs/*/q/**", true)]
    [InlineData("jobs/**", "jobs", true)]
    [InlineData("jobs/*", "jobs/*", true)]
    [InlineData("jobs/*", "jobs/a", true)]
    [InlineData("jobs/*", "jobs/team-*", true)]
    [InlineData("jobs/team-*", "jobs/team-*", true)]
    [InlineData("jobs/team-*", "jobs/team-a", true)]
    [InlineData("jobs/*", "jobs/**", false)]
    [InlineData("jobs/a", "jobs/*", false)]
    [InlineData("jobs/team-*", "jobs/*", false)]
    [InlineData("jobs/**", "**", false)]
    [InlineData("jobs/**", "*/a", false)]
    [InlineData("a/**/z", "a/**", false)]
    [InlineData("a/**/z", "a/**/z", true)]
    [InlineData("a/**/z", "a/*/*/z", true)]
    public void Covers_answers_whether_every_path_of_the_inner_pattern_matches_the_outer_one(string outer, string inner, bool expected)
        => Assert.Equal(expected, PathGlob.Covers(outer, inner));

    [Fact]
    public void Covers_of_a_plain_path_is_IsMatch()
    {
        foreach (var (pattern, path) in new[] { ("a/**", "a/b"), ("a/*", "a/b/c"), ("*-x/**/z", "q-x/1/2/z"), ("a*b", "ab") })
        {
            Assert.Equal(PathGlob.IsMatch(pattern, path), PathGlob.Covers(pattern, path));
        }
    }

    [Fact]
    public void Stacked_double_stars_against_a_deep_path_take_polynomial_time()
    {
        var deep = string.Join('/', Enumerable.Repeat("a", 400));
        var pattern = string.Join('/', Enumerable.Repeat("**", 32)) + "/z";
        var watch = Stopwatch.StartNew();
        Assert.False(PathGlob.IsMatch(pattern, deep));
        Assert.False(PathGlob.IsMatch("**/**/**/**/**/z", deep));
        Assert.False(PathGlob.Covers(pattern, deep));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"Matching took {watch.Elapsed}.");
    }
}
