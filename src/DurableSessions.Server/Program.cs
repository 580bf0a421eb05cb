using DurableSessions;
using DurableSessions.AspNetCore;

// appsettings.json ships next to the executable; relative data paths resolve against the working directory.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions
{
    Args = ServerCommandLine.Normalize(args),
    ContentRootPath = AppContext.BaseDirectory,
    WebRootPath = Path.Combine(AppContext.BaseDirectory, "wwwroot"),
});
builder.WebHost.UseUrls(builder.Configuration["urls"] ?? "http://127.0.0.1:4437");
builder.WebHost.ConfigureKestrel(kestrel =>
{
    // Appends enforce their own, configurable limit (DurableStreams:MaxAppendBytes) with a clear 413.
    kestrel.Limits.MaxRequestBodySize = null;
    kestrel.AddServerHeader = false;
});
builder.Services.AddDurableSessions(builder.Configuration);
builder.Services.Configure<EmbeddedAgentOptions>(builder.Configuration.GetSection("Agent"));
builder.Services.AddHostedService<EmbeddedAgentHost>();

var app = builder.Build();
try
{
    // Opened before the host starts, so a store that cannot open (a data directory another process holds) stops the
    // server with one line and a non-zero exit code instead of a host start-up stack trace.
    _ = app.Services.GetRequiredService<StreamStore>();
}
catch (IOException ex)
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
