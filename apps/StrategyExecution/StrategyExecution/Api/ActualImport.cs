using System.Globalization;
using System.Text;
using Microsoft.EntityFrameworkCore;
using StrategyExecution.Data;

namespace StrategyExecution.Api;

/// <summary>One row to import: a measure, a month and a value, with the row number it came from.</summary>
public sealed record ImportRow(int Row, string? MeasureId, string? Month, string? Value);

/// <summary>What is wrong with one row.</summary>
public sealed record RowError(int Row, string Field, string Message);

/// <summary>The body of <c>POST /api/actuals/batch</c> (the "my updates" grid).</summary>
public sealed record BatchRequest(IReadOnlyList<BatchRow>? Rows);

/// <summary>A row of the grid.</summary>
public sealed record BatchRow(int? MeasureId, string? Month, double? Value);

/// <summary>
/// Records many actuals at once, from a CSV file or the "my updates" grid: every row is checked first (the measure,
/// the month in an active period, the value, the person's role on the measure's unit) and either all rows are recorded
/// in one transaction or none is, with a report of every bad row.
/// </summary>
public static class ActualImport
{
    /// <summary>The most rows one import takes.</summary>
    public const int MaxRows = 200_000;

    /// <summary>The most row errors reported.</summary>
    public const int MaxErrors = 1_000;

    /// <summary>The most fields a line holds; a line with more refuses the file.</summary>
    public const int MaxFields = 64;

    /// <summary>Parses CSV with a header naming <c>measure_id</c>, <c>month</c> and <c>value</c> (RFC 4180 quoting).</summary>
    public static (List<ImportRow> Rows, List<RowError> Errors) ParseCsv(string text)
    {
        var rows = new List<ImportRow>();
        var errors = new List<RowError>();

        // Record by record, never all of them at once: a file of millions of short or empty lines must not cost a
        // list per line before the row limit is checked.
        using var records = Records(text).GetEnumerator();
        if (!records.MoveNext())
        {
            errors.Add(new RowError(1, "header", "The file is empty: the first line names the columns measure_id, month and value."));
            return (rows, errors);
        }

        if (records.Current.Count > MaxFields)
        {
            errors.Add(new RowError(1, "header", $"A line holds at most {MaxFields} fields."));
            return (rows, errors);
        }

        var header = records.Current.Select(h => h.Trim().ToLowerInvariant()).ToList();
        int measure = header.IndexOf("measure_id"), month = header.IndexOf("month"), value = header.IndexOf("value");
        if (measure < 0 || month < 0 || value < 0)
        {
            errors.Add(new RowError(1, "header", "The first line names the columns measure_id, month and value."));
            return (rows, errors);
        }

        var line = 1;
        while (records.MoveNext())
        {
            line++;
            var r = records.Current;
            if (r.Count == 1 && string.IsNullOrWhiteSpace(r[0]))
            {
                continue; // a blank line
            }

            if (r.Count > MaxFields)
            {
                errors.Add(new RowError(line, "fields", $"A line holds at most {MaxFields} fields."));
                return ([], errors);
            }

            if (rows.Count == MaxRows)
            {
                errors.Add(new RowError(line, "rows", $"At most {MaxRows:N0} rows are imported at once; this file has more."));
                return ([], errors);
            }

            string? Cell(int index) => index < r.Count ? r[index].Trim() : null;
            rows.Add(new ImportRow(line, Cell(measure), Cell(month), Cell(value)));
        }

        return (rows, errors);
    }

    /// <summary>
    /// The latest month an actual may be recorded for: the current one, wherever on Earth it already is (UTC+14). An
    /// actual is a result achieved; one for a month still to come would stand as the measure's latest value, and every
    /// actual recorded for the months before it would be ignored by the scores.
    /// </summary>
    public static DateOnly LatestMonth(DateTimeOffset now)
    {
        var ahead = now.ToOffset(TimeSpan.FromHours(14));
        return new DateOnly(ahead.Year, ahead.Month, 1);
    }

    /// <summary>
    /// Makes an actual for <paramref name="month"/> its measure's latest, unless the measure already holds a later month.
    /// Decided in the statement itself, not from a value read before: of two actuals recorded at once for different
    /// months, the later month stands whichever commits last.
    /// </summary>
    public static Task<int> MoveLatestAsync(StrategyDb db, int measureId, DateOnly month, double value, DateTimeOffset now, CancellationToken ct)
        => db.Measures
            .Where(m => m.Id == measureId && (m.LatestMonth == null || m.LatestMonth <= month))
            .ExecuteUpdateAsync(s => s.SetProperty(m => m.LatestValue, value).SetProperty(m => m.LatestMonth, month).SetProperty(m => m.LatestAt, now), ct);

