using System.Net;
using System.Text;
using DurableSessions.Agents;
using DurableSessions.Client;
using DurableSessions.Sessions;
using Microsoft.Extensions.Logging;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// A worker that cannot renew its lease (the server refuses the heartbeat) must stop writing at once, not go on
/// answering a turn that may be another worker's by then; the turn is answered again once the lease has run out.
/// </summary>
public sealed class AgentHostLeaseTests
{
    private const string Agent = "agent:lease";

    [Fact]
    public async Task A_run_whose_heartbeat_is_refused_stops_and_its_turn_ends_with_one_complete_answer()
    {
        await using var server = await InProcessServer.StartAsync();
        var refusals = new HeartbeatRefusal(new SocketsHttpHandler());
        using var http = new HttpClient(refusals) { BaseAddress = server.BaseAddress };
        using var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, ParticipantId = Agent }, http);
        using var user = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, ParticipantId = "client:u" });
        var log = new LogCapture();
        var agent = new SessionAgent(new DemoChatClient(tokensPerSecond: 20), client, new SessionAgentOptions { AgentId = Agent });
        var host = new SessionAgentHost(agent, client, Agent, new SessionAgentHostOptions { LeaseTtl = TimeSpan.FromMilliseconds(1500), FollowUpWait = TimeSpan.Zero }, log.For<SessionAgentHost>());
        using var stop = new CancellationTokenSource();

        // Registered before the question: only a message posted after it is a turn of the agent.
        await host.RegisterAsync();
        var running = host.RunAsync(stop.Token);

        refusals.Refuse = true;
        await user.Session("s").CreateAsync();
        await user.Session("s").SendMessageAsync("Tell me about durable sessions");

        // The first heartbeat is refused: the host says so and gives the run up (event 422, the lease lost).
        Assert.True(await log.WaitFor(422, count: 1, TimeSpan.FromSeconds(30)));
        Assert.True(refusals.Refused > 0);
        Assert.Contains(425, log.EventIds);
        refusals.Refuse = false;

        // Once the lease has run out the turn is claimed again: the cut run is marked and one complete answer follows.
        var state = await SessionWaits.StateAsync(user, "s", s => s.Runs.Any(r => r.Status == RunStatus.Finished), TimeSpan.FromSeconds(60));
        var runs = state.Runs;
        Assert.Single(runs, r => r.Status == RunStatus.Finished);
        Assert.All(runs.Where(r => r.Status != RunStatus.Finished), r => Assert.Equal(RunStatus.Interrupted, r.Status));
        Assert.True(runs.Count >= 2, "the run whose heartbeat was refused was taken over, not finished");
        Assert.Single(state.Messages, m => m.Role == MessageRole.Assistant && m.Status == MessageStatus.Complete);

        await stop.CancelAsync();
        await running;
        Assert.DoesNotContain(426, log.EventIds);
    }

    /// <summary>Answers a turn's heartbeats (an ack that is not done) 403 while armed; passes everything else on.</summary>
    private sealed class HeartbeatRefusal(HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        private int _refused;

        public volatile bool Refuse;

        public int Refused => Volatile.Read(ref _refused);

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (Refuse && request.Method == HttpMethod.Post && request.RequestUri!.AbsolutePath.EndsWith("/ack", StringComparison.Ordinal)
                && request.Content is { } content && (await content.ReadAsStringAsync(cancellationToken)).Contains("\"done\":false", StringComparison.Ordinal))
            {
                Interlocked.Increment(ref _refused);
                return new HttpResponseMessage(HttpStatusCode.Forbidden)
                {
                    Content = new StringContent("{\"code\":\"FORBIDDEN\",\"message\":\"Refused by the test.\"}", Encoding.UTF8, "application/json"),
                };
            }

            return await base.SendAsync(request, cancellationToken);
        }
    }
}
