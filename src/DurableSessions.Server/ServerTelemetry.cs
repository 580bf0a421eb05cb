using DurableSessions.AspNetCore;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

/// <summary>
/// The server's OpenTelemetry: every DurableSessions meter and activity source, ASP.NET Core's and Kestrel's, exported
/// over OTLP when <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> is set and scraped at <c>/metrics</c> when
/// <c>Telemetry:Prometheus</c> is true; and the health endpoints.
/// </summary>
internal static class ServerTelemetry
{
    public static void AddTo(WebApplicationBuilder builder)
    {
        var otlp = !string.IsNullOrEmpty(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]);
        var prometheus = builder.Configuration.GetValue("Telemetry:Prometheus", false);
        if (!otlp && !prometheus)
        {
            // Nothing would read them: no listener, so instruments and activities cost nothing.
            return;
        }

        AddOpenTelemetry(builder, otlp, prometheus);
    }

    // Methods of their own: compiling them loads the OpenTelemetry assemblies (two descriptors each for the process's
    // life), which a server with telemetry off never needs.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void AddOpenTelemetry(WebApplicationBuilder builder, bool otlp, bool prometheus)
    {
        var telemetry = builder.Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService(builder.Configuration["OTEL_SERVICE_NAME"] ?? "durable-sessions"))
            .WithMetrics(metrics =>
            {
                metrics.AddMeter([.. DurableSessionsTelemetry.Names, "Microsoft.AspNetCore.Hosting", "Microsoft.AspNetCore.Server.Kestrel"]);
                if (prometheus)
                {
                    metrics.AddPrometheusExporter();
                }
            })
            .WithTracing(tracing => tracing.AddSource([.. DurableSessionsTelemetry.Names]).AddAspNetCoreInstrumentation());
        if (otlp)
        {
            telemetry.UseOtlpExporter();
        }
    }

    public static void Map(WebApplication app)
    {
        // Liveness: the process answers. Readiness: the store takes reads and writes too.
        app.MapHealthChecks("/health/live", new HealthCheckOptions { Predicate = _ => false });
        app.MapHealthChecks("/health/ready", new HealthCheckOptions { Predicate = check => check.Tags.Contains(StoreHealthCheck.ReadyTag) });
        if (app.Configuration.GetValue("Telemetry:Prometheus", false))
        {
            MapPrometheus(app);
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void MapPrometheus(WebApplication app) => app.MapPrometheusScrapingEndpoint("/metrics");
}
