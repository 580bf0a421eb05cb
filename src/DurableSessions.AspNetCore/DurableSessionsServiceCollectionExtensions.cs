using DurableSessions.AspNetCore.Streams;
using DurableSessions.AspNetCore.Subscriptions;
using DurableSessions.Live;
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
    /// Adds the Durable Streams endpoints' services, bound to the <c>DurableStreams</c> and <c>Storage:Sqlite</c>
    /// configuration sections. The embedded SQLite store is used unless a <see cref="StreamStore"/> is already registered.
    /// </summary>
    public static IServiceCollection AddDurableSessions(this IServiceCollection services, IConfiguration? configuration = null)
    {
        var streams = services.AddOptions<DurableStreamsOptions>();
        var sqlite = services.AddOptions<SqliteStreamStoreOptions>();
        var subscriptions = services.AddOptions<SubscriptionOptions>();
        var sessionOptions = services.AddOptions<Sessions.SessionServiceOptions>();
        var access = services.AddOptions<Auth.AccessOptions>();
        if (configuration is not null)
        {
            streams.Bind(configuration.GetSection("DurableStreams"));
            sqlite.Bind(configuration.GetSection("Storage:Sqlite"));
            subscriptions.Bind(configuration.GetSection("Subscriptions"));
            sessionOptions.Bind(configuration.GetSection("Sessions"));
            access.Bind(configuration.GetSection("Auth"));
        }

        streams.Validate(o => !o.Validate().Any(), "Invalid DurableStreams settings.").ValidateOnStart();
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton(_ => new StreamFanout());
        services.TryAddSingleton<StreamStore>(sp => SqliteStreamStore.Open(
            sp.GetRequiredService<IOptions<SqliteStreamStoreOptions>>().Value,
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<StreamFanout>(),
            sp.GetRequiredService<ILogger<SqliteStreamStore>>()));
        services.TryAddSingleton<Auth.AccessControl>();
        services.TryAddSingleton(sp => sp.GetRequiredService<Auth.AccessControl>().Tokens);
        services.TryAddSingleton<StreamRequestHandler>();
        services.TryAddSingleton<Sessions.SessionService>();
        services.TryAddSingleton<Sessions.SessionEndpoints>();
        services.TryAddSingleton<AiSdk.AiSdkChatEndpoints>();
        services.TryAddSingleton<Sessions.PresenceService>();
        services.AddHostedService(sp => sp.GetRequiredService<Sessions.PresenceService>());
        services.TryAddSingleton<Sessions.NotificationService>();
        services.AddHostedService(sp => sp.GetRequiredService<Sessions.NotificationService>());
        services.TryAddSingleton<SubscriptionService>();
        services.AddHostedService(sp => sp.GetRequiredService<SubscriptionService>());
        services.TryAddSingleton<SubscriptionEndpoints>();
        return services;
    }
}
