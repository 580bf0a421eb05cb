using System.Threading.RateLimiting;
using Microsoft.AspNetCore.RateLimiting;
using System.Text.Json.Serialization;
using DurableSessions.AspNetCore;
using DurableSessions.Storage.Sqlite;
using Microsoft.EntityFrameworkCore;
using StrategyExecution.Api;
using StrategyExecution.Data;
using StrategyExecution.Live;

var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
if (builder.Configuration["urls"] is null && builder.Configuration["ASPNETCORE_URLS"] is null)
{
    builder.WebHost.UseUrls("http://127.0.0.1:4438");
}

// Read first: a limit set wrong stops the start before anything is created.
var limits = Limits.FromConfiguration(builder.Configuration);

// Everything the app keeps lives in one data directory: the database (unless it is PostgreSQL) and the durable
// streams. A relative path is taken from the working directory, as `dotnet run` users expect.
var dataDirectory = Path.GetFullPath(builder.Configuration["Data"] ?? "data-strategy", Environment.CurrentDirectory);
Directory.CreateDirectory(dataDirectory);
var database = StrategyDatabase.FromConfiguration(builder.Configuration, dataDirectory);
builder.Services.AddSingleton<ScoreCache>();
builder.Services.AddSingleton<ScoreCacheInvalidation>();
builder.Services.AddSingleton<WriteTracker>();
builder.Services.AddDbContext<StrategyDb>((services, o) => database.Configure(o.AddInterceptors(services.GetRequiredService<ScoreCacheInvalidation>(), services.GetRequiredService<WriteTracker>())));
builder.Services.AddDurableSessions(builder.Configuration)
    .AddSqliteStore(o => o.DataDirectory = Path.Combine(dataDirectory, "streams"));
builder.Services.AddSingleton(TimeProvider.System);
builder.Services.AddSingleton(limits);
builder.Services.AddScoped<Acting>();
builder.Services.AddSingleton<PasswordChecks>();
builder.Services.AddSingleton<SignInCache>();

// Each password check is a PBKDF2 run of a few hundred milliseconds: two at a time per client, a short queue, then 429
// (PasswordChecks bounds them across all clients too).
builder.Services.AddRateLimiter(o =>
{
    o.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
    o.AddPolicy(SignInEndpoints.PasswordPolicy, context => RateLimitPartition.GetConcurrencyLimiter(
        context.Connection.RemoteIpAddress?.ToString() ?? "unknown", _ => new ConcurrencyLimiterOptions { PermitLimit = 2, QueueLimit = 8 }));
    o.OnRejected = (context, ct) => new ValueTask(Problems.Error(429, "TOO_MANY_REQUESTS", "Too many password checks at once: try again shortly.").ExecuteAsync(context.HttpContext));
});
builder.Services.AddScoped<Scorecards>();
builder.Services.AddSingleton<AuditTrail>();
builder.Services.AddHostedService(sp => sp.GetRequiredService<AuditTrail>());
builder.Services.AddOpenApi();
builder.Services.ConfigureHttpJsonOptions(o => o.SerializerOptions.Converters.Add(new JsonStringEnumConverter(System.Text.Json.JsonNamingPolicy.KebabCaseLower)));

var app = builder.Build();
using (var scope = app.Services.CreateScope())
{
    var db = scope.ServiceProvider.GetRequiredService<StrategyDb>();
    db.Database.EnsureCreated();

    // EnsureCreated makes a whole schema or nothing: a database made by an earlier version may lack tables.
    try
    {
        _ = db.Settings.Any();
        _ = db.Credentials.Any();
        _ = db.Tokens.Any();
    }
    catch (System.Data.Common.DbException e)
    {
        throw new InvalidOperationException($"The database ({database.Describe()}) was made by an earlier version of the app and lacks tables this one needs: {e.Message} Start with a new --Data directory (or an empty PostgreSQL database); the demo organisation is loaded afresh.", e);
    }

    StrategyDatabase.EnsureColumns(db);
    StrategyDatabase.EnsureIndexes(db);
    var today = DateOnly.FromDateTime(TimeProvider.System.GetUtcNow().UtcDateTime);
    switch (app.Configuration["Demo:Size"] ?? "standard")
    {
        case "none":
            break;
        case "large":
            LargeOrganisation.Seed(db, today);
            break;
        default:
            DemoOrganisation.Seed(db, today);
            break;
    }

    StrategyDatabase.AfterSeeding(db);
    FirstAdmin.Ensure(db, app.Configuration);
}

// A write into a period whose lock committed after the endpoint's own check: refused as the check would have. A
// database too busy to answer in time: 503, to be tried again.
app.Use(async (context, next) =>
{
    try
    {
        await next(context);
    }
    catch (PeriodLockedException ex) when (!context.Response.HasStarted)
    {
        await Problems.Error(409, "PERIOD_LOCKED", ex.Message).ExecuteAsync(context);
    }
    catch (Exception ex) when (!context.Response.HasStarted && StrategyDatabase.IsBusy(ex) && !context.RequestAborted.IsCancellationRequested
        && !context.RequestServices.GetRequiredService<StrategyDb>().MayHaveWritten)
    {
        // The database could not take the request in time (other writers hold it) before any of it was written: the
        // request can be sent again. One that failed after a write that may have landed is not answered so.
        StrategyDatabase.LogBusy(context.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger<StrategyDatabase>(), context.Request.Method, context.Request.Path, ex);
        context.Response.Headers.RetryAfter = "1";
        await Problems.Error(503, "DATABASE_BUSY", "The database is busy with other requests; try again shortly.").ExecuteAsync(context);
    }
});

// The durable streams are read by signed-in people and written by the app only (the audit trail, live updates).
app.Use(async (context, next) =>
{
    if (context.Request.Path.StartsWithSegments("/v1/stream"))
    {
        if (!HttpMethods.IsGet(context.Request.Method) && !HttpMethods.IsHead(context.Request.Method) && !HttpMethods.IsOptions(context.Request.Method))
        {
            await Problems.Error(403, "READ_ONLY", "The strategy app's streams are written by the app only.").ExecuteAsync(context);
            return;
        }

        if (!HttpMethods.IsOptions(context.Request.Method)
            && await context.RequestServices.GetRequiredService<Acting>().PersonAsync(context, context.RequestAborted) is null)
        {
            await Problems.Unauthenticated().ExecuteAsync(context);
            return;
        }
    }

    await next(context);
});
app.UseDefaultFiles();
app.UseStaticFiles();
app.MapOpenApi();
app.MapGet("/health", () => "ok");
app.UseRateLimiter();
app.MapDurableStreams();
app.MapStrategyApi();
app.Lifetime.ApplicationStarted.Register(() => Console.WriteLine($"Strategy execution is listening on {string.Join(", ", app.Urls)}, with its data in {database.Describe()}"));
var listenOn = app.Configuration["urls"] ?? app.Configuration["ASPNETCORE_URLS"] ?? "http://127.0.0.1:4438";
try
{
    app.Run();
}
catch (IOException ex) when (ex.InnerException is Microsoft.AspNetCore.Connections.AddressInUseException)
{
    // A port taken by another process is a setting to change, not a crash.
    Console.Error.WriteLine($"Strategy execution cannot start: {listenOn} is already in use by another process (choose another address with --urls).");
    return 1;
}

return 0;

/// <summary>The app's entry point, visible to the tests that host it.</summary>
public partial class Program;
