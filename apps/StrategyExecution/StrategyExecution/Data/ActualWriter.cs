using System.Data.Common;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Storage;

namespace StrategyExecution.Data;

/// <summary>
/// Inserts many actuals with one prepared statement inside the caller's transaction: an import of 100,000 rows, or the
/// benchmark organisation's 360,000, without tracking an entity per row. The columns are written in the formats EF Core
/// reads them back in (the provider's own conversion of <see cref="DateOnly"/> and <see cref="DateTimeOffset"/>).
/// </summary>
public sealed class ActualWriter : IDisposable
{
    private readonly DbCommand _insert;
    private readonly DbParameter _measure;
    private readonly DbParameter _month;
    private readonly DbParameter _value;
    private readonly DbParameter _by;
    private readonly DbParameter _at;
    private readonly DbParameter _source;

    /// <summary>Prepares the statement on <paramref name="db"/>'s connection, in <paramref name="transaction"/>.</summary>
    public ActualWriter(StrategyDb db, IDbContextTransaction transaction)
    {
        ArgumentNullException.ThrowIfNull(db);
        ArgumentNullException.ThrowIfNull(transaction);
        _insert = db.Database.GetDbConnection().CreateCommand();
        _insert.Transaction = transaction.GetDbTransaction();
        _insert.CommandText = "INSERT INTO \"Actuals\" (\"MeasureId\", \"Month\", \"Value\", \"RecordedBy\", \"RecordedAt\", \"Source\") VALUES ($m, $month, $value, $by, $at, $source)";
        (_measure, _month, _value, _by, _at, _source) = (Add("$m"), Add("$month"), Add("$value"), Add("$by"), Add("$at"), Add("$source"));
        _insert.Prepare();
    }

    /// <summary>Inserts one actual.</summary>
    public void Insert(int measureId, DateOnly month, double value, int recordedBy, DateTimeOffset at, string source)
    {
        (_measure.Value, _month.Value, _value.Value, _by.Value, _at.Value, _source.Value) = (measureId, month, value, recordedBy, at, source);
        _insert.ExecuteNonQuery();
    }

    /// <inheritdoc/>
    public void Dispose() => _insert.Dispose();

    private DbParameter Add(string name)
    {
        var parameter = _insert.CreateParameter();
        parameter.ParameterName = name;
        _insert.Parameters.Add(parameter);
        return parameter;
    }
}
