using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.Agents;
using DurableSessions.Sessions;
using DurableSessions.Testing;
using Microsoft.Extensions.AI;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// Runs cut by a crash are taken over: kill -9 an agent worker or the server mid-reply, and every question still ends
/// with exactly one complete answer, with no duplicate text in any reader's state.
/// </summary>
[Collection(HeavyTests.Name)]
public sealed class TakeoverTests
{
    private const int LeaseMs = 2000;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task Killing_one_of_two_agent_workers_mid_reply_leaves_one_complete_answer_per_question()
    {
        await using var server = await ServerProcess.StartAsync();
        await KillAWorkerMidReplyAsync([server, server], sessions: 20);
    }

    [Fact]
    public async Task Killing_an_agent_worker_mid_reply_is_taken_over_across_redis_nodes()
    {
        await using var redis = await RedisServer.StartAsync();
        string[] args = ["--store", "redis", "--redis", redis.Configuration];
        await using var a = await ServerProcess.StartAsync(null, args);
        await using var b = await ServerProcess.StartAsync(null, args);
        await KillAWorkerMidReplyAsync([a, b], sessions: 10);
    }

    [Fact]
    public async Task A_reply_cut_by_killing_the_server_is_answered_again_after_restart()
    {
        await using var server = await ServerProcess.StartAsync(null, "--Agent:Enabled=true", "--Agent:TokensPerSecond=6", $"--Agents:DefaultLeaseTtl=00:00:0{LeaseMs / 1000}");
        using var client = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        await AskAsync(client, "crash", "question crash");
        await WaitForAsync(client, "crash", s => s.Messages.Any(m => m.Role == MessageRole.Assistant && m.Text.Length > 20), "the reply to have started");

        await server.RestartAsync();
        var state = await WaitForAsync(client, "crash", s => s.Runs.Any(r => r.Status == RunStatus.Finished), "the reply to be answered again");
        AssertOneCompleteAnswer(state, "question crash", expectTakeover: true);
    }

    [Fact]
    public async Task Replies_cut_by_stopping_the_server_are_given_back_without_a_failure_and_answered_after_restart()
    {
        const int sessions = 20;
        await using var server = await ServerProcess.StartAsync(null, "--Agent:Enabled=true", "--Agent:TokensPerSecond=6", $"--Agents:DefaultLeaseTtl=00:00:0{LeaseMs / 1000}");
        using var client = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        for (var i = 0; i < sessions; i++)
        {
            await AskAsync(client, $"stop-{i}", $"question stop-{i}");
        }

        for (var i = 0; i < sessions; i++)
        {
            await WaitForAsync(client, $"stop-{i}", s => s.Messages.Any(m => m.Role == MessageRole.Assistant && m.Text.Length > 20), "the reply to have started");
        }

        // A stop (SIGTERM, as a deployment sends) cuts the runs: their turns are given back, and none of that is a failure.
        var (exitCode, _) = await server.StopAsync(Timeout);
        Assert.Equal(0, exitCode);
        Assert.DoesNotContain("the turn is given back", server.RecentOutput, StringComparison.Ordinal);
        Assert.DoesNotContain("fail:", server.RecentOutput, StringComparison.Ordinal);

        await server.StartAsync();
        for (var i = 0; i < sessions; i++)
        {
            var state = await WaitForAsync(client, $"stop-{i}", s => s.Runs.Any(r => r.Status == RunStatus.Finished) && !s.Runs.Any(r => r.Status == RunStatus.Started), "one finished answer");
            AssertOneCompleteAnswer(state, $"question stop-{i}", expectTakeover: false);
        }
    }

