using Microsoft.EntityFrameworkCore;
using StrategyExecution.Data;
using StrategyExecution.Live;

namespace StrategyExecution.Api;

/// <summary>The body of <c>POST /api/announcements</c>.</summary>
public sealed record AnnounceRequest(string? Title, string? Body, IReadOnlyList<int>? UnitIds, bool? RequiresAck);

/// <summary>How far an announcement has been acknowledged in one unit (people of the unit itself).</summary>
public sealed record UnitCoverage(int UnitId, string Name, int People, int Acknowledged, double Percent);

/// <summary>An announcement with its coverage, and where the acting person stands.</summary>
public sealed record AnnouncementView(
    int Id, string Title, string Body, int AuthorId, DateTimeOffset PublishedAt, bool RequiresAck, IReadOnlyList<int> UnitIds,
    int Audience, int Acknowledged, bool? ForMe, bool? AcknowledgedByMe, IReadOnlyList<UnitCoverage> Coverage);

/// <summary>
/// Step 1, communicate: announcements to chosen org units, acknowledged by each person they reach, with coverage per
/// unit and reminders to those who have not acknowledged yet. Every step lands on the audit stream, so pages update live.
/// </summary>
public static class CommunicationEndpoints
{
    /// <summary>Maps the communication API under <c>/api</c>.</summary>
    public static RouteGroupBuilder MapCommunicationApi(this RouteGroupBuilder api)
    {
        ArgumentNullException.ThrowIfNull(api);
        api.MapGet("/announcements", ListAsync);
        api.MapPost("/announcements", PublishAsync);
        api.MapPost("/announcements/{id:int}/acknowledge", AcknowledgeAsync);
        api.MapPost("/announcements/{id:int}/remind", RemindAsync);
        return api;
    }

    private static async Task<IResult> ListAsync(HttpContext context, Acting acting, StrategyDb db, CancellationToken ct)
    {
        var me = await acting.PersonAsync(context, ct);
        var units = await db.Units.AsNoTracking().ToListAsync(ct);
        var people = await db.People.AsNoTracking().Select(p => new { p.Id, p.UnitId }).ToListAsync(ct);
        var announcements = await db.Announcements.AsNoTracking().OrderByDescending(a => a.Id).Take(50).ToListAsync(ct);
        var ids = announcements.Select(a => a.Id).ToList();
        var audiences = (await db.Audiences.AsNoTracking().Where(a => ids.Contains(a.AnnouncementId)).ToListAsync(ct)).ToLookup(a => a.AnnouncementId, a => a.UnitId);
        var acks = (await db.Acknowledgements.AsNoTracking().Where(a => ids.Contains(a.AnnouncementId)).ToListAsync(ct)).ToLookup(a => a.AnnouncementId, a => a.PersonId);

        // People by unit, once: each announcement then goes through the units (once) and the people of those in its
        // audience, not through every person for every unit (with 500 units and 5,000 people, millions of steps each).
        var peopleByUnit = people.ToLookup(p => p.UnitId, p => p.Id);
        return Results.Ok(announcements.Select(a =>
        {
            var scope = Checks.Subtree(units, audiences[a.Id]);
            var acknowledged = acks[a.Id].ToHashSet();
            var coverage = new List<UnitCoverage>();
            var (audienceCount, acknowledgedCount, includesMe) = (0, 0, false);
            foreach (var u in units)
            {
                if (!scope.Contains(u.Id))
                {
                    continue;
                }

                var (inUnit, done) = (0, 0);
                foreach (var personId in peopleByUnit[u.Id])
                {
                    inUnit++;
                    done += acknowledged.Contains(personId) ? 1 : 0;
                    includesMe |= personId == me?.Id;
                }

                if (inUnit > 0)
                {
                    coverage.Add(new UnitCoverage(u.Id, u.Name, inUnit, done, Math.Round(100.0 * done / inUnit, 1)));
                }

                (audienceCount, acknowledgedCount) = (audienceCount + inUnit, acknowledgedCount + done);
            }

            return new AnnouncementView(
                a.Id, a.Title, a.Body, a.AuthorId, a.PublishedAt, a.RequiresAck, audiences[a.Id].ToList(), audienceCount, acknowledgedCount,
                me is null ? null : includesMe, me is null ? null : acknowledged.Contains(me.Id), coverage);
        }).ToList());
    }

