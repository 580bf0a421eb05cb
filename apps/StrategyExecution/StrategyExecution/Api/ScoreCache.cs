using System.Collections.Concurrent;
using System.Data.Common;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Diagnostics;

namespace StrategyExecution.Api;

/// <summary>
/// Every period's computed scores, kept until the database changes: reading dashboards costs nothing between changes,
/// and the first read after a change computes once. Any committed change (a save outside a transaction, or a
/// transaction's commit) empties it; a computation that overlapped a change is not kept.
/// </summary>
public sealed class ScoreCache
{
    private readonly ConcurrentDictionary<int, PeriodScores> _periods = new();
    private long _version;

    /// <summary>The cached scores of <paramref name="periodId"/>, or computes and keeps them.</summary>
    public async Task<PeriodScores?> GetOrComputeAsync(int periodId, Func<Task<PeriodScores?>> compute)
    {
        ArgumentNullException.ThrowIfNull(compute);
        if (_periods.TryGetValue(periodId, out var cached))
        {
            return cached;
        }

        var version = Interlocked.Read(ref _version);
        var scores = await compute();
        if (scores is not null && Interlocked.Read(ref _version) == version)
        {
            _periods[periodId] = scores;

            // A change that landed between the check and the store must not leave stale scores behind.
            if (Interlocked.Read(ref _version) != version)
            {
                _periods.TryRemove(periodId, out _);
            }
        }

        return scores;
    }

    /// <summary>Forgets every period's scores.</summary>
    public void Invalidate()
    {
        Interlocked.Increment(ref _version);
        _periods.Clear();
    }
}

/// <summary>Empties the <see cref="ScoreCache"/> whenever a change commits.</summary>
public sealed class ScoreCacheInvalidation(ScoreCache cache) : IDbTransactionInterceptor, ISaveChangesInterceptor
{
    /// <inheritdoc/>
    public int SavedChanges(SaveChangesCompletedEventData eventData, int result)
    {
        cache.Invalidate();
        return result;
    }

    /// <inheritdoc/>
    public ValueTask<int> SavedChangesAsync(SaveChangesCompletedEventData eventData, int result, CancellationToken cancellationToken = default)
    {
        cache.Invalidate();
        return ValueTask.FromResult(result);
    }

    /// <inheritdoc/>
    public void TransactionCommitted(DbTransaction transaction, TransactionEndEventData eventData) => cache.Invalidate();

    /// <inheritdoc/>
    public Task TransactionCommittedAsync(DbTransaction transaction, TransactionEndEventData eventData, CancellationToken cancellationToken = default)
    {
        cache.Invalidate();
        return Task.CompletedTask;
    }
}
