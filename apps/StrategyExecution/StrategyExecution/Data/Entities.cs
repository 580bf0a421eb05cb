using StrategyExecution.Scoring;

namespace StrategyExecution.Data;

/// <summary>An org unit: the company at the root, divisions and teams below it.</summary>
public sealed class OrgUnit
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The name.</summary>
    public required string Name { get; set; }

    /// <summary>The parent unit; <see langword="null"/> for the company.</summary>
    public int? ParentId { get; set; }
}

/// <summary>A person in the organisation.</summary>
public sealed class Person
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The full name.</summary>
    public required string Name { get; set; }

    /// <summary>The e-mail address.</summary>
    public required string Email { get; set; }

    /// <summary>The unit the person works in.</summary>
    public int UnitId { get; set; }
}

/// <summary>A fact about the app's data, by key: <c>demo</c> says which demo organisation was loaded into it.</summary>
public sealed class AppSetting
{
    /// <summary>The key.</summary>
    public required string Key { get; set; }

    /// <summary>The value.</summary>
    public required string Value { get; set; }
}

/// <summary>
/// A person's password, kept apart from <see cref="Person"/> so that nothing which lists or exports people can carry it.
/// </summary>
public sealed class Credential
{
    /// <summary>The person.</summary>
    public int PersonId { get; set; }

    /// <summary>The password's hash, in <see cref="Api.Passwords"/>' format.</summary>
    public required string PasswordHash { get; set; }
}

/// <summary>
/// A bearer token: a browser's sign-in (kept in a cookie) or an API token a person made for a script. Only its SHA-256
/// hash is stored, so the database never holds a usable token.
/// </summary>
public sealed class AccessToken
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The token's SHA-256, hex.</summary>
    public required string Hash { get; set; }

    /// <summary>Whose it is.</summary>
    public int PersonId { get; set; }

    /// <summary><c>sign-in</c>, or the name the person gave an API token.</summary>
    public required string Name { get; set; }

    /// <summary>When it was made.</summary>
    public DateTimeOffset CreatedAt { get; set; }

    /// <summary>When it stops working.</summary>
    public DateTimeOffset ExpiresAt { get; set; }

    /// <summary>
    /// When it last let a request in, to the minute (a process looks it up again at most once a minute); null until its
    /// first use. A sign-in past the person's limit ends the one unused the longest.
    /// </summary>
    public DateTimeOffset? LastUsedAt { get; set; }
}

/// <summary>What a person may do in a unit and every unit below it.</summary>
public sealed class RoleAssignment
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The person.</summary>
    public int PersonId { get; set; }

    /// <summary>The unit (and its descendants).</summary>
    public int UnitId { get; set; }

    /// <summary>The role.</summary>
    public Role Role { get; set; }
}

/// <summary>Roles, from most to least powerful; each includes what the ones after it may do.</summary>
public enum Role
{
    /// <summary>Everything, including roles and periods.</summary>
    Admin = 0,

    /// <summary>Owns the unit's scorecard: objectives, measures, targets, budgets.</summary>
    Owner = 1,

    /// <summary>Enters actuals and updates initiatives.</summary>
    Updater = 2,

    /// <summary>Reads.</summary>
    Viewer = 3,
}

/// <summary>A planning period, e.g. a year.</summary>
public sealed class Period
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The name, e.g. <c>FY2026</c>.</summary>
    public required string Name { get; set; }

    /// <summary>The first day.</summary>
    public DateOnly Start { get; set; }

    /// <summary>The last day.</summary>
    public DateOnly End { get; set; }

    /// <summary>Planning, active or locked.</summary>
    public PeriodStatus Status { get; set; }
}

/// <summary>Where a period is in its life.</summary>
public enum PeriodStatus
{
    /// <summary>Scorecards and targets are being set.</summary>
    Planning = 0,

    /// <summary>Actuals are being recorded.</summary>
    Active = 1,

    /// <summary>Closed: nothing changes any more.</summary>
    Locked = 2,
}

