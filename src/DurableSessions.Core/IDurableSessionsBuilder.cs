using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

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

/// <summary>How a store plugs into the builder.</summary>
public static class DurableSessionsBuilderExtensions
{
    /// <summary>
    /// Makes the store <paramref name="create"/> builds the one every part of DurableSessions uses (replacing any store
    /// plugged in before), created once from the shared live fan-out and clock.
    /// </summary>
    public static IDurableSessionsBuilder UseStore(this IDurableSessionsBuilder builder, Func<IServiceProvider, Live.StreamFanout, TimeProvider, StreamStore> create)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(create);
        builder.Services.Replace(ServiceDescriptor.Singleton(sp => create(sp, sp.GetRequiredService<Live.StreamFanout>(), sp.GetService<TimeProvider>() ?? TimeProvider.System)));
        return builder;
    }
}
