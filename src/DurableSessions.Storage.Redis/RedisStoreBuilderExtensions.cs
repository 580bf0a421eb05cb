using DurableSessions.Live;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DurableSessions.Storage.Redis;

/// <summary>Plugs the Redis store into DurableSessions, for many server nodes sharing one Redis.</summary>
public static class RedisStoreBuilderExtensions
{
    /// <summary>Stores streams in Redis (<see cref="RedisStreamStoreOptions.Configuration"/>).</summary>
    /// <remarks>The store connects when it is first needed, which a server does at start-up: a Redis it cannot reach stops the start.</remarks>
    public static IDurableSessionsBuilder AddRedisStore(this IDurableSessionsBuilder builder, Action<RedisStreamStoreOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = builder.Services.AddOptions<RedisStreamStoreOptions>();
        options.Configure(configure);

        builder.Services.Replace(ServiceDescriptor.Singleton<StreamStore>(sp => RedisStreamStore.ConnectAsync(
            sp.GetRequiredService<IOptions<RedisStreamStoreOptions>>().Value,
            sp.GetService<TimeProvider>() ?? TimeProvider.System,
            sp.GetRequiredService<StreamFanout>(),
            sp.GetRequiredService<ILogger<RedisStreamStore>>()).GetAwaiter().GetResult()));
        return builder;
    }

    /// <summary>Stores streams in Redis, with settings bound from <paramref name="configuration"/> (e.g. <c>Storage:Redis</c>).</summary>
    public static IDurableSessionsBuilder AddRedisStore(this IDurableSessionsBuilder builder, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configuration);
        builder.Services.AddOptions<RedisStreamStoreOptions>().Bind(configuration);
        return builder.AddRedisStore(_ => { });
    }
}
