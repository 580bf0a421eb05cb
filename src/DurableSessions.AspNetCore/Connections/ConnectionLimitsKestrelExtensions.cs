using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace DurableSessions.AspNetCore.Connections;

/// <summary>Applies <see cref="ConnectionLimitOptions"/> to a Kestrel server.</summary>
public static class ConnectionLimitsKestrelExtensions
{
    /// <summary>
    /// Puts a <see cref="ConnectionLimiter"/> in front of every endpoint of <paramref name="kestrel"/> and sets Kestrel's
    /// own connection limit just above it as a backstop. Refused connections asking for <c>/health</c> are answered
    /// from <see cref="StreamStore.IsAvailable"/> when a store is registered.
    /// </summary>
    /// <returns>The limiter, to read the limits in force.</returns>
    public static ConnectionLimiter UseConnectionLimits(this KestrelServerOptions kestrel, ConnectionLimitOptions options)
    {
        ArgumentNullException.ThrowIfNull(kestrel);
        var limiter = new ConnectionLimiter(
            options,
            ConnectionLimitOptions.ReadDescriptorLimit(),
            () => kestrel.ApplicationServices?.GetService<StreamStore>()?.IsAvailable ?? true,
            new DeferredLogger(kestrel));
        kestrel.Limits.MaxConcurrentConnections = limiter.Backstop;
        kestrel.ConfigureEndpointDefaults(listen => listen.Use(next => connection => limiter.OnConnectionAsync(connection, next)));
        return limiter;
    }

    /// <summary>The application's logger, resolved once the server has its services.</summary>
    private sealed class DeferredLogger(KestrelServerOptions kestrel) : ILogger
    {
        private ILogger Inner => kestrel.ApplicationServices?.GetService<ILoggerFactory>()?.CreateLogger<ConnectionLimiter>() ?? (ILogger)NullLogger.Instance;

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => Inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => Inner.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            => Inner.Log(logLevel, eventId, state, exception, formatter);
    }
}
