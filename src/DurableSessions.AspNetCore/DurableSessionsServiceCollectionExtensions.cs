using DurableSessions.AspNetCore.Streams;
using DurableSessions.AspNetCore.Subscriptions;
using DurableSessions.Live;
using DurableSessions.Storage.Redis;
using DurableSessions.Storage.Sqlite;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DurableSessions.AspNetCore;

/// <summary>Registers the Durable Streams server in a service collection.</summary>
public static class DurableSessionsServiceCollectionExtensions
{
    /// <summary>
    /// Adds the Durable Streams endpoints' services, bound to the <c>DurableStreams</c>, <c>Storage</c>, <c>Sessions</c>,
    /// <c>Subscriptions</c> and <c>Auth</c> configuration sections. <c>Storage:Store</c> selects the store: <c>sqlite</c>
    /// (the embedded default, <c>Storage:Sqlite</c>) or <c>redis</c> (<c>Storage:Redis</c>, for many server nodes), unless
    /// a <see cref="StreamStore"/> is already registered.
    /// </summary>
    public static IServiceCollection AddDurableSessions(this IServiceCollection services, IConfiguration? configuration = null)
    {
        var streams = services.AddOptions<DurableStreamsOptions>();
        var sqlite = services.AddOptions<SqliteStreamStoreOptions>();
        var redis = services.AddOptions<RedisStreamStoreOptions>();
        var subscriptions = services.AddOptions<SubscriptionOptions>();
        var sessionOptions = services.AddOptions<Sessions.SessionServiceOptions>();
        var access = services.AddOptions<Auth.AccessOptions>();
        var agents = services.AddOptions<Agents.AgentTurnOptions>();
        services.AddHealthChecks().AddCheck<StoreHealthCheck>("store", tags: [StoreHealthCheck.ReadyTag]);
        if (configuration is not null)
        {
            streams.Bind(configuration.GetSection("DurableStreams"));
            sqlite.Bind(configuration.GetSection("Storage:Sqlite"));
            redis.Bind(configuration.GetSection("Storage:Redis"));
            subscriptions.Bind(configuration.GetSection("Subscriptions"));
            sessionOptions.Bind(configuration.GetSection("Sessions"));
            access.Bind(configuration.GetSection("Auth"));
            agents.Bind(configuration.GetSection("Agents"));
        }

        streams.Validate(o => !o.Validate().Any(), "Invalid DurableStreams settings.").ValidateOnStart();
        agents.Validate(o => !o.Validate().Any(), "Invalid Agents settings: DefaultLeaseTtl must be from 1 s to 10 min, MaxClaimWait from 0 to 5 min, MaxAgents from 1 to 10000.").ValidateOnStart();
        subscriptions.Validate(o => !o.Validate().Any(), "Invalid Subscriptions settings.").ValidateOnStart();
        sessionOptions.Validate(o => !o.Validate().Any(), "Invalid Sessions settings: MemoryIdleTimeout must be from 1 ms to 1 day, MaxInMemory from 1 to 1000000, MaxConcurrentNotifications from 1 to 10000.").ValidateOnStart();
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton(sp => new StreamFanout(queueBytes: sp.GetRequiredService<IOptions<DurableStreamsOptions>>().Value.MaxReaderQueueBytes));
        var store = configuration?["Storage:Store"] ?? "sqlite";
        if (store.Equals("redis", StringComparison.OrdinalIgnoreCase))
        {
            // Connected at start-up: a server that cannot reach its store should say so at once, not on the first request.
            services.TryAddSingleton<StreamStore>(sp => RedisStreamStore.ConnectAsync(
                sp.GetRequiredService<IOptions<RedisStreamStoreOptions>>().Value,
                sp.GetRequiredService<TimeProvider>(),
                sp.GetRequiredService<StreamFanout>(),
                sp.GetRequiredService<ILogger<RedisStreamStore>>()).GetAwaiter().GetResult());
        }
        else if (store.Equals("sqlite", StringComparison.OrdinalIgnoreCase))
        {
            services.TryAddSingleton<StreamStore>(sp => SqliteStreamStore.Open(
                sp.GetRequiredService<IOptions<SqliteStreamStoreOptions>>().Value,
                sp.GetRequiredService<TimeProvider>(),
                sp.GetRequiredService<StreamFanout>(),
                sp.GetRequiredService<ILogger<SqliteStreamStore>>()));
        }
        else
        {
            throw new InvalidOperationException($"Storage:Store is '{store}'; use 'sqlite' (the default) or 'redis'.");
        }
        services.TryAddSingleton<Auth.AccessControl>();
        services.TryAddSingleton(sp => sp.GetRequiredService<Auth.AccessControl>().Tokens);
        services.TryAddSingleton<StreamRequestHandler>();
        services.TryAddSingleton<Agents.AgentTurnService>();
        services.AddHostedService(sp => sp.GetRequiredService<Agents.AgentTurnService>());
        services.TryAddSingleton<Agents.AgentTurnEndpoints>();
        services.TryAddSingleton<Sessions.SessionService>();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IStreamAppendPolicy, Sessions.SessionAppendPolicy>());
        services.TryAddSingleton<Sessions.SessionEndpoints>();
        services.TryAddSingleton<AiSdk.AiSdkChatEndpoints>();
        services.TryAddSingleton<Sessions.PresenceService>();
        services.AddHostedService(sp => sp.GetRequiredService<Sessions.PresenceService>());
        services.TryAddSingleton<Sessions.NotificationService>();
        services.AddHostedService(sp => sp.GetRequiredService<Sessions.NotificationService>());
        Outbound.WebhookSender.Register(services);
        services.TryAddSingleton(sp => new WakeScheduler(sp.GetRequiredService<StreamStore>().TimeProvider));
        services.TryAddSingleton<SubscriptionRegistry>();
        services.TryAddSingleton<SubscriptionDelivery>();
        services.TryAddSingleton<SubscriptionService>();
        services.AddHostedService(sp => sp.GetRequiredService<SubscriptionService>());
        services.TryAddSingleton<SubscriptionEndpoints>();
        return services;
    }
}