    private static async Task<IResult> PublishAsync(HttpContext context, Acting acting, StrategyDb db, Limits limits, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var (request, error) = await JsonBody.ReadAuthoredAsync<AnnounceRequest>(context, acting, ct);
        if (error is not null)
        {
            return error;
        }

        var (person, body) = request!;
        var problems = new List<string>();
        var title = body.Title?.Trim() ?? string.Empty;
        if (title.Length is 0 or > 200)
        {
            problems.Add("title must be 1 to 200 characters.");
        }

        if (string.IsNullOrWhiteSpace(body.Body) || body.Body.Length > 10_000)
        {
            problems.Add("body must be 1 to 10,000 characters.");
        }

        var unitIds = body.UnitIds?.Distinct().ToList() ?? [];
        if (unitIds.Count is 0 or > 100 || await db.Units.CountAsync(u => unitIds.Contains(u.Id), ct) != unitIds.Count)
        {
            problems.Add("unitIds must name 1 to 100 org units.");
        }

        if (problems.Count > 0)
        {
            return Problems.Error(400, "INVALID_ANNOUNCEMENT", "The announcement cannot be published.", problems);
        }

        if (!await acting.HasRoleOnAllAsync(person, unitIds, Role.Owner, ct))
        {
            return Problems.Forbidden("Announcing to a unit needs the owner or admin role on it or a unit above it.");
        }

        // The limit is met when the author's announcement that many back was published within the last 365 days. Ids follow the
        // order of publishing, and the comparison is made here: SQLite cannot compare dates with offsets in a query.
        var now = time.GetUtcNow();
        var limitBack = await db.Announcements.AsNoTracking().Where(a => a.AuthorId == person.Id).OrderByDescending(a => a.Id).Skip(limits.AnnouncementsPerAuthorPerYear - 1)
            .Select(a => (DateTimeOffset?)a.PublishedAt).FirstOrDefaultAsync(ct);
        if (limitBack is { } since && since > now.AddDays(-365))
        {
            return Limits.Reached($"One person publishes at most {limits.AnnouncementsPerAuthorPerYear:N0} announcements in any 365 days; {person.Name} has published {limits.AnnouncementsPerAuthorPerYear:N0} since {since:yyyy-MM-dd}, so the next can be from {since.AddDays(365):yyyy-MM-dd} (UTC).");
        }

        var announcement = new Announcement { Title = title, Body = body.Body!.Trim(), AuthorId = person.Id, PublishedAt = now, RequiresAck = body.RequiresAck ?? true };
        await using var transaction = await db.Database.BeginTransactionAsync(ct);
        db.Announcements.Add(announcement);
        await db.SaveChangesAsync(ct);
        db.Audiences.AddRange(unitIds.Select(u => new AnnouncementAudience { AnnouncementId = announcement.Id, UnitId = u }));
        db.AddAudit(person.Id, "announcement.published", $"announcement/{announcement.Id}", new { announcement.Id, announcement.Title, unitIds, announcement.RequiresAck }, announcement.PublishedAt);
        await db.SaveChangesAsync(ct);
        await transaction.CommitAsync(ct);
        audit.Notify();
        return Results.Created($"/api/announcements/{announcement.Id}", announcement);
    }

