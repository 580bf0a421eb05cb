using Microsoft.EntityFrameworkCore;
using StrategyExecution.Data;
using StrategyExecution.Live;
using StrategyExecution.Scoring;

namespace StrategyExecution.Api;

/// <summary>The body of <c>POST /api/reviews</c>.</summary>
public sealed record CreateReviewRequest(int? UnitId, string? Kind, DateOnly? ScheduledFor);

/// <summary>The body of <c>POST /api/reviews/cadence</c>.</summary>
public sealed record CadenceRequest(int? UnitId);

/// <summary>The body of <c>POST /api/reviews/{id}/current</c>.</summary>
public sealed record CurrentItemRequest(int? ItemId);

/// <summary>The body of <c>POST /api/reviews/{id}/decisions</c>.</summary>
public sealed record DecisionRequest(string? Text, int? AgendaItemId, int? ObjectiveId, int? MeasureId);

/// <summary>The body of <c>POST /api/reviews/{id}/actions</c>.</summary>
public sealed record ActionRequest(string? Text, int? OwnerId, DateOnly? Due, int? AgendaItemId, int? ObjectiveId, int? MeasureId);

/// <summary>
/// Step 5, review: monthly operational and quarterly strategy reviews with agendas generated from what needs attention,
/// a live meeting mode (every change goes to the review's own durable stream, which every participant's page follows),
/// a decision log and action items.
/// </summary>
public static class ReviewEndpoints
{
    private static readonly string[] Kinds = [Reviews.ReviewCadence.Monthly, Reviews.ReviewCadence.Quarterly];
    private const int MaxAgenda = 30;

    /// <summary>Maps the review API under <c>/api</c>.</summary>
    public static RouteGroupBuilder MapReviewApi(this RouteGroupBuilder api)
    {
        ArgumentNullException.ThrowIfNull(api);
        api.MapGet("/reviews", ListAsync);
        api.MapPost("/reviews", CreateAsync);
        api.MapPost("/reviews/cadence", CadenceAsync);
        api.MapGet("/reviews/{id:int}", GetAsync);
        api.MapPost("/reviews/{id:int}/start", StartAsync);
        api.MapPost("/reviews/{id:int}/current", CurrentAsync);
        api.MapPost("/reviews/{id:int}/decisions", DecideAsync);
        api.MapPost("/reviews/{id:int}/actions", ActAsync);
        api.MapPost("/reviews/{id:int}/close", CloseAsync);
        api.MapPost("/actions/{id:int}/done", DoneAsync);
        return api;
    }

    /// <summary>
    /// Reviews by day, at most <paramref name="take"/> (500) at a time; the next page starts after the last one's
    /// <c>id</c> (<c>after</c>).
    /// </summary>
    private static async Task<IResult> ListAsync(StrategyDb db, int? unit, int? take, int? after, CancellationToken ct)
    {
        var query = db.Reviews.AsNoTracking();
        if (unit is { } u)
        {
            query = query.Where(r => r.UnitId == u);
        }

        if (after is { } last)
        {
            if (await db.Reviews.AsNoTracking().FirstOrDefaultAsync(r => r.Id == last, ct) is not { } a)
            {
                return Problems.Error(400, "INVALID_CURSOR", "after must be the id of a review of an earlier page.");
            }

            query = query.Where(r => r.ScheduledFor > a.ScheduledFor || (r.ScheduledFor == a.ScheduledFor && r.Id > a.Id));
        }

        return Results.Ok(await query.OrderBy(r => r.ScheduledFor).ThenBy(r => r.Id).Take(Math.Clamp(take ?? 500, 1, 500)).ToListAsync(ct));
    }

    private static async Task<IResult> GetAsync(int id, StrategyDb db, AuditTrail audit, CancellationToken ct)
    {
        var review = await db.Reviews.AsNoTracking().FirstOrDefaultAsync(r => r.Id == id, ct);
        if (review is null)
        {
            return Problems.NotFound("No such review.");
        }

        // The page follows the review's stream right after this answer: it exists from then on, even before the meeting.
        await audit.CreateReviewStreamAsync(id, ct);

        return Results.Ok(new
        {
            Review = review,
            Stream = AuditTrail.ReviewStream(id),
            Agenda = await db.Agenda.AsNoTracking().Where(a => a.ReviewId == id).OrderBy(a => a.Position).ToListAsync(ct),
            Decisions = await db.Decisions.AsNoTracking().Where(d => d.ReviewId == id).OrderBy(d => d.Id).ToListAsync(ct),
            Actions = await db.Actions.AsNoTracking().Where(a => a.ReviewId == id).OrderBy(a => a.Id).ToListAsync(ct),
        });
    }