    [Fact]
    public async Task A_reply_cut_by_killing_one_redis_node_is_answered_by_the_agent_of_another()
    {
        await using var redis = await RedisServer.StartAsync();
        string[] args = ["--store", "redis", "--redis", redis.Configuration, "--Agent:Enabled=true", "--Agent:TokensPerSecond=6", $"--Agents:DefaultLeaseTtl=00:00:0{LeaseMs / 1000}"];
        await using var a = await ServerProcess.StartAsync(null, args);
        await using var b = await ServerProcess.StartAsync(null, args);
        using var viaA = new HttpClient { BaseAddress = a.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        using var viaB = new HttpClient { BaseAddress = b.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        for (var i = 0; i < 4; i++)
        {
            await AskAsync(viaA, $"node-{i}", $"question node-{i}");
        }

        // Both nodes' agents answer; killing one cuts the replies it was writing, and the other answers them again.
        for (var i = 0; i < 4; i++)
        {
            await WaitForAsync(viaB, $"node-{i}", s => s.Messages.Any(m => m.Role == MessageRole.Assistant && m.Text.Length > 20), "the reply to have started");
        }

        await a.KillAsync();
        var takenOver = 0;
        for (var i = 0; i < 4; i++)
        {
            var state = await WaitForAsync(viaB, $"node-{i}", s => s.Runs.Any(r => r.Status == RunStatus.Finished) && !s.Runs.Any(r => r.Status == RunStatus.Started), "one finished answer");
            takenOver += AssertOneCompleteAnswer(state, $"question node-{i}", expectTakeover: false);
        }

        Assert.True(takenOver > 0, "node a's agent was answering when it was killed, so some replies were taken over");
    }

    private static async Task KillAWorkerMidReplyAsync(ServerProcess[] nodes, int sessions)
    {
        var workerArgs = new[] { "--MaxConcurrentRuns=" + sessions, "--TokensPerSecond=6", "--LeaseTtlMs=" + LeaseMs };
        await using var first = AgentWorkerProcess.Start(nodes[0].BaseAddress, "agent:w", workerArgs);
        await using var second = AgentWorkerProcess.Start(nodes[1].BaseAddress, "agent:w", workerArgs);
        using var client = new HttpClient { BaseAddress = nodes[0].BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        var deadline = DateTime.UtcNow + Timeout;
        while ((await client.GetAsync("/v1/agents/agent:w")).StatusCode != HttpStatusCode.OK)
        {
            Assert.True(DateTime.UtcNow < deadline, "the workers never registered: " + first.RecentOutput + second.RecentOutput);
            await Task.Delay(50);
        }

        var ids = Enumerable.Range(0, sessions).Select(i => $"t{i}").ToArray();
        foreach (var id in ids)
        {
            await AskAsync(client, id, "question " + id);
        }

        foreach (var id in ids)
        {
            await WaitForAsync(client, id, s => s.Messages.Any(m => m.Role == MessageRole.Assistant && m.Text.Length > 0), "a reply to have started");
        }

        // Every turn is claimed now: the claims' holders say which worker writes which reply. The busier one is killed.
        var holders = new List<string>();
        foreach (var id in ids)
        {
            var probe = await client.PostAsync("/v1/agents/agent:w/claim", new StringContent($"{{\"worker\":\"probe\",\"stream\":\"sessions/{id}\"}}", Encoding.UTF8, "application/json"));
            if (probe.StatusCode == HttpStatusCode.Conflict)
            {
                holders.Add((string)JsonNode.Parse(await probe.Content.ReadAsStringAsync())!["error"]!["current_holder"]!);
            }
        }

        var busiest = holders.GroupBy(h => h).OrderByDescending(g => g.Count()).First().Key;
        var firstPid = busiest.Split('/')[1];
        var (victim, victimName) = firstPid == FirstPid(first) ? (first, "first") : (second, "second");
        Assert.NotNull(victimName);
        await victim.KillAsync();
        var killedAt = DateTimeOffset.UtcNow;

        var takenOver = 0;
        foreach (var id in ids)
        {
            var state = await WaitForAsync(client, id, s => s.Runs.Any(r => r.Status == RunStatus.Finished) && !s.Runs.Any(r => r.Status == RunStatus.Started), "one finished answer");
            takenOver += AssertOneCompleteAnswer(state, "question " + id, expectTakeover: false);
            foreach (var superseding in state.Runs.Where(r => r.Status == RunStatus.Finished && state.Runs.Any(c => c.SupersededBy == r.Id)))
            {
                // Taken over within the lease, plus the time to claim and rejoin on a loaded machine.
                var started = DateTimeOffset.Parse(superseding.StartedAt!, System.Globalization.CultureInfo.InvariantCulture);
                Assert.True(started - killedAt < TimeSpan.FromMilliseconds(LeaseMs) + TimeSpan.FromSeconds(5), $"{id} was taken over {started - killedAt} after the kill");
            }
        }

        Assert.True(takenOver > 0, "the killed worker was writing replies, so some were taken over");
    }

    private static string FirstPid(AgentWorkerProcess worker) => worker.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Exactly one assistant message, complete, with the model's whole answer once; returns how many cut runs it superseded.</summary>
    private static int AssertOneCompleteAnswer(SessionState state, string question, bool expectTakeover)
    {
        var answer = Assert.Single(state.Messages, m => m.Role == MessageRole.Assistant);
        Assert.Equal(MessageStatus.Complete, answer.Status);
        Assert.Equal(DemoChatClient.ReplyTo([new ChatMessage(ChatRole.User, question)]), answer.Text);
        var finished = Assert.Single(state.Runs, r => r.Status == RunStatus.Finished);
        Assert.Equal(answer.Id, finished.MessageId);
        var cut = state.Runs.Where(r => r.Status == RunStatus.Interrupted).ToList();
        Assert.All(cut, r => Assert.Equal(finished.Id, r.SupersededBy));
        if (expectTakeover)
        {
            Assert.NotEmpty(cut);
        }

        return cut.Count;
    }

    private static async Task AskAsync(HttpClient client, string id, string question)
    {
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync($"/v1/sessions/{id}", Json("{}"))).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await client.PostAsync($"/v1/sessions/{id}/messages", Json(new JsonObject { ["text"] = question }.ToJsonString()))).StatusCode);
    }

    /// <summary>Reads the session's whole stream, as any reader would, and materializes it until <paramref name="condition"/> holds.</summary>
    private static async Task<SessionState> WaitForAsync(HttpClient client, string id, Func<SessionState, bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Timeout;
        while (true)
        {
            SessionState? state = null;
            try
            {
                var body = await client.GetByteArrayAsync($"/v1/stream/sessions/{id}?offset=-1");
                state = new SessionState();
                state.ApplyChunk(Frame(body), 0);
            }
            catch (HttpRequestException)
            {
                // A node restarting.
            }

            if (state is not null && condition(state))
            {
                return state;
            }

            Assert.True(DateTime.UtcNow < deadline, $"Session {id}: timed out waiting for {what}.");
            await Task.Delay(100);
        }
    }

    /// <summary>A JSON stream's read body (one array) as the framed messages the materializer takes.</summary>
    private static byte[] Frame(byte[] body) => DurableSessions.JsonFraming.TryFrame(body, allowEmptyArray: true, out var payload, out _) ? payload.Data.ToArray() : [];

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");
}
