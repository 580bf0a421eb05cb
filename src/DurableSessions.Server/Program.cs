using System.Net;
using System.Net.Sockets;
using DurableSessions;
using DurableSessions.AspNetCore;
using DurableSessions.AspNetCore.Connections;
using DurableSessions.Storage.Sqlite;

var (configurationArgs, exitCode) = ServerCommandLine.Parse(args, Console.Out, Console.Error);
if (configurationArgs is null)
{
    return exitCode;
}

// appsettings.json ships next to the executable; relative data paths resolve against the working directory.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions
{
    Args = configurationArgs,
    ContentRootPath = AppContext.BaseDirectory,
    WebRootPath = Path.Combine(AppContext.BaseDirectory, "wwwroot"),
});
// Endpoints may also come from the standard Kestrel:Endpoints section (TLS with HTTP/2, h2c with Protocols=Http2);
// then they are the server's only addresses, and --urls is not bound.
var endpoints = builder.Configuration.GetSection("Kestrel:Endpoints").GetChildren().ToList();
var urls = endpoints.Count > 0
    ? string.Join(';', endpoints.Select(e => e["Url"]).Where(u => !string.IsNullOrEmpty(u)))
    : builder.Configuration["urls"] ?? "http://127.0.0.1:4437";
if (endpoints.Count == 0)
{
    builder.WebHost.UseUrls(urls);
}

// Settings that would otherwise fail deep inside the host: one line each, before anything starts.
if ((StartupChecks.Configuration(builder.Configuration) ?? StartupChecks.Ports(urls)) is { } problem)
{
    return StartupChecks.Fail(problem);
}

var streamSettings = builder.Configuration.GetSection("DurableStreams").Get<DurableStreamsOptions>() ?? new DurableStreamsOptions();
var connectionLimits = builder.Configuration.GetSection("Limits").Get<ConnectionLimitOptions>() ?? new ConnectionLimitOptions();
if (connectionLimits.Validate().FirstOrDefault() is { } limitProblem)
{
    // Checked here: Kestrel applies the limits while the host starts, where a bad value could not be one line.
    return StartupChecks.Fail(limitProblem);
}

builder.WebHost.ConfigureKestrel(kestrel =>
{
    // Each endpoint reads at most its own limit (DurableStreams:MaxAppendBytes, MaxJsonBodyBytes) and answers a clear 413;
    // the server-wide limit is the largest of them, so no body is ever read or drained past it.
    kestrel.Limits.MaxRequestBodySize = Math.Max(streamSettings.MaxAppendBytes, streamSettings.MaxJsonBodyBytes);
    kestrel.AddServerHeader = false;
    kestrel.UseConnectionLimits(connectionLimits);
});
var durableSessions = builder.Services.AddDurableSessions(builder.Configuration);
if (string.Equals(builder.Configuration["Storage:Store"], "redis", StringComparison.OrdinalIgnoreCase))
{
    RedisStore.Add(durableSessions, builder.Configuration.GetSection("Storage:Redis"));
}
else
{
    durableSessions.AddSqliteStore(builder.Configuration.GetSection("Storage:Sqlite"));
}

ServerTelemetry.AddTo(builder);

// The hosted agent calls this server in process, without a socket (Agent:InProcess).
DurableSessions.AspNetCore.InProcess.InProcessTransport.AddTo(builder.Services);
builder.Services.AddOptions<EmbeddedAgentOptions>()
    .Bind(builder.Configuration.GetSection("Agent"))
    .Validate(o => o.Problem() is null, "Agent settings are out of range.")
    .ValidateOnStart();
builder.Services.AddHostedService<EmbeddedAgentHost>();

