using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.Agents;
using DurableSessions.Client;
using Microsoft.Extensions.AI;

namespace DurableSessions.WebhookAgent;

/// <summary>
/// An agent served by an HTTP endpoint that the server wakes by webhook: a webhook subscription on the agent's wake
/// stream (<c>agents/{agent}/wake</c>) POSTs a signed wake to <see cref="WakeRoute"/> whenever turns wait, and the
/// endpoint serves them all with <see cref="SessionAgentHost.ServeWaitingTurnsAsync"/>.
/// </summary>
/// <remarks>
/// Settings (command line or configuration): <c>Server</c> (default <c>http://127.0.0.1:4437</c>), <c>Agent</c>
/// (default <c>agent:webhook</c>), <c>PublicUrl</c> (the address the server reaches this app at; default the first
/// address it listens on), <c>AccessToken</c> (with write on <c>agents/{agent}</c>, read and write on the sessions, and
/// admin on <c>__ds</c> to subscribe), <c>TokensPerSecond</c> of the demo model, <c>MaxConcurrentRuns</c>.
/// </remarks>
public static class WebhookAgentApp
{
    /// <summary>The route the server's webhook POSTs wakes to.</summary>
    public const string WakeRoute = "/wake";

    /// <summary>Builds the app: the agent, its host and the wake endpoint.</summary>
    public static WebApplication Build(string[] args)
    {
        var builder = WebApplication.CreateBuilder(args);
        var settings = builder.Configuration;
        var agentId = settings["Agent"] ?? "agent:webhook";
        var server = new Uri(settings["Server"] ?? "http://127.0.0.1:4437");

        // One HTTP client for the server's control API (the subscription, its signing keys); the SDK has its own.
        var control = new HttpClient { BaseAddress = server };
        if (settings["AccessToken"] is { } token)
        {
            control.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server, ParticipantId = agentId, AccessToken = settings["AccessToken"] });
        builder.Services.AddSingleton(client);
        builder.Services.AddSingleton(control);
        builder.Services.AddSingleton(new WebhookSignature(control));

        // Any Microsoft.Extensions.AI chat client works here (OpenAI, Azure OpenAI, Ollama, ...); the demo model needs no network.
        builder.Services.AddSingleton<IChatClient>(new DemoChatClient(double.Parse(settings["TokensPerSecond"] ?? "25", CultureInfo.InvariantCulture)));
        builder.Services.AddSingleton(sp => new SessionAgent(
            sp.GetRequiredService<IChatClient>(), client, new SessionAgentOptions { AgentId = agentId }, sp.GetRequiredService<ILogger<SessionAgent>>()));
        builder.Services.AddSingleton(sp => new SessionAgentHost(
            sp.GetRequiredService<SessionAgent>(), client, agentId,
            new SessionAgentHostOptions { MaxConcurrentRuns = int.Parse(settings["MaxConcurrentRuns"] ?? "16", CultureInfo.InvariantCulture) },
            sp.GetRequiredService<ILogger<SessionAgentHost>>()));

        var app = builder.Build();
        app.MapPost(WakeRoute, async (HttpRequest request, WebhookSignature signature, SessionAgentHost host, IHostApplicationLifetime lifetime) =>
        {
            // The signature covers the exact bytes of the body.
            using var body = new MemoryStream();
            await request.Body.CopyToAsync(body, request.HttpContext.RequestAborted);
            if (!await signature.VerifyAsync(request.Headers["Webhook-Signature"], body.ToArray(), request.HttpContext.RequestAborted))
            {
                return Results.Unauthorized();
            }

            // Claim and answer every waiting turn. The replies are not tied to this request: should the server stop
            // waiting for the answer (Subscriptions:WebhookTimeout), they still finish, and the server wakes us again.
            var served = await host.ServeWaitingTurnsAsync(lifetime.ApplicationStopping);

            // Done: the server marks this wake handled. A turn that came meanwhile has its own wake event, so the server
            // sends another wake for it.
            return Results.Json(new { done = true, served });
        });
        return app;
    }

    /// <summary>
    /// Registers the agent and the webhook subscription on its wake stream (both idempotent; a subscription left with
    /// another URL is replaced), then serves the turns that waited before the subscription existed. Call it once the
    /// app listens.
    /// </summary>
    public static async Task RegisterAsync(WebApplication app, CancellationToken cancellationToken = default)
    {
        var host = app.Services.GetRequiredService<SessionAgentHost>();
        var control = app.Services.GetRequiredService<HttpClient>();
        var agent = await host.RegisterAsync(cancellationToken);

        var url = (app.Configuration["PublicUrl"] ?? app.Urls.First()).TrimEnd('/') + WakeRoute;
        var subscription = $"/v1/stream/__ds/subscriptions/{SubscriptionId(agent.Agent)}";
        var body = new JsonObject
        {
            ["type"] = "webhook",
            ["streams"] = new JsonArray(agent.WakeStream),
            ["webhook"] = new JsonObject { ["url"] = url },
            ["description"] = $"Wakes {agent.Agent} at {url}",
        }.ToJsonString();
        using var created = await control.PutAsync(subscription, Json(body), cancellationToken);
        if (created.StatusCode == HttpStatusCode.Conflict)
        {
            // Left by an earlier run of this agent at another address.
            (await control.DeleteAsync(subscription, cancellationToken)).Dispose();
            using var replaced = await control.PutAsync(subscription, Json(body), cancellationToken);
            replaced.EnsureSuccessStatusCode();
        }
        else
        {
            created.EnsureSuccessStatusCode();
        }

        // The subscription starts at the wake stream's tail, so turns that waited before it will get no wake.
        await host.ServeWaitingTurnsAsync(cancellationToken);
    }

    /// <summary>The subscription's id: the agent id in the characters subscription ids allow.</summary>
    public static string SubscriptionId(string agentId) => agentId.Replace(':', '.') + ".webhook";

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");
}