/// <summary>The strategy everyone sees: vision and mission (one row).</summary>
public sealed class StrategyStatement
{
    /// <summary>The id (always 1).</summary>
    public int Id { get; set; }

    /// <summary>Where the organisation is going.</summary>
    public required string Vision { get; set; }

    /// <summary>What it does to get there.</summary>
    public required string Mission { get; set; }
}

/// <summary>A strategic theme.</summary>
public sealed class Theme
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The name.</summary>
    public required string Name { get; set; }

    /// <summary>What it means.</summary>
    public required string Description { get; set; }
}

/// <summary>The four Balanced Scorecard perspectives.</summary>
public enum Perspective
{
    /// <summary>Financial.</summary>
    Financial = 0,

    /// <summary>Customer.</summary>
    Customer = 1,

    /// <summary>Internal process.</summary>
    InternalProcess = 2,

    /// <summary>Learning and growth.</summary>
    LearningAndGrowth = 3,
}

/// <summary>An objective on a unit's scorecard for a period.</summary>
public sealed class Objective
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The unit whose scorecard it is on.</summary>
    public int UnitId { get; set; }

    /// <summary>The period.</summary>
    public int PeriodId { get; set; }

    /// <summary>The name.</summary>
    public required string Name { get; set; }

    /// <summary>The perspective.</summary>
    public Perspective Perspective { get; set; }

    /// <summary>The theme it serves, if any.</summary>
    public int? ThemeId { get; set; }

    /// <summary>The parent unit's objective it is aligned to (cascaded from).</summary>
    public int? ParentObjectiveId { get; set; }

    /// <summary>Why it stands alone, when it has no parent objective (required then, except on the company's scorecard).</summary>
    public string? StandaloneReason { get; set; }

    /// <summary>Its weight in its parent objective's and its unit's roll-up.</summary>
    public double Weight { get; set; } = 1;

    /// <summary>How its measures and aligned objectives roll up into it: <c>weighted</c> or <c>worst</c>.</summary>
    public string RollupMethod { get; set; } = Scoring.RollupMethod.Weighted.Value;
}

/// <summary>A cause→effect link of the strategy map: achieving the cause drives the effect.</summary>
public sealed class ObjectiveLink
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The objective that drives.</summary>
    public int CauseId { get; set; }

    /// <summary>The objective it drives.</summary>
    public int EffectId { get; set; }
}

/// <summary>A measure of an objective.</summary>
public sealed class Measure
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The objective it measures.</summary>
    public int ObjectiveId { get; set; }

    /// <summary>The name.</summary>
    public required string Name { get; set; }

    /// <summary>The unit of the values, e.g. <c>%</c>, <c>EUR</c>, <c>days</c>.</summary>
    public required string Unit { get; set; }

    /// <summary><c>higher</c>, <c>lower</c> or <c>band</c>.</summary>
    public required string Direction { get; set; }

    /// <summary>Where it started.</summary>
    public double? Baseline { get; set; }

    /// <summary>Its weight in its objective's roll-up.</summary>
    public double Weight { get; set; } = 1;

    /// <summary>The latest actual's value (kept with every new actual, so scorecards read no history).</summary>
    public double? LatestValue { get; set; }

    /// <summary>The month of the latest actual.</summary>
    public DateOnly? LatestMonth { get; set; }

    /// <summary>When the latest actual was recorded.</summary>
    public DateTimeOffset? LatestAt { get; set; }
}

/// <summary>A measure's thresholds for a period.</summary>
public sealed class MeasureTarget
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The measure.</summary>
    public int MeasureId { get; set; }

    /// <summary>The period.</summary>
    public int PeriodId { get; set; }

    /// <summary>The red flag (for a band, the low one).</summary>
    public double RedFlag { get; set; }

    /// <summary>The target (for a band, the low end of the range).</summary>
    public double Target { get; set; }

    /// <summary>The stretch, if any.</summary>
    public double? Stretch { get; set; }

    /// <summary>For a band: the high end of the range.</summary>
    public double? TargetHigh { get; set; }

    /// <summary>For a band: the high red flag.</summary>
    public double? RedFlagHigh { get; set; }

    /// <summary>The thresholds as the scoring rules take them.</summary>
    public TargetThresholds ToThresholds(string direction) => new()
    {
        Direction = new MeasureDirection(direction),
        RedFlag = RedFlag,
        Target = Target,
        Stretch = Stretch,
        TargetHigh = TargetHigh,
        RedFlagHigh = RedFlagHigh,
    };
}

