using System.Net;
using System.Text;
using DurableSessions.Agents;
using DurableSessions.Client;
using DurableSessions.Sessions;
using Microsoft.Extensions.Logging;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// A worker that cannot renew its lease (the server refuses the heartbeat) must stop writing at once, not go on
/// answering a turn that may be another worker's by then; the turn is answered again once the lease has run out. An AI
/// SDK chat stream following the cut run says whether the message is being answered again.
/// </summary>
public sealed class AgentHostLeaseTests
{
    private const string Agent = "agent:lease";

    [Fact]
    public async Task A_run_whose_heartbeat_is_refused_stops_and_its_turn_ends_with_one_complete_answer()
    {
        await using var bench = await Bench.StartAsync(new DemoChatClient(tokensPerSecond: 20));
        var (refusals, user, log) = (bench.Refusals, bench.User, bench.Log);
        refusals.Refuse = true;
        await user.Session("s").CreateAsync();
        await user.Session("s").SendMessageAsync("Tell me about durable sessions");

        // The first heartbeat is refused: the host says so and gives the run up (event 422, the lease lost), and the agent
        // says its run was left unfinished (408), not cancelled (402).
        Assert.True(await log.WaitFor(422, count: 1, TimeSpan.FromSeconds(30)));
        Assert.True(refusals.Refused > 0);
        Assert.Contains(425, log.EventIds);
        Assert.True(await log.WaitFor(408, count: 1, TimeSpan.FromSeconds(30)));
        Assert.DoesNotContain(402, log.EventIds);
        refusals.Refuse = false;

        // Once the lease has run out the turn is claimed again: the cut run is marked and one complete answer follows.
        var state = await SessionWaits.StateAsync(user, "s", s => s.Runs.Any(r => r.Status == RunStatus.Finished), TimeSpan.FromSeconds(60));
        var runs = state.Runs;
        Assert.Single(runs, r => r.Status == RunStatus.Finished);
        Assert.All(runs.Where(r => r.Status != RunStatus.Finished), r => Assert.Equal(RunStatus.Interrupted, r.Status));
        Assert.True(runs.Count >= 2, "the run whose heartbeat was refused was taken over, not finished");
        Assert.Single(state.Messages, m => m.Role == MessageRole.Assistant && m.Status == MessageStatus.Complete);

        await bench.StopAsync();
        Assert.DoesNotContain(426, log.EventIds);
    }

    [Fact]
    public async Task A_chat_stream_following_a_run_taken_over_ends_with_an_error_and_a_resume_streams_the_new_answer_under_the_same_message()
    {
        var model = new SecondCallGate(new DemoChatClient(tokensPerSecond: 20));
        await using var bench = await Bench.StartAsync(model);
        var (server, refusals, user, log) = (bench.Server, bench.Refusals, bench.User, bench.Log);

        // The chat's question is answered by a run whose first heartbeat is refused: it stops, and once its lease has run
        // out the turn is taken over by a second run, held back until the test lets it answer.
        // Heartbeats are refused only until the first run has given its turn up, so the second run keeps its lease.
        refusals.Refuse = true;
        var body = """{"id":"c","messages":[{"id":"u1","role":"user","parts":[{"type":"text","text":"Tell me about durable sessions"}]}]}""";
        using var request = new HttpRequestMessage(HttpMethod.Post, "/api/chat") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        using var chat = await server.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, TestContext.Current.CancellationToken);
        Assert.True(await log.WaitFor(422, count: 1, TimeSpan.FromSeconds(30)));
        refusals.Refuse = false;
        var first = Chunks(await chat.Content.ReadAsStringAsync(TestContext.Current.CancellationToken));

