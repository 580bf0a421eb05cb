using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.Json;
using Microsoft.EntityFrameworkCore;
using StrategyExecution.Data;
using StrategyExecution.Live;

namespace StrategyExecution.Api;

/// <summary>
/// Low-friction data entry and getting data out: the "my updates" grid, CSV import of actuals (all or nothing, with a
/// per-row error report), and full JSON and CSV export.
/// </summary>
public static class DataEndpoints
{
    /// <summary>The largest CSV import.</summary>
    public const int MaxCsvBytes = 24 * 1024 * 1024; // under Kestrel's default request body limit of 30 MB

    /// <summary>
    /// How many CSV imports one process reads and applies at once: each holds its file (up to <see cref="MaxCsvBytes"/>),
    /// its text and its rows in memory, so a burst of imports would otherwise grow the process by that much each.
    /// </summary>
    public const int MaxConcurrentImports = 2;

    private static readonly SemaphoreSlim ImportSlots = new(MaxConcurrentImports, MaxConcurrentImports);

    // The tables an export holds, by name.
    private static readonly Dictionary<string, Func<StrategyDb, IQueryable<object>>> Tables = new(StringComparer.Ordinal)
    {
        ["units"] = db => db.Units.AsNoTracking(),
        ["people"] = db => db.People.AsNoTracking(),
        ["roles"] = db => db.Roles.AsNoTracking(),
        ["periods"] = db => db.Periods.AsNoTracking(),
        ["themes"] = db => db.Themes.AsNoTracking(),
        ["objectives"] = db => db.Objectives.AsNoTracking(),
        ["links"] = db => db.Links.AsNoTracking(),
        ["measures"] = db => db.Measures.AsNoTracking(),
        ["targets"] = db => db.Targets.AsNoTracking(),
        ["actuals"] = db => db.Actuals.AsNoTracking(),
        ["pools"] = db => db.Pools.AsNoTracking(),
        ["initiatives"] = db => db.Initiatives.AsNoTracking(),
        ["initiative-links"] = db => db.InitiativeLinks.AsNoTracking(),
        ["milestones"] = db => db.Milestones.AsNoTracking(),
        ["allocations"] = db => db.Allocations.AsNoTracking(),
        ["spend"] = db => db.Spend.AsNoTracking(),
        ["releases"] = db => db.Releases.AsNoTracking(),
        ["announcements"] = db => db.Announcements.AsNoTracking(),
        ["audiences"] = db => db.Audiences.AsNoTracking(),
        ["acknowledgements"] = db => db.Acknowledgements.AsNoTracking(),
        ["reviews"] = db => db.Reviews.AsNoTracking(),
        ["agenda"] = db => db.Agenda.AsNoTracking(),
        ["decisions"] = db => db.Decisions.AsNoTracking(),
        ["actions"] = db => db.Actions.AsNoTracking(),
        ["plans"] = db => db.Plans.AsNoTracking(),
        ["plan-components"] = db => db.PlanComponents.AsNoTracking(),
        ["plan-participants"] = db => db.Participants.AsNoTracking(),
        ["audit"] = db => db.Audit.AsNoTracking(),
    };

    /// <summary>Maps the data API under <c>/api</c>.</summary>
    public static RouteGroupBuilder MapDataApi(this RouteGroupBuilder api)
    {
        ArgumentNullException.ThrowIfNull(api);
        api.MapGet("/my-updates", MyUpdatesAsync);
        api.MapPost("/actuals/batch", BatchAsync);
        api.MapPost("/actuals/import", ImportAsync);
        api.MapGet("/export", ExportJsonAsync);
        api.MapGet("/export/{table}.csv", ExportCsvAsync);
        return api;
    }