    private static async Task<IResult> CreateAsync(HttpContext context, Acting acting, StrategyDb db, Scorecards scorecards, Limits limits, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var (request, error) = await JsonBody.ReadAuthoredAsync<CreateReviewRequest>(context, acting, ct);
        if (error is not null)
        {
            return error;
        }

        var (person, body) = request!;
        var problems = new List<string>();
        var unit = await Checks.UnitAsync(db, body.UnitId, problems, ct);
        if (!Kinds.Contains(body.Kind))
        {
            problems.Add("kind must be monthly-operational or quarterly-strategy.");
        }

        var period = await db.Periods.AsNoTracking().Where(p => p.Status == PeriodStatus.Active).OrderByDescending(p => p.Start).FirstOrDefaultAsync(ct);
        var day = body.ScheduledFor ?? DateOnly.FromDateTime(time.GetUtcNow().UtcDateTime);
        if (period is null || day < period.Start || day > period.End)
        {
            problems.Add("scheduledFor must fall in the active period.");
        }

        if (problems.Count > 0)
        {
            return Problems.Error(400, "INVALID_REVIEW", "The review cannot be scheduled.", problems);
        }

        if (!await acting.HasRoleAsync(person, unit!.Id, Role.Owner, ct))
        {
            return Problems.Forbidden("Scheduling a unit's reviews needs the owner or admin role on it or a unit above it.");
        }

        var scheduled = await db.Reviews.CountAsync(r => r.UnitId == unit.Id && r.PeriodId == period!.Id, ct);
        if (scheduled >= limits.ReviewsPerUnitAndPeriod)
        {
            return Limits.Reached($"A unit has at most {limits.ReviewsPerUnitAndPeriod:N0} reviews per period; {unit.Name} has {scheduled:N0} in {period!.Name}.");
        }

        var title = Reviews.ReviewCadence.Title(unit.Name, body.Kind!, day);
        var review = new Review { UnitId = unit.Id, PeriodId = period!.Id, Kind = body.Kind!, Title = title, ScheduledFor = day };
        await using var transaction = await db.Database.BeginTransactionAsync(ct);
        db.Reviews.Add(review);
        await db.SaveChangesAsync(ct);
        var agenda = await GenerateAgendaAsync(db, scorecards, review, time, ct);
        db.AddAudit(person.Id, "review.scheduled", $"review/{review.Id}", new { review.Id, review.Title, review.Kind, scheduledFor = day, agenda }, time.GetUtcNow());
        await db.SaveChangesAsync(ct);
        await transaction.CommitAsync(ct);
        await audit.CreateReviewStreamAsync(review.Id, ct);
        audit.Notify();
        return Results.Created($"/api/reviews/{review.Id}", new { Review = review, Agenda = agenda });
    }

