using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace DurableSessions.AspNetCore;

/// <summary>
/// Ready when the store takes reads and writes: SQLite open (and not stopped by a failed disk flush or an unexpected error of its writer), or Redis reachable.
/// Registered by <c>AddDurableSessions</c> as check <c>store</c>, tagged <see cref="ReadyTag"/>.
/// </summary>
public sealed class StoreHealthCheck(StreamStore store) : IHealthCheck
{
    /// <summary>The tag of the checks a readiness probe runs.</summary>
    public const string ReadyTag = "ready";

    /// <inheritdoc />
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
        => Task.FromResult(store.IsAvailable
            ? HealthCheckResult.Healthy("The store is available.")
            : HealthCheckResult.Unhealthy("The store is unavailable."));
}
