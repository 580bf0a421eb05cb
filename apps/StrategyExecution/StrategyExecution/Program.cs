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

// Everything the app keeps lives in one data directory: the database and the durable streams.
// A relative path is taken from the working directory, as `dotnet run` users expect.
var dataDirectory = Path.GetFullPath(builder.Configuration["Data"] ?? "data-strategy", Environment.CurrentDirectory);
Directory.CreateDirectory(dataDirectory);
var connectionString = builder.Configuration.GetConnectionString("Strategy") ?? $"Data Source={Path.Combine(dataDirectory, "strategy.db")}";
builder.Services.AddSingleton<ScoreCache>();
builder.Services.AddSingleton<ScoreCacheInvalidation>();
builder.Services.AddDbContext<StrategyDb>((services, o) => o.UseSqlite(connectionString).AddInterceptors(services.GetRequiredService<ScoreCacheInvalidation>()));
builder.Services.AddDurableSessions(builder.Configuration)
    .AddSqliteStore(o => o.DataDirectory = Path.Combine(dataDirectory, "streams"));
builder.Services.AddSingleton(TimeProvider.System);
builder.Services.AddScoped<Acting>();
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
}

// The durable streams are read-only over HTTP: the app itself appends (the audit trail, live updates), nobody else.
app.Use(async (context, next) =>
{
    if (context.Request.Path.StartsWithSegments("/v1/stream") && !HttpMethods.IsGet(context.Request.Method)
        && !HttpMethods.IsHead(context.Request.Method) && !HttpMethods.IsOptions(context.Request.Method))
    {
        await Problems.Error(403, "READ_ONLY", "The strategy app's streams are written by the app only.").ExecuteAsync(context);
        return;
    }

    await next(context);
});
app.UseDefaultFiles();
app.UseStaticFiles();
app.MapOpenApi();
app.MapGet("/health", () => "ok");
app.MapDurableStreams();
app.MapStrategyApi();
app.Lifetime.ApplicationStarted.Register(() => Console.WriteLine($"Strategy execution is listening on {string.Join(", ", app.Urls)}"));
app.Run();

/// <summary>The app's entry point, visible to the tests that host it.</summary>
public partial class Program;