/// <summary>One recorded actual. Never changed or deleted: a correction is a newer actual for the same month.</summary>
public sealed class Actual
{
    /// <summary>The id, increasing in the order actuals were recorded.</summary>
    public long Id { get; set; }

    /// <summary>The measure.</summary>
    public int MeasureId { get; set; }

    /// <summary>The month it is for (its first day).</summary>
    public DateOnly Month { get; set; }

    /// <summary>The value.</summary>
    public double Value { get; set; }

    /// <summary>Who recorded it.</summary>
    public int RecordedBy { get; set; }

    /// <summary>When.</summary>
    public DateTimeOffset RecordedAt { get; set; }

    /// <summary>How: <c>form</c>, <c>grid</c>, <c>csv</c>, <c>api</c>, <c>seed</c>.</summary>
    public required string Source { get; set; }
}

/// <summary>A strategic-expenditure pool for a period and theme.</summary>
public sealed class Pool
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The period.</summary>
    public int PeriodId { get; set; }

    /// <summary>The theme it funds.</summary>
    public int ThemeId { get; set; }

    /// <summary>The name.</summary>
    public required string Name { get; set; }

    /// <summary>The money in it (after releases).</summary>
    public decimal Amount { get; set; }

    /// <summary>Whether money leaves it only with an approval.</summary>
    public bool Ringfenced { get; set; }
}

/// <summary>An initiative: a funded piece of work that moves objectives and measures.</summary>
public sealed class Initiative
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The unit that runs it.</summary>
    public int UnitId { get; set; }

    /// <summary>The period.</summary>
    public int PeriodId { get; set; }

    /// <summary>The name.</summary>
    public required string Name { get; set; }
}

/// <summary>A link from an initiative to an objective or a measure it moves (many to many).</summary>
public sealed class InitiativeLink
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The initiative.</summary>
    public int InitiativeId { get; set; }

    /// <summary>The objective, for a link to an objective.</summary>
    public int? ObjectiveId { get; set; }

    /// <summary>The measure, for a link to a measure.</summary>
    public int? MeasureId { get; set; }
}

/// <summary>A milestone of an initiative: its dates give the planned progress, the done ones the actual progress.</summary>
public sealed class Milestone
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The initiative.</summary>
    public int InitiativeId { get; set; }

    /// <summary>The name.</summary>
    public required string Name { get; set; }

    /// <summary>When it is due.</summary>
    public DateOnly Due { get; set; }

    /// <summary>When it was done, if it is.</summary>
    public DateOnly? DoneOn { get; set; }
}

/// <summary>Money allocated from a pool to an initiative.</summary>
public sealed class Allocation
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The pool.</summary>
    public int PoolId { get; set; }

    /// <summary>The initiative.</summary>
    public int InitiativeId { get; set; }

    /// <summary>The amount.</summary>
    public decimal Amount { get; set; }
}

/// <summary>Money spent, on an initiative or (not linked to strategy) on none.</summary>
public sealed class Spend
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The initiative, if the spend is linked to one.</summary>
    public int? InitiativeId { get; set; }

    /// <summary>The period.</summary>
    public int PeriodId { get; set; }

    /// <summary>The amount.</summary>
    public decimal Amount { get; set; }

    /// <summary>The day.</summary>
    public DateOnly On { get; set; }

    /// <summary>What it was for.</summary>
    public required string Description { get; set; }
}

