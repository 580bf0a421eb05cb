using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using DurableSessions.Client;
using DurableSessions.Sessions;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace DurableSessions.Agents;

/// <summary>Settings of a <see cref="SessionAgent"/>.</summary>
public sealed class SessionAgentOptions
{
    /// <summary>The agent's participant id, named by its runs. Default <c>agent:demo</c>.</summary>
    public string AgentId { get; set; } = "agent:demo";

    /// <summary>How long token deltas are gathered before they are written as one event. Default 30 ms.</summary>
    public TimeSpan DeltaLinger { get; set; } = TimeSpan.FromMilliseconds(30);

    /// <summary>A system prompt put before the conversation, if any.</summary>
    public string? Instructions { get; set; }

    /// <summary>Options passed to the chat client on every call.</summary>
    public ChatOptions? ChatOptions { get; set; }

    /// <summary>Whether the agent shows in the session's presence (kind <c>agent</c>) while it serves it. Default true.</summary>
    public bool AnnouncePresence { get; set; } = true;
}

/// <summary>
/// Serves an AI agent on a session: answers each user message with a run whose reply streams into the session as
/// batched deltas, using any <see cref="IChatClient"/>.
/// </summary>
/// <remarks>
/// <para>A cancel recorded in the session (from any surface) fires the <see cref="CancellationToken"/> passed to the
/// model; the server's fence already refuses anything more for the run. A steer restarts generation with the new
/// instruction, continuing the same reply. Runs this agent left <c>started</c> (a crash) are marked
/// <c>interrupted</c> when it joins again. Each run writes as its own idempotent producer, so several agents can write to
/// one session at once without an orchestrator.</para>
/// <para>Thread-safe; one <see cref="RunAsync"/> per session.</para>
/// </remarks>
public sealed partial class SessionAgent
{
    private readonly IChatClient _chat;
    private readonly DurableSessionsClient _client;
    private readonly SessionAgentOptions _options;
    private readonly ILogger _logger;

    // How long a run's last events may take to show in the session after its writer returned.
    private static readonly TimeSpan RunEndGrace = TimeSpan.FromSeconds(5);

    // Sessions with a run in progress, for hosts that decide which sessions to keep serving.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, ActiveRun> _answering = new(StringComparer.Ordinal);