    /// <summary>Checks every row and records them all, or none; the errors say which rows are wrong and why.</summary>
    public static async Task<(int Recorded, List<RowError> Errors)> ApplyAsync(
        StrategyDb db, Acting acting, Person person, IReadOnlyList<ImportRow> rows, string source, TimeProvider time, CancellationToken ct)
    {
        var errors = new List<RowError>();
        if (rows.Count > MaxRows)
        {
            errors.Add(new RowError(0, "rows", $"At most {MaxRows:N0} rows are imported at once; this has {rows.Count:N0}."));
            return (0, errors);
        }

        var measures = await db.Measures.ToDictionaryAsync(m => m.Id, ct);
        var unitOf = await db.Objectives.AsNoTracking().Select(o => new { o.Id, o.UnitId, o.PeriodId }).ToDictionaryAsync(o => o.Id, ct);
        var periods = await db.Periods.AsNoTracking().ToDictionaryAsync(p => p.Id, ct);
        var allowed = new Dictionary<int, bool>();
        var latestMonth = LatestMonth(time.GetUtcNow());
        var parsed = new List<(Measure Measure, DateOnly Month, double Value)>(rows.Count);
        foreach (var row in rows)
        {
            void Fail(string field, string message)
            {
                if (errors.Count < MaxErrors)
                {
                    errors.Add(new RowError(row.Row, field, message));
                }
            }

            var ok = true;
            Measure? measure = null;
            if (!int.TryParse(row.MeasureId, NumberStyles.None, CultureInfo.InvariantCulture, out var measureId) || !measures.TryGetValue(measureId, out measure))
            {
                Fail("measure_id", $"'{row.MeasureId}' is not a measure.");
                ok = false;
            }

            if (!DateOnly.TryParseExact(row.Month, "yyyy-MM", CultureInfo.InvariantCulture, DateTimeStyles.None, out var month))
            {
                Fail("month", $"'{row.Month}' is not a month as yyyy-MM.");
                ok = false;
            }
            else if (month > latestMonth)
            {
                Fail("month", $"{row.Month} has not begun yet: actuals are recorded for months up to the current one.");
                ok = false;
            }

            if (!double.TryParse(row.Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || !double.IsFinite(value) || Math.Abs(value) > 1e15)
            {
                Fail("value", $"'{row.Value}' is not a number.");
                ok = false;
            }

            if (measure is not null)
            {
                var objective = unitOf[measure.ObjectiveId];
                if (!allowed.TryGetValue(objective.UnitId, out var may))
                {
                    allowed[objective.UnitId] = may = await acting.HasRoleAsync(person, objective.UnitId, Role.Updater, ct);
                }

                var period = periods[objective.PeriodId];
                if (!may)
                {
                    Fail("measure_id", $"Recording actuals for measure {measure.Id} needs the updater role on its unit or a unit above it.");
                    ok = false;
                }
                else if (ok && (month < period.Start || month > period.End))
                {
                    Fail("month", $"Measure {measure.Id} belongs to {period.Name} ({period.Start:yyyy-MM} to {period.End:yyyy-MM}).");
                    ok = false;
                }
                else if (ok && period.Status != PeriodStatus.Active)
                {
                    Fail("month", $"{period.Name} is {period.Status.ToString().ToLowerInvariant()}: actuals are recorded only in an active period.");
                    ok = false;
                }
            }

            if (ok)
            {
                parsed.Add((measure!, month, value));
            }
        }

        if (errors.Count > 0 || parsed.Count == 0)
        {
            if (parsed.Count == 0 && errors.Count == 0)
            {
                errors.Add(new RowError(0, "rows", "There is nothing to import."));
            }

            return (0, errors);
        }

        foreach (var periodId in parsed.Select(p => unitOf[p.Measure.ObjectiveId].PeriodId).Distinct())
        {
            db.WritesInto(periodId);
        }

        var now = time.GetUtcNow();
        db.ChangeTracker.AutoDetectChangesEnabled = false;
        await db.Database.OpenConnectionAsync(ct);
        await using var transaction = await db.Database.BeginTransactionAsync(ct);
        // Each measure's latest of the rows: the latest month, and of rows for the same month the last one.
        var latest = new SortedDictionary<int, (DateOnly Month, double Value)>();
        using (var writer = new ActualWriter(db, transaction))
        {
            foreach (var (measure, month, value) in parsed)
            {
                writer.Insert(measure.Id, month, value, person.Id, now, source);
                if (!latest.TryGetValue(measure.Id, out var best) || month >= best.Month)
                {
                    latest[measure.Id] = (month, value);
                }
            }

            writer.Complete();
        }

        // In measure order, so that two imports at once lock the measures' rows in the same order.
        foreach (var (measureId, (month, value)) in latest)
        {
            await MoveLatestAsync(db, measureId, month, value, now, ct);
        }

        db.AddAudit(person.Id, "actuals.imported", "actuals", new { source, rows = parsed.Count, measures = parsed.Select(p => p.Measure.Id).Distinct().Count() }, now);
        await db.SaveChangesAsync(ct);
        await transaction.CommitAsync(ct);
        return (parsed.Count, errors);
    }

    /// <summary>
    /// The records of a CSV text: fields split on commas, quoted fields may hold commas, quotes and line breaks. A record
    /// past <see cref="MaxFields"/> fields keeps only its first ones and one more, which says so: a line of millions of
    /// commas must not cost a string each.
    /// </summary>
    private static IEnumerable<List<string>> Records(string text)
    {
        var record = new List<string>();
        var field = new StringBuilder();
        var quoted = false;
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (quoted)
            {
                if (c == '"' && i + 1 < text.Length && text[i + 1] == '"')
                {
                    field.Append('"');
                    i++;
                }
                else if (c == '"')
                {
                    quoted = false;
                }
                else
                {
                    field.Append(c);
                }
            }
            else if (c == '"')
            {
                quoted = true;
            }
            else if (c == ',')
            {
                if (record.Count <= MaxFields)
                {
                    record.Add(field.ToString());
                }

                field.Clear();
            }
            else if (c is '\n' or '\r')
            {
                if (c == '\r' && i + 1 < text.Length && text[i + 1] == '\n')
                {
                    i++;
                }

                record.Add(field.ToString());
                field.Clear();
                yield return record;
                record = [];
            }
            else
            {
                field.Append(c);
            }
        }

        if (field.Length > 0 || record.Count > 0)
        {
            record.Add(field.ToString());
            yield return record;
        }
    }
}
