using System.Collections.Concurrent;
using System.Data.Common;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Diagnostics;

namespace StrategyExecution.Api;

/// <summary>
/// Every period's computed scores, kept until the database changes: reading dashboards costs nothing between changes,
/// and the first read after a change computes once. Readers that arrive while that computation runs share it, so a
/// change seen by a thousand open dashboards at once is computed once, not a thousand times. Any committed change (a
/// save outside a transaction, or a transaction's commit) moves the cache to a new version; a computation that
/// overlapped a change answers its readers but is not kept for later ones.
/// </summary>
public sealed class ScoreCache
{
    private readonly ConcurrentDictionary<int, Entry> _periods = new();
    private long _version;
    private volatile ActivePeriod? _active;

    /// <summary>
    /// The cached scores of <paramref name="periodId"/>, or the computation under way, or a new one. The computation is
    /// shared, so it does not take one reader's cancellation: it runs to its end once started.
    /// </summary>
    public async Task<PeriodScores?> GetOrComputeAsync(int periodId, Func<Task<PeriodScores?>> compute)
    {
        ArgumentNullException.ThrowIfNull(compute);
        var version = Interlocked.Read(ref _version);
        var entry = _periods.AddOrUpdate(periodId, _ => new Entry(version, compute), (_, existing) => existing.Version >= version ? existing : new Entry(version, compute));
        PeriodScores? scores;
        try
        {
            scores = await entry.Scores.Value;
        }
        catch
        {
            // A failed computation is not kept: the next reader tries again.
            _periods.TryRemove(KeyValuePair.Create(periodId, entry));
            throw;
        }

        // Nor is the answer for a period that does not exist: any id can be asked for, and each would stay.
        if (scores is null)
        {
            _periods.TryRemove(KeyValuePair.Create(periodId, entry));
        }

        return scores;
    }

    /// <summary>
    /// The active period's id, found once per version: a dashboard's read of the cached scores then makes no query.
    /// </summary>
    public async Task<int?> ActivePeriodAsync(Func<Task<int?>> find)
    {
        ArgumentNullException.ThrowIfNull(find);
        var version = Interlocked.Read(ref _version);
        if (_active is { } known && known.Version == version)
        {
            return known.Id;
        }

        var id = await find();
        if (Interlocked.Read(ref _version) == version)
        {
            _active = new ActivePeriod(version, id);
        }

        return id;
    }

    /// <summary>Forgets every period's scores.</summary>
    public void Invalidate()
    {
        Interlocked.Increment(ref _version);
        _periods.Clear();
    }

    private sealed record ActivePeriod(long Version, int? Id);

    private sealed class Entry(long version, Func<Task<PeriodScores?>> compute)
    {
        public long Version { get; } = version;

        public Lazy<Task<PeriodScores?>> Scores { get; } = new(compute);
    }
}

/// <summary>
/// Empties the <see cref="ScoreCache"/> whenever a change commits, except a save that touches only sign-ins and
/// passwords, which no score reads (every sign-in would otherwise cost the next dashboard read a computation).
/// </summary>
public sealed class ScoreCacheInvalidation(ScoreCache cache) : IDbTransactionInterceptor, ISaveChangesInterceptor
{
    private readonly System.Runtime.CompilerServices.ConditionalWeakTable<DbContext, object> _credentialsOnly = [];

    /// <inheritdoc/>
    public InterceptionResult<int> SavingChanges(DbContextEventData eventData, InterceptionResult<int> result)
    {
        Classify(eventData.Context);
        return result;
    }

    /// <inheritdoc/>
    public ValueTask<InterceptionResult<int>> SavingChangesAsync(DbContextEventData eventData, InterceptionResult<int> result, CancellationToken cancellationToken = default)
    {
        Classify(eventData.Context);
        return ValueTask.FromResult(result);
    }

    /// <inheritdoc/>
    public int SavedChanges(SaveChangesCompletedEventData eventData, int result)
    {
        Saved(eventData.Context);
        return result;
    }

    /// <inheritdoc/>
    public ValueTask<int> SavedChangesAsync(SaveChangesCompletedEventData eventData, int result, CancellationToken cancellationToken = default)
    {
        Saved(eventData.Context);
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

    private void Classify(DbContext? context)
    {
        if (context is null)
        {
            return;
        }

        var credentialsOnly = context.ChangeTracker.Entries()
            .Where(e => e.State is EntityState.Added or EntityState.Modified or EntityState.Deleted)
            .All(e => e.Entity is Data.AccessToken or Data.Credential);
        if (credentialsOnly)
        {
            _credentialsOnly.AddOrUpdate(context, context);
        }
        else
        {
            _credentialsOnly.Remove(context);
        }
    }

    private void Saved(DbContext? context)
    {
        if (context is null || !_credentialsOnly.Remove(context))
        {
            cache.Invalidate();
        }
    }
}