        // The cut reply's stream says the answer is coming again, rather than ending as a reply stopped on purpose.
        Assert.Equal("error", first[^1]["type"]!.GetValue<string>());
        Assert.Contains("answered again", first[^1]["errorText"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.DoesNotContain(first, c => c["type"]!.GetValue<string>() is "abort" or "finish");
        var messageId = first.Single(c => c["type"]!.GetValue<string>() == "start")["messageId"]!.GetValue<string>();

        // Resumed while the new run is held, the stream follows that run under the same message id to its finish.
        using var resume = await server.Client.GetAsync("/api/chat/c/stream", HttpCompletionOption.ResponseHeadersRead, TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, resume.StatusCode);
        model.Release.SetResult();
        var second = Chunks(await resume.Content.ReadAsStringAsync(TestContext.Current.CancellationToken));
        Assert.Equal(messageId, second.Single(c => c["type"]!.GetValue<string>() == "start")["messageId"]!.GetValue<string>());
        Assert.Equal("finish", second[^1]["type"]!.GetValue<string>());

        var state = await SessionWaits.StateAsync(user, "c", s => s.Runs.Any(r => r.Status == RunStatus.Finished), TimeSpan.FromSeconds(60));
        var answer = Assert.Single(state.Messages, m => m.Role == MessageRole.Assistant);
        Assert.Equal(messageId, answer.Id);
        Assert.Equal(answer.Text, string.Concat(second.Where(c => c["type"]!.GetValue<string>() == "text-delta").Select(c => c["delta"]!.GetValue<string>())));
        Assert.Contains(state.Runs, r => r.Status == RunStatus.Interrupted && r.SupersededBy is not null);
        await bench.StopAsync();
    }

    [Fact]
    public async Task A_host_whose_agent_is_unregistered_while_it_serves_registers_it_again_and_answers_on()
    {
        await using var bench = await Bench.StartAsync(new DemoChatClient(tokensPerSecond: 200));
        var (user, log) = (bench.User, bench.Log);

        // Once the host serves (event 420, after its own register), the agent is unregistered under it.
        Assert.True(await log.WaitFor(420, count: 1, TimeSpan.FromSeconds(30)));
        Assert.True(await user.Agent(Agent).UnregisterAsync(TestContext.Current.CancellationToken));

        // The claims the host has waiting are answered 404 at once: it says so and registers the agent again (event 427).
        Assert.True(await log.WaitFor(427, count: 1, TimeSpan.FromSeconds(30)), "events: " + string.Join(",", log.EventIds));
        await user.Session("again").CreateAsync();
        await user.Session("again").SendMessageAsync("Still there?");
        var state = await SessionWaits.StateAsync(user, "again", s => s.Runs.Any(r => r.Status == RunStatus.Finished), TimeSpan.FromSeconds(60));
        Assert.Single(state.Messages, m => m.Role == MessageRole.Assistant && m.Status == MessageStatus.Complete);

        await bench.StopAsync();
        Assert.False(await user.Agent("agent:never-registered").UnregisterAsync(TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task A_run_whose_last_write_never_lands_ends_with_its_lease_and_the_host_stops()
    {
        // Its writes over HTTP, where the test can refuse them.
        await using var bench = await Bench.StartAsync(new DemoChatClient(tokensPerSecond: 200), useWebSocket: false);
        var (refusals, user, log) = (bench.Refusals, bench.User, bench.Log);

        // The server stops answering this worker's heartbeats and its reply's last write (503, retried as transient) for
        // good: the run cannot finish, and once its lease is lost it must give up that write too.
        refusals.Outage = true;
        await user.Session("unanswered").CreateAsync();
        await user.Session("unanswered").SendMessageAsync("Tell me about durable sessions");
        Assert.True(await log.WaitFor(422, count: 1, TimeSpan.FromSeconds(30)), $"events: {string.Join(",", log.EventIds)}, final writes refused: {refusals.FinalWritesRefused}");
        Assert.True(refusals.FinalWritesRefused > 0, "the reply's last write was never tried");

        // Nothing of the run holds the host: it stops while the outage goes on (a run retrying its last write for good
        // kept its turn, and the host, from ever ending).
        await bench.StopAsync().WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken);
        Assert.DoesNotContain(426, log.EventIds);
    }

    /// <summary>
    /// A server without an agent, and a host of <see cref="Agent"/> whose heartbeats go through a <see cref="HeartbeatRefusal"/>
    /// (leases of 1.5 s, no follow-up wait), registered before any question so that every later message is its turn.
    /// </summary>
    private sealed class Bench : IAsyncDisposable
    {
        private readonly HttpClient _http;
        private readonly DurableSessionsClient _agentClient;
        private readonly CancellationTokenSource _stop = new();
        private Task _running = Task.CompletedTask;

        private Bench(InProcessServer server, bool useWebSocket)
        {
            Server = server;
            Refusals = new HeartbeatRefusal(new SocketsHttpHandler());
            _http = new HttpClient(Refusals) { BaseAddress = server.BaseAddress };
            _agentClient = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, ParticipantId = Agent, UseWebSocket = useWebSocket }, _http);
            User = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, ParticipantId = "client:u" });
        }

        public InProcessServer Server { get; }

        public HeartbeatRefusal Refusals { get; }

        public DurableSessionsClient User { get; }

        public LogCapture Log { get; } = new();

        public static async Task<Bench> StartAsync(Microsoft.Extensions.AI.IChatClient model, bool useWebSocket = true)
        {
            var bench = new Bench(await InProcessServer.StartAsync(), useWebSocket);
            try
            {
                var agent = new SessionAgent(model, bench._agentClient, new SessionAgentOptions { AgentId = Agent }, bench.Log.For<SessionAgent>());
                var host = new SessionAgentHost(agent, bench._agentClient, Agent, new SessionAgentHostOptions { LeaseTtl = TimeSpan.FromMilliseconds(1500), FollowUpWait = TimeSpan.Zero }, bench.Log.For<SessionAgentHost>());
                await host.RegisterAsync();
                bench._running = host.RunAsync(bench._stop.Token);
                return bench;
            }
            catch
            {
                await bench.DisposeAsync();
                throw;
            }
        }