    /// <summary>Schedules the cadence's reviews of the active period for a unit, skipping those it already has.</summary>
    private static async Task<IResult> CadenceAsync(HttpContext context, Acting acting, StrategyDb db, Limits limits, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var (request, error) = await JsonBody.ReadAuthoredAsync<CadenceRequest>(context, acting, ct);
        if (error is not null)
        {
            return error;
        }

        var (person, body) = request!;
        var problems = new List<string>();
        var unit = await Checks.UnitAsync(db, body.UnitId, problems, ct);
        var period = await db.Periods.AsNoTracking().Where(p => p.Status == PeriodStatus.Active).OrderByDescending(p => p.Start).FirstOrDefaultAsync(ct);
        if (period is null)
        {
            problems.Add("there is no active period.");
        }

        if (problems.Count > 0)
        {
            return Problems.Error(400, "INVALID_CADENCE", "The cadence cannot be scheduled.", problems);
        }

        if (!await acting.HasRoleAsync(person, unit!.Id, Role.Owner, ct))
        {
            return Problems.Forbidden("Scheduling a unit's reviews needs the owner or admin role on it or a unit above it.");
        }

        // What is scheduled already is read and added to in one transaction that holds the database's write lock
        // (SQLite) or an advisory lock (PostgreSQL) from its start: two requests at once schedule the cadence once.
        await using var transaction = await db.Database.BeginTransactionAsync(ct);
        if (db.Database.IsNpgsql())
        {
            await db.Database.ExecuteSqlRawAsync("SELECT pg_advisory_xact_lock(5103)", ct);
        }

        var scheduled = await db.Reviews.AsNoTracking().Where(r => r.UnitId == unit.Id && r.PeriodId == period!.Id).Select(r => new { r.Kind, r.ScheduledFor }).ToListAsync(ct);
        var existing = scheduled.Select(r => (r.Kind, r.ScheduledFor)).ToHashSet();
        var created = Reviews.ReviewCadence.Between(period!.Start, period.End).Where(r => !existing.Contains((r.Kind, r.Day))).Select(r => new Review
        {
            UnitId = unit.Id, PeriodId = period.Id, Kind = r.Kind, ScheduledFor = r.Day, Title = Reviews.ReviewCadence.Title(unit.Name, r.Kind, r.Day),
        }).ToList();

        // All of the cadence or none of it: a cadence cut short at the limit would look scheduled and miss meetings.
        if (created.Count > 0 && scheduled.Count + created.Count > limits.ReviewsPerUnitAndPeriod)
        {
            return Limits.Reached($"A unit has at most {limits.ReviewsPerUnitAndPeriod:N0} reviews per period; {unit.Name} has {scheduled.Count:N0} in {period.Name}, and the cadence would add {created.Count:N0}.");
        }

        db.Reviews.AddRange(created);
        db.AddAudit(person.Id, "reviews.scheduled", $"unit/{unit.Id}", new { unitId = unit.Id, periodId = period.Id, reviews = created.Count }, time.GetUtcNow());
        await db.SaveChangesAsync(ct);
        await transaction.CommitAsync(ct);
        audit.Notify();
        return Results.Ok(new { Scheduled = created.Count, Reviews = created });
    }

    /// <summary>
    /// The agenda from what needs attention in the unit and every unit below it: overdue actions first, then red
    /// measures, amber ones and stale ones (no recent actual), each worst first, at most <see cref="MaxAgenda"/> items.
    /// </summary>
    private static async Task<List<AgendaItem>> GenerateAgendaAsync(StrategyDb db, Scorecards scorecards, Review review, TimeProvider time, CancellationToken ct)
    {
        var scores = (await scorecards.ComputeAsync(review.PeriodId))!;
        var scope = Checks.Subtree(scores.Units, review.UnitId);
        var objectives = scores.Objectives.Where(o => scope.Contains(o.UnitId)).ToDictionary(o => o.Id);
        var today = DateOnly.FromDateTime(time.GetUtcNow().UtcDateTime);
        var reviewsInScope = await db.Reviews.AsNoTracking().Where(r => r.Id != review.Id).Select(r => new { r.Id, r.UnitId }).ToListAsync(ct);
        var scopeReviews = reviewsInScope.Where(r => scope.Contains(r.UnitId)).Select(r => r.Id).ToHashSet();
        var overdue = (await db.Actions.AsNoTracking().Where(a => a.DoneOn == null && a.Due < today).OrderBy(a => a.Due).ToListAsync(ct))
            .Where(a => scopeReviews.Contains(a.ReviewId)).ToList();

        var items = new List<AgendaItem>();
        items.AddRange(overdue.Select(a => new AgendaItem
        {
            ReviewId = review.Id, Reason = "overdue-action", Subject = $"action/{a.Id}", ObjectiveId = a.ObjectiveId, MeasureId = a.MeasureId,
            Title = $"Overdue since {a.Due:yyyy-MM-dd}: {a.Text}",
        }));
        var measures = scores.Measures.Where(m => objectives.ContainsKey(m.ObjectiveId)).Select(m => (Measure: m, View: scores.MeasureView(m))).ToList();
        foreach (var (reason, pick) in new (string, Func<MeasureView, bool>)[]
        {
            ("red", v => v.Color == ScoreColor.Red),
            ("amber", v => v.Color == ScoreColor.Amber),
            ("stale", v => v.Stale && v.Color != ScoreColor.Red && v.Color != ScoreColor.Amber),
        })
        {
            items.AddRange(measures.Where(x => pick(x.View)).OrderBy(x => x.View.Score ?? double.MaxValue).Select(x => new AgendaItem
            {
                ReviewId = review.Id, Reason = reason, Subject = $"measure/{x.Measure.Id}", ObjectiveId = x.Measure.ObjectiveId, MeasureId = x.Measure.Id,
                Title = $"{x.Measure.Name} ({objectives[x.Measure.ObjectiveId].Name}): {(reason == "stale" ? "no recent actual" : $"score {ScoreScale.Format(x.View.Score ?? 0)}")}",
            }));
        }

        items = items.Take(MaxAgenda).ToList();
        for (var i = 0; i < items.Count; i++)
        {
            items[i].Position = i + 1;
        }

        db.Agenda.AddRange(items);
        await db.SaveChangesAsync(ct);
        return items;
    }

