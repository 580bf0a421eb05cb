using Microsoft.Extensions.DependencyInjection;

namespace DurableSessions;

/// <summary>
/// What <c>AddDurableSessions</c> returns: the place where a store plugs in (<c>.AddSqliteStore(…)</c>,
/// <c>.AddRedisStore(…)</c>), the way SignalR's backplanes plug into its builder.
/// </summary>
public interface IDurableSessionsBuilder
{
    /// <summary>The service collection being configured.</summary>
    IServiceCollection Services { get; }
}
