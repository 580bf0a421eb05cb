using System.Data.Common;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Storage;
using Npgsql;
using NpgsqlTypes;

namespace StrategyExecution.Data;

/// <summary>
/// Inserts many actuals inside the caller's transaction without tracking an entity per row: an import of 100,000 rows,
/// or the benchmark organisation's 360,000. On SQLite it runs one prepared statement per row (no network between the
/// app and the file); on PostgreSQL it streams the rows with a binary <c>COPY</c>, because a round trip per row would
/// cost more than the rows. The rows are visible to the transaction once <see cref="Complete"/> returns, and are kept
/// only if the transaction commits.
/// </summary>
public sealed class ActualWriter : IDisposable
{
    private const string Columns = "\"MeasureId\", \"Month\", \"Value\", \"RecordedBy\", \"RecordedAt\", \"Source\"";

    private readonly NpgsqlBinaryImporter? _copy;
    private readonly DbCommand? _insert;
    private readonly DbParameter[] _parameters = [];

    /// <summary>Starts writing on <paramref name="db"/>'s connection, in <paramref name="transaction"/>.</summary>
    public ActualWriter(StrategyDb db, IDbContextTransaction transaction)
    {
        ArgumentNullException.ThrowIfNull(db);
        ArgumentNullException.ThrowIfNull(transaction);
        var connection = db.Database.GetDbConnection();
        if (connection is NpgsqlConnection postgres)
        {
            _copy = postgres.BeginBinaryImport($"COPY \"Actuals\" ({Columns}) FROM STDIN (FORMAT BINARY)");
            return;
        }

        // The columns are written in the formats EF Core reads them back in: the provider's own conversion of
        // DateOnly and DateTimeOffset.
        _insert = connection.CreateCommand();
        _insert.Transaction = transaction.GetDbTransaction();
        _insert.CommandText = $"INSERT INTO \"Actuals\" ({Columns}) VALUES (@m, @month, @value, @by, @at, @source)";
        _parameters = [Add("@m"), Add("@month"), Add("@value"), Add("@by"), Add("@at"), Add("@source")];
        _insert.Prepare();
    }

    /// <summary>Inserts one actual.</summary>
    public void Insert(int measureId, DateOnly month, double value, int recordedBy, DateTimeOffset at, string source)
    {
        if (_copy is { } copy)
        {
            copy.StartRow();
            copy.Write(measureId, NpgsqlDbType.Integer);
            copy.Write(month, NpgsqlDbType.Date);
            copy.Write(value, NpgsqlDbType.Double);
            copy.Write(recordedBy, NpgsqlDbType.Integer);
            copy.Write(at.ToUniversalTime(), NpgsqlDbType.TimestampTz);
            copy.Write(source, NpgsqlDbType.Text);
            return;
        }

        (_parameters[0].Value, _parameters[1].Value, _parameters[2].Value, _parameters[3].Value, _parameters[4].Value, _parameters[5].Value)
            = (measureId, month, value, recordedBy, at, source);
        _insert!.ExecuteNonQuery();
    }

    /// <summary>Finishes the rows written so far; a writer disposed without it discards them (and fails the copy).</summary>
    public void Complete() => _copy?.Complete();

    /// <inheritdoc/>
    public void Dispose()
    {
        _copy?.Dispose();
        _insert?.Dispose();
    }

    private DbParameter Add(string name)
    {
        var parameter = _insert!.CreateParameter();
        parameter.ParameterName = name;
        _insert.Parameters.Add(parameter);
        return parameter;
    }
}