    private static async Task<IResult> MyUpdatesAsync(HttpContext context, Acting acting, StrategyDb db, Scorecards scorecards, CancellationToken ct)
    {
        var person = await acting.SignedInAsync(context, ct);

        var period = await db.Periods.AsNoTracking().Where(p => p.Status == PeriodStatus.Active).OrderByDescending(p => p.Start).FirstOrDefaultAsync(ct);
        if (period is null || await scorecards.ComputeAsync(period.Id) is not { } scores)
        {
            return Results.Ok(Array.Empty<object>());
        }

        var roots = await db.Roles.AsNoTracking().Where(r => r.PersonId == person.Id && r.Role <= Role.Updater).Select(r => r.UnitId).ToListAsync(ct);
        var scope = Checks.Subtree(scores.Units, roots);
        var objectives = scores.Objectives.Where(o => scope.Contains(o.UnitId)).ToDictionary(o => o.Id);
        var units = scores.Units.ToDictionary(u => u.Id, u => u.Name);
        return Results.Ok(scores.Measures.Where(m => objectives.ContainsKey(m.ObjectiveId)).Select(m => new
        {
            Measure = scores.MeasureView(m),
            Objective = objectives[m.ObjectiveId].Name,
            UnitId = objectives[m.ObjectiveId].UnitId,
            Unit = units[objectives[m.ObjectiveId].UnitId],
        }).OrderBy(x => x.Measure.Stale ? 0 : 1).ThenBy(x => x.UnitId).Take(2000).ToList());
    }

    private static async Task<IResult> BatchAsync(HttpContext context, Acting acting, StrategyDb db, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var (request, error) = await JsonBody.ReadAuthoredAsync<BatchRequest>(context, acting, ct);
        if (error is not null)
        {
            return error;
        }

        var (person, body) = request!;
        // A row sent as null is a row with nothing in it: reported as such, with the rest.
        var rows = (body.Rows ?? []).Select((r, i) => new ImportRow(
            i + 1,
            r?.MeasureId?.ToString(CultureInfo.InvariantCulture),
            r?.Month,
            r?.Value?.ToString("R", CultureInfo.InvariantCulture))).ToList();
        return await ApplyAsync(db, acting, person, rows, "grid", audit, time, ct);
    }

    private static async Task<IResult> ImportAsync(HttpContext context, Acting acting, StrategyDb db, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var person = await acting.SignedInAsync(context, ct);

        // Before the file is read: reading and parsing up to 24 MiB is work done only for someone who may record
        // actuals somewhere (each row is still held to the updater role on its own unit).
        if (!await acting.HoldsRoleAnywhereAsync(person, Role.Updater, ct))
        {
            return Problems.Forbidden("Importing actuals needs the updater role on a unit.");
        }

        var type = context.Request.ContentType ?? string.Empty;
        if (!type.StartsWith("text/csv", StringComparison.OrdinalIgnoreCase))
        {
            return Problems.Error(415, "UNSUPPORTED_MEDIA_TYPE", "Send the file as text/csv.");
        }

        // Taken before the file is read, and not waited for: a client told to come back holds nothing meanwhile.
        if (!await ImportSlots.WaitAsync(0, ct))
        {
            context.Response.Headers.RetryAfter = "5";
            return Problems.Error(503, "IMPORTS_BUSY", $"At most {MaxConcurrentImports} imports run at once; nothing of this one was read. Send it again shortly.");
        }

        try
        {
            return await ImportFileAsync(context, acting, db, person, audit, time, ct);
        }
        finally
        {
            ImportSlots.Release();
        }
    }

    private static async Task<IResult> ImportFileAsync(HttpContext context, Acting acting, StrategyDb db, Person person, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var (body, error) = await JsonBody.ReadBoundedAsync(context.Request, MaxCsvBytes, $"A CSV import may be at most {MaxCsvBytes / (1024 * 1024)} MiB.", ct);
        if (error is not null)
        {
            return error;
        }

        string text;
        try
        {
            text = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true).GetString(body.Span).TrimStart('\uFEFF');
        }
        catch (DecoderFallbackException)
        {
            return Problems.Error(400, "INVALID_CSV", "The file is not UTF-8 text.");
        }

        var (rows, parseErrors) = ActualImport.ParseCsv(text);
        if (parseErrors.Count > 0)
        {
            return Results.Json(new { Error = new Problems.ErrorDetail("INVALID_CSV", "Nothing was imported.", null), Rows = parseErrors }, statusCode: 400);
        }

