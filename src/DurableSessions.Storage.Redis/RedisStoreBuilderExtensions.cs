using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DurableSessions.Storage.Redis;

/// <summary>Plugs the Redis store into DurableSessions, for many server nodes sharing one Redis.</summary>
public static class RedisStoreBuilderExtensions
{
    /// <summary>Stores streams in Redis (<see cref="RedisStreamStoreOptions.Configuration"/>).</summary>
    /// <remarks>The store connects asynchronously when the host starts (before any hosted service's start): a Redis it cannot reach stops the start.</remarks>
    public static IDurableSessionsBuilder AddRedisStore(this IDurableSessionsBuilder builder, Action<RedisStreamStoreOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.AddOptions<RedisStreamStoreOptions>().Configure(configure);
        builder.UseStore((sp, fanout, time) => RedisStreamStore.Create(
            sp.GetRequiredService<IOptions<RedisStreamStoreOptions>>().Value, time, fanout, sp.GetRequiredService<ILogger<RedisStreamStore>>()));
        builder.Services.AddHostedService<RedisStoreConnection>();
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

/// <summary>Connects the Redis store when the host starts, before any hosted service starts (they read the store).</summary>
internal sealed class RedisStoreConnection(StreamStore store) : Microsoft.Extensions.Hosting.IHostedLifecycleService
{
    public Task StartingAsync(CancellationToken cancellationToken) => store is RedisStreamStore redis ? redis.ConnectAsync(cancellationToken) : Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