    /// <summary>Loads a review and checks who may act on it; the error to answer with, or the review.</summary>
    private static async Task<(Review? Review, IResult? Error)> ReviewForAsync(StrategyDb db, Acting acting, Person person, int id, Role role, CancellationToken ct)
    {
        var review = await db.Reviews.FirstOrDefaultAsync(r => r.Id == id, ct);
        if (review is null)
        {
            return (null, Problems.NotFound("No such review."));
        }

        return await acting.HasRoleAsync(person, review.UnitId, role, ct)
            ? (review, null)
            : (null, Problems.Forbidden(role == Role.Owner
                ? "Chairing a review needs the owner or admin role on its unit or a unit above it."
                : "Recording in a review needs the updater role on its unit or a unit above it."));
    }

    /// <summary>The acting person, the body and the review they may act on with <paramref name="role"/>; or the error.</summary>
    private static async Task<(Person Person, T Body, Review Review, IResult? Error)> ReadForReviewAsync<T>(
        HttpContext context, Acting acting, StrategyDb db, int id, Role role, CancellationToken ct)
        where T : class
    {
        var (request, error) = await JsonBody.ReadAuthoredAsync<T>(context, acting, ct);
        if (error is not null)
        {
            return (null!, null!, null!, error);
        }

        var (review, refused) = await ReviewForAsync(db, acting, request!.Person, id, role, ct);
        return refused is not null ? (null!, null!, null!, refused) : (request.Person, request.Body, review!, null);
    }

    /// <summary>The chair (an owner of the review's unit) and the review, which must be <paramref name="status"/>; or the error.</summary>
    private static async Task<(Person Person, Review Review, IResult? Error)> ChairAsync(HttpContext context, Acting acting, StrategyDb db, int id, string status, CancellationToken ct)
    {
        var person = await acting.SignedInAsync(context, ct);

        var (review, error) = await ReviewForAsync(db, acting, person, id, Role.Owner, ct);
        if (error is not null)
        {
            return (null!, null!, error);
        }

        return review!.Status == status
            ? (person, review, null)
            : (null!, null!, Problems.Error(409, status == "planned" ? "REVIEW_NOT_PLANNED" : "REVIEW_NOT_LIVE", $"The review is {review.Status}."));
    }

    private static async Task<IResult> StartAsync(int id, HttpContext context, Acting acting, StrategyDb db, Scorecards scorecards, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var (person, review, error) = await ChairAsync(context, acting, db, id, "planned", ct);
        if (error is not null)
        {
            return error;
        }

        await using var transaction = await db.Database.BeginTransactionAsync(ct);

        // Started once: of two starts at once, the one that finds the review still planned here starts it (the other
        // waits for its row, then finds it live).
        if (await db.Reviews.Where(r => r.Id == id && r.Status == "planned").ExecuteUpdateAsync(r => r.SetProperty(x => x.Status, "live"), ct) == 0)
        {
            return Problems.Error(409, "REVIEW_NOT_PLANNED", "The review has been started already.");
        }

        // The agenda is generated from the scores as they are when the meeting starts, unless one was made already.
        var agenda = await db.Agenda.Where(a => a.ReviewId == id).OrderBy(a => a.Position).ToListAsync(ct);
        if (agenda.Count == 0)
        {
            agenda = await GenerateAgendaAsync(db, scorecards, review, time, ct);
        }

        review.Status = "live";
        review.CurrentItemId = agenda.FirstOrDefault()?.Id;
        db.AddAudit(person.Id, "review.started", $"review/{id}", new { reviewId = id, currentItemId = review.CurrentItemId, agenda }, time.GetUtcNow());
        await db.SaveChangesAsync(ct);
        await transaction.CommitAsync(ct);
        await audit.CreateReviewStreamAsync(id, ct);
        audit.Notify();
        return Results.Ok(new { Review = review, Agenda = agenda });
    }