/// <summary>A request to move money out of a pool; from a ringfenced pool it waits for an approval.</summary>
public sealed class PoolRelease
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The pool.</summary>
    public int PoolId { get; set; }

    /// <summary>The amount.</summary>
    public decimal Amount { get; set; }

    /// <summary>Why.</summary>
    public required string Reason { get; set; }

    /// <summary>Who asked.</summary>
    public int RequestedBy { get; set; }

    /// <summary>Who approved, once approved.</summary>
    public int? ApprovedBy { get; set; }

    /// <summary>Whether the money has left the pool.</summary>
    public bool Applied { get; set; }
}

/// <summary>An incentive plan of a period: components weighted by measure or objective, and one payout curve.</summary>
public sealed class IncentivePlan
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The period.</summary>
    public int PeriodId { get; set; }

    /// <summary>The name.</summary>
    public required string Name { get; set; }

    /// <summary>The lowest score that pays.</summary>
    public double ThresholdScore { get; set; } = 50;

    /// <summary>What the threshold pays, as a fraction of the target incentive.</summary>
    public double ThresholdPayout { get; set; } = 0.5;

    /// <summary>The score that pays the target payout.</summary>
    public double TargetScore { get; set; } = 100;

    /// <summary>The target payout.</summary>
    public double TargetPayout { get; set; } = 1;

    /// <summary>The score from which the payout stops rising.</summary>
    public double MaximumScore { get; set; } = 150;

    /// <summary>The cap.</summary>
    public double MaximumPayout { get; set; } = 2;

    /// <summary>The plan's curve as the payout rules take it.</summary>
    public Incentives.PayoutCurve Curve => new(ThresholdScore, ThresholdPayout, TargetScore, TargetPayout, MaximumScore, MaximumPayout);
}

/// <summary>A component of a plan: a measure or an objective, weighted.</summary>
public sealed class PlanComponent
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The plan.</summary>
    public int PlanId { get; set; }

    /// <summary>The objective, for a component on an objective.</summary>
    public int? ObjectiveId { get; set; }

    /// <summary>The measure, for a component on a measure.</summary>
    public int? MeasureId { get; set; }

    /// <summary>Its weight in the plan.</summary>
    public double Weight { get; set; }
}

/// <summary>A person in a plan, with their target incentive.</summary>
public sealed class PlanParticipant
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The plan.</summary>
    public int PlanId { get; set; }

    /// <summary>The person.</summary>
    public int PersonId { get; set; }

    /// <summary>What they earn at target.</summary>
    public decimal TargetIncentive { get; set; }

    /// <summary>The payout fraction, frozen when the period was locked.</summary>
    public double? FrozenFraction { get; set; }

    /// <summary>The payout, frozen when the period was locked.</summary>
    public decimal? FrozenAmount { get; set; }
}

/// <summary>An announcement of the strategy to chosen org units, which may require each person to acknowledge it.</summary>
public sealed class Announcement
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The title.</summary>
    public required string Title { get; set; }

    /// <summary>The text.</summary>
    public required string Body { get; set; }

    /// <summary>Who published it.</summary>
    public int AuthorId { get; set; }

    /// <summary>When.</summary>
    public DateTimeOffset PublishedAt { get; set; }

    /// <summary>Whether everyone in the audience is asked to acknowledge it.</summary>
    public bool RequiresAck { get; set; }
}

/// <summary>An org unit an announcement goes to (with every unit below it).</summary>
public sealed class AnnouncementAudience
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The announcement.</summary>
    public int AnnouncementId { get; set; }

    /// <summary>The unit.</summary>
    public int UnitId { get; set; }
}

/// <summary>A person's acknowledgement of an announcement.</summary>
public sealed class Acknowledgement
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The announcement.</summary>
    public int AnnouncementId { get; set; }

    /// <summary>Who.</summary>
    public int PersonId { get; set; }

    /// <summary>When.</summary>
    public DateTimeOffset At { get; set; }
}

