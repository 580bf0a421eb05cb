using System.Data.Common;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Diagnostics;

namespace StrategyExecution.Data;

/// <summary>
/// Marks a <see cref="StrategyDb"/> once something it sent may have been committed: a transaction's commit that
/// succeeded or whose outcome is unknown, or a write outside a transaction that ran. A request whose database was busy
/// is answered 503 ("send it again") only while its context is unmarked; after a write that may have landed, sending
/// it again could apply it twice.
/// </summary>
public sealed class WriteTracker : IDbTransactionInterceptor, IDbCommandInterceptor
{
    /// <inheritdoc/>
    public void TransactionCommitted(DbTransaction transaction, TransactionEndEventData eventData) => Mark(eventData.Context);

    /// <inheritdoc/>
    public Task TransactionCommittedAsync(DbTransaction transaction, TransactionEndEventData eventData, CancellationToken cancellationToken = default)
    {
        Mark(eventData.Context);
        return Task.CompletedTask;
    }

    /// <inheritdoc/>
    public void TransactionFailed(DbTransaction transaction, TransactionErrorEventData eventData) => Failed(eventData.Context, eventData.Action, eventData.Exception);

    /// <inheritdoc/>
    public Task TransactionFailedAsync(DbTransaction transaction, TransactionErrorEventData eventData, CancellationToken cancellationToken = default)
    {
        Failed(eventData.Context, eventData.Action, eventData.Exception);
        return Task.CompletedTask;
    }

    /// <inheritdoc/>
    public int NonQueryExecuted(DbCommand command, CommandExecutedEventData eventData, int result)
    {
        MarkOutsideTransaction(command, eventData.Context);
        return result;
    }

    /// <inheritdoc/>
    public ValueTask<int> NonQueryExecutedAsync(DbCommand command, CommandExecutedEventData eventData, int result, CancellationToken cancellationToken = default)
    {
        MarkOutsideTransaction(command, eventData.Context);
        return ValueTask.FromResult(result);
    }

    /// <inheritdoc/>
    public void CommandFailed(DbCommand command, CommandErrorEventData eventData)
    {
        if (command.Transaction is null && eventData.ExecuteMethod == DbCommandMethod.ExecuteNonQuery && !StrategyDatabase.RefusedBeforeApplying(eventData.Exception))
        {
            Mark(eventData.Context);
        }
    }

    /// <inheritdoc/>
    public Task CommandFailedAsync(DbCommand command, CommandErrorEventData eventData, CancellationToken cancellationToken = default)
    {
        CommandFailed(command, eventData);
        return Task.CompletedTask;
    }

    private static void MarkOutsideTransaction(DbCommand command, DbContext? context)
    {
        if (command.Transaction is null)
        {
            Mark(context);
        }
    }

    // A commit refused by the database (still locked, a conflict) applied nothing; one cut on its way may have.
    private static void Failed(DbContext? context, string action, Exception exception)
    {
        if (action == "Commit" && !StrategyDatabase.RefusedBeforeApplying(exception))
        {
            Mark(context);
        }
    }

    private static void Mark(DbContext? context)
    {
        if (context is StrategyDb db)
        {
            db.MayHaveWritten = true;
        }
    }
}
