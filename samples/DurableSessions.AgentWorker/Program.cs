using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Hosting;
using DurableSessions.Agents;
using DurableSessions.Client;
using Microsoft.Extensions.AI;

// An agent worker: any number of these processes (on any machines) share the turns of one agent id. Each claims the
// sessions waiting for an answer, answers them with its IChatClient and holds nothing per idle session. A worker that
// dies mid-reply loses its lease, and another worker answers that message again.
//
//   dotnet run --project samples/DurableSessions.AgentWorker -- --Server=http://127.0.0.1:4437 --Agent=agent:demo
var builder = Host.CreateApplicationBuilder(args);
var settings = builder.Configuration;
var server = new Uri(settings["Server"] ?? "http://127.0.0.1:4437");
var agentId = settings["Agent"] ?? "agent:demo";
var tokensPerSecond = double.Parse(settings["TokensPerSecond"] ?? "25", System.Globalization.CultureInfo.InvariantCulture);

builder.Services.AddSingleton(_ => new DurableSessionsClient(DurableSessionsClientOptions.Default with
{
    BaseAddress = server,
    ParticipantId = agentId,
    AccessToken = settings["AccessToken"],
}));

// Any Microsoft.Extensions.AI chat client works here (OpenAI, Azure OpenAI, Ollama, ...); the demo model needs no network.
builder.Services.AddSingleton<IChatClient>(_ => new DemoChatClient(tokensPerSecond));
builder.Services.AddSingleton(sp => new SessionAgent(
    sp.GetRequiredService<IChatClient>(),
    sp.GetRequiredService<DurableSessionsClient>(),
    new SessionAgentOptions { AgentId = agentId },
    sp.GetRequiredService<ILogger<SessionAgent>>()));
builder.Services.AddSingleton(sp => new SessionAgentHost(
    sp.GetRequiredService<SessionAgent>(),
    sp.GetRequiredService<DurableSessionsClient>(),
    agentId,
    new SessionAgentHostOptions
    {
        MaxConcurrentRuns = int.Parse(settings["MaxConcurrentRuns"] ?? "64", System.Globalization.CultureInfo.InvariantCulture),
        LeaseTtl = settings["LeaseTtlMs"] is { } lease ? TimeSpan.FromMilliseconds(int.Parse(lease, System.Globalization.CultureInfo.InvariantCulture)) : null,
    },
    sp.GetRequiredService<ILogger<SessionAgentHost>>()));
builder.Services.AddHostedService<AgentWorker>();
await builder.Build().RunAsync();

/// <summary>Runs the agent host for the lifetime of the process; a clean stop releases the turns in progress.</summary>
internal sealed class AgentWorker(SessionAgentHost host) : BackgroundService
{
    protected override Task ExecuteAsync(CancellationToken stoppingToken) => host.RunAsync(stoppingToken);
}