/// <summary>A review meeting: a monthly operational or a quarterly strategy review of a unit.</summary>
public sealed class Review
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The unit reviewed (with every unit below it).</summary>
    public int UnitId { get; set; }

    /// <summary>The period.</summary>
    public int PeriodId { get; set; }

    /// <summary><c>monthly-operational</c> or <c>quarterly-strategy</c>.</summary>
    public required string Kind { get; set; }

    /// <summary>The title.</summary>
    public required string Title { get; set; }

    /// <summary>The day it is held.</summary>
    public DateOnly ScheduledFor { get; set; }

    /// <summary><c>planned</c>, <c>live</c> or <c>closed</c>.</summary>
    public string Status { get; set; } = "planned";

    /// <summary>The agenda item being discussed, while live.</summary>
    public int? CurrentItemId { get; set; }
}

/// <summary>An agenda item of a review, generated from what needs attention.</summary>
public sealed class AgendaItem
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The review.</summary>
    public int ReviewId { get; set; }

    /// <summary>Its place on the agenda.</summary>
    public int Position { get; set; }

    /// <summary>Why it is there: <c>overdue-action</c>, <c>red</c>, <c>amber</c> or <c>stale</c>.</summary>
    public required string Reason { get; set; }

    /// <summary>What it is about, e.g. <c>measure/12</c> or <c>action/3</c>.</summary>
    public required string Subject { get; set; }

    /// <summary>The objective it concerns, for decisions taken on it.</summary>
    public int? ObjectiveId { get; set; }

    /// <summary>The measure it concerns, if any.</summary>
    public int? MeasureId { get; set; }

    /// <summary>The title.</summary>
    public required string Title { get; set; }
}

/// <summary>A decision taken in a review; it always names the objective or measure it is about.</summary>
public sealed class Decision
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The review.</summary>
    public int ReviewId { get; set; }

    /// <summary>The agenda item it was taken on, if any.</summary>
    public int? AgendaItemId { get; set; }

    /// <summary>The objective it is about.</summary>
    public int? ObjectiveId { get; set; }

    /// <summary>The measure it is about.</summary>
    public int? MeasureId { get; set; }

    /// <summary>What was decided.</summary>
    public required string Text { get; set; }

    /// <summary>Who recorded it.</summary>
    public int RecordedBy { get; set; }

    /// <summary>When.</summary>
    public DateTimeOffset At { get; set; }
}

/// <summary>An action item from a review, with an owner and a due date.</summary>
public sealed class ActionItem
{
    /// <summary>The id.</summary>
    public int Id { get; set; }

    /// <summary>The review it came from.</summary>
    public int ReviewId { get; set; }

    /// <summary>What to do.</summary>
    public required string Text { get; set; }

    /// <summary>Who does it.</summary>
    public int OwnerId { get; set; }

    /// <summary>By when.</summary>
    public DateOnly Due { get; set; }

    /// <summary>When it was done, if it is.</summary>
    public DateOnly? DoneOn { get; set; }

    /// <summary>The objective it serves, if any.</summary>
    public int? ObjectiveId { get; set; }

    /// <summary>The measure it serves, if any.</summary>
    public int? MeasureId { get; set; }
}

/// <summary>
/// One change, recorded in the same transaction as the change itself and then appended to the audit stream with its id
/// as the producer sequence, so the stream gets every entry exactly once even across a crash in between.
/// </summary>
public sealed class AuditEntry
{
    /// <summary>The id: the entry's sequence number in the audit stream.</summary>
    public long Id { get; set; }

    /// <summary>When.</summary>
    public DateTimeOffset At { get; set; }

    /// <summary>Who (a person id).</summary>
    public int ActorId { get; set; }

    /// <summary>What, e.g. <c>actual.recorded</c>.</summary>
    public required string Action { get; set; }

    /// <summary>The entity changed, e.g. <c>measure/42</c>.</summary>
    public required string Subject { get; set; }

    /// <summary>The change as JSON.</summary>
    public required string Details { get; set; }

    /// <summary>Whether it has been appended to the audit stream.</summary>
    public bool Published { get; set; }
}
