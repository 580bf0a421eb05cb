using Microsoft.EntityFrameworkCore;
using StrategyExecution.Data;

namespace StrategyExecution.Api;

/// <summary>Field checks shared by the endpoints that create things; each adds what is wrong to a list of problems.</summary>
internal static class Checks
{
    /// <summary>The org unit <paramref name="unitId"/> names, or <see langword="null"/> with a problem noted.</summary>
    public static async Task<OrgUnit?> UnitAsync(StrategyDb db, int? unitId, List<string> problems, CancellationToken ct)
    {
        var unit = unitId is { } id ? await db.Units.AsNoTracking().FirstOrDefaultAsync(u => u.Id == id, ct) : null;
        if (unit is null)
        {
            problems.Add("unitId must name an org unit.");
        }

        return unit;
    }

    /// <summary>
    /// 409 <c>PERIOD_LOCKED</c> when period <paramref name="periodId"/> is locked, else null: locking a period freezes it,
    /// its scorecards, budgets, initiatives and payouts alike.
    /// </summary>
    public static async Task<IResult?> LockedAsync(StrategyDb db, int periodId, CancellationToken ct)
    {
        var period = await db.Periods.AsNoTracking().FirstOrDefaultAsync(p => p.Id == periodId, ct);
        return period is { Status: PeriodStatus.Locked }
            ? Problems.Error(409, "PERIOD_LOCKED", $"{period.Name} is locked: nothing in it changes any more.")
            : null;
    }

    /// <summary>The trimmed name, with a problem noted unless it is 1 to 200 characters.</summary>
    public static string Name(string? name, List<string> problems)
    {
        var trimmed = name?.Trim() ?? string.Empty;
        if (trimmed.Length is 0 or > 200)
        {
            problems.Add("name must be 1 to 200 characters.");
        }

        return trimmed;
    }

    /// <summary>The units <paramref name="roots"/> name and every unit below them.</summary>
    public static HashSet<int> Subtree(IEnumerable<OrgUnit> units, params IEnumerable<int> roots)
    {
        var all = units.ToList();
        var scope = roots.ToHashSet();
        for (var grew = true; grew;)
        {
            grew = false;
            foreach (var u in all.Where(u => u.ParentId is { } parent && scope.Contains(parent) && !scope.Contains(u.Id)))
            {
                grew = scope.Add(u.Id) || grew;
            }
        }

        return scope;
    }
}