    private static async Task<IResult> CurrentAsync(int id, HttpContext context, Acting acting, StrategyDb db, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var (person, body, review, error) = await ReadForReviewAsync<CurrentItemRequest>(context, acting, db, id, Role.Owner, ct);
        if (error is not null)
        {
            return error;
        }

        var item = body.ItemId is { } itemId ? await db.Agenda.AsNoTracking().FirstOrDefaultAsync(a => a.Id == itemId && a.ReviewId == id, ct) : null;
        if (item is null)
        {
            return Problems.Error(400, "INVALID_ITEM", "itemId must name an item of this review's agenda.");
        }

        // Moved only while the review is live, in the same statement: a close that commits first leaves it closed with no
        // current item, not closed with one.
        await using var transaction = await db.Database.BeginTransactionAsync(ct);
        if (await db.Reviews.Where(r => r.Id == id && r.Status == "live").ExecuteUpdateAsync(r => r.SetProperty(x => x.CurrentItemId, item.Id), ct) == 0)
        {
            return Problems.Error(409, "REVIEW_NOT_LIVE", $"The review is {await ReviewStatusAsync(db, id, ct)}: it has a current item while it is live.");
        }

        // Written by the statement above: the entity answered with shows it, and the save below does not write it again.
        db.Entry(review!).State = EntityState.Detached;
        (review!.Status, review.CurrentItemId) = ("live", item.Id);
        db.AddAudit(person.Id, "review.current", $"review/{id}", new { reviewId = id, currentItemId = item.Id, item.Title }, time.GetUtcNow());
        await db.SaveChangesAsync(ct);
        await transaction.CommitAsync(CancellationToken.None);
        audit.Notify();
        return Results.Ok(review);
    }

    /// <summary>The review's status as it is now.</summary>
    private static Task<string> ReviewStatusAsync(StrategyDb db, int id, CancellationToken ct)
        => db.Reviews.AsNoTracking().Where(r => r.Id == id).Select(r => r.Status).FirstAsync(ct);

    /// <summary>
    /// Inside the transaction that adds a decision or an action: the review is still live (its row locked until the commit,
    /// so a close waits for this write or this write sees the close) and has fewer than <paramref name="limit"/> of them
    /// (counted under that lock, so two at once cannot both pass the last place). PostgreSQL locks the row with
    /// <c>SELECT … FOR UPDATE</c>, which writes no new version of it; SQLite has no row locks, and takes its write lock
    /// for the transaction with an update that changes nothing.
    /// </summary>
    private static async Task<IResult?> StillOpenForAsync<T>(StrategyDb db, Review review, string what, IQueryable<T> rows, int limit, string limitText, CancellationToken ct)
    {
        var live = db.Database.IsNpgsql()
            ? (await db.Database.SqlQuery<int>($"SELECT 1 AS \"Value\" FROM \"Reviews\" WHERE \"Id\" = {review.Id} AND \"Status\" = 'live' FOR UPDATE").ToListAsync(ct)).Count > 0
            : await db.Reviews.Where(r => r.Id == review.Id && r.Status == "live").ExecuteUpdateAsync(r => r.SetProperty(x => x.Status, "live"), ct) > 0;
        if (!live)
        {
            return Problems.Error(409, "REVIEW_NOT_LIVE", $"The review is {await ReviewStatusAsync(db, review.Id, ct)}: {what} while it is live.");
        }

        var count = await rows.CountAsync(ct);
        return count >= limit
            ? Limits.Reached($"A review {string.Format(System.Globalization.CultureInfo.InvariantCulture, limitText, limit)}; \"{review.Title}\" has {count:N0}.")
            : null;
    }

