using System.Collections.Concurrent;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using DurableSessions.Client;
using DurableSessions.Sessions;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// The server's hosted agent configured for an OpenAI-compatible endpoint (here a local stand-in speaking the chat
/// completions streaming format, as Ollama does), through Microsoft.Extensions.AI.OpenAI.
/// </summary>
public sealed class OpenAiCompatibleAgentTests
{
    [Fact]
    public async Task The_hosted_agent_streams_replies_from_an_openai_compatible_endpoint()
    {
        var requests = new ConcurrentQueue<string>();
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        await using var fake = builder.Build();
        fake.MapPost("/v1/chat/completions", async (HttpContext context) =>
        {
            using var reader = new StreamReader(context.Request.Body);
            requests.Enqueue(await reader.ReadToEndAsync());
            context.Response.ContentType = "text/event-stream";
            foreach (var (delta, finish) in new[] { ("{\"role\":\"assistant\",\"content\":\"Hello\"}", "null"), ("{\"content\":\" from the\"}", "null"), ("{\"content\":\" endpoint\"}", "null"), ("{}", "\"stop\"") })
            {
                await context.Response.WriteAsync($"data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"fake\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n");
                await context.Response.Body.FlushAsync();
            }

            await context.Response.WriteAsync("data: [DONE]\n\n");
        });
        await fake.StartAsync();

        await using var server = await ServerProcess.StartAsync(null, "--agent", "openai", $"--Agent:Endpoint={fake.Urls.First()}/v1", "--Agent:ModelId=fake", "--Agent:Enabled=true", "--Agent:Id=agent:llm");
        using var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress });
        var session = client.Session("llm");
        await session.CreateAsync();
        await session.SendMessageAsync("Say hello");

        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        SessionState? state = null;
        await foreach (var update in session.JoinAsync(cancel.Token))
        {
            if (update.UpToDate && update.State.All("run").Any(r => r["status"]!.GetValue<string>() == "finished"))
            {
                state = update.State;
                break;
            }
        }

        var run = state!.All("run").Single();
        Assert.Equal("agent:llm", run["agent"]!.GetValue<string>());
        var reply = state.Get("message", run["messageId"]!.GetValue<string>())!;
        Assert.Equal("Hello from the endpoint", reply["parts"]![0]!["text"]!.GetValue<string>());
        var sent = JsonNode.Parse(requests.Single())!;
        Assert.Equal("fake", sent["model"]!.GetValue<string>());
        Assert.Contains(sent["messages"]!.AsArray(), m => m!["content"]?.ToString().Contains("Say hello", StringComparison.Ordinal) == true);
    }
}
