using Microsoft.EntityFrameworkCore;
using StrategyExecution.Scoring;

namespace StrategyExecution.Data;

/// <summary>
/// An organisation at the size the benchmarks measure (<c>--Demo:Size=large</c>): 500 units (a company, 10 divisions,
/// 489 teams), 5,000 people, 2,000 objectives cascaded from the company down, 10,000 measures with targets, and 36
/// monthly actuals per measure (360,000). Deterministic.
/// </summary>
public static class LargeOrganisation
{
    /// <summary>Loads the organisation into an empty database.</summary>
    public static void Seed(StrategyDb db, DateOnly today, int units = 500, int people = 5_000, int objectivesPerUnit = 4, int measuresPerObjective = 5, int months = 36)
    {
        ArgumentNullException.ThrowIfNull(db);
        if (db.Units.Any())
        {
            return;
        }

        var random = new Random(500);
        var year = today.Year;
        db.Strategy.Add(new StrategyStatement { Id = 1, Vision = "A large organisation, for the benchmarks.", Mission = "Measure everything, at size." });
        db.Themes.AddRange(Enumerable.Range(1, 4).Select(i => new Theme { Id = i, Name = $"Theme {i}", Description = $"Theme {i}" }));
        var active = new Period { Id = 2, Name = $"FY{year}", Start = new DateOnly(year, 1, 1), End = new DateOnly(year, 12, 31), Status = PeriodStatus.Active };
        db.Periods.AddRange(
            new Period { Id = 1, Name = $"FY{year - 1}", Start = new DateOnly(year - 1, 1, 1), End = new DateOnly(year - 1, 12, 31), Status = PeriodStatus.Locked },
            active);

        const int Divisions = 10;
        var unitList = new List<OrgUnit> { new() { Id = 1, Name = "Company" } };
        for (var d = 0; d < Divisions; d++)
        {
            unitList.Add(new OrgUnit { Id = unitList.Count + 1, Name = $"Division {d + 1}", ParentId = 1 });
        }

        while (unitList.Count < units)
        {
            var division = 2 + ((unitList.Count - 1 - Divisions) % Divisions);
            unitList.Add(new OrgUnit { Id = unitList.Count + 1, Name = $"Team {unitList.Count - Divisions}", ParentId = division });
        }

        db.Units.AddRange(unitList);
        var personList = Enumerable.Range(1, people).Select(i => new Person { Id = i, Name = $"Person {i}", Email = $"person{i}@large.example", UnitId = unitList[(i - 1) % unitList.Count].Id }).ToList();
        db.People.AddRange(personList);
        var demoPassword = Api.Passwords.Hash(DemoOrganisation.Password);
        db.Credentials.AddRange(personList.Select(p => new Credential { PersonId = p.Id, PasswordHash = demoPassword }));
        db.Settings.Add(new AppSetting { Key = DemoOrganisation.DemoKey, Value = "large" });
        db.Roles.Add(new RoleAssignment { PersonId = 1, UnitId = 1, Role = Role.Admin });
        foreach (var unit in unitList)
        {
            var staff = personList.Where(p => p.UnitId == unit.Id).Take(2).ToList();
            if (staff.Count == 2)
            {
                db.Roles.Add(new RoleAssignment { PersonId = staff[0].Id, UnitId = unit.Id, Role = Role.Owner });
                db.Roles.Add(new RoleAssignment { PersonId = staff[1].Id, UnitId = unit.Id, Role = Role.Updater });
            }
        }

        var objectives = new List<Objective>();
        var measures = new List<Measure>();
        var targets = new List<MeasureTarget>();
        foreach (var unit in unitList)
        {
            var parents = unit.ParentId is { } parent ? objectives.Where(o => o.UnitId == parent).ToList() : [];
            for (var i = 0; i < objectivesPerUnit; i++)
            {
                var objective = new Objective
                {
                    Id = objectives.Count + 1, UnitId = unit.Id, PeriodId = active.Id, Name = $"{unit.Name} objective {i + 1}", Perspective = (Perspective)(i % 4),
                    ParentObjectiveId = parents.Count > 0 ? parents[i % parents.Count].Id : null, Weight = 1 + (i % 2),
                };
                objectives.Add(objective);
                for (var j = 0; j < measuresPerObjective; j++)
                {
                    var measure = new Measure { Id = measures.Count + 1, ObjectiveId = objective.Id, Name = $"Measure {measures.Count + 1}", Unit = "%", Direction = j % 3 == 1 ? "lower" : "higher", Baseline = 100, Weight = 1 };
                    measures.Add(measure);
                    targets.Add(measure.Direction == "lower"
                        ? new MeasureTarget { MeasureId = measure.Id, PeriodId = active.Id, RedFlag = 110, Target = 100, Stretch = 90 }
                        : new MeasureTarget { MeasureId = measure.Id, PeriodId = active.Id, RedFlag = 90, Target = 100, Stretch = 110 });
                }
            }
        }

        var lastMonth = new DateOnly(today.Year, today.Month, 1).AddMonths(-1);
        var values = new double[measures.Count];
        foreach (var m in measures)
        {
            values[m.Id - 1] = Math.Round(100 + ((random.NextDouble() - 0.5) * 24), 2);
            m.LatestValue = values[m.Id - 1];
            m.LatestMonth = lastMonth;
            m.LatestAt = new DateTimeOffset(lastMonth.AddMonths(1).ToDateTime(TimeOnly.MinValue), TimeSpan.Zero);
        }

        db.Objectives.AddRange(objectives);
        db.Measures.AddRange(measures);
        db.Targets.AddRange(targets);
        db.ChangeTracker.AutoDetectChangesEnabled = false;
        db.SaveChanges();

        // The actuals: written in bulk in one transaction, not as 360,000 tracked entities.
        using var transaction = db.Database.BeginTransaction();
        using (var writer = new ActualWriter(db, transaction))
        {
            for (var back = months - 1; back >= 0; back--)
            {
                var month = lastMonth.AddMonths(-back);
                var at = new DateTimeOffset(month.AddMonths(1).ToDateTime(TimeOnly.MinValue), TimeSpan.Zero);
                foreach (var m in measures)
                {
                    writer.Insert(m.Id, month, back == 0 ? values[m.Id - 1] : Math.Round(100 + ((random.NextDouble() - 0.5) * 24), 2), 1, at, "seed");
                }
            }

            writer.Complete();
        }

        transaction.Commit();
    }
}
