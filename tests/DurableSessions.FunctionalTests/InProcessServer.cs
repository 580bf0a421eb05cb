using DurableSessions.AspNetCore;
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

    private InProcessServer(WebApplication app, string directory)
    {
        _app = app;
        _directory = directory;
        BaseAddress = new Uri(app.Urls.First());
        Client = new HttpClient { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
    }

    public Uri BaseAddress { get; }

    public HttpClient Client { get; }

    public IServiceProvider Services => _app.Services;

    public static async Task<InProcessServer> StartAsync(TimeProvider? time = null, Action<DurableStreamsOptions>? configure = null, Action<IServiceCollection>? services = null)
    {
        var directory = ServerProcess.TempDirectory();
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = null);
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        if (time is not null)
        {
            builder.Services.AddSingleton(time);
        }

        builder.Services.AddDurableSessions().AddSqliteStore(o => o.DataDirectory = directory);
        builder.Services.Configure<DurableStreamsOptions>(o =>
        {
            o.LongPollTimeout = TimeSpan.FromSeconds(2);
            configure?.Invoke(o);
        });
        services?.Invoke(builder.Services);
        var app = builder.Build();
        app.UseWebSockets();
        app.MapDurableStreams();
        app.MapDurableSessions();
        app.MapAiSdkChat();
        app.MapDurableStreamsWebSocket();
        await app.StartAsync();
        return new InProcessServer(app, directory);
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