    /// <summary>Creates an agent.</summary>
    public SessionAgent(IChatClient chatClient, DurableSessionsClient client, SessionAgentOptions? options = null, ILogger<SessionAgent>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(chatClient);
        ArgumentNullException.ThrowIfNull(client);
        _chat = chatClient;
        _client = client;
        _options = options ?? new SessionAgentOptions();
        _logger = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <summary>
    /// Whether the agent is answering in <paramref name="sessionId"/> now: a run it started there has not ended. A host
    /// that stops serving sessions to save resources keeps those. Thread-safe.
    /// </summary>
    public bool IsAnswering(string sessionId) => _answering.TryGetValue(sessionId, out var run) && !run.Completion.IsCompleted;

    /// <summary>
    /// Serves one session until <paramref name="cancellationToken"/> fires, holding a live connection to it all along.
    /// A process that serves many sessions uses <see cref="SessionAgentHost"/> instead, which holds nothing per idle session.
    /// </summary>
    public Task RunAsync(string sessionId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(sessionId);
        return ServeAsync(sessionId, untilAnswered: false, cancellationToken);
    }

    /// <summary>
    /// Serves one turn of a session: answers every user message waiting there (taking over runs of this agent that a
    /// crash cut), then returns. The agent is present in the session only meanwhile. <see cref="SessionAgentHost"/>
    /// calls it for each turn it claims; <paramref name="cancellationToken"/> fires when its lease is lost.
    /// </summary>
    public Task ServeTurnAsync(string sessionId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(sessionId);
        return ServeAsync(sessionId, untilAnswered: true, cancellationToken);
    }

    private async Task ServeAsync(string sessionId, bool untilAnswered, CancellationToken cancellationToken)
    {
        var session = _client.Session(sessionId);
        ActiveRun? active = null;
        var recovered = false;
        List<JsonObject> cut = [];
        var seenControls = new HashSet<string>(StringComparer.Ordinal);
        using var serving = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var presence = _options.AnnouncePresence ? Task.Run(() => AnnouncePresenceAsync(session, serving.Token), CancellationToken.None) : Task.CompletedTask;
        try
        {
            var updates = session.JoinAsync(serving.Token).GetAsyncEnumerator(serving.Token);
            await using var updatesScope = updates.ConfigureAwait(false);
            while (true)
            {
                var next = updates.MoveNextAsync().AsTask();
                if (active is not null && untilAnswered && await Task.WhenAny(next, active.Completion).ConfigureAwait(false) != next
                    && await Task.WhenAny(next, Task.Delay(RunEndGrace, serving.Token)).ConfigureAwait(false) != next)
                {
                    // The run ended but its last events never showed (its final write failed): this turn cannot tell
                    // what is answered, so it ends, and the host gives it back to be served again.
                    await serving.CancelAsync().ConfigureAwait(false);
                    await Task.WhenAny(next).ConfigureAwait(false);
                    throw new InvalidOperationException($"Run {active.RunId} in session {sessionId} ended without its final events.");
                }

                if (!await next.ConfigureAwait(false))
                {
                    break;
                }

                var update = updates.Current;
                var state = update.State;
                if (active is not null)
                {
                    if (FollowControl(state, update.Events, active, seenControls)
                        || SessionJson.Text(state.Get(SessionEventTypes.Run, active.RunId), "status") is not (null or "started"))
                    {
                        // Stopped from outside (cancel, pause, handoff), or its last events are in: let the run wind
                        // down now, because this update (a hand-back, a finished reply) may be the last one for a while.
                        await active.Completion.WaitAsync(cancellationToken).ConfigureAwait(false);
                    }

                    if (active.Completion.IsCompleted)
                    {
                        active.Dispose();
                        active = null;
                        _answering.TryRemove(sessionId, out _);
                    }
                }

                if (!update.UpToDate)
                {
                    continue;
                }

                if (!recovered)
                {
                    // Runs of this agent still "started" when it (re)joins were cut: by a crash, or by a lease that ran
                    // out. Whoever serves the session now answers their messages again.
                    recovered = true;
                    cut = CutRuns(state);
                }

                if (active is null && NextPendingMessage(state, cut) is { } message)
                {
                    var trigger = SessionJson.Text(message, "id")!;
                    var superseded = cut.FirstOrDefault(r => SessionJson.Text(r, "trigger") == trigger && SessionJson.Text(r, "messageId") is not null);
                    cut.Remove(superseded!);
                    if (cut.Count > 0)
                    {
                        await MarkInterruptedAsync(session, state, cut, serving.Token).ConfigureAwait(false);
                        cut = [];
                    }

                    active = new ActiveRun(NewId("r"), SessionJson.Text(superseded, "messageId") ?? NewId("m"), trigger, serving.Token) { Supersedes = superseded };
                    var history = BuildHistory(state, superseded);
                    active.Completion = Task.Run(() => ExecuteRunAsync(session, active, history), CancellationToken.None);
                    _answering[sessionId] = active;
                }
                else if (active is null)
                {
                    if (cut.Count > 0)
                    {
                        await MarkInterruptedAsync(session, state, cut, serving.Token).ConfigureAwait(false);
                        cut = [];
                    }

                    if (untilAnswered)
                    {
                        break;
                    }
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        finally
        {
            _answering.TryRemove(sessionId, out _);
        }

        if (active is not null)
        {
            active.Cancel();
            await active.Completion.ConfigureAwait(false);
            active.Dispose();
        }

        await serving.CancelAsync().ConfigureAwait(false);
        await presence.ConfigureAwait(false);
        if (_options.AnnouncePresence && untilAnswered && !cancellationToken.IsCancellationRequested)
        {
            try
            {
                await session.LeaveAsync(_options.AgentId, CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is HttpRequestException or DurableSessionsException)
            {
                Log.PresenceFailed(_logger, session.Id, ex);
            }
        }
    }

    /// <summary>Heartbeats as an <c>agent</c> participant, three times per presence timeout, until the agent stops.</summary>
    private async Task AnnouncePresenceAsync(SessionClient session, CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            var wait = TimeSpan.FromSeconds(5);
            try
            {
                wait = await session.HeartbeatAsync("agent", _options.AgentId, _options.AgentId, cancellationToken).ConfigureAwait(false) / 3;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is HttpRequestException or DurableSessionsException)
            {
                Log.PresenceFailed(_logger, session.Id, ex);
            }

            try
            {
                await Task.Delay(wait, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>Applies cancels and steers aimed at the active run; true when the run was stopped from outside.</summary>
    private static bool FollowControl(SessionState state, IReadOnlyList<JsonElement> events, ActiveRun active, HashSet<string> seenControls)
    {
        var status = SessionJson.Text(state.Get(SessionEventTypes.Run, active.RunId), "status");
        var stopped = status is "cancelled" or "interrupted" or "paused";
        if (stopped)
        {
            active.Cancel();
        }

        foreach (var element in events)
        {
            // Events are read as stored: anything not of the expected kind is not a steer for this run.
            if (element.ValueKind == JsonValueKind.Object
                && element.TryGetProperty("type", out var type) && type.ValueKind == JsonValueKind.String && type.ValueEquals(SessionEventTypes.Control)
                && element.TryGetProperty("value", out var value) && value.ValueKind == JsonValueKind.Object
                && value.TryGetProperty("runId", out var runId) && runId.ValueKind == JsonValueKind.String && runId.ValueEquals(active.RunId)
                && value.TryGetProperty("action", out var action) && action.ValueKind == JsonValueKind.String && action.ValueEquals("steer")
                && value.TryGetProperty("id", out var id) && id.ValueKind == JsonValueKind.String
                && value.TryGetProperty("text", out var text) && text.ValueKind == JsonValueKind.String
                && TryRead(id, out var controlId) && TryRead(text, out var instruction) && seenControls.Add(controlId))
            {
                active.Steer(instruction);
            }
        }

        return stopped;
    }

    private static bool TryRead(JsonElement element, out string value)
    {
        try
        {
            value = element.GetString() ?? string.Empty;
            return true;
        }
        catch (InvalidOperationException)
        {
            // Not decodable (invalid UTF-8 or a lone surrogate stored before the server validated events).
            value = string.Empty;
            return false;
        }
    }

    /// <summary>This agent's runs still <c>started</c>: when it (re)joins a session, none of them is running any more.</summary>
    private List<JsonObject> CutRuns(SessionState state)
        => state.All(SessionEventTypes.Run)
            .Where(r => SessionJson.Text(r, "agent") == _options.AgentId && SessionJson.Text(r, "status") == "started" && SessionJson.Text(r, "id") is not null)
            .ToList();

    private JsonObject? NextPendingMessage(SessionState state, List<JsonObject> cut)
    {
        // While a human holds the session, agents stay quiet.
        if (SessionJson.Text(state.Get(SessionEventTypes.Handoff, "lease"), "kind") == "human")
        {
            return null;
        }

        var answered = new HashSet<string>(StringComparer.Ordinal);
        foreach (var run in state.All(SessionEventTypes.Run))
        {
            // A run paused by a handoff, or cut by a crash, does not count: its message is answered again.
            if (SessionJson.Text(run, "agent") == _options.AgentId && SessionJson.Text(run, "trigger") is { } trigger
                && SessionJson.Text(run, "status") is not ("paused" or "interrupted") && !cut.Contains(run))
            {
                answered.Add(trigger);
            }
        }

        return state.All(SessionEventTypes.Message).FirstOrDefault(m =>
            SessionJson.Text(m, "role") == "user" && m["routedTo"] is null
            && SessionJson.Text(m, "id") is { } id && !answered.Contains(id));
    }

    private List<ChatMessage> BuildHistory(SessionState state, JsonObject? superseded)
    {
        // The cut reply is answered again from the start, so its partial text is not part of the conversation.
        var partial = SessionJson.Text(superseded, "messageId");
        var history = new List<ChatMessage>();
        if (_options.Instructions is { } instructions)
        {
            history.Add(new ChatMessage(ChatRole.System, instructions));
        }

        foreach (var message in state.All(SessionEventTypes.Message))
        {
            if (partial is not null && SessionJson.Text(message, "id") == partial)
            {
                continue;
            }

            var role = SessionJson.Text(message, "role") switch
            {
                "user" => ChatRole.User,
                "assistant" => ChatRole.Assistant,
                "system" => ChatRole.System,
                _ => (ChatRole?)null,
            };
            var text = string.Concat((message["parts"] as JsonArray ?? []).Select(p => SessionJson.Text(p, "type") == "text" ? SessionJson.Text(p, "text") : null));
            if (role is not null && text.Length > 0)
            {
                history.Add(new ChatMessage(role.Value, text));
            }
        }

        return history;
    }

    private async Task ExecuteRunAsync(SessionClient session, ActiveRun run, List<ChatMessage> history)
    {
        using var producer = new StreamProducer(_client, session.StreamPath, $"{_options.AgentId}/{run.RunId}");
        var text = new StringBuilder();
        var reasoning = new StringBuilder();
        var tools = new List<JsonObject>();
        try
        {
            var start = new List<JsonObject>(3);
            if (run.Supersedes is { } cut)
            {
                // Taken over in one append: the cut run ends as interrupted, naming this run, and its message starts
                // again from empty under this run, which the fence then holds it to.
                var interrupted = (JsonObject)cut.DeepClone();
                interrupted["status"] = "interrupted";
                interrupted["endedAt"] = Now();
                interrupted["supersededBy"] = run.RunId;
                start.Add(Change(SessionEventTypes.Run, SessionJson.Text(cut, "id")!, "update", interrupted));
            }

            start.Add(Change(SessionEventTypes.Run, run.RunId, "insert", RunValue(run, "started")));
            start.Add(Change(SessionEventTypes.Message, run.MessageId, run.Supersedes is null ? "insert" : "update", MessageValue(run, "streaming", text, reasoning)));
            await producer.AppendAsync(new JsonArray([.. start]), run.Token).ConfigureAwait(false);
            if (run.Supersedes is not null)
            {
                Log.RunTakenOver(_logger, session.Id, SessionJson.Text(run.Supersedes, "id")!, run.RunId);
            }

            Log.RunStarted(_logger, session.Id, run.RunId, _options.AgentId);

            var finishReason = "stop";
            while (true)
            {
                using var generation = CancellationTokenSource.CreateLinkedTokenSource(run.Token, run.SteerToken);
                using var deltas = new DeltaBatcher(producer, run, _options.DeltaLinger);
                try
                {
                    await foreach (var update in _chat.GetStreamingResponseAsync(history, _options.ChatOptions, generation.Token).ConfigureAwait(false))
                    {
                        foreach (var content in update.Contents)
                        {
                            switch (content)
                            {
                                case TextContent t when t.Text.Length > 0:
                                    text.Append(t.Text);
                                    deltas.Add(0, "text", t.Text);
                                    break;
                                case TextReasoningContent r when r.Text.Length > 0:
                                    reasoning.Append(r.Text);
                                    deltas.Add(1, "reasoning", r.Text);
                                    break;
                                case FunctionCallContent call:
                                    tools.Add(new JsonObject
                                    {
                                        ["type"] = "tool-call",
                                        ["toolCallId"] = call.CallId,
                                        ["name"] = call.Name,
                                        ["input"] = JsonSerializer.SerializeToNode(call.Arguments),
                                    });
                                    await WriteToolPartsAsync(producer, deltas, run, text, reasoning, tools).ConfigureAwait(false);
                                    break;
                                case FunctionResultContent result:
                                    tools.Add(new JsonObject
                                    {
                                        ["type"] = "tool-result",
                                        ["toolCallId"] = result.CallId,
                                        ["output"] = JsonSerializer.SerializeToNode(result.Result),
                                    });
                                    await WriteToolPartsAsync(producer, deltas, run, text, reasoning, tools).ConfigureAwait(false);
                                    break;
                            }
                        }

                        if (update.FinishReason is { } reason)
                        {
                            finishReason = reason.Value;
                        }
                    }

                    await deltas.FlushAsync().ConfigureAwait(false);
                    break;
                }
                catch (OperationCanceledException) when (!run.Token.IsCancellationRequested && run.TakeSteer() is { } instruction)
                {
                    // Steered: keep what was written, then continue the same reply with the new instruction.
                    await deltas.FlushAsync().ConfigureAwait(false);
                    history.Add(new ChatMessage(ChatRole.Assistant, text.ToString()));
                    history.Add(new ChatMessage(ChatRole.User, instruction));
                }
            }

            await producer.AppendAsync(
            [
                Change(SessionEventTypes.Message, run.MessageId, "update", MessageValue(run, "complete", text, reasoning, tools)),
                Change(SessionEventTypes.Run, run.RunId, "update", RunValue(run, "finished", finishReason)),
            ], CancellationToken.None).ConfigureAwait(false);
            Log.RunFinished(_logger, session.Id, run.RunId);
        }
        catch (Exception ex) when (run.Token.IsCancellationRequested || ex is DurableSessionsException { Code: "RUN_CANCELLED" })
        {
            // Cancelled through the session: the server already recorded it and fenced the run.
            Log.RunCancelled(_logger, session.Id, run.RunId);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            Log.RunFailed(_logger, ex, session.Id, run.RunId);
            try
            {
                var failed = MessageValue(run, "failed", text, reasoning, tools);
                failed["error"] = ex.Message;
                await producer.AppendAsync(
                [
                    Change(SessionEventTypes.Message, run.MessageId, "update", failed),
                    Change(SessionEventTypes.Run, run.RunId, "update", RunValue(run, "failed", error: ex.Message)),
                ], CancellationToken.None).ConfigureAwait(false);
            }
            catch (DurableSessionsException)
            {
            }
        }
    }

    /// <summary>Marks cut runs that nothing answers again (their message was answered since) as interrupted.</summary>
    private async Task MarkInterruptedAsync(SessionClient session, SessionState state, List<JsonObject> cut, CancellationToken cancellationToken)
    {
        var events = new JsonArray();
        foreach (var run in cut)
        {
            var interrupted = (JsonObject)run.DeepClone();
            interrupted["status"] = "interrupted";
            if (SessionJson.Text(run, "messageId") is { } messageId && state.Get(SessionEventTypes.Message, messageId) is { } message)
            {
                var partial = (JsonObject)message.DeepClone();
                partial["status"] = "interrupted";
                events.Add(Change(SessionEventTypes.Message, messageId, "update", partial));
            }

            events.Add(Change(SessionEventTypes.Run, SessionJson.Text(run, "id")!, "update", interrupted));
        }

        using var producer = new StreamProducer(_client, session.StreamPath, $"{_options.AgentId}/recovery/{NewId("p")}");
        await producer.AppendAsync(events, cancellationToken).ConfigureAwait(false);
        Log.RunsInterrupted(_logger, session.Id, cut.Count);
    }

    private JsonObject RunValue(ActiveRun run, string status, string? finishReason = null, string? error = null)
    {
        var value = new JsonObject
        {
            ["id"] = run.RunId,
            ["agent"] = _options.AgentId,
            ["messageId"] = run.MessageId,
            ["trigger"] = run.TriggerId,
            ["status"] = status,
            ["startedAt"] = run.StartedAt,
        };
        if (status != "started")
        {
            value["endedAt"] = Now();
        }

        if (finishReason is not null)
        {
            value["finishReason"] = finishReason;
        }

        if (error is not null)
        {
            value["error"] = error;
        }

        return value;
    }

    /// <summary>Writes the message with its tool parts so far (text and reasoning deltas keep their part indexes 0 and 1).</summary>
    private async Task WriteToolPartsAsync(StreamProducer producer, DeltaBatcher deltas, ActiveRun run, StringBuilder text, StringBuilder reasoning, List<JsonObject> tools)
    {
        await deltas.FlushPendingAsync().ConfigureAwait(false);
        await producer.AppendAsync([Change(SessionEventTypes.Message, run.MessageId, "update", MessageValue(run, "streaming", text, reasoning, tools, keepReasoningSlot: true))], run.Token).ConfigureAwait(false);
    }

    private JsonObject MessageValue(ActiveRun run, string status, StringBuilder text, StringBuilder reasoning, List<JsonObject>? tools = null, bool keepReasoningSlot = false)
    {
        var parts = new JsonArray { new JsonObject { ["type"] = "text", ["text"] = text.ToString() } };
        if (reasoning.Length > 0 || (keepReasoningSlot && tools is { Count: > 0 }))
        {
            parts.Add(new JsonObject { ["type"] = "reasoning", ["text"] = reasoning.ToString() });
        }

        foreach (var tool in tools ?? [])
        {
            parts.Add(tool.DeepClone());
        }

        return new JsonObject
        {
            ["id"] = run.MessageId,
            ["role"] = "assistant",
            ["author"] = _options.AgentId,
            ["runId"] = run.RunId,
            ["parts"] = parts,
            ["status"] = status,
            ["createdAt"] = run.StartedAt,
        };
    }

    internal static JsonObject Change(string type, string key, string operation, JsonObject value) => new()
    {
        ["type"] = type,
        ["key"] = key,
        ["value"] = value,
        ["headers"] = new JsonObject { ["operation"] = operation, ["timestamp"] = Now() },
    };

    private static string NewId(string prefix) => prefix + "_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));

    private static string Now() => DateTimeOffset.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", System.Globalization.CultureInfo.InvariantCulture);

    private static partial class Log
    {
        [LoggerMessage(400, LogLevel.Debug, "Session {SessionId}: run {RunId} started by {AgentId}")]
        public static partial void RunStarted(ILogger logger, string sessionId, string runId, string agentId);

        [LoggerMessage(401, LogLevel.Debug, "Session {SessionId}: run {RunId} finished")]
        public static partial void RunFinished(ILogger logger, string sessionId, string runId);

        [LoggerMessage(402, LogLevel.Information, "Session {SessionId}: run {RunId} cancelled")]
        public static partial void RunCancelled(ILogger logger, string sessionId, string runId);

        [LoggerMessage(403, LogLevel.Warning, "Session {SessionId}: run {RunId} failed")]
        public static partial void RunFailed(ILogger logger, Exception exception, string sessionId, string runId);

        [LoggerMessage(404, LogLevel.Information, "Session {SessionId}: marked {Count} unfinished runs as interrupted")]
        public static partial void RunsInterrupted(ILogger logger, string sessionId, int count);

        [LoggerMessage(406, LogLevel.Information, "Session {SessionId}: run {CutRunId} was cut; run {RunId} answers its message again")]
        public static partial void RunTakenOver(ILogger logger, string sessionId, string cutRunId, string runId);

        [LoggerMessage(405, LogLevel.Debug, "Session {SessionId}: presence heartbeat failed; retrying")]
        public static partial void PresenceFailed(ILogger logger, string sessionId, Exception exception);
    }
}