    private static async Task<IResult> DecideAsync(int id, HttpContext context, Acting acting, StrategyDb db, Limits limits, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var (person, body, review, error) = await ReadForReviewAsync<DecisionRequest>(context, acting, db, id, Role.Updater, ct);
        if (error is not null)
        {
            return error;
        }

        var (subject, problem) = await SubjectAsync(db, review!, body.AgendaItemId, body.ObjectiveId, body.MeasureId, ct);
        var problems = problem is null ? new List<string>() : [problem];
        if (string.IsNullOrWhiteSpace(body.Text) || body.Text.Length > 2000)
        {
            problems.Add("text must be 1 to 2000 characters.");
        }

        if (problems.Count > 0)
        {
            return Problems.Error(400, "INVALID_DECISION", "The decision cannot be recorded.", problems);
        }

        var decision = new Decision
        {
            ReviewId = id, AgendaItemId = body.AgendaItemId, ObjectiveId = subject.ObjectiveId, MeasureId = subject.MeasureId,
            Text = body.Text!.Trim(), RecordedBy = person.Id, At = time.GetUtcNow(),
        };
        if (await db.AddAuditedAsync(decision, person.Id, "decision.recorded", () => $"review/{id}", () => new { reviewId = id, decision }, decision.At,
                token => StillOpenForAsync(db, review!, "decisions are recorded", db.Decisions.Where(d => d.ReviewId == id), limits.DecisionsPerReview, "records at most {0:N0} decisions", token), ct) is { } refused)
        {
            return refused;
        }

        audit.Notify();
        return Results.Created($"/api/reviews/{id}/decisions/{decision.Id}", decision);
    }

    private static async Task<IResult> ActAsync(int id, HttpContext context, Acting acting, StrategyDb db, Limits limits, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var (person, body, review, error) = await ReadForReviewAsync<ActionRequest>(context, acting, db, id, Role.Updater, ct);
        if (error is not null)
        {
            return error;
        }

        var problems = new List<string>();
        if (string.IsNullOrWhiteSpace(body.Text) || body.Text.Length > 2000)
        {
            problems.Add("text must be 1 to 2000 characters.");
        }

        var owner = body.OwnerId is { } ownerId ? await db.People.AsNoTracking().FirstOrDefaultAsync(p => p.Id == ownerId, ct) : null;
        if (owner is null)
        {
            problems.Add("ownerId must name a person.");
        }

        if (body.Due is not { } due || due < review!.ScheduledFor || due > review.ScheduledFor.AddYears(2))
        {
            problems.Add("due must be a date, yyyy-MM-dd, from the review's day to two years after it.");
        }

        // An action may be about nothing in particular; one about a subject that is not there is refused.
        var (subject, subjectProblem) = await SubjectAsync(db, review!, body.AgendaItemId, body.ObjectiveId, body.MeasureId, ct);
        if (subjectProblem is not null && subjectProblem != NoSubject)
        {
            problems.Add(subjectProblem);
        }

        if (problems.Count > 0)
        {
            return Problems.Error(400, "INVALID_ACTION", "The action cannot be recorded.", problems);
        }

        var action = new ActionItem { ReviewId = id, Text = body.Text!.Trim(), OwnerId = owner!.Id, Due = body.Due!.Value, ObjectiveId = subject.ObjectiveId, MeasureId = subject.MeasureId };
        if (await db.AddAuditedAsync(action, person.Id, "action.created", () => $"review/{id}", () => new { reviewId = id, action, ownerName = owner.Name }, time.GetUtcNow(),
                token => StillOpenForAsync(db, review!, "actions are recorded", db.Actions.Where(a => a.ReviewId == id), limits.ActionsPerReview, "gives at most {0:N0} action items", token), ct) is { } refused)
        {
            return refused;
        }

        audit.Notify();
        return Results.Created($"/api/actions/{action.Id}", action);
    }

    private static async Task<IResult> CloseAsync(int id, HttpContext context, Acting acting, StrategyDb db, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var (person, review, error) = await ChairAsync(context, acting, db, id, "live", ct);
        if (error is not null)
        {
            return error;
        }

        // Closed only if it is still live, in the same statement: of two closes at once, one closes it and the other
        // finds it closed, so it is audited once.
        await using var transaction = await db.Database.BeginTransactionAsync(ct);
        if (await db.Reviews.Where(r => r.Id == id && r.Status == "live")
                .ExecuteUpdateAsync(r => r.SetProperty(x => x.Status, "closed").SetProperty(x => x.CurrentItemId, (int?)null), ct) == 0)
        {
            return Problems.Error(409, "REVIEW_NOT_LIVE", "The review is already closed.");
        }

        // Written by the statement above: the entity answered with shows it, and the save below does not write it again.
        db.Entry(review).State = EntityState.Detached;
        (review.Status, review.CurrentItemId) = ("closed", null);
        db.AddAudit(person.Id, "review.closed", $"review/{id}", new { reviewId = id }, time.GetUtcNow());
        await db.SaveChangesAsync(ct);
        await transaction.CommitAsync(CancellationToken.None);
        audit.Notify();
        return Results.Ok(review);
    }