var app = builder.Build();
app.UseDefaultFiles();
app.UseStaticFiles();
app.UseWebSockets();
try
{
    // Opened before the host starts, so a store that cannot open (a data directory another process holds) stops the
    // server with one line and a non-zero exit code instead of a host start-up stack trace.
    var store = app.Services.GetRequiredService<StreamStore>();
    if (store.IsShared)
    {
        // Connected here, asynchronously, so an unreachable Redis is one line too (the host would connect it at start).
        await RedisStore.ConnectAsync(store).ConfigureAwait(false);
    }

    // Every setting validated at start, and (mapping the endpoints builds the services behind them) every one those
    // services read: a value out of range is one line too, before anything else starts.
    app.Services.GetService<Microsoft.Extensions.Options.IStartupValidator>()?.Validate();
    app.MapGet("/health", (StreamStore streams) => streams.IsAvailable
        ? Results.Text("ok")
        : Results.Text("storage unavailable", statusCode: StatusCodes.Status503ServiceUnavailable));
    ServerTelemetry.Map(app);
    app.MapDurableStreams();
    app.MapDurableSessions();
    app.MapAiSdkChat();
    app.MapDurableStreamsWebSocket();
    app.MapDurableSessionsNotFound();
}
catch (Exception ex)
{
    ServerLog.StartFailed(app.Logger, ex);
    return StartupChecks.Fail(StartupChecks.Describe(ex, builder.Configuration));
}

app.Lifetime.ApplicationStarted.Register(() =>
{
    foreach (var url in app.Urls)
    {
        ServerLog.Listening(app.Logger, url);
    }

    // The last line of a good start: where to click (an address a browser can open: not one that speaks only HTTP/2
    // without TLS).
    var h2cOnly = endpoints.Where(e => string.Equals(e["Protocols"], "Http2", StringComparison.OrdinalIgnoreCase) && e["Url"]?.StartsWith("http:", StringComparison.OrdinalIgnoreCase) == true)
        .Select(e => new Uri(e["Url"]!).Port)
        .ToHashSet();
    var open = app.Urls.FirstOrDefault(u => !h2cOnly.Contains(new Uri(u.Replace("://+", "://0.0.0.0", StringComparison.Ordinal).Replace("://*", "://0.0.0.0", StringComparison.Ordinal)).Port)) ?? app.Urls.First();
    Console.WriteLine($"DurableSessions is ready: open {open.TrimEnd('/')}/ for the demo chat.");
});

try
{
    await app.RunAsync().ConfigureAwait(false);
}
catch (Exception ex) when (ex is IOException or SocketException or InvalidOperationException or Microsoft.Extensions.Options.OptionsValidationException)
{
    // Bound by another process between the check and the start, or a setting the checks could not see (a value out of
    // range, or one that is not of the setting's type).
    ServerLog.StartFailed(app.Logger, ex);
    return StartupChecks.Fail(StartupChecks.Describe(ex, builder.Configuration));
}

return 0;

internal static partial class ServerLog
{
    [LoggerMessage(1, LogLevel.Information, "DurableSessions is listening on {Url} (streams under {Url}/v1/stream/)")]
    public static partial void Listening(ILogger logger, string url);

    [LoggerMessage(2, LogLevel.Debug, "Start-up failed")]
    public static partial void StartFailed(ILogger logger, Exception exception);
}

/// <summary>
/// The Redis store's calls, in methods of their own: compiling them loads the Redis assemblies (two descriptors each for
/// the process's life), which a server on the embedded store never needs.
/// </summary>
internal static class RedisStore
{
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    public static void Add(IDurableSessionsBuilder builder, IConfigurationSection section)
        => DurableSessions.Storage.Redis.RedisStoreBuilderExtensions.AddRedisStore(builder, section);

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    public static IEnumerable<string> SettingNames() => StartupChecks.Settings(typeof(DurableSessions.Storage.Redis.RedisStreamStoreOptions));

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    public static Task ConnectAsync(StreamStore store)
        => store is DurableSessions.Storage.Redis.RedisStreamStore redis ? redis.ConnectAsync(CancellationToken.None) : Task.CompletedTask;
}
