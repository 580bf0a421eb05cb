using System.Collections.Concurrent;
using System.Net;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.Agents;
using DurableSessions.Client;
using DurableSessions.Sessions;
using Microsoft.Extensions.AI;

namespace DurableSessions.FunctionalTests;

/// <summary>The agent SDK over real HTTP with the built-in demo model.</summary>
public sealed class SessionAgentTests : IAsyncLifetime
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    private InProcessServer _server = null!;
    private DurableSessionsClient _client = null!;
    private readonly CancellationTokenSource _stop = new();

    public async ValueTask InitializeAsync()
    {
        _server = await InProcessServer.StartAsync();
        _client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = _server.BaseAddress, ParticipantId = "client:test" });
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _client.Dispose();
        await _server.DisposeAsync();
        _stop.Dispose();
    }

    /// <summary>Records every model call and whether its cancellation token fired.</summary>
    /// <summary>
    /// Records the model's calls and whether its cancellation token fired. The first <paramref name="heldOpen"/> calls
    /// stay open after their text until they are cancelled: a test that stops a reply from outside (cancel, steer,
    /// handoff) then always reaches a running one, however slowly a loaded machine carries the stop.
    /// </summary>
    private sealed class RecordingChatClient(IChatClient inner, int heldOpen = 0) : DelegatingChatClient(inner)
    {
        private int _calls;

        public ConcurrentQueue<List<ChatMessage>> Calls { get; } = new();

        public TaskCompletionSource TokenFired { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            Calls.Enqueue([.. messages]);
            var holdOpen = Interlocked.Increment(ref _calls) <= heldOpen;
            using var registration = cancellationToken.Register(() => TokenFired.TrySetResult());
            await foreach (var update in base.GetStreamingResponseAsync(messages, options, cancellationToken))
            {
                yield return update;
            }

            if (holdOpen)
            {
                await Task.Delay(System.Threading.Timeout.InfiniteTimeSpan, cancellationToken);
            }
        }
    }

    private Task StartAgent(IChatClient chat, string sessionId, string agentId = "agent:demo", TimeSpan? linger = null)
    {
        var agent = new SessionAgent(chat, _client, new SessionAgentOptions { AgentId = agentId, DeltaLinger = linger ?? TimeSpan.FromMilliseconds(30) });
        return Task.Run(() => agent.RunAsync(sessionId, _stop.Token));
    }

    private async Task<SessionState> WaitFor(string sessionId, Func<SessionState, bool> condition)
    {
        using var cancel = new CancellationTokenSource(Timeout);
        await foreach (var update in _client.Session(sessionId).JoinAsync(cancel.Token))
        {
            if (update.UpToDate && condition(update.State))
            {
                return update.State;
            }
        }

        throw new InvalidOperationException("session ended");
    }

    private static IEnumerable<JsonObject> Runs(SessionState state, string status) => state.All("run").Where(r => r["status"]!.GetValue<string>() == status);

    private static string Text(JsonObject message) => message["parts"]![0]!["text"]!.GetValue<string>();

    [Fact]
    public async Task The_agent_streams_a_deterministic_reply_in_batched_deltas()
    {
        var session = _client.Session("answer");
        await session.CreateAsync();
        _ = StartAgent(new DemoChatClient(tokensPerSecond: 400), "answer");
        await session.SendMessageAsync("What is a durable session?");

        var state = await WaitFor("answer", s => Runs(s, "finished").Any());
        var run = Runs(state, "finished").Single();
        Assert.Equal("agent:demo", run["agent"]!.GetValue<string>());
        var reply = state.Get("message", run["messageId"]!.GetValue<string>())!;
        Assert.Equal("complete", reply["status"]!.GetValue<string>());
        var expected = DemoChatClient.ReplyTo([new ChatMessage(ChatRole.User, "What is a durable session?")]);
        Assert.Equal(expected, Text(reply));

        var history = JsonNode.Parse(await _server.Client.GetStringAsync("/v1/stream/sessions/answer"))!.AsArray();
        var deltas = history.Count(e => e!["type"]!.GetValue<string>() == "delta");
        var tokens = expected.Split(' ').Length;
        Assert.InRange(deltas, 1, tokens / 3);
    }

    [Fact]
    public async Task The_demo_model_streams_its_reply_one_word_at_a_time_each_after_its_space()
    {
        var question = new ChatMessage(ChatRole.User, "How are tokens cut?");
        var tokens = new List<string>();
        await foreach (var update in new DemoChatClient(tokensPerSecond: 0).GetStreamingResponseAsync([question]))
        {
            if (update.FinishReason is null)
            {
                tokens.Add(update.Text);
            }
        }

        var words = DemoChatClient.ReplyTo([question]).Split(' ');
        Assert.Equal([words[0], .. words.Skip(1).Select(w => " " + w)], tokens);
    }

    /// <summary>A model that only streams: what each test's model says is its <see cref="GetStreamingResponseAsync"/>.</summary>
    private abstract class StreamingChatClient : IChatClient
    {
        public Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
            => throw new NotSupportedException();

        public abstract IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default);

        public object? GetService(Type serviceType, object? serviceKey = null) => null;

        public void Dispose()
        {
        }
    }

    /// <summary>Says one token, waits until its write is held, then says three more and lets the write go.</summary>
    private sealed class TokensDuringAWriteChatClient(HoldFirstWrite gate) : StreamingChatClient
    {
        public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            yield return new ChatResponseUpdate(ChatRole.Assistant, "one");
            await gate.Held.Task.WaitAsync(cancellationToken);
            yield return new ChatResponseUpdate(ChatRole.Assistant, " two");
            yield return new ChatResponseUpdate(ChatRole.Assistant, " three");
            yield return new ChatResponseUpdate(ChatRole.Assistant, " four");
            // Runs when the agent asks for the next update, so after it took " four".
            gate.Release.TrySetResult();
            yield return new ChatResponseUpdate { Role = ChatRole.Assistant, FinishReason = ChatFinishReason.Stop };
        }
    }

    /// <summary>Holds the first append whose body <paramref name="matches"/> until released.</summary>
    private sealed class HoldFirstWrite(Func<string, bool> matches) : DelegatingHandler(new SocketsHttpHandler())
    {
        private int _held;

        /// <summary>Holds the first append that carries a delta.</summary>
        public static HoldFirstWrite OfDelta() => new(body => body.Contains("\"type\":\"delta\"", StringComparison.Ordinal));

        /// <summary>Holds the first append that starts a run.</summary>
        public static HoldFirstWrite OfRunStart() => new(body => body.Contains("\"type\":\"run\"", StringComparison.Ordinal) && body.Contains("\"status\":\"started\"", StringComparison.Ordinal));

        public TaskCompletionSource Held { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (request.Method == HttpMethod.Post && request.Content is { } content
                && matches(await content.ReadAsStringAsync(cancellationToken))
                && Interlocked.Exchange(ref _held, 1) == 0)
            {
                Held.TrySetResult();
                await Release.Task.WaitAsync(Timeout, cancellationToken);
            }

            return await base.SendAsync(request, cancellationToken);
        }
    }

    [Fact]
    public async Task Without_a_linger_the_first_token_is_written_at_once_and_tokens_said_during_a_write_go_out_together_next()
    {
        var session = _client.Session("behind");
        await session.CreateAsync();
        var gate = HoldFirstWrite.OfDelta();
        using var http = new HttpClient(gate);
        using var agentClient = new DurableSessionsClient(_client.Options with { ParticipantId = "agent:demo", UseWebSocket = false }, http);
        var agent = new SessionAgent(new TokensDuringAWriteChatClient(gate), agentClient, new SessionAgentOptions { DeltaLinger = TimeSpan.Zero });
        _ = Task.Run(() => agent.RunAsync("behind", _stop.Token));
        await session.SendMessageAsync("Count to four");

        var state = await WaitFor("behind", s => Runs(s, "finished").Any());
        Assert.Equal("one two three four", Text(state.Get("message", Runs(state, "finished").Single()["messageId"]!.GetValue<string>())!));
        var history = JsonNode.Parse(await _server.Client.GetStringAsync("/v1/stream/sessions/behind"))!.AsArray();
        var deltas = history.Where(e => e!["type"]!.GetValue<string>() == "delta").Select(e => e!["value"]!["text"]!.GetValue<string>());
        Assert.Equal(["one", " two three four"], deltas);
    }

    [Fact]
    public async Task A_replys_first_token_is_written_at_once_and_later_ones_wait_the_linger_together()
    {
        // The linger runs on a clock that only moves when told: the first token cannot have waited for it.
        var linger = TimeSpan.FromMilliseconds(987);
        var clock = new LingerClock(linger);
        var model = new ThreeTokens();
        var session = _client.Session("first");
        await session.CreateAsync();
        using var agentClient = new DurableSessionsClient(_client.Options with { ParticipantId = "agent:demo", UseWebSocket = false });
        var agent = new SessionAgent(model, agentClient, new SessionAgentOptions { DeltaLinger = linger, TimeProvider = clock });
        _ = Task.Run(() => agent.RunAsync("first", _stop.Token));
        await session.SendMessageAsync("Count to three");

        await WaitFor("first", s => s.All("message").Any(m => m["role"]!.GetValue<string>() == "assistant" && Text(m) == "one"));
        model.SayMore.TrySetResult();
        await model.Said.Task.WaitAsync(Timeout);

        // The clock moves only once the linger is waiting on it: moved before, it would leave the wait for a later move.
        await clock.LingerStarted.Task.WaitAsync(Timeout);
        clock.Advance(linger);

        await WaitFor("first", s => s.All("message").Any(m => m["role"]!.GetValue<string>() == "assistant" && Text(m) == "one two three"));
        var history = JsonNode.Parse(await _server.Client.GetStringAsync("/v1/stream/sessions/first"))!.AsArray();
        var deltas = history.Where(e => e!["type"]!.GetValue<string>() == "delta").Select(e => e!["value"]!["text"]!.GetValue<string>());
        Assert.Equal(["one", " two three"], deltas);
    }

    [Fact]
    public async Task A_batch_goes_out_a_linger_after_its_first_token_not_a_linger_after_the_write_before_it()
    {
        // The clock moves only when told. The first token's write is held while the second token is said and a whole
        // linger passes; once that write is acknowledged, the second token has waited its linger and goes out at once.
        // Were the linger counted from the acknowledgement, it would wait on a clock that never moves again.
        var linger = TimeSpan.FromMilliseconds(987);
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        var gate = HoldFirstWrite.OfDelta();
        var model = new TwoTokensDuringAWrite(gate);
        var session = _client.Session("aged");
        await session.CreateAsync();
        using var http = new HttpClient(gate);
        using var agentClient = new DurableSessionsClient(_client.Options with { ParticipantId = "agent:demo", UseWebSocket = false }, http);
        var agent = new SessionAgent(model, agentClient, new SessionAgentOptions { DeltaLinger = linger, TimeProvider = clock });
        _ = Task.Run(() => agent.RunAsync("aged", _stop.Token));
        await session.SendMessageAsync("Count to two");

        await model.Said.Task.WaitAsync(Timeout);
        clock.Advance(linger);
        gate.Release.TrySetResult();

        await WaitFor("aged", s => s.All("message").Any(m => m["role"]!.GetValue<string>() == "assistant" && Text(m) == "one two"));
        var history = JsonNode.Parse(await _server.Client.GetStringAsync("/v1/stream/sessions/aged"))!.AsArray();
        var deltas = history.Where(e => e!["type"]!.GetValue<string>() == "delta").Select(e => e!["value"]!["text"]!.GetValue<string>());
        Assert.Equal(["one", " two"], deltas);
    }

    /// <summary>Says one token, waits until its write is held, says a second, and then nothing more.</summary>
    private sealed class TwoTokensDuringAWrite(HoldFirstWrite gate) : StreamingChatClient
    {
        public TaskCompletionSource Said { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            yield return new ChatResponseUpdate(ChatRole.Assistant, "one");
            await gate.Held.Task.WaitAsync(cancellationToken);
            yield return new ChatResponseUpdate(ChatRole.Assistant, " two");

            // Runs when the agent asks for the next update, so after it took " two".
            Said.TrySetResult();
            await Task.Delay(System.Threading.Timeout.InfiniteTimeSpan, cancellationToken);
            yield break;
        }
    }

    /// <summary>A fake clock that tells when a wait of the linger's length starts on it.</summary>
    private sealed class LingerClock(TimeSpan linger) : Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow)
    {
        public TaskCompletionSource LingerStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = base.CreateTimer(callback, state, dueTime, period);
            if (dueTime == linger)
            {
                LingerStarted.TrySetResult();
            }

            return timer;
        }
    }

    /// <summary>Says one token, then two more when told.</summary>
    private sealed class ThreeTokens : StreamingChatClient
    {
        public TaskCompletionSource SayMore { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Said { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            yield return new ChatResponseUpdate(ChatRole.Assistant, "one");
            await SayMore.Task.WaitAsync(cancellationToken);
            yield return new ChatResponseUpdate(ChatRole.Assistant, " two");
            yield return new ChatResponseUpdate(ChatRole.Assistant, " three");

            // Runs when the agent asks for the next update, so after it took " three".
            Said.TrySetResult();
            await Task.Delay(System.Threading.Timeout.InfiniteTimeSpan, cancellationToken);
            yield break;
        }
    }

    [Fact]
    public async Task A_claim_whose_token_provider_throws_is_tried_again_and_the_host_keeps_answering()
    {
        // The provider's second call (the host's first claim) throws, as an identity library does when its sign-in
        // hiccups; with one run at a time the host has one claimer, which must not be lost to it.
        var calls = 0;
        using var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with
        {
            BaseAddress = _server.BaseAddress,
            ParticipantId = "agent:flaky",
            AccessTokenProvider = _ => Interlocked.Increment(ref calls) == 2 ? throw new InvalidOperationException("sign-in failed (test)") : ValueTask.FromResult<string?>(null),
        });
        var agent = new SessionAgent(new DemoChatClient(tokensPerSecond: 400), client, new SessionAgentOptions { AgentId = "agent:flaky" });
        var host = new SessionAgentHost(agent, client, "agent:flaky", new SessionAgentHostOptions { MaxConcurrentRuns = 1 });
        var serving = Task.Run(() => host.RunAsync(_stop.Token));

        // A message is a turn of the agents registered when it comes: the host registers first (the provider's first call).
        using (var registered = new CancellationTokenSource(Timeout))
        {
            while ((await _server.Client.GetAsync(new Uri("/v1/agents/agent:flaky", UriKind.Relative), registered.Token)).StatusCode != HttpStatusCode.OK)
            {
                await Task.Delay(20, registered.Token);
            }
        }

        var session = _client.Session("flaky");
        await session.CreateAsync();
        await session.SendMessageAsync("Still there?");
        var state = await WaitFor("flaky", s => Runs(s, "finished").Any() || serving.IsCompleted);
        Assert.False(serving.IsCompleted, "the host stopped serving");
        Assert.Equal("agent:flaky", Runs(state, "finished").Single()["agent"]!.GetValue<string>());
        Assert.True(Volatile.Read(ref calls) >= 3);
    }

    /// <summary>The first call says ten tokens and then fails; later calls answer "fine".</summary>
    private sealed class FailsMidReply : StreamingChatClient
    {
        private int _calls;

        public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            if (Interlocked.Increment(ref _calls) > 1)
            {
                yield return new ChatResponseUpdate(ChatRole.Assistant, "fine");
                yield break;
            }

            for (var i = 0; i < 10; i++)
            {
                yield return new ChatResponseUpdate(ChatRole.Assistant, $"t{i} ");
                await Task.Yield();
            }

            throw new InvalidOperationException("the model failed (test)");
        }
    }

    [Fact]
    public async Task A_reply_that_fails_mid_stream_ends_with_its_text_once_and_no_delta_after_its_failure()
    {
        var session = _client.Session("fails");
        await session.CreateAsync();

        // A long linger: when the model fails, most of its tokens still wait in the batcher for their write.
        _ = StartAgent(new FailsMidReply(), "fails", linger: TimeSpan.FromMilliseconds(400));
        await session.SendMessageAsync("first");
        var failed = await WaitFor("fails", s => Runs(s, "failed").Any());
        var reply = failed.Get("message", Runs(failed, "failed").Single()["messageId"]!.GetValue<string>())!;
        Assert.Equal("failed", reply["status"]!.GetValue<string>());

        // The next question is answered after it: its reply's end comes after any write the failed one still had.
        await session.SendMessageAsync("second");
        var state = await WaitFor("fails", s => Runs(s, "finished").Any());
        var expected = string.Concat(Enumerable.Range(0, 10).Select(i => $"t{i} "));
        var failedId = reply["id"]!.GetValue<string>();
        Assert.Equal(expected, Text(state.Get("message", failedId)!));

        // In the stream, nothing adds to the failed reply after the event that failed it.
        var history = JsonNode.Parse(await _server.Client.GetStringAsync("/v1/stream/sessions/fails"))!.AsArray().Select(e => e!.AsObject()).ToList();
        var failedAt = history.FindIndex(e => e["type"]!.GetValue<string>() == "message" && e["key"]!.GetValue<string>() == failedId
            && e["value"]?["status"]?.GetValue<string>() == "failed");
        Assert.True(failedAt >= 0);
        Assert.DoesNotContain(history.Skip(failedAt), e => e["type"]!.GetValue<string>() == "delta" && e["value"]?["messageId"]?.GetValue<string>() == failedId);
    }

    [Fact]
    public async Task A_cancel_from_another_client_fires_the_models_token_and_fences_the_run()
    {
        var chat = new RecordingChatClient(new DemoChatClient(tokensPerSecond: 20), heldOpen: 1);
        var a = _client.Session("stop");
        await a.CreateAsync();
        _ = StartAgent(chat, "stop");
        await a.SendMessageAsync("Please write a long answer");
        var running = await WaitFor("stop", s => Runs(s, "started").Any() && s.All("message").Any(m => m["role"]!.GetValue<string>() == "assistant" && Text(m).Length > 10));
        var runId = Runs(running, "started").Single()["id"]!.GetValue<string>();

        using var b = new DurableSessionsClient(_client.Options with { ParticipantId = "client:b" });
        var ack = await b.Session("stop").CancelAsync(runId);
        await chat.TokenFired.Task.WaitAsync(Timeout);

        var state = await WaitFor("stop", s => Runs(s, "cancelled").Any());
        var reply = state.Get("message", Runs(state, "cancelled").Single()["messageId"]!.GetValue<string>())!;
        Assert.Equal("cancelled", reply["status"]!.GetValue<string>());

        // The agent answers a whole next question after the fence: a still-running (wrongly unfenced) cancelled run
        // would have written meanwhile, so everything after the cancel's acknowledgement belongs to the next run.
        var next = await a.SendMessageAsync("Then a short one");
        var after = await WaitFor("stop", s => s.All("run").Any(r => r["trigger"]?.GetValue<string>() == next && r["status"]!.GetValue<string>() == "finished"));
        var written = JsonNode.Parse(await _server.Client.GetStringAsync($"/v1/stream/sessions/stop?offset={ack.Offset}"))!.AsArray();
        Assert.NotEmpty(written);
        Assert.All(written, e => Assert.DoesNotContain(runId, e!.ToJsonString(), StringComparison.Ordinal));
        Assert.Equal("cancelled", after.Get("message", reply["id"]!.GetValue<string>())!["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task Steering_restarts_generation_with_the_new_instruction_in_the_same_reply()
    {
        var chat = new RecordingChatClient(new DemoChatClient(tokensPerSecond: 20), heldOpen: 1);
        var session = _client.Session("steer");
        await session.CreateAsync();
        _ = StartAgent(chat, "steer");
        await session.SendMessageAsync("Tell me about offsets");
        var running = await WaitFor("steer", s => Runs(s, "started").Any());
        var runId = Runs(running, "started").Single()["id"]!.GetValue<string>();
        await session.SteerAsync(runId, "Answer in one sentence");

        var state = await WaitFor("steer", s => Runs(s, "finished").Any());
        Assert.Single(state.All("run"));
        Assert.True(chat.Calls.Count >= 2, "the model should have been called again after the steer");
        Assert.Equal("Answer in one sentence", chat.Calls.Last().Last().Text);

        // The generation the steer restarted goes on numbering the reply's deltas: no delta key is written twice.
        using var stream = await _server.Client.GetAsync("/v1/stream/sessions/steer?offset=-1");
        var deltaKeys = JsonNode.Parse(await stream.Content.ReadAsStringAsync())!.AsArray()
            .Where(e => (string?)e!["type"] == "delta").Select(e => (string?)e!["key"]).ToList();
        Assert.NotEmpty(deltaKeys);
        Assert.Equal(deltaKeys.Distinct().Count(), deltaKeys.Count);
    }

    /// <summary>
    /// Answers "Answer N." for its Nth call, a word at a time, and records what each call was given; the calls named in
    /// <paramref name="heldOpen"/> stay open after their text until they are cancelled.
    /// </summary>
    private sealed class NumberedAnswers(params int[] heldOpen) : StreamingChatClient
    {
        private int _calls;

        public ConcurrentQueue<List<ChatMessage>> Calls { get; } = new();

        public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            Calls.Enqueue([.. messages]);
            var call = Interlocked.Increment(ref _calls);
            yield return new ChatResponseUpdate(ChatRole.Assistant, "Answer");
            await Task.Yield();
            yield return new ChatResponseUpdate(ChatRole.Assistant, $" {call}.");
            if (heldOpen.Contains(call))
            {
                await Task.Delay(System.Threading.Timeout.InfiniteTimeSpan, cancellationToken);
            }

            yield return new ChatResponseUpdate { Role = ChatRole.Assistant, FinishReason = ChatFinishReason.Stop };
        }
    }

    private static IEnumerable<SessionMessage> Replies(SessionState state) => state.Messages.Where(m => m.Role == MessageRole.Assistant);

    [Fact]
    public async Task A_reply_asked_to_be_written_again_is_answered_anew_in_the_same_message_from_the_conversation_before_it()
    {
        var model = new NumberedAnswers();
        var session = _client.Session("again");
        await session.CreateAsync();
        _ = StartAgent(model, "again");
        var question = await session.SendMessageAsync("What is a fence?");
        var first = await WaitFor("again", s => s.Runs.Any(r => r.Status == RunStatus.Finished));
        var replyId = Assert.Single(Replies(first)).Id!;
        Assert.Equal("Answer 1.", first.GetMessage(replyId)!.Text);

        // By the reply, then by the question it answers (which stands for its latest reply).
        await session.RegenerateAsync(replyId);
        var second = await WaitFor("again", s => s.Runs.Count(r => r.Status == RunStatus.Finished) == 2);
        await session.RegenerateAsync(question);
        var third = await WaitFor("again", s => s.Runs.Count(r => r.Status == RunStatus.Finished) == 3);

        foreach (var (state, text) in new[] { (second, "Answer 2."), (third, "Answer 3.") })
        {
            // One answer to the one question, in the same message, written by the newest run; the runs before it stay
            // as they ended.
            var reply = Assert.Single(Replies(state));
            Assert.Equal(replyId, reply.Id);
            Assert.Equal(text, reply.Text);
            Assert.Equal(MessageStatus.Complete, reply.Status);
            Assert.Equal(state.Runs[^1].Id, reply.RunId);
            Assert.All(state.Runs, r => Assert.Equal(question, r.Trigger));
            Assert.All(state.Runs, r => Assert.Equal(RunStatus.Finished, r.Status));
            Assert.Equal(2, state.Messages.Count);
        }

        // Each answer is written from the conversation before the reply, without the answer it replaces.
        Assert.Equal(3, model.Calls.Count);
        Assert.All(model.Calls, call => Assert.Equal(["What is a fence?"], call.Select(m => m.Text)));

        // Every delta key stays unique across the three runs writing one message.
        var deltaKeys = JsonNode.Parse(await _server.Client.GetStringAsync("/v1/stream/sessions/again?offset=-1"))!.AsArray()
            .Where(e => (string?)e!["type"] == "delta").Select(e => (string?)e!["key"]).ToList();
        Assert.True(deltaKeys.Count >= 3);
        Assert.Equal(deltaKeys.Count, deltaKeys.Distinct().Count());
    }

    [Fact]
    public async Task An_edited_question_is_answered_anew_from_its_new_text_in_the_same_reply()
    {
        var model = new NumberedAnswers();
        var session = _client.Session("edit");
        await session.CreateAsync();
        _ = StartAgent(model, "edit");
        var question = await session.SendMessageAsync("Waht is a fence?");
        var first = await WaitFor("edit", s => s.Runs.Any(r => r.Status == RunStatus.Finished));
        var replyId = Assert.Single(Replies(first)).Id!;

        await session.EditMessageAsync(question, "What is a fence?");

        var state = await WaitFor("edit", s => s.Runs.Count(r => r.Status == RunStatus.Finished) == 2);
        Assert.Equal(["What is a fence?", "Answer 2."], state.Messages.Select(m => m.Text));
        Assert.Equal(replyId, Assert.Single(Replies(state)).Id);
        Assert.NotNull(state.GetMessage(question)!.EditedAt);
        Assert.Equal(["What is a fence?"], model.Calls.Last().Select(m => m.Text));
    }

    [Fact]
    public async Task A_question_edited_before_the_run_answering_it_showed_is_answered_again_from_its_new_text()
    {
        var model = new NumberedAnswers();
        var session = _client.Session("edit-race");
        await session.CreateAsync();
        var gate = HoldFirstWrite.OfRunStart();
        using var http = new HttpClient(gate);
        using var agentClient = new DurableSessionsClient(_client.Options with { ParticipantId = "agent:demo", UseWebSocket = false }, http);
        var agent = new SessionAgent(model, agentClient, new SessionAgentOptions { AgentId = "agent:demo" });
        _ = Task.Run(() => agent.RunAsync("edit-race", _stop.Token));
        var question = await session.SendMessageAsync("Waht is a fence?");

        // The agent has read the question and is writing its run's start: the edit sees no run to stop.
        await gate.Held.Task.WaitAsync(Timeout);
        await session.EditMessageAsync(question, "What is a fence?");
        gate.Release.TrySetResult();

        // The stale run is taken over (whether its model call had begun, or even ended, when the agent saw the edit).
        var state = await WaitFor("edit-race", s => s.Runs.Count == 2 && s.Runs[1].Status == RunStatus.Finished);
        var (stale, answer) = (state.Runs[0], state.Runs[1]);
        Assert.Equal((RunStatus.Interrupted, answer.Id), (stale.Status, stale.SupersededBy));
        var reply = Assert.Single(Replies(state));
        Assert.Equal((stale.MessageId, answer.Id, $"Answer {model.Calls.Count}."), (reply.Id, reply.RunId, reply.Text));
        Assert.Equal(["What is a fence?"], model.Calls.Last().Select(m => m.Text));
    }

    [Fact]
    public async Task An_earlier_question_edited_takes_the_conversation_after_it_out_stops_the_reply_still_written_and_is_answered_anew()
    {
        var model = new NumberedAnswers(heldOpen: 2);
        var session = _client.Session("edit-earlier");
        await session.CreateAsync();
        using var firstAgent = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        var serving = Task.Run(() => new SessionAgent(model, _client, new SessionAgentOptions { AgentId = "agent:demo" }).RunAsync("edit-earlier", firstAgent.Token));
        var question = await session.SendMessageAsync("Waht is a fence?");
        var first = await WaitFor("edit-earlier", s => s.Runs.Any(r => r.Status == RunStatus.Finished));
        var replyId = Assert.Single(Replies(first)).Id!;
        var later = await session.SendMessageAsync("And a lease?");
        var writing = await WaitFor("edit-earlier", s => Replies(s).Any(m => m.Text == "Answer 2."));
        var stopped = writing.Runs[^1];
        Assert.Equal(RunStatus.Started, stopped.Status);

        await session.EditMessageAsync(question, "What is a fence?");

        // One question and one answer, in the first reply's message; the later question and the reply still written to
        // it are gone, and that run was cancelled (fenced: its held model call never writes again).
        var state = await WaitFor("edit-earlier", s => s.Runs.Count(r => r.Status == RunStatus.Finished) == 2);
        Assert.Equal(["What is a fence?", "Answer 3."], state.Messages.Select(m => m.Text));
        Assert.Equal([question, replyId], state.Messages.Select(m => m.Id));
        Assert.Equal(RunStatus.Cancelled, state.GetRun(stopped.Id!)!.Status);
        Assert.Equal(["What is a fence?"], model.Calls.Last().Select(m => m.Text));

        // Another agent that did not see the later question go answers it anyway: its reply answers nothing left, and is
        // not part of the conversation the next question is answered from, by an agent that joins afresh (from the
        // session's snapshot, which holds no trace of the deleted question).
        await firstAgent.CancelAsync();
        await Task.WhenAny(serving);
        var orphan = new JsonArray(
            new JsonObject { ["type"] = "run", ["key"] = "r-other", ["value"] = new JsonObject { ["id"] = "r-other", ["agent"] = "agent:other", ["messageId"] = "m-other", ["trigger"] = later, ["status"] = "finished" }, ["headers"] = new JsonObject { ["operation"] = "insert" } },
            new JsonObject { ["type"] = "message", ["key"] = "m-other", ["value"] = new JsonObject { ["id"] = "m-other", ["role"] = "assistant", ["author"] = "agent:other", ["runId"] = "r-other", ["parts"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "A lease is..." }), ["status"] = "complete" }, ["headers"] = new JsonObject { ["operation"] = "insert" } });
        using var appended = await _server.Client.PostAsync("/v1/stream/sessions/edit-earlier", new StringContent(orphan.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.True(appended.IsSuccessStatusCode, await appended.Content.ReadAsStringAsync());
        _ = StartAgent(model, "edit-earlier");
        var next = await session.SendMessageAsync("And a fence post?");
        await WaitFor("edit-earlier", s => s.Runs.Any(r => r.Trigger == next && r.Status == RunStatus.Finished));
        Assert.Equal(["What is a fence?", "Answer 3.", "And a fence post?"], model.Calls.Last().Select(m => m.Text));
    }

    [Fact]
    public async Task A_run_started_for_a_question_an_edit_of_an_earlier_one_took_out_is_taken_back_and_the_edited_one_answered_anew()
    {
        var model = new NumberedAnswers();
        var session = _client.Session("edit-earlier-race");
        await session.CreateAsync();
        var starts = 0;
        var gate = new HoldFirstWrite(body => body.Contains("\"type\":\"run\"", StringComparison.Ordinal) && body.Contains("\"status\":\"started\"", StringComparison.Ordinal)
            && Interlocked.Increment(ref starts) == 2);
        using var http = new HttpClient(gate);
        using var agentClient = new DurableSessionsClient(_client.Options with { ParticipantId = "agent:demo", UseWebSocket = false }, http);
        var agent = new SessionAgent(model, agentClient, new SessionAgentOptions { AgentId = "agent:demo" });
        _ = Task.Run(() => agent.RunAsync("edit-earlier-race", _stop.Token));
        var question = await session.SendMessageAsync("Waht is a fence?");
        await WaitFor("edit-earlier-race", s => s.Runs.Any(r => r.Status == RunStatus.Finished));
        await session.SendMessageAsync("And a lease?");

        // The agent has read the later question and is writing its run's start: the edit sees no run to stop, and takes
        // the question out.
        await gate.Held.Task.WaitAsync(Timeout);
        await session.EditMessageAsync(question, "What is a fence?");
        gate.Release.TrySetResult();

        // The run for the question that is gone is marked interrupted and its reply taken out with it; the edited question
        // is answered again in its own reply's message.
        var state = await WaitFor("edit-earlier-race", s => s.Runs.Count == 3 && s.Runs[2].Status == RunStatus.Finished && s.Runs[1].Status == RunStatus.Interrupted);
        Assert.Equal(["What is a fence?", $"Answer {model.Calls.Count}."], state.Messages.Select(m => m.Text));
        Assert.Equal([state.Runs[0].MessageId, state.Runs[2].Id], [Replies(state).Single().Id, Replies(state).Single().RunId]);
        Assert.Null(state.GetMessage(state.Runs[1].MessageId!));
        Assert.Equal(["What is a fence?"], model.Calls.Last().Select(m => m.Text));
    }

    [Fact]
    public async Task A_question_queued_behind_another_is_not_part_of_the_conversation_the_one_before_it_is_answered_from()
    {
        var model = new NumberedAnswers();
        var session = _client.Session("queued");
        await session.CreateAsync();
        await session.SendMessageAsync("First question");
        await session.SendMessageAsync("Second question");
        _ = StartAgent(model, "queued");

        await WaitFor("queued", s => s.Runs.Count(r => r.Status == RunStatus.Finished) == 2);

        Assert.Equal([["First question"], ["First question", "Answer 1.", "Second question"]], model.Calls.Select(call => call.Select(m => m.Text).ToArray()));
    }

    [Fact]
    public async Task A_reply_asked_to_be_written_again_while_it_is_written_is_cancelled_and_fenced_and_answered_anew_in_the_same_message()
    {
        var model = new NumberedAnswers(heldOpen: 1);
        var session = _client.Session("again-running");
        await session.CreateAsync();
        _ = StartAgent(model, "again-running");
        await session.SendMessageAsync("Write at length");
        var running = await WaitFor("again-running", s => Replies(s).Any(m => m.Text == "Answer 1."));
        var cut = Assert.Single(running.Runs);

        var ack = await session.RegenerateAsync(cut.MessageId!);

        var state = await WaitFor("again-running", s => s.Runs.Any(r => r.Status == RunStatus.Finished));
        Assert.Equal(RunStatus.Cancelled, state.GetRun(cut.Id!)!.Status);
        var reply = Assert.Single(Replies(state));
        Assert.Equal(cut.MessageId, reply.Id);
        Assert.Equal("Answer 2.", reply.Text);
        Assert.Equal(MessageStatus.Complete, reply.Status);
        Assert.Equal(["Write at length"], model.Calls.Last().Select(m => m.Text));

        // Nothing of the cancelled run after the acknowledgement: its fence held.
        var written = JsonNode.Parse(await _server.Client.GetStringAsync($"/v1/stream/sessions/again-running?offset={ack.Offset}"))!.AsArray();
        Assert.NotEmpty(written);
        Assert.All(written, e => Assert.DoesNotContain(cut.Id!, e!.ToJsonString(), StringComparison.Ordinal));
    }

    [Fact]
    public async Task Two_agents_write_to_one_session_at_once_without_an_orchestrator()
    {
        var session = _client.Session("duo");
        await session.CreateAsync();
        _ = StartAgent(new DemoChatClient(200), "duo", "agent:alpha");
        _ = StartAgent(new DemoChatClient(200), "duo", "agent:beta");
        await session.SendMessageAsync("Both of you, please answer");

        var state = await WaitFor("duo", s => Runs(s, "finished").Count() == 2);
        Assert.Equal(["agent:alpha", "agent:beta"], Runs(state, "finished").Select(r => r["agent"]!.GetValue<string>()).Order());
        var replies = Runs(state, "finished").Select(r => Text(state.Get("message", r["messageId"]!.GetValue<string>())!)).ToArray();
        var question = new ChatMessage(ChatRole.User, "Both of you, please answer");

        // Each agent answers the session as it stood when its run started: the question alone, or the question
        // followed by as much of the other agent's reply as had been written by then.
        for (var i = 0; i < 2; i++)
        {
            var other = replies[1 - i];
            var seen = Enumerable.Range(0, other.Length + 1).Any(k => DemoChatClient.ReplyTo(
                k == 0 ? [question] : [question, new ChatMessage(ChatRole.Assistant, other[..k])]) == replies[i]);
            Assert.True(seen, $"reply {i} is not the demo's answer to any history its agent could have read: {replies[i]}");
        }
    }

    [Fact]
    public async Task A_chat_message_to_a_session_a_human_holds_is_answered_in_the_chat_stream_by_that_human()
    {
        // No agent runs here: the reply can only be the human's. An agent's reply is waited for 30 s at most, and a
        // stream that waited for one would end with an error instead of the human's text.
        using var human = new DurableSessionsClient(_client.Options with { ParticipantId = "human:operator" });
        var sent = await AskAHumanInChat(human, "held", "Is anyone there?");
        await human.Session("held").SendMessageAsync("Yes, a person. How can I help?", role: "assistant");

        var chunks = await ChatChunks(sent);
        Assert.Equal("Yes, a person. How can I help?", string.Concat(chunks.Where(c => c["type"]!.GetValue<string>() == "text-delta").Select(c => c["delta"]!.GetValue<string>())));
        Assert.Equal("finish", chunks[^1]["type"]!.GetValue<string>());
        Assert.DoesNotContain(chunks, c => c["type"]!.GetValue<string>() == "error");
    }

    [Fact]
    public async Task A_chat_message_to_a_human_who_hands_back_control_without_answering_ends_its_stream_with_an_error()
    {
        using var human = new DurableSessionsClient(_client.Options with { ParticipantId = "human:operator" });
        var sent = await AskAHumanInChat(human, "dropped", "Hello?");
        await human.Session("dropped").ReturnControlAsync();

        var chunks = await ChatChunks(sent);
        Assert.Equal("Control of the chat was handed back before human:operator answered this message.", chunks.Single(c => c["type"]!.GetValue<string>() == "error")["errorText"]!.GetValue<string>());
        Assert.DoesNotContain(chunks, c => c["type"]!.GetValue<string>() == "finish");
    }

    [Fact]
    public async Task A_chat_stream_waiting_for_a_human_sends_keep_alive_comments_until_the_answer()
    {
        await using var server = await InProcessServer.StartAsync(configure: o => o.SseKeepAliveInterval = TimeSpan.FromMilliseconds(100));
        using var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server.BaseAddress, ParticipantId = "client:test" });
        using var human = new DurableSessionsClient(client.Options with { ParticipantId = "human:operator" });
        await client.Session("idle").CreateAsync();
        await human.Session("idle").TakeControlAsync();
        var body = new JsonObject { ["id"] = "idle", ["messages"] = new JsonArray(new JsonObject { ["id"] = "u1", ["role"] = "user", ["parts"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "Hello?" }) }) };
        using var request = new HttpRequestMessage(HttpMethod.Post, "/api/chat") { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };

        // Nothing but comments is written until the human answers: the headers come with the first of them.
        using var chat = await server.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead).WaitAsync(Timeout);
        Assert.Equal(HttpStatusCode.OK, chat.StatusCode);
        using var reader = new StreamReader(await chat.Content.ReadAsStreamAsync());
        Assert.Equal(":", await reader.ReadLineAsync().WaitAsync(Timeout));

        await human.Session("idle").SendMessageAsync("Here.", role: "assistant");
        var rest = await reader.ReadToEndAsync().WaitAsync(Timeout);
        Assert.Contains("\"delta\":\"Here.\"", rest);
        Assert.Contains("\"type\":\"finish\"", rest);
        Assert.EndsWith("data: [DONE]\n\n", rest);
    }

    [Fact]
    public async Task A_chat_message_an_edit_of_an_earlier_one_takes_out_before_it_is_answered_ends_its_stream_with_an_error()
    {
        await _client.Session("taken-out").CreateAsync();
        _ = StartAgent(new RecordingChatClient(new DemoChatClient(tokensPerSecond: 50), heldOpen: 1), "taken-out");
        Task<HttpResponseMessage> Ask(string id, string text) => _server.Client.PostAsync("/api/chat", new StringContent(
            new JsonObject { ["id"] = "taken-out", ["messages"] = new JsonArray(new JsonObject { ["id"] = id, ["role"] = "user", ["parts"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = text }) }) }.ToJsonString(),
            Encoding.UTF8, "application/json"));
        var first = Ask("u0", "Waht is a fence?");
        await WaitFor("taken-out", s => Runs(s, "started").Any());

        // Queued behind the reply still written to the first, the second waits for a run.
        var second = Ask("u1", "And a lease?");
        await WaitFor("taken-out", s => s.GetMessage("u1") is not null);
        using var edit = await _server.Client.PostAsync("/v1/sessions/taken-out/messages/u0/edit", new StringContent("{\"text\":\"What is a fence?\",\"author\":\"user\"}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, edit.StatusCode);

        var chunks = await ChatChunks(second);
        Assert.Equal("This message was taken out of the chat by an edit of an earlier message.", chunks.Single(c => c["type"]!.GetValue<string>() == "error")["errorText"]!.GetValue<string>());
        Assert.DoesNotContain(chunks, c => c["type"]!.GetValue<string>() is "start" or "finish");
        Assert.Equal("abort", (await ChatChunks(first))[^1]["type"]!.GetValue<string>());
    }

    /// <summary>
    /// Creates a session that <paramref name="human"/> takes control of, and posts a user message to it through the AI
    /// SDK chat endpoint. Returns the chat response to come (it starts with the reply's first chunk) once the message
    /// is stored, routed to the human.
    /// </summary>
    private async Task<Task<HttpResponseMessage>> AskAHumanInChat(DurableSessionsClient human, string chatId, string text)
    {
        await _client.Session(chatId).CreateAsync();
        await human.Session(chatId).TakeControlAsync();
        var body = new JsonObject { ["id"] = chatId, ["messages"] = new JsonArray(new JsonObject { ["id"] = "u1", ["role"] = "user", ["parts"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = text }) }) };
        var sent = _server.Client.PostAsync("/api/chat", new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
        await WaitFor(chatId, s => s.All("message").Any(m => SessionJson.Text(m, "routedTo") == human.Options.ParticipantId));
        return sent;
    }

    /// <summary>The UI message chunks of a whole chat response.</summary>
    private static async Task<List<JsonNode>> ChatChunks(Task<HttpResponseMessage> sent)
    {
        using var chat = await sent.WaitAsync(Timeout);
        Assert.Equal(HttpStatusCode.OK, chat.StatusCode);
        var body = await chat.Content.ReadAsStringAsync().WaitAsync(Timeout);
        return [.. body.Split('\n').Where(l => l.StartsWith("data: {", StringComparison.Ordinal)).Select(l => JsonNode.Parse(l[6..])!)];
    }

    [Fact]
    public async Task A_human_takes_over_from_the_agent_and_hands_back()
    {
        using var human = new DurableSessionsClient(_client.Options with { ParticipantId = "human:operator" });
        var user = _client.Session("handoff");
        await user.CreateAsync();
        _ = StartAgent(new RecordingChatClient(new DemoChatClient(tokensPerSecond: 20), heldOpen: 1), "handoff");
        await user.SendMessageAsync("First question");
        await WaitFor("handoff", s => Runs(s, "started").Any());

        await human.Session("handoff").TakeControlAsync();
        var state = await WaitFor("handoff", s => Runs(s, "cancelled").Any());
        Assert.Equal("human:operator", state.Get("handoff", "lease")!["holder"]!.GetValue<string>());

        var routed = await user.SendMessageAsync("Are you a person?");
        await human.Session("handoff").SendMessageAsync("Yes, I am taking it from here.", role: "assistant");
        state = await WaitFor("handoff", s => s.All("message").Any(m => m["author"]!.GetValue<string>() == "human:operator"));
        Assert.Equal("human:operator", state.Get("message", routed)!["routedTo"]!.GetValue<string>());
        Assert.Single(state.All("run"));

        var conflict = await Assert.ThrowsAsync<DurableSessionsException>(() => new DurableSessionsClient(_client.Options with { ParticipantId = "human:other" }).Session("handoff").TakeControlAsync());
        Assert.Equal("LEASE_HELD", conflict.Code);

        await human.Session("handoff").ReturnControlAsync();
        await user.SendMessageAsync("Back to the agent");
        state = await WaitFor("handoff", s => Runs(s, "finished").Any());
        var trigger = Runs(state, "finished").Single()["trigger"]!.GetValue<string>();
        Assert.Equal("Back to the agent", Text(state.Get("message", trigger)!));
    }

    [Fact]
    public async Task With_the_pause_policy_a_handoff_pauses_the_run_and_the_agent_answers_again_after_hand_back()
    {
        using var human = new DurableSessionsClient(_client.Options with { ParticipantId = "human:operator" });
        var user = _client.Session("pause");
        await user.CreateAsync(handoffPolicy: "pause");
        _ = StartAgent(new RecordingChatClient(new DemoChatClient(tokensPerSecond: 20), heldOpen: 1), "pause");
        var question = await user.SendMessageAsync("Explain offsets");
        await WaitFor("pause", s => Runs(s, "started").Any());

        await human.Session("pause").TakeControlAsync();
        var state = await WaitFor("pause", s => Runs(s, "paused").Any());
        var paused = Runs(state, "paused").Single();
        Assert.Equal("paused", state.Get("message", paused["messageId"]!.GetValue<string>())!["status"]!.GetValue<string>());

        await human.Session("pause").ReturnControlAsync();
        state = await WaitFor("pause", s => Runs(s, "finished").Any());
        Assert.Equal(question, Runs(state, "finished").Single()["trigger"]!.GetValue<string>());
    }

    /// <summary>A model that calls a tool, gets its result, then answers.</summary>
    private sealed class ToolUsingChatClient : StreamingChatClient
    {
        public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            yield return new ChatResponseUpdate(ChatRole.Assistant, [new TextReasoningContent("need the weather")]);
            yield return new ChatResponseUpdate(ChatRole.Assistant, [new FunctionCallContent("call-1", "weather", new Dictionary<string, object?> { ["city"] = "Oslo" })]);
            await Task.Yield();
            yield return new ChatResponseUpdate(ChatRole.Tool, [new FunctionResultContent("call-1", "sunny, 18°C")]);
            yield return new ChatResponseUpdate(ChatRole.Assistant, "It is sunny in Oslo.");
            yield return new ChatResponseUpdate { FinishReason = ChatFinishReason.Stop };
        }
    }

    [Fact]
    public async Task Tool_calls_and_results_become_parts_of_the_reply()
    {
        var session = _client.Session("tools");
        await session.CreateAsync();
        _ = StartAgent(new ToolUsingChatClient(), "tools");
        await session.SendMessageAsync("Weather in Oslo?");
        var state = await WaitFor("tools", s => Runs(s, "finished").Any());
        var parts = state.Get("message", Runs(state, "finished").Single()["messageId"]!.GetValue<string>())!["parts"]!.AsArray();
        Assert.Equal(["text", "reasoning", "tool-call", "tool-result"], parts.Select(p => p!["type"]!.GetValue<string>()));
        Assert.Equal("It is sunny in Oslo.", parts[0]!["text"]!.GetValue<string>());
        Assert.Equal("need the weather", parts[1]!["text"]!.GetValue<string>());
        Assert.Equal("Oslo", parts[2]!["input"]!["city"]!.GetValue<string>());
        Assert.Equal("sunny, 18°C", parts[3]!["output"]!.GetValue<string>());
    }

    [Fact]
    public async Task A_run_its_agent_started_late_beside_the_turn_that_holds_the_lease_is_taken_over_and_answered_once()
    {
        var session = _client.Session("late-start");
        await session.CreateAsync();
        await session.SendMessageAsync("first");
        var agent = new SessionAgent(new DemoChatClient(1000), _client, new SessionAgentOptions { AgentId = "agent:demo", DeltaLinger = TimeSpan.FromMilliseconds(10) });
        using var stop = new CancellationTokenSource(Timeout);
        var turn = agent.ServeTurnAsync("late-start", TimeSpan.FromSeconds(2), stop.Token);
        await WaitFor("late-start", s => Runs(s, "finished").Count() == 1);

        // While the turn waits for a follow-up, a worker of the same agent whose lease ran out lands its run's start late,
        // for a question this turn has not answered yet (asked in the same append): its partial reply would stay for good.
        static JsonObject Change(string type, string key, JsonObject value) => new() { ["type"] = type, ["key"] = key, ["value"] = value, ["headers"] = new JsonObject { ["operation"] = "insert" } };
        var late = new JsonArray(
            Change("message", "q-late", new JsonObject { ["id"] = "q-late", ["role"] = "user", ["author"] = "client:test", ["parts"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "second" }), ["status"] = "complete" }),
            Change("run", "r-late", new JsonObject { ["id"] = "r-late", ["agent"] = "agent:demo", ["messageId"] = "m-late", ["trigger"] = "q-late", ["status"] = "started" }),
            Change("message", "m-late", new JsonObject { ["id"] = "m-late", ["role"] = "assistant", ["author"] = "agent:demo", ["runId"] = "r-late", ["parts"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "partial" }), ["status"] = "streaming" }));
        using var append = await _server.Client.PostAsync("/v1/stream/sessions/late-start", new StringContent(late.ToJsonString(), Encoding.UTF8, "application/json"), stop.Token);
        Assert.Equal(HttpStatusCode.NoContent, append.StatusCode);

        // The turn that holds the lease takes the late run over: one complete answer to the question, in its message.
        var state = await WaitFor("late-start", s => Runs(s, "finished").Count() == 2);
        Assert.NotNull(await turn.WaitAsync(Timeout));
        var cut = state.Get("run", "r-late")!;
        Assert.Equal("interrupted", cut["status"]!.GetValue<string>());
        var takeover = Runs(state, "finished").Single(r => r["trigger"]!.GetValue<string>() == "q-late");
        Assert.Equal(takeover["id"]!.GetValue<string>(), cut["supersededBy"]!.GetValue<string>());
        var answers = state.Messages.Where(m => m.Role == MessageRole.Assistant && m.RunId is { } runId && state.GetRun(runId)?.Trigger == "q-late").ToList();
        Assert.Equal(["m-late"], answers.Select(m => m.Id));
        Assert.Equal(MessageStatus.Complete, answers[0].Status);
        Assert.NotEqual("partial", answers[0].Text);
    }

    [Fact]
    public async Task A_turn_that_fails_stops_its_presence_heartbeats_before_it_reports_the_failure()
    {
        // The session is gone (deleted while its turn was claimed) while a presence heartbeat is in flight.
        var handler = new HeartbeatHeldSessionGone();
        var address = new Uri("http://127.0.0.1:9/");
        using var http = new HttpClient(handler) { BaseAddress = address };
        using var client = new DurableSessionsClient(httpClient: http, options: DurableSessionsClientOptions.Default with { BaseAddress = address, ParticipantId = "agent:gone" });
        var agent = new SessionAgent(new DemoChatClient(1000), client, new SessionAgentOptions { AgentId = "agent:gone" });

        var failure = await Assert.ThrowsAsync<DurableSessionsException>(() => agent.ServeTurnAsync("gone", CancellationToken.None).WaitAsync(Timeout));
        Assert.Equal(HttpStatusCode.NotFound, failure.Status);

        // By the time the failure is reported, the heartbeat loop has been stopped (its request cancelled): it does not
        // go on announcing the agent in a session nobody serves.
        Assert.True(handler.HeartbeatCancelled);
    }

    /// <summary>Holds every presence heartbeat until it is cancelled, and answers everything else 404 once one is held.</summary>
    private sealed class HeartbeatHeldSessionGone : HttpMessageHandler
    {
        private readonly TaskCompletionSource _heartbeatHeld = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private volatile bool _heartbeatCancelled;

        public bool HeartbeatCancelled => _heartbeatCancelled;

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (request.Method == HttpMethod.Post && request.RequestUri!.AbsolutePath.EndsWith("/presence", StringComparison.Ordinal))
            {
                _heartbeatHeld.TrySetResult();
                try
                {
                    await Task.Delay(System.Threading.Timeout.Infinite, cancellationToken);
                }
                catch (OperationCanceledException)
                {
                    _heartbeatCancelled = true;
                    throw;
                }
            }

            await _heartbeatHeld.Task.WaitAsync(cancellationToken);
            return new HttpResponseMessage(HttpStatusCode.NotFound)
            {
                Content = new StringContent("{\"code\":\"SESSION_NOT_FOUND\",\"message\":\"No session here.\"}", Encoding.UTF8, "application/problem+json"),
            };
        }
    }

    [Fact]
    public async Task A_restarted_agent_marks_the_run_it_could_not_finish_as_interrupted()
    {
        var session = _client.Session("crash");
        await session.CreateAsync();
        var crashed = new FakeAgent(_server.Client, "crash", "r-crashed", "m-crashed");
        await crashed.StartAsync();
        await crashed.DeltaAsync("half an ans");

        _ = StartAgent(new DemoChatClient(0), "crash", "agent:test");
        var state = await WaitFor("crash", s => s.Get("run", "r-crashed")?["status"]?.GetValue<string>() == "interrupted");
        Assert.Equal("interrupted", state.Get("message", "m-crashed")!["status"]!.GetValue<string>());
        Assert.Equal("half an ans", Text(state.Get("message", "m-crashed")!));
        Assert.Equal(HttpStatusCode.Conflict, (await crashed.DeltaAsync("swer")).StatusCode);
    }
}
