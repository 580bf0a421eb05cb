namespace StrategyExecution.Budgets;

/// <summary>The answer to a request to take money from a strategic-expenditure pool.</summary>
/// <param name="Allowed">Whether it may go ahead.</param>
/// <param name="Available">What the pool has left before the request.</param>
/// <param name="Reason">Why not, when it may not.</param>
/// <param name="NeedsApproval">Refused only for want of an approval: with one it would be allowed.</param>
public sealed record PoolDecision(bool Allowed, decimal Available, string? Reason, bool NeedsApproval = false);

/// <summary>
/// The rules of a ringfenced pool: allocations to initiatives never add up to more than the pool, and money moved out
/// of a ringfenced pool to anything that is not one of its initiatives needs an approval first.
/// </summary>
/// <remarks>Pure and thread-safe: the caller applies a decision atomically with the allocations it was made on.</remarks>
public static class RingfencedPool
{
    /// <summary>Whether <paramref name="amount"/> more can be allocated from a pool of <paramref name="poolAmount"/> that has <paramref name="allocated"/> allocated.</summary>
    public static PoolDecision Allocate(decimal poolAmount, decimal allocated, decimal amount)
    {
        var available = poolAmount - allocated;
        if (amount <= 0)
        {
            return new PoolDecision(false, available, "An allocation must be more than 0.");
        }

        return amount > available
            ? new PoolDecision(false, available, $"The pool has {available:0.00} left; {amount:0.00} would over-allocate it by {amount - available:0.00}.")
            : new PoolDecision(true, available, null);
    }

    /// <summary>
    /// Whether <paramref name="amount"/> can move out of a pool (to another pool or back to general budget). A ringfenced
    /// pool releases money only with an approval; any pool releases at most what is not allocated.
    /// </summary>
    public static PoolDecision Release(decimal poolAmount, decimal allocated, decimal amount, bool ringfenced, bool approved)
    {
        var available = poolAmount - allocated;
        if (amount <= 0)
        {
            return new PoolDecision(false, available, "An amount to move must be more than 0.");
        }

        if (amount > available)
        {
            return new PoolDecision(false, available, $"Only the unallocated {available:0.00} can move out of the pool.");
        }

        return ringfenced && !approved
            ? new PoolDecision(false, available, "Money leaves a ringfenced pool only with an approval.", NeedsApproval: true)
            : new PoolDecision(true, available, null);
    }
}