        /// <summary>Stops the host and waits for it.</summary>
        public async Task StopAsync()
        {
            await _stop.CancelAsync();
            await _running;
        }

        public async ValueTask DisposeAsync()
        {
            try
            {
                // Bounded, so that a host that never stops fails its test instead of hanging the run.
                await StopAsync().WaitAsync(TimeSpan.FromSeconds(60));
            }
            finally
            {
                User.Dispose();
                _agentClient.Dispose();
                _http.Dispose();
                await Server.DisposeAsync();
                _stop.Dispose();
            }
        }
    }

    [Fact]
    public async Task A_chat_stream_following_a_run_cut_with_nothing_to_answer_again_ends_with_an_error_saying_the_reply_is_incomplete()
    {
        await using var server = await InProcessServer.StartAsync();
        using var user = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, ParticipantId = "client:u" });
        await user.Session("cut").CreateAsync();
        var agent = new FakeAgent(server.Client, "cut", "r1", "m1");
        Assert.True((await agent.StartAsync()).IsSuccessStatusCode);
        Assert.True((await agent.DeltaAsync("partial")).IsSuccessStatusCode);
        using var chat = await server.Client.GetAsync("/api/chat/cut/stream", HttpCompletionOption.ResponseHeadersRead, TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, chat.StatusCode);

        Assert.True((await agent.InterruptedAsync()).IsSuccessStatusCode);
        var chunks = Chunks(await chat.Content.ReadAsStringAsync(TestContext.Current.CancellationToken));
        Assert.Equal("partial", string.Concat(chunks.Where(c => c["type"]!.GetValue<string>() == "text-delta").Select(c => c["delta"]!.GetValue<string>())));
        Assert.Equal("error", chunks[^1]["type"]!.GetValue<string>());
        Assert.Contains("incomplete", chunks[^1]["errorText"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.DoesNotContain("answered again", chunks[^1]["errorText"]!.GetValue<string>(), StringComparison.Ordinal);
    }

    private static List<System.Text.Json.Nodes.JsonNode> Chunks(string body)
        => [.. body.Split('\n').Where(l => l.StartsWith("data: {", StringComparison.Ordinal)).Select(l => System.Text.Json.Nodes.JsonNode.Parse(l[6..])!)];

    /// <summary>Answers the first call at once; the second waits for <see cref="Release"/> before its first token.</summary>
    private sealed class SecondCallGate(Microsoft.Extensions.AI.IChatClient inner) : Microsoft.Extensions.AI.DelegatingChatClient(inner)
    {
        private int _calls;

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override async IAsyncEnumerable<Microsoft.Extensions.AI.ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<Microsoft.Extensions.AI.ChatMessage> messages, Microsoft.Extensions.AI.ChatOptions? options = null, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            if (Interlocked.Increment(ref _calls) == 2)
            {
                await Release.Task.WaitAsync(cancellationToken);
            }

            await foreach (var update in base.GetStreamingResponseAsync(messages, options, cancellationToken))
            {
                yield return update;
            }
        }
    }

    /// <summary>Answers a turn's heartbeats (an ack that is not done) 403 while armed, or 503 with a reply's last write in an outage; passes everything else on.</summary>
    private sealed class HeartbeatRefusal(HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        private int _refused;

        private int _finalWritesRefused;

        public volatile bool Refuse;

        /// <summary>While set, heartbeats and an append that completes a reply are answered 503 (a server that stopped answering them).</summary>
        public volatile bool Outage;

        public int Refused => Volatile.Read(ref _refused);

        public int FinalWritesRefused => Volatile.Read(ref _finalWritesRefused);

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (Outage && request.Method == HttpMethod.Post && request.Content is { } posted)
            {
                var text = await posted.ReadAsStringAsync(cancellationToken);
                var heartbeat = request.RequestUri!.AbsolutePath.EndsWith("/ack", StringComparison.Ordinal) && text.Contains("\"done\":false", StringComparison.Ordinal);
                var finalWrite = request.RequestUri.AbsolutePath.StartsWith("/v1/stream/sessions/", StringComparison.Ordinal) && text.Contains("\"status\":\"complete\"", StringComparison.Ordinal);
                if (heartbeat || finalWrite)
                {
                    if (finalWrite)
                    {
                        Interlocked.Increment(ref _finalWritesRefused);
                    }

                    return new HttpResponseMessage(HttpStatusCode.ServiceUnavailable);
                }
            }

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