    private static async Task<IResult> DoneAsync(int id, HttpContext context, Acting acting, StrategyDb db, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var person = await acting.SignedInAsync(context, ct);

        var action = await db.Actions.FirstOrDefaultAsync(a => a.Id == id, ct);
        if (action is null)
        {
            return Problems.NotFound("No such action.");
        }

        var review = await db.Reviews.AsNoTracking().FirstAsync(r => r.Id == action.ReviewId, ct);
        if (action.OwnerId != person.Id && !await acting.HasRoleAsync(person, review.UnitId, Role.Owner, ct))
        {
            return Problems.Forbidden("An action is marked done by its owner, or by an owner of the review's unit.");
        }

        if (action.DoneOn is not null)
        {
            return Problems.Error(409, "ALREADY_DONE", "The action is already done.");
        }

        // Marked done only if it is not yet, in the same statement: of two requests at once, one marks it and the other
        // finds it done, so it is audited once.
        var today = DateOnly.FromDateTime(time.GetUtcNow().UtcDateTime);
        await using var transaction = await db.Database.BeginTransactionAsync(ct);
        if (await db.Actions.Where(a => a.Id == id && a.DoneOn == null).ExecuteUpdateAsync(a => a.SetProperty(x => x.DoneOn, today), ct) == 0)
        {
            return Problems.Error(409, "ALREADY_DONE", "The action is already done.");
        }

        db.Entry(action).State = EntityState.Detached;
        action.DoneOn = today;
        db.AddAudit(person.Id, "action.done", $"review/{review.Id}", new { reviewId = review.Id, actionId = id }, time.GetUtcNow());
        await db.SaveChangesAsync(ct);
        await transaction.CommitAsync(CancellationToken.None);
        audit.Notify();
        return Results.Ok(action);
    }

    /// <summary>The objective or measure a decision or action is about: given, or taken from its agenda item.</summary>
    private static async Task<((int? ObjectiveId, int? MeasureId) Subject, string? Problem)> SubjectAsync(
        StrategyDb db, Review review, int? agendaItemId, int? objectiveId, int? measureId, CancellationToken ct)
    {
        if (agendaItemId is { } itemId)
        {
            var item = await db.Agenda.AsNoTracking().FirstOrDefaultAsync(a => a.Id == itemId && a.ReviewId == review.Id, ct);
            if (item is null)
            {
                return ((null, null), "agendaItemId must name an item of this review's agenda.");
            }

            objectiveId ??= item.ObjectiveId;
            measureId ??= item.MeasureId;
        }

        int? owner = null;
        if (measureId is { } m)
        {
            owner = await db.Measures.AsNoTracking().Where(x => x.Id == m).Select(x => (int?)x.ObjectiveId).FirstOrDefaultAsync(ct);
            if (owner is null)
            {
                return ((null, null), "measureId must name a measure.");
            }

            if (objectiveId is { } named && named != owner)
            {
                return ((null, null), "measureId must name a measure of the objective objectiveId names.");
            }
        }

        if ((objectiveId ?? owner) is { } o)
        {
            var unit = await db.Objectives.AsNoTracking().Where(x => x.Id == o).Select(x => (int?)x.UnitId).FirstOrDefaultAsync(ct);
            if (unit is null)
            {
                return ((null, null), "objectiveId must name an objective.");
            }

            // A review answers for its unit and the units below it (its agenda's scope): an updater there may record
            // decisions and actions about their objectives, not about another unit's, where they would show as its.
            if (!Checks.Subtree(await db.Units.AsNoTracking().ToListAsync(ct), review.UnitId).Contains(unit.Value))
            {
                return ((null, null), "the objective or measure must belong to the review's unit or a unit below it.");
            }
        }

        return objectiveId is null && measureId is null
            ? ((null, null), NoSubject)
            : ((objectiveId, measureId), null);
    }

    private const string NoSubject = "a decision names the objective or measure it is about (objectiveId, measureId, or an agenda item that has one).";
}
