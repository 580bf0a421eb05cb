using System.Globalization;

namespace StrategyExecution.Api;

/// <summary>
/// How many rows of each kind people may create through the API under one parent: generous for a real organisation,
/// but bounded, so that a hostile or broken client with the right role cannot grow a scorecard, an initiative, a pool or
/// a review until every view that lists it is slow. A create past a limit is answered <c>409 LIMIT_REACHED</c>, checked
/// before anything is written, and says which limit it met. Each limit can be set under <c>Limits:</c> (e.g.
/// <c>--Limits:MeasuresPerObjective=80</c>); rows stored before a limit was lowered stay. Requests sent at the same
/// moment may each pass a check that is not made one at a time, so a count may pass its limit by those in flight;
/// links, allocations and releases are decided one at a time and never do. Actuals are not limited: they are measured
/// data, and an import is bounded per file.
/// </summary>
public sealed class Limits
{
    /// <summary>Objectives on one scorecard: one unit in one period (200).</summary>
    public int ObjectivesPerScorecard { get; private init; } = 200;

    /// <summary>Measures of one objective (50).</summary>
    public int MeasuresPerObjective { get; private init; } = 50;

    /// <summary>Cause→effect links of one objective, as cause and as effect together (100).</summary>
    public int LinksPerObjective { get; private init; } = 100;

    /// <summary>Initiatives of one unit in one period (500).</summary>
    public int InitiativesPerUnitAndPeriod { get; private init; } = 500;

    /// <summary>Milestones of one initiative (200).</summary>
    public int MilestonesPerInitiative { get; private init; } = 200;

    /// <summary>Allocations from one pool (1,000).</summary>
    public int AllocationsPerPool { get; private init; } = 1_000;

    /// <summary>Releases asked of one pool, applied or waiting for approval (1,000).</summary>
    public int ReleasesPerPool { get; private init; } = 1_000;

    /// <summary>Spend entries of one initiative (10,000).</summary>
    public int SpendPerInitiative { get; private init; } = 10_000;

    /// <summary>Spend entries on no initiative in one period (10,000).</summary>
    public int UnlinkedSpendPerPeriod { get; private init; } = 10_000;

    /// <summary>Reviews of one unit in one period, scheduled one by one or by the cadence (500).</summary>
    public int ReviewsPerUnitAndPeriod { get; private init; } = 500;

    /// <summary>Decisions recorded in one review (500).</summary>
    public int DecisionsPerReview { get; private init; } = 500;

    /// <summary>Action items from one review (500).</summary>
    public int ActionsPerReview { get; private init; } = 500;

    /// <summary>
    /// Announcements one person publishes in any 365 days (1,000): an announcement belongs to no period or unit of its
    /// own, so the bound is on how many of each author's the last year holds; one author reaching it stops nobody else.
    /// </summary>
    public int AnnouncementsPerAuthorPerYear { get; private init; } = 1_000;

    /// <summary>Reminders sent for one announcement (200); each is an entry of the audit trail with everyone it reminds.</summary>
    public int RemindersPerAnnouncement { get; private init; } = 200;

    /// <summary>
    /// Sign-ins one person holds at once (100). Not refused when reached: a new sign-in ends the person's sign-in unused
    /// the longest, so that someone who signs in again and again (a script, a loop) does not grow the tokens without
    /// bound, no one is locked out of the page, and the browser in use stays signed in. Expired sign-ins are removed at
    /// the same time. API tokens have their own bound (50).
    /// </summary>
    public int SignInsPerPerson { get; private init; } = 100;

    /// <summary>
    /// The limits set under <c>Limits:</c> in <paramref name="configuration"/>, the defaults for the rest. A value that
    /// is not a whole number from 1 up, or a key that names no limit (a typo would otherwise leave the default in
    /// force unnoticed), stops the start with a message that says what to set.
    /// </summary>
    public static Limits FromConfiguration(IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        var section = configuration.GetSection("Limits");
        var defaults = new Limits();
        var known = new List<string>();
        int Read(string name, int fallback)
        {
            known.Add(name);
            if (section[name] is not { } text)
            {
                return fallback;
            }

            return int.TryParse(text.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var value) && value >= 1
                ? value
                : throw new InvalidOperationException($"Limits:{name} must be a whole number from 1 up (the default is {fallback}), not '{text}'.");
        }

        var limits = new Limits
        {
            ObjectivesPerScorecard = Read(nameof(ObjectivesPerScorecard), defaults.ObjectivesPerScorecard),
            MeasuresPerObjective = Read(nameof(MeasuresPerObjective), defaults.MeasuresPerObjective),
            LinksPerObjective = Read(nameof(LinksPerObjective), defaults.LinksPerObjective),
            InitiativesPerUnitAndPeriod = Read(nameof(InitiativesPerUnitAndPeriod), defaults.InitiativesPerUnitAndPeriod),
            MilestonesPerInitiative = Read(nameof(MilestonesPerInitiative), defaults.MilestonesPerInitiative),
            AllocationsPerPool = Read(nameof(AllocationsPerPool), defaults.AllocationsPerPool),
            ReleasesPerPool = Read(nameof(ReleasesPerPool), defaults.ReleasesPerPool),
            SpendPerInitiative = Read(nameof(SpendPerInitiative), defaults.SpendPerInitiative),
            UnlinkedSpendPerPeriod = Read(nameof(UnlinkedSpendPerPeriod), defaults.UnlinkedSpendPerPeriod),
            ReviewsPerUnitAndPeriod = Read(nameof(ReviewsPerUnitAndPeriod), defaults.ReviewsPerUnitAndPeriod),
            DecisionsPerReview = Read(nameof(DecisionsPerReview), defaults.DecisionsPerReview),
            ActionsPerReview = Read(nameof(ActionsPerReview), defaults.ActionsPerReview),
            AnnouncementsPerAuthorPerYear = Read(nameof(AnnouncementsPerAuthorPerYear), defaults.AnnouncementsPerAuthorPerYear),
            RemindersPerAnnouncement = Read(nameof(RemindersPerAnnouncement), defaults.RemindersPerAnnouncement),
            SignInsPerPerson = Read(nameof(SignInsPerPerson), defaults.SignInsPerPerson),
        };
        if (section.GetChildren().FirstOrDefault(c => !known.Contains(c.Key, StringComparer.OrdinalIgnoreCase)) is { } unknown)
        {
            throw new InvalidOperationException($"Limits:{unknown.Key} is not a limit the app knows; the limits are {string.Join(", ", known)}.");
        }

        return limits;
    }

    /// <summary>
    /// 409 <c>LIMIT_REACHED</c> with <paramref name="message"/>, which names the limit, its value and the count that met
    /// it; numbers are written the same way whatever the server's culture (10,000).
    /// </summary>
    public static IResult Reached(FormattableString message)
    {
        ArgumentNullException.ThrowIfNull(message);
        return Problems.Error(409, "LIMIT_REACHED", message.ToString(CultureInfo.InvariantCulture));
    }
}
