using StrategyExecution.Scoring;

namespace StrategyExecution.Data;

/// <summary>
/// A realistic demo organisation, loaded into an empty database: a company of five divisions and twenty teams with
/// about 200 people, its strategy and themes, a cascaded scorecard per unit for the active year with targets, and
/// monthly actuals up to last month. Deterministic: the same data every time.
/// </summary>
public static class DemoOrganisation
{
    private static readonly string[] FirstNames = ["Ava", "Ben", "Chloe", "Daniel", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Liam", "Maya", "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera", "Wen", "Ximena", "Yusuf", "Zoe"];
    private static readonly string[] LastNames = ["Adler", "Brooks", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito", "Jansen", "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Quint", "Rossi", "Silva", "Tanaka", "Uribe", "Varga", "Weber", "Yilmaz", "Zimmer"];

    private static readonly (string Division, string[] Teams)[] Structure =
    [
        ("Sales", ["Enterprise Sales", "Mid-Market Sales", "Partner Channel", "Sales Operations"]),
        ("Customer Success", ["Onboarding", "Support", "Account Management", "Customer Education"]),
        ("Product & Engineering", ["Platform", "Mobile", "Data", "Quality Engineering"]),
        ("Operations", ["Supply Chain", "Facilities", "IT Services", "Procurement"]),
        ("Finance & People", ["Finance", "People & Culture", "Legal", "Strategy Office"]),
    ];

    /// <summary>What a measure template is: name, unit, direction, and its thresholds around a base level.</summary>
    private sealed record Template(string Name, string Unit, string Direction, double Base, double RedFlag, double Target, double? Stretch, double Spread);

    private static readonly Dictionary<Perspective, Template[]> Templates = new()
    {
        [Perspective.Financial] =
        [
            new("Recurring revenue", "MEUR", "higher", 10, 9, 10, 11, 0.6),
            new("Operating cost", "MEUR", "lower", 5, 5.5, 5, 4.6, 0.3),
            new("Gross margin", "%", "higher", 62, 58, 62, 65, 2.5),
        ],
        [Perspective.Customer] =
        [
            new("Net promoter score", "points", "higher", 40, 30, 40, 50, 6),
            new("Customer churn", "%", "lower", 3, 4, 3, 2, 0.6),
            new("On-time delivery", "%", "higher", 95, 90, 95, 98, 2.5),
        ],
        [Perspective.InternalProcess] =
        [
            new("Cycle time", "days", "lower", 12, 16, 12, 9, 2),
            new("First-time-right", "%", "higher", 92, 85, 92, 96, 3),
            new("Inventory days", "days", "band", 30, 22, 27, null, 4),
        ],
        [Perspective.LearningAndGrowth] =
        [
            new("Training hours per person", "hours", "higher", 4, 2.5, 4, 6, 1),
            new("Engagement score", "points", "higher", 72, 65, 72, 78, 3),
            new("Regretted attrition", "%", "lower", 1, 1.5, 1, 0.7, 0.25),
        ],
    };

    private static readonly (Perspective Perspective, string Name, int Theme)[] CompanyObjectives =
    [
        (Perspective.Financial, "Grow recurring revenue profitably", 1),
        (Perspective.Customer, "Delight and keep our customers", 2),
        (Perspective.InternalProcess, "Deliver faster with fewer defects", 3),
        (Perspective.LearningAndGrowth, "Build the skills and culture to win", 4),
    ];

    /// <summary>The password of every demo person.</summary>
    public const string Password = "demo";

    /// <summary>The <see cref="AppSetting"/> that marks data holding a demo organisation.</summary>
    public const string DemoKey = "demo";

    /// <summary>Loads the demo organisation when the database has no units yet.</summary>
    public static void Seed(StrategyDb db, DateOnly today)
    {
        ArgumentNullException.ThrowIfNull(db);
        if (db.Units.Any())
        {
            return;
        }

        var random = new Random(2026);
        db.Strategy.Add(new StrategyStatement
        {
            Id = 1,
            Vision = "The most trusted partner for growing businesses in Europe by 2030.",
            Mission = "We help our customers run and grow their business with dependable products, fast service and people who care.",
        });
        db.Themes.AddRange(
            new Theme { Id = 1, Name = "Profitable growth", Description = "Grow recurring revenue faster than cost." },
            new Theme { Id = 2, Name = "Customer intimacy", Description = "Know our customers and keep them." },
            new Theme { Id = 3, Name = "Operational excellence", Description = "Right first time, on time, at lower cost." },
            new Theme { Id = 4, Name = "People and capability", Description = "Grow the skills and engagement of our people." });

        var year = today.Year;
        var lastYear = new Period { Id = 1, Name = $"FY{year - 1}", Start = new DateOnly(year - 1, 1, 1), End = new DateOnly(year - 1, 12, 31), Status = PeriodStatus.Locked };
        var active = new Period { Id = 2, Name = $"FY{year}", Start = new DateOnly(year, 1, 1), End = new DateOnly(year, 12, 31), Status = PeriodStatus.Active };
        var next = new Period { Id = 3, Name = $"FY{year + 1}", Start = new DateOnly(year + 1, 1, 1), End = new DateOnly(year + 1, 12, 31), Status = PeriodStatus.Planning };
        db.Periods.AddRange(lastYear, active, next);

        var units = new List<OrgUnit>();
        var unitId = 1;
        units.Add(new OrgUnit { Id = unitId++, Name = "Northwind Group" });
        foreach (var (division, teams) in Structure)
        {
            var d = new OrgUnit { Id = unitId++, Name = division, ParentId = 1 };
            units.Add(d);
            foreach (var team in teams)
            {
                units.Add(new OrgUnit { Id = unitId++, Name = team, ParentId = d.Id });
            }
        }

        db.Units.AddRange(units);

        // About 200 people: 9 or 10 per team, a head per division, an executive team at the top.
        var people = new List<Person>();
        var roles = new List<RoleAssignment>();
        Person Hire(int unit)
        {
            var n = people.Count;
            var first = FirstNames[n % FirstNames.Length];
            var last = LastNames[(n / FirstNames.Length + n) % LastNames.Length];
            var person = new Person { Id = n + 1, Name = $"{first} {last}", Email = $"{first}.{last}.{n + 1}@northwind.example".ToLowerInvariant(), UnitId = unit };
            people.Add(person);
            return person;
        }

        void Grant(Person person, int unit, Role role) => roles.Add(new RoleAssignment { PersonId = person.Id, UnitId = unit, Role = role });

        var ceo = Hire(1);
        Grant(ceo, 1, Role.Admin);
        var strategyOfficer = Hire(1);
        Grant(strategyOfficer, 1, Role.Owner);
        foreach (var unit in units.Where(u => u.ParentId is not null))
        {
            var isDivision = unit.ParentId == 1;
            var head = Hire(unit.Id);
            Grant(head, unit.Id, Role.Owner);
            var updater = Hire(unit.Id);
            Grant(updater, unit.Id, Role.Updater);
            var staff = isDivision ? 1 : 6 + random.Next(3);
            for (var i = 0; i < staff; i++)
            {
                Grant(Hire(unit.Id), unit.Id, Role.Viewer);
            }
        }

        db.People.AddRange(people);

        // Every demo person signs in with the password "demo": one hash (one salt) serves them all.
        var demoPassword = Api.Passwords.Hash(Password);
        db.Credentials.AddRange(people.Select(p => new Credential { PersonId = p.Id, PasswordHash = demoPassword }));
        db.Settings.Add(new AppSetting { Key = DemoKey, Value = "standard" });
        db.Roles.AddRange(roles);

        // The cascade: company objectives; each division aligns one objective per perspective to them; each team aligns
        // two or three to its division's, and keeps one standalone objective with its reason.
        var objectives = new List<Objective>();
        var measures = new List<Measure>();
        var targets = new List<MeasureTarget>();
        var actuals = new List<Actual>();
        var lastMonth = new DateOnly(today.Year, today.Month, 1).AddMonths(-1);

        Objective Add(int unit, Perspective perspective, string name, int? parent, int? theme, string? standalone, double weight)
        {
            var objective = new Objective
            {
                Id = objectives.Count + 1, UnitId = unit, PeriodId = active.Id, Name = name, Perspective = perspective,
                ParentObjectiveId = parent, ThemeId = theme, StandaloneReason = standalone, Weight = weight,
            };
            objectives.Add(objective);
            var templates = Templates[perspective];
            var count = 1 + random.Next(2);
            for (var i = 0; i < count; i++)
            {
                var t = templates[(objective.Id + i) % templates.Length];
                var scale = unit == 1 ? 1 : 0.2 + random.NextDouble();
                var scaled = t.Unit is "MEUR" ? scale : 1;
                var measure = new Measure
                {
                    Id = measures.Count + 1, ObjectiveId = objective.Id, Name = t.Name, Unit = t.Unit, Direction = t.Direction,
                    Baseline = Math.Round(t.Base * scaled, 2), Weight = i == 0 ? 2 : 1,
                };
                measures.Add(measure);
                targets.Add(t.Direction == "band"
                    ? new MeasureTarget { MeasureId = measure.Id, PeriodId = active.Id, RedFlag = t.RedFlag, Target = t.Target, TargetHigh = t.Target + 6, RedFlagHigh = t.Target + 11 }
                    : new MeasureTarget { MeasureId = measure.Id, PeriodId = active.Id, RedFlag = Math.Round(t.RedFlag * scaled, 2), Target = Math.Round(t.Target * scaled, 2), Stretch = t.Stretch is { } s ? Math.Round(s * scaled, 2) : null });

                // Monthly actuals from January to last month, wandering around the target; some teams fall behind.
                var drift = (random.NextDouble() - 0.5) * 2 * t.Spread;
                var months = measure.Id % 11 == 0 ? Math.Max(0, lastMonth.Month - 3) : lastMonth.Month;
                for (var m = 1; m <= months && lastMonth.Year == year; m++)
                {
                    var value = Math.Round((t.Direction == "band" ? t.Target + 3 : t.Target) * scaled + drift + ((random.NextDouble() - 0.5) * t.Spread), 2);
                    var month = new DateOnly(year, m, 1);
                    actuals.Add(new Actual { MeasureId = measure.Id, Month = month, Value = value, RecordedBy = ceo.Id, RecordedAt = new DateTimeOffset(month.AddMonths(1).ToDateTime(TimeOnly.MinValue), TimeSpan.Zero), Source = "seed" });
                    measure.LatestValue = value;
                    measure.LatestMonth = month;
                    measure.LatestAt = actuals[^1].RecordedAt;
                }
            }

            return objective;
        }

        var company = CompanyObjectives.Select(c => Add(1, c.Perspective, c.Name, null, c.Theme, null, 1)).ToList();
        foreach (var division in units.Where(u => u.ParentId == 1))
        {
            var divisionObjectives = company.Select(c => Add(division.Id, c.Perspective, $"{division.Name}: {Verb(c.Perspective)}", c.Id, c.ThemeId, null, 1)).ToList();
            foreach (var team in units.Where(u => u.ParentId == division.Id))
            {
                var picks = divisionObjectives.OrderBy(_ => random.Next()).Take(2 + random.Next(2)).ToList();
                foreach (var parent in picks)
                {
                    Add(team.Id, parent.Perspective, $"{team.Name}: {Verb(parent.Perspective)}", parent.Id, parent.ThemeId, null, 1 + random.Next(2));
                }

                Add(team.Id, Perspective.InternalProcess, $"{team.Name}: keep the lights on", null, null, "Run-the-business work that no corporate objective covers.", 1);
            }
        }

        db.Objectives.AddRange(objectives);
        db.Measures.AddRange(measures);
        db.Targets.AddRange(targets);
        db.Actuals.AddRange(actuals);
        SeedBudgets(db, active, units, objectives, random, today);
        SeedReviews(db, active, company, people, random, today);

        // The company's strategy map: capability drives process, process drives customers, customers drive revenue.
        for (var i = company.Count - 1; i > 0; i--)
        {
            db.Links.Add(new ObjectiveLink { CauseId = company[i].Id, EffectId = company[i - 1].Id });
        }

        // The leadership incentive plan: the company's four objectives, paid on the default curve, to the division heads.
        db.Plans.Add(new IncentivePlan { Id = 1, PeriodId = active.Id, Name = $"Leadership incentive FY{year}" });
        double[] weights = [0.4, 0.3, 0.2, 0.1];
        db.PlanComponents.AddRange(company.Select((o, i) => new PlanComponent { PlanId = 1, ObjectiveId = o.Id, Weight = weights[i % weights.Length] }));
        var heads = db.Roles.Local.Where(r => r.Role == Role.Owner && units.Any(u => u.Id == r.UnitId && u.ParentId == 1)).Select(r => r.PersonId).ToList();
        db.Participants.AddRange(heads.Select(p => new PlanParticipant { PlanId = 1, PersonId = p, TargetIncentive = 20_000m }));

        // The year's strategy announcement, acknowledged by most of the company.
        db.Announcements.Add(new Announcement
        {
            Id = 1, Title = $"Our strategy for {year}", AuthorId = ceo.Id, PublishedAt = new DateTimeOffset(year, 1, 8, 9, 0, 0, TimeSpan.Zero), RequiresAck = true,
            Body = "Four themes carry our year: profitable growth, customer intimacy, operational excellence, people and capability. Every team's scorecard is aligned to them.",
        });
        db.Audiences.Add(new AnnouncementAudience { AnnouncementId = 1, UnitId = 1 });
        db.Acknowledgements.AddRange(people.Where(_ => random.Next(10) < 7).Select(p => new Acknowledgement { AnnouncementId = 1, PersonId = p.Id, At = new DateTimeOffset(year, 1, 9, 12, 0, 0, TimeSpan.Zero) }));
        db.SaveChanges();
    }

    /// <summary>
    /// The company's review cadence for the year: a monthly operational review on each month's first Monday and a
    /// quarterly strategy review on the first Thursday of each quarter. Those already held are closed, each with a
    /// decision and an action (the last ones' actions still open, some overdue); the rest are planned.
    /// </summary>
    private static void SeedReviews(StrategyDb db, Period active, List<Objective> company, List<Person> people, Random random, DateOnly today)
    {
        var reviews = Reviews.ReviewCadence.Between(active.Start, active.End).Select(r => new Review
        {
            UnitId = 1, PeriodId = active.Id, Kind = r.Kind, ScheduledFor = r.Day, Status = r.Day < today ? "closed" : "planned",
            Title = Reviews.ReviewCadence.Title("Northwind Group", r.Kind, r.Day),
        }).ToList();

        var ordered = reviews.OrderBy(r => r.ScheduledFor).ToList();
        for (var i = 0; i < ordered.Count; i++)
        {
            ordered[i].Id = i + 1;
        }

        db.Reviews.AddRange(ordered);
        var held = ordered.Where(r => r.Status == "closed").ToList();
        foreach (var (review, n) in held.Select((r, n) => (r, n)))
        {
            var objective = company[n % company.Count];
            var owner = people[2 + random.Next(people.Count - 2)];
            db.Decisions.Add(new Decision
            {
                ReviewId = review.Id, ObjectiveId = objective.Id, RecordedBy = 1, At = new DateTimeOffset(review.ScheduledFor.ToDateTime(new TimeOnly(10, 0)), TimeSpan.Zero),
                Text = $"Keep \"{objective.Name}\" on track: the owners report the recovery plan next time.",
            });
            var due = review.ScheduledFor.AddDays(21);
            db.Actions.Add(new ActionItem
            {
                ReviewId = review.Id, ObjectiveId = objective.Id, OwnerId = owner.Id, Due = due, Text = $"Recovery plan for \"{objective.Name}\"",
                DoneOn = n < held.Count - 3 ? due.AddDays(-random.Next(1, 10)) : null,
            });
        }
    }
    /// <summary>
    /// A ringfenced pool per theme; two initiatives per division linked to its objectives, funded from the pool of their
    /// theme, with quarterly milestones and monthly spend; and two spend entries linked to no initiative.
    /// </summary>
    private static void SeedBudgets(StrategyDb db, Period active, List<OrgUnit> units, List<Objective> objectives, Random random, DateOnly today)
    {
        var pools = Enumerable.Range(1, 4).Select(theme => new Pool
        {
            Id = theme, PeriodId = active.Id, ThemeId = theme, Name = $"Strategic fund: {db.Themes.Local.First(t => t.Id == theme).Name}", Amount = 2_000_000m, Ringfenced = true,
        }).ToList();
        db.Pools.AddRange(pools);
        var initiativeId = 1;
        foreach (var division in units.Where(u => u.ParentId == 1))
        {
            foreach (var objective in objectives.Where(o => o.UnitId == division.Id).OrderBy(_ => random.Next()).Take(2))
            {
                var initiative = new Initiative { Id = initiativeId++, UnitId = division.Id, PeriodId = active.Id, Name = $"{division.Name}: {InitiativeName(objective.Perspective)}" };
                db.Initiatives.Add(initiative);
                db.InitiativeLinks.Add(new InitiativeLink { InitiativeId = initiative.Id, ObjectiveId = objective.Id });
                var budget = 200_000m + (50_000m * random.Next(8));
                db.Allocations.Add(new Allocation { PoolId = objective.ThemeId ?? 1, InitiativeId = initiative.Id, Amount = budget });
                for (var q = 1; q <= 4; q++)
                {
                    var due = new DateOnly(active.Start.Year, q * 3, 15);
                    var late = random.Next(4) == 0;
                    db.Milestones.Add(new Milestone { InitiativeId = initiative.Id, Name = $"Q{q} milestone", Due = due, DoneOn = due < today && !late ? due.AddDays(random.Next(-5, 10)) : null });
                }

                for (var month = 1; month < today.Month && today.Year == active.Start.Year; month++)
                {
                    db.Spend.Add(new Spend
                    {
                        InitiativeId = initiative.Id, PeriodId = active.Id, On = new DateOnly(active.Start.Year, month, 28),
                        Amount = Math.Round(budget / 12m * (decimal)(0.7 + (random.NextDouble() * 0.6)), 2), Description = "Monthly run cost",
                    });
                }
            }
        }

        // Spend is money already spent: early in the year these are dated today, not ahead of it.
        static DateOnly NotAfter(DateOnly day, DateOnly today) => day <= today ? day : today;
        db.Spend.Add(new Spend { PeriodId = active.Id, On = NotAfter(new DateOnly(active.Start.Year, 3, 3), today), Amount = 48_500m, Description = "Trade fair stand (no initiative)" });
        db.Spend.Add(new Spend { PeriodId = active.Id, On = NotAfter(new DateOnly(active.Start.Year, 6, 12), today), Amount = 12_900m, Description = "Office furniture (no initiative)" });
    }

    private static string InitiativeName(Perspective perspective) => perspective switch
    {
        Perspective.Financial => "pricing and packaging refresh",
        Perspective.Customer => "customer journey programme",
        Perspective.InternalProcess => "automation and quality programme",
        _ => "skills academy",
    };

    private static string Verb(Perspective perspective) => perspective switch
    {
        Perspective.Financial => "grow revenue within budget",
        Perspective.Customer => "keep customers and win their referrals",
        Perspective.InternalProcess => "shorten cycle times and cut rework",
        _ => "grow skills and engagement",
    };
}