        return await ApplyAsync(db, acting, person, rows, "csv", audit, time, ct);
    }

    private static async Task<IResult> ApplyAsync(StrategyDb db, Acting acting, Person person, List<ImportRow> rows, string source, AuditTrail audit, TimeProvider time, CancellationToken ct)
    {
        var (recorded, errors) = await ActualImport.ApplyAsync(db, acting, person, rows, source, time, ct);
        if (errors.Count > 0)
        {
            return Results.Json(
                new { Error = new Problems.ErrorDetail("INVALID_ROWS", $"Nothing was imported: {errors.Count}{(errors.Count >= ActualImport.MaxErrors ? "+" : string.Empty)} row errors.", null), Rows = errors },
                statusCode: 400);
        }

        audit.Notify();
        return Results.Ok(new { Recorded = recorded });
    }

    private static async Task<IResult> ExportJsonAsync(HttpContext context, Acting acting, StrategyDb db, CancellationToken ct)
    {
        if (await ExportRefusedAsync(context, acting, ct) is { } refused)
        {
            return refused;
        }

        context.Response.ContentType = "application/json";
        context.Response.Headers.ContentDisposition = "attachment; filename=\"strategy-export.json\"";
        // Written to the response's pipe, which is flushed to the client as the tables stream out.
        var pipe = context.Response.BodyWriter;
        await using var writer = new Utf8JsonWriter(pipe);
        writer.WriteStartObject();
        foreach (var (name, table) in Tables)
        {
            writer.WritePropertyName(name);
            writer.WriteStartArray();
            var count = 0;
            await foreach (var row in table(db).AsAsyncEnumerable().WithCancellation(ct))
            {
                JsonSerializer.Serialize(writer, row, row.GetType(), JsonSerializerOptions.Web);
                if (++count % 1000 == 0)
                {
                    await pipe.FlushAsync(ct);
                }
            }

            writer.WriteEndArray();
            writer.Flush();
            await pipe.FlushAsync(ct);
        }

        writer.WriteEndObject();
        writer.Flush();
        await pipe.FlushAsync(ct);
        return Results.Empty;
    }

    private static async Task<IResult> ExportCsvAsync(string table, HttpContext context, Acting acting, StrategyDb db, CancellationToken ct)
    {
        if (await ExportRefusedAsync(context, acting, ct) is { } refused)
        {
            return refused;
        }

        if (!Tables.TryGetValue(table, out var query))
        {
            return Problems.NotFound($"No table '{table}'. Tables: {string.Join(", ", Tables.Keys)}.");
        }

        context.Response.ContentType = "text/csv; charset=utf-8";
        context.Response.Headers.ContentDisposition = $"attachment; filename=\"{table}.csv\"";
        await using var writer = new StreamWriter(context.Response.Body, new UTF8Encoding(false));
        PropertyInfo[]? columns = null;
        await foreach (var row in query(db).AsAsyncEnumerable().WithCancellation(ct))
        {
            if (columns is null)
            {
                columns = row.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance);
                await writer.WriteLineAsync(string.Join(',', columns.Select(c => Csv(JsonNamingPolicy.SnakeCaseLower.ConvertName(c.Name)))));
            }

            await writer.WriteLineAsync(string.Join(',', columns.Select(c => Csv(Format(c.GetValue(row))))));
        }

        return Results.Empty;
    }

    /// <summary>
    /// An export holds every table, the people's pay in the incentive plans and the whole audit trail among them: it is
    /// the company admins' (null), and refused to anyone else.
    /// </summary>
    private static async Task<IResult?> ExportRefusedAsync(HttpContext context, Acting acting, CancellationToken ct)
        => await acting.HasCompanyRoleAsync(await acting.SignedInAsync(context, ct), Role.Admin, ct)
            ? null
            : Problems.Forbidden("An export holds everything, everyone's pay among it: it needs the admin role on the company.");

    private static string Format(object? value) => value switch
    {
        null => string.Empty,

        // Text that a spreadsheet would read as a formula (a description such as =HYPERLINK(...)) is kept as text: a
        // leading apostrophe, which spreadsheets show as nothing. Numbers are written as they are.
        string text when text.Length > 0 && text[0] is '=' or '+' or '-' or '@' or '\t' or '\r' => "'" + text,
        DateOnly d => d.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
        DateTimeOffset t => t.ToString("O", CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? string.Empty,
    };

    /// <summary>A CSV field, quoted when it holds a comma, a quote or a line break.</summary>
    private static string Csv(string field)
        => field.AsSpan().IndexOfAny(",\"\r\n") >= 0 ? $"\"{field.Replace("\"", "\"\"", StringComparison.Ordinal)}\"" : field;
}
