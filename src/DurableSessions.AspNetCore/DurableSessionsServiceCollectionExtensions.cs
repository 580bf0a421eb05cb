using DurableSessions.AspNetCore.Streams;
using DurableSessions.AspNetCore.Subscriptions;
using DurableSessions.Live;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.AspNetCore.Authorization;
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
    /// Adds the Durable Streams endpoints' services, bound to the <c>DurableStreams</c>, <c>Sessions</c>,
    /// <c>Subscriptions</c>, <c>Agents</c> and <c>Auth</c> configuration sections. Plug a store into the returned builder:
    /// <c>.AddSqliteStore(…)</c> (package DurableSessions.Storage.Sqlite) or <c>.AddRedisStore(…)</c>
    /// (DurableSessions.Storage.Redis), unless a <see cref="StreamStore"/> is registered already.
    /// </summary>
    public static IDurableSessionsBuilder AddDurableSessions(this IServiceCollection services, IConfiguration? configuration = null)
    {
        var streams = services.AddOptions<DurableStreamsOptions>();
        var subscriptions = services.AddOptions<SubscriptionOptions>();
        var sessionOptions = services.AddOptions<Sessions.SessionServiceOptions>();
        var access = services.AddOptions<Auth.AccessOptions>();
        var agents = services.AddOptions<Agents.AgentTurnOptions>();
        var sockets = services.AddOptions<WebSockets.StreamSocketOptions>();
        services.AddHealthChecks().AddCheck<StoreHealthCheck>("store", tags: [StoreHealthCheck.ReadyTag]);
        if (configuration?.GetSection("Authentication:Schemes:Bearer").Exists() == true)
        {
            // Tokens from an identity provider: JwtBearer reads Authentication:Schemes:Bearer itself (Authority or
            // MetadataAddress for OIDC discovery and JWKS, ValidAudiences, keys as `dotnet user-jwts` writes them).
            services.AddAuthentication().AddJwtBearer(o =>
            {
                o.MapInboundClaims = false;
                o.Events = new JwtBearerEvents { OnMessageReceived = WebSockets.StreamSocketEndpoint.TokenFromQuery };
            });

            // A key the provider stopped publishing is refused as soon as the new key set is fetched, not kept as "last
            // known good" for another hour: a rotation is how a leaked key is withdrawn.
            services.PostConfigure<JwtBearerOptions>(JwtBearerDefaults.AuthenticationScheme, o =>
            {
                if (o.ConfigurationManager is Microsoft.IdentityModel.Tokens.BaseConfigurationManager manager)
                {
                    manager.UseLastKnownGoodConfiguration = false;
                }
            });
            access.Configure(o => o.Scheme ??= JwtBearerDefaults.AuthenticationScheme);
        }

        if (configuration is not null)
        {
            streams.Bind(configuration.GetSection("DurableStreams"));
            subscriptions.Bind(configuration.GetSection("Subscriptions"));
            sessionOptions.Bind(configuration.GetSection("Sessions"));
            access.Bind(configuration.GetSection("Auth"));
            agents.Bind(configuration.GetSection("Agents"));
            sockets.Bind(configuration.GetSection("WebSockets"));
        }

        // Each problem by name: a start that fails says which setting is wrong.
        services.AddSingleton<IValidateOptions<DurableStreamsOptions>>(new SettingsValidator<DurableStreamsOptions>("DurableStreams", o => o.Validate()));
        services.AddSingleton<IValidateOptions<SubscriptionOptions>>(new SettingsValidator<SubscriptionOptions>("Subscriptions", o => o.Validate()));
        streams.ValidateOnStart();
        agents.Validate(o => !o.Validate().Any(), "Invalid Agents settings: DefaultLeaseTtl must be from 1 s to 10 min, MaxClaimWait from 0 to 5 min, MaxAgents from 1 to 10000, WakeStreamRetention from 10 to 10000000.").ValidateOnStart();
        sockets.Validate(o => !o.Validate().Any(), "Invalid WebSockets settings: MaxMessageBytes must be from 1 KiB to 64 MiB, MaxSendQueueBytes at least 1 KiB, MaxSubscriptions and MaxInFlight from 1 to 100000, KeepAliveInterval, KeepAliveTimeout and IdleTimeout positive and at most a day, TokenRecheckInterval from 1 second to a day.").ValidateOnStart();
        subscriptions.ValidateOnStart();
        services.AddSingleton<IValidateOptions<Sessions.SessionServiceOptions>>(new SettingsValidator<Sessions.SessionServiceOptions>("Sessions", o => o.Validate()));
        sessionOptions.ValidateOnStart();
        access.Validate(o => o.ClockSkew >= TimeSpan.Zero && o.ClockSkew <= TimeSpan.FromHours(1), "Auth: ClockSkew must be from 0 to 1 hour.").ValidateOnStart();
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton(sp => new StreamFanout(queueBytes: sp.GetRequiredService<IOptions<DurableStreamsOptions>>().Value.MaxReaderQueueBytes));

        // Until a store is plugged in: a clear error at start instead of an unresolved service.
        services.TryAddSingleton<StreamStore>(_ => throw new InvalidOperationException(
            "DurableSessions has no store: call AddSqliteStore() or AddRedisStore() on the builder AddDurableSessions() returns."));
        services.TryAddSingleton<Auth.AccessControl>();
        services.TryAddSingleton(sp => sp.GetRequiredService<Auth.AccessControl>().Tokens);
        AddAccessControl(services);
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
        services.TryAddSingleton<ThreadPoolDelayProbe>();
        services.AddHostedService(sp => sp.GetRequiredService<ThreadPoolDelayProbe>());
        services.TryAddSingleton<WebSockets.StreamSocketServices>();
        services.TryAddSingleton<WebSockets.StreamSocketEndpoint>();
        return new Builder(services);
    }

    /// <summary>
    /// Access control through ASP.NET Core: the shared-key JwtBearer scheme, the endpoints' policy, the handlers of
    /// <see cref="Auth.StreamAccessRequirement"/>, and the protocol's 401/403 bodies for refusals on these endpoints.
    /// </summary>
    private static void AddAccessControl(IServiceCollection services)
    {
        // The shared-key scheme exists only when a signing key is configured and no other scheme is named: an open server
        // loads no token handler, and an identity provider's scheme stays the app's only (and so default) scheme.
        // The core services only: AddAuthentication would also start Data Protection's key ring, which nothing here uses.
        services.AddAuthenticationCore();
        services.AddWebEncoders();
        services.AddOptions<AuthenticationOptions>().Configure<IOptions<Auth.AccessOptions>>((o, access) =>
        {
            if (!string.IsNullOrEmpty(access.Value.SigningKey) && string.IsNullOrEmpty(access.Value.Scheme))
            {
                o.AddScheme(Auth.DurableSessionsAuthorization.SharedKeyScheme, scheme => scheme.HandlerType = typeof(JwtBearerHandler));
            }
        });
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IPostConfigureOptions<JwtBearerOptions>, JwtBearerPostConfigureOptions>());
        services.AddOptions<JwtBearerOptions>(Auth.DurableSessionsAuthorization.SharedKeyScheme).Configure<Auth.AccessTokens, TimeProvider>((o, tokens, time) =>
        {
            o.TimeProvider = time;
            o.MapInboundClaims = false;
            o.Events = new JwtBearerEvents { OnMessageReceived = WebSockets.StreamSocketEndpoint.TokenFromQuery };
            o.TokenValidationParameters = tokens.ValidationParameters();
        });
        services.AddAuthorization();
        services.AddOptions<AuthorizationOptions>().Configure<IOptions<Auth.AccessOptions>>((o, access) => o.AddPolicy(
            Auth.DurableSessionsAuthorization.Policy,
            policy => policy.AddAuthenticationSchemes(access.Value.EffectiveScheme).AddRequirements(Auth.AccessTokenRequirement.Instance)));
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IAuthorizationHandler, Auth.AccessTokenHandler>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IAuthorizationHandler, Auth.StreamAccessHandler>());

        // Registered after AddAuthorization's default, so it answers; refusals elsewhere in the app go to the default.
        services.AddSingleton<IAuthorizationMiddlewareResultHandler, Auth.AccessRefusalHandler>();
    }

    private sealed class Builder(IServiceCollection services) : IDurableSessionsBuilder
    {
        public IServiceCollection Services => services;
    }
}

/// <summary>Validates a settings section with its own rules, each problem reported with the section's name.</summary>
internal sealed class SettingsValidator<TOptions>(string section, Func<TOptions, IEnumerable<string>> validate) : IValidateOptions<TOptions>
    where TOptions : class
{
    public ValidateOptionsResult Validate(string? name, TOptions options)
    {
        var problems = validate(options).Select(problem => $"{section}: {problem}").ToList();
        return problems.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(problems);
    }
}
