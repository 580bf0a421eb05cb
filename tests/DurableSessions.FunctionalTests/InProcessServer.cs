using DurableSessions.AspNetCore;
using DurableSessions.AspNetCore.Subscriptions;
using DurableSessions.Storage.Redis;
using DurableSessions.Storage.Sqlite;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace DurableSessions.FunctionalTests;

/// <summary>A real Kestrel host on 127.0.0.1:0 in the test process, for tests that need a fake clock or custom limits.</summary>
public sealed class InProcessServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly string _directory;
    private readonly bool _ownsDirectory;

    private InProcessServer(WebApplication app, string directory, bool ownsDirectory)
    {
        _app = app;
        _directory = directory;
        _ownsDirectory = ownsDirectory;
        BaseAddress = new Uri(app.Urls.First());
        Client = new HttpClient { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
    }

    public Uri BaseAddress { get; }

    public HttpClient Client { get; }

    public IServiceProvider Services => _app.Services;

    /// <param name="time">The clock, or null for the system's.</param>
    /// <param name="configure">Changes to the protocol options.</param>
    /// <param name="services">More services.</param>
    /// <param name="redis">A redis-server's configuration to store in (a node of a shared store), or null for SQLite.</param>
    /// <param name="dataDirectory">The SQLite store's directory, kept when the server stops (a restart opens it again); null for a scratch one.</param>
    public static async Task<InProcessServer> StartAsync(TimeProvider? time = null, Action<DurableStreamsOptions>? configure = null, Action<IServiceCollection>? services = null, string? redis = null, string? dataDirectory = null)
    {
        var directory = dataDirectory ?? ServerProcess.TempDirectory();
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = null);
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        if (time is not null)
        {
            builder.Services.AddSingleton(time);
        }

        var durable = builder.Services.AddDurableSessions();
        if (redis is null)
        {
            durable.AddSqliteStore(o => o.DataDirectory = directory);
        }
        else
        {
            durable.AddRedisStore(o => o.Configuration = redis);
        }

        builder.Services.Configure<DurableStreamsOptions>(o =>
        {
            o.LongPollTimeout = TimeSpan.FromSeconds(2);
            configure?.Invoke(o);
        });
        // The tests' receivers listen on loopback (a server's default refuses it).
        builder.Services.Configure<SubscriptionOptions>(o => o.AllowLocalhostWebhooks = true);
        services?.Invoke(builder.Services);
        var app = builder.Build();
        app.UseWebSockets();
        app.MapDurableStreams();
        app.MapDurableSessions();
        app.MapAiSdkChat();
        app.MapDurableStreamsWebSocket();
        await app.StartAsync();
        return new InProcessServer(app, directory, ownsDirectory: dataDirectory is null);
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
        if (!_ownsDirectory)
        {
            return;
        }

        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
