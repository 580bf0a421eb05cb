using DurableSessions;
using DurableSessions.AspNetCore;
using DurableSessions.AspNetCore.Connections;

// appsettings.json ships next to the executable; relative data paths resolve against the working directory.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions
{
    Args = ServerCommandLine.Normalize(args),
    ContentRootPath = AppContext.BaseDirectory,
    WebRootPath = Path.Combine(AppContext.BaseDirectory, "wwwroot"),
});
builder.WebHost.UseUrls(builder.Configuration["urls"] ?? "http://127.0.0.1:4437");
var streamSettings = builder.Configuration.GetSection("DurableStreams").Get<DurableStreamsOptions>() ?? new DurableStreamsOptions();
var connectionLimits = builder.Configuration.GetSection("Limits").Get<ConnectionLimitOptions>() ?? new ConnectionLimitOptions();
builder.WebHost.ConfigureKestrel(kestrel =>
{
    // Each endpoint reads at most its own limit (DurableStreams:MaxAppendBytes, MaxJsonBodyBytes) and answers a clear 413;
    // the server-wide limit is the largest of them, so no body is ever read or drained past it.
    kestrel.Limits.MaxRequestBodySize = Math.Max(streamSettings.MaxAppendBytes, streamSettings.MaxJsonBodyBytes);
    kestrel.AddServerHeader = false;
    kestrel.UseConnectionLimits(connectionLimits);
});
builder.Services.AddDurableSessions(builder.Configuration);

// The hosted agent calls this server in process, without a socket (Agent:InProcess).
DurableSessions.AspNetCore.InProcess.InProcessTransport.AddTo(builder.Services);
builder.Services.AddOptions<EmbeddedAgentOptions>()
    .Bind(builder.Configuration.GetSection("Agent"))
    .Validate(o => o.MaxConcurrentRuns >= 1, "Agent:MaxConcurrentRuns must be at least 1.")
    .ValidateOnStart();
builder.Services.AddHostedService<EmbeddedAgentHost>();

var app = builder.Build();
try
{
    // Opened before the host starts, so a store that cannot open (a data directory another process holds) stops the
    // server with one line and a non-zero exit code instead of a host start-up stack trace.
    _ = app.Services.GetRequiredService<StreamStore>();
}
catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or Microsoft.Data.Sqlite.SqliteException or StreamStoreUnavailableException)
{
    Console.Error.WriteLine($"DurableSessions cannot start: {ex.Message}");
    return 1;
}

app.UseDefaultFiles();
app.UseStaticFiles();
app.MapGet("/health", (StreamStore store) => store.IsAvailable
    ? Results.Text("ok")
    : Results.Text("storage unavailable", statusCode: StatusCodes.Status503ServiceUnavailable));
app.MapDurableStreams();
app.MapDurableSessions();
app.MapAiSdkChat();

app.Lifetime.ApplicationStarted.Register(() =>
{
    foreach (var url in app.Urls)
    {
        ServerLog.Listening(app.Logger, url);
    }
});

app.Run();
return 0;

internal static partial class ServerLog
{
    [LoggerMessage(1, LogLevel.Information, "DurableSessions is listening on {Url} (streams under {Url}/v1/stream/)")]
    public static partial void Listening(ILogger logger, string url);
}