    private static async Task<IResult> AcknowledgeAsync(int id, HttpContext context, Acting acting, StrategyDb db, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var person = await acting.SignedInAsync(context, ct);

        var announcement = await db.Announcements.AsNoTracking().FirstOrDefaultAsync(a => a.Id == id, ct);
        if (announcement is null)
        {
            return Problems.NotFound("No such announcement.");
        }

        var scope = Checks.Subtree(await db.Units.AsNoTracking().ToListAsync(ct), await db.Audiences.AsNoTracking().Where(a => a.AnnouncementId == id).Select(a => a.UnitId).ToListAsync(ct));
        if (!scope.Contains(person.UnitId))
        {
            return Problems.Forbidden("This announcement was not sent to your unit.");
        }

        if (await db.Acknowledgements.AnyAsync(a => a.AnnouncementId == id && a.PersonId == person.Id, ct))
        {
            return Results.Ok(new { Acknowledged = true, Already = true });
        }

        db.Acknowledgements.Add(new Acknowledgement { AnnouncementId = id, PersonId = person.Id, At = time.GetUtcNow() });
        db.AddAudit(person.Id, "announcement.acknowledged", $"announcement/{id}", new { announcementId = id, unitId = person.UnitId }, time.GetUtcNow());
        try
        {
            await db.SaveChangesAsync(ct);
        }
        catch (DbUpdateException)
        {
            // The same person acknowledging twice at once: the unique index keeps one. Any other failure saved nothing,
            // and is not reported as saved.
            db.ChangeTracker.Clear();
            if (await db.Acknowledgements.AsNoTracking().AnyAsync(a => a.AnnouncementId == id && a.PersonId == person.Id, ct))
            {
                return Results.Ok(new { Acknowledged = true, Already = true });
            }

            return Problems.Error(503, "NOT_SAVED", "The acknowledgement could not be saved; nothing was recorded. Try again.");
        }

        audit.Notify();
        return Results.Created($"/api/announcements/{id}/acknowledge", new { Acknowledged = true, Already = false });
    }

    private static async Task<IResult> RemindAsync(int id, HttpContext context, Acting acting, StrategyDb db, Limits limits, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var person = await acting.SignedInAsync(context, ct);

        var announcement = await db.Announcements.AsNoTracking().FirstOrDefaultAsync(a => a.Id == id, ct);
        if (announcement is null)
        {
            return Problems.NotFound("No such announcement.");
        }

        var audienceUnits = await db.Audiences.AsNoTracking().Where(a => a.AnnouncementId == id).Select(a => a.UnitId).ToListAsync(ct);
        if (!await acting.HasRoleOnAllAsync(person, audienceUnits, Role.Owner, ct))
        {
            return Problems.Forbidden("Sending reminders needs the owner or admin role on the announcement's units.");
        }

        // A reminder is an entry of the audit trail (the pages show it to those it names), found by its subject.
        var subject = $"announcement/{id}";
        var reminders = await db.Audit.CountAsync(a => a.Subject == subject && a.Action == "announcement.reminded", ct);
        if (reminders >= limits.RemindersPerAnnouncement)
        {
            return Limits.Reached($"An announcement is reminded at most {limits.RemindersPerAnnouncement:N0} times; \"{announcement.Title}\" has been reminded {reminders:N0} times.");
        }

        var scope = Checks.Subtree(await db.Units.AsNoTracking().ToListAsync(ct), audienceUnits);
        var acknowledged = (await db.Acknowledgements.AsNoTracking().Where(a => a.AnnouncementId == id).Select(a => a.PersonId).ToListAsync(ct)).ToHashSet();
        var pending = (await db.People.AsNoTracking().Select(p => new { p.Id, p.UnitId }).ToListAsync(ct))
            .Where(p => scope.Contains(p.UnitId) && !acknowledged.Contains(p.Id)).Select(p => p.Id).ToList();
        db.AddAudit(person.Id, "announcement.reminded", subject, new { announcementId = id, pending = pending.Count, personIds = pending }, time.GetUtcNow());
        await db.SaveChangesAsync(ct);
        audit.Notify();
        return Results.Ok(new { Reminded = pending.Count, PersonIds = pending });
    }
}
