using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using DurableSessions.AspNetCore.Sessions;
using DurableSessions.Sessions;
using Microsoft.AspNetCore.Http;

namespace DurableSessions.AspNetCore.AiSdk;

/// <summary>
/// The endpoints the Vercel AI SDK's <c>useChat</c> / <c>DefaultChatTransport</c> expects, backed by durable sessions:
/// <c>POST /api/chat</c> (send and stream the reply), <c>GET /api/chat/{id}/stream</c> (resume), and
/// <c>POST /api/chat/{id}/stop</c> (cancel through the session's live control). A chat id is a session id.
/// </summary>
/// <remarks>
/// Replies are written by the session's agent; these endpoints translate the session's events into the UI message
/// stream protocol (SSE <c>data:</c> frames, header <c>x-vercel-ai-ui-message-stream: v1</c>). Closing the HTTP response
/// never cancels the run: only the stop endpoint does.
/// </remarks>
internal sealed class AiSdkChatEndpoints(SessionService sessions, StreamStore store, Auth.AccessControl access, Microsoft.Extensions.Hosting.IHostApplicationLifetime lifetime, Microsoft.Extensions.Options.IOptions<DurableStreamsOptions> streamOptions)
{
    public const string Root = "/api/chat";
    private static readonly TimeSpan RunStartTimeout = TimeSpan.FromSeconds(30);
    private readonly SessionFeed _feed = new(store);

    public async Task HandleAsync(HttpContext context, string rest)
    {
        var method = context.Request.Method;
        var segments = rest.Length == 0 ? [] : rest.Split('/');
        if (segments.Length == 0 && method == "POST")
        {
            await SendAsync(context).ConfigureAwait(false);
        }
        else if (segments.Length == 2 && segments[1] == "stream" && method == "GET" && Identifiers.IsValid(segments[0]))
        {
            if (await access.AuthorizeAsync(context, SessionService.StreamPath(segments[0]), Auth.Capability.Read).ConfigureAwait(false))
            {
                await ResumeAsync(context, segments[0]).ConfigureAwait(false);
            }
        }
        else if (segments.Length == 2 && segments[1] == "stop" && method == "POST" && Identifiers.IsValid(segments[0]))
        {
            if (await access.AuthorizeAsync(context, SessionService.StreamPath(segments[0]), Auth.Capability.Control).ConfigureAwait(false))
            {
                await StopAsync(context, segments[0]).ConfigureAwait(false);
            }
        }
        else
        {
            await Problem.Write(context, 404, "NOT_FOUND", "Unknown chat route.").ConfigureAwait(false);
        }
    }

    private async Task SendAsync(HttpContext context)
    {
        // Read within the limit before anything else: the chat id (and so the authorization) is in the body.
        const string Invalid = "The body must be a JSON object with id (the chat id) and messages or message.";
        var body = await RequestBody.ReadJsonObjectAsync(context, streamOptions.Value.MaxJsonBodyBytes, code: "INVALID_CHAT_REQUEST", message: Invalid).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        var chatId = body["id"] is JsonValue idValue && idValue.TryGetValue<string>(out var id) ? id : null;
        if (chatId is null || !Identifiers.IsValid(chatId))
        {
            await Problem.Write(context, 400, "INVALID_CHAT_REQUEST", Invalid).ConfigureAwait(false);
            return;
        }

        // The answer is the reply, streamed back: sending a chat message reads the session as well as writing it.
        if (!await access.AuthorizeAsync(context, SessionService.StreamPath(chatId), Auth.Capability.Write).ConfigureAwait(false)
            || !await access.AuthorizeAsync(context, SessionService.StreamPath(chatId), Auth.Capability.Read).ConfigureAwait(false))
        {
            return;
        }

        // useChat's regenerate(): the session already holds the question, so its reply is written again in place rather
        // than the question asked a second time.
        if (SessionJson.Text(body, "trigger") == "regenerate-message")
        {
            await RegenerateAsync(context, chatId, body).ConfigureAwait(false);
            return;
        }

        var message = body["message"] as JsonObject ?? (body["messages"] as JsonArray)?.LastOrDefault(m => SessionJson.Text(m, "role") == "user") as JsonObject;
        var text = string.Concat((message?["parts"] as JsonArray ?? []).Select(p => SessionJson.Text(p, "type") == "text" ? SessionJson.Text(p, "text") : null));
        if (string.IsNullOrEmpty(text))
        {
            await Problem.Write(context, 400, "INVALID_CHAT_REQUEST", "The last user message needs a text part.").ConfigureAwait(false);
            return;
        }

        // Checked before the chat is created: a refused request leaves nothing behind.
        // useChat's sendMessage({ text, messageId }) replaces a message the chat sent: an edit, when the session holds it.
        var editedId = SessionJson.Text(body, "messageId");
        if ((body["messageId"] is not null && editedId is null) || (editedId is not null && !Identifiers.IsValid(editedId)))
        {
            await Problem.Write(context, 400, "INVALID_CHAT_REQUEST", "messageId must be the id of a message in the chat.").ConfigureAwait(false);
            return;
        }

        var created = await sessions.CreateAsync(chatId, null, Problem.StreamLimits(context, streamOptions.Value), context.RequestAborted).ConfigureAwait(false);
        if (Problem.StreamLimitReached(context, created, streamOptions.Value) is { } refused)
        {
            await refused.ConfigureAwait(false);
            return;
        }

        var author = Auth.AccessControl.Current(context) is { IsAnonymous: false } who ? who.Subject : "user";

        if (editedId is not null)
        {
            var mayStop = await Auth.AccessControl.AllowsAsync(context, new Auth.StreamResource(SessionService.StreamPath(chatId)), Auth.Capability.Control).ConfigureAwait(false);
            var edited = await sessions.EditMessageAsync(chatId, editedId, author, [new TextPart(text)], mayStop, context.RequestAborted).ConfigureAwait(false);
            if (edited.Status == 200)
            {
                // The same edit again (a retry) asks for nothing new: its reply is streamed as it stands.
                await (edited.NothingAppended
                    ? StreamAnswerToAsync(context, chatId, editedId)
                    : StreamReplyAsync(context, chatId, edited.Offset, trigger: editedId, replay: null, human: null)).ConfigureAwait(false);
                return;
            }

            if (edited.Code != SessionRejection.MessageNotFound)
            {
                await Problem.Write(context, edited.Status, edited.Code!, edited.Message!).ConfigureAwait(false);
                return;
            }

            // Not a message the session holds under that id: it is asked as a new one, below.
        }

        // The chat's own id for the message, when the session can hold it: the chat and the session then name it alike
        // (a chat loaded from the session can regenerate and edit by it), and the same message sent again is answered
        // with its reply instead of being asked twice.
        var clientId = SessionJson.Text(message, "id") is { } given && Identifiers.IsValid(given) ? given : null;
        var mayInterrupt = await Auth.AccessControl.AllowsAsync(context, new Auth.StreamResource(SessionService.StreamPath(chatId)), Auth.Capability.Control).ConfigureAwait(false);
        var posted = await sessions.PostMessageAsync(chatId, new PostMessageRequest(author, text) { Id = clientId, MayStop = mayInterrupt }, context.RequestAborted).ConfigureAwait(false);
        if (posted.Status != 200)
        {
            await Problem.Write(context, posted.Status, posted.Code!, posted.Message!).ConfigureAwait(false);
            return;
        }

        if (posted.NothingAppended)
        {
            await StreamAnswerToAsync(context, chatId, posted.Id!).ConfigureAwait(false);
            return;
        }

        // A session a human has taken over routes the message to that human, who answers it instead of an agent.
        var human = await sessions.RoutedToAsync(chatId, posted.Id!, context.RequestAborted).ConfigureAwait(false);
        await StreamReplyAsync(context, chatId, posted.Offset, trigger: posted.Id, replay: null, human).ConfigureAwait(false);
    }

    /// <summary>
    /// Writes a reply again (the one <c>messageId</c> names, a reply or the user message it answers; else the reply to the
    /// latest user message) and streams the new answer, under the same message id.
    /// </summary>
    private async Task RegenerateAsync(HttpContext context, string chatId, JsonObject body)
    {
        var replyId = SessionJson.Text(body, "messageId");
        if ((body["messageId"] is not null && replyId is null) || (replyId is not null && !Identifiers.IsValid(replyId)))
        {
            await Problem.Write(context, 400, "INVALID_CHAT_REQUEST", "messageId must be the id of a message in the chat.").ConfigureAwait(false);
            return;
        }

        var by = Auth.AccessControl.Current(context) is { IsAnonymous: false } who ? who.Subject : "user";
        var mayStop = await Auth.AccessControl.AllowsAsync(context, new Auth.StreamResource(SessionService.StreamPath(chatId)), Auth.Capability.Control).ConfigureAwait(false);
        var (result, trigger) = await sessions.RegenerateAsync(chatId, replyId, by, controlId: null, mayStop, context.RequestAborted).ConfigureAwait(false);
        if (result.Status != 200)
        {
            await Problem.Write(context, result.Status, result.Code!, result.Message!).ConfigureAwait(false);
            return;
        }

        // The new run answers the message the regenerated reply answered.
        await StreamReplyAsync(context, chatId, result.Offset, trigger, replay: null, human: null).ConfigureAwait(false);
    }

    /// <summary>
    /// Streams the reply to a message the session already held when it was sent again: the reply in progress from its
    /// start, a reply that has ended whole, or the reply still to come (none yet, or one asked to be written again); for a
    /// message routed to a human, that human's answer.
    /// </summary>
    private async Task StreamAnswerToAsync(HttpContext context, string chatId, string messageId)
    {
        var (snapshot, state) = await MaterializeAsync(chatId, context.RequestAborted).ConfigureAwait(false);
        var from = snapshot?.Offset ?? 0;
        if (state.GetMessage(messageId)?.RoutedTo is { } human)
        {
            // The human's answer is the first message they wrote after it, as when it was first sent.
            var answer = state.Messages.SkipWhile(m => m.Id != messageId).Skip(1)
                .FirstOrDefault(m => m.Role == MessageRole.Assistant && m.Author == human && m.Status == MessageStatus.Complete);
            if (answer?.Id is { } answerId && state.Get(SessionEventTypes.Message, answerId) is { } answered)
            {
                await StreamWholeAsync(context, answerId, answered, "finished", "stop", error: null, supersededBy: null).ConfigureAwait(false);
            }
            else if (state.HumanHolder != human)
            {
                var ended = await StartStreamAsync(context.Response, context.RequestAborted).ConfigureAwait(false);
                await ended.ErrorAsync($"Control of the chat was handed back before {human} answered this message.").ConfigureAwait(false);
            }
            else
            {
                await StreamReplyAsync(context, chatId, from, messageId, replay: null, human).ConfigureAwait(false);
            }

            return;
        }

        var run = state.Runs.LastOrDefault(r => r.Trigger == messageId && r.Id is not null && r.MessageId is not null);
        var reply = run is null ? null : state.Get(SessionEventTypes.Message, run.MessageId!);
        // A reply asked to be written again, paused by a handoff, or cut, is answered again by a run still to come.
        var waiting = run is not null && (run.Status == RunStatus.Paused || run.Status == RunStatus.Interrupted
            || SessionRules.IsAskedToWriteAgain(state, run.Id));
        if (run is null || waiting || reply is null)
        {
            // No reply yet, or the one there is about to be written again: the next run's.
            await StreamReplyAsync(context, chatId, from, messageId, replay: null, human: null).ConfigureAwait(false);
        }
        else if (run.Status == RunStatus.Started)
        {
            await StreamReplyAsync(context, chatId, from, messageId, (run, reply), human: null).ConfigureAwait(false);
        }
        else
        {
            await StreamWholeAsync(context, run.MessageId!, reply, run.Status?.Value ?? "finished", run.FinishReason, run.Error, run.SupersededBy).ConfigureAwait(false);
        }
    }

    /// <summary>A reply that has ended, streamed whole: its start, its parts, and how it ended.</summary>
    private static async Task StreamWholeAsync(HttpContext context, string messageId, JsonObject message, string status, string? finishReason, string? error, string? supersededBy)
    {
        var writer = await StartStreamAsync(context.Response, context.RequestAborted).ConfigureAwait(false);
        await writer.StartAsync(messageId).ConfigureAwait(false);
        await writer.PartsAsync(message, 0, 0, 0).ConfigureAwait(false);
        await writer.EndAsync(status, finishReason, error, supersededBy).ConfigureAwait(false);
    }

    private async Task ResumeAsync(HttpContext context, string chatId)
    {
        var (snapshot, state) = await MaterializeAsync(chatId, context.RequestAborted).ConfigureAwait(false);

        if (snapshot is null || state.ActiveRun is not { } active)
        {
            context.Response.StatusCode = 204;
            return;
        }

        // Resume rebuilds the message from empty: replay it from its start, under the id it is stored with.
        var reply = active.MessageId is { } messageId ? state.Get(SessionEventTypes.Message, messageId) : null;
        await StreamReplyAsync(context, chatId, snapshot.Value.Offset, trigger: active.Trigger, replay: (active, reply), human: null).ConfigureAwait(false);
    }

    private async Task StopAsync(HttpContext context, string chatId)
    {
        var (snapshot, state) = await MaterializeAsync(chatId, context.RequestAborted).ConfigureAwait(false);

        // Every run still going is stopped: several agents may be answering, and the chat shows one of them.
        var runs = state.StartedRuns.ToList();
        if (runs.Count == 0)
        {
            context.Response.StatusCode = 204;
            return;
        }

        var by = Auth.AccessControl.Current(context) is { IsAnonymous: false } who ? who.Subject : "user";
        long? fence = null;
        foreach (var run in runs)
        {
            var result = await sessions.CancelAsync(chatId, run.Id!, by, controlId: null, context.RequestAborted).ConfigureAwait(false);
            if (result.Status == 200)
            {
                fence = result.Offset;
            }
            else if (result.Code != SessionRejection.RunNotActive)
            {
                // A run that ended meanwhile has nothing left to stop; anything else is answered.
                await Problem.Write(context, result.Status, result.Code!, result.Message!).ConfigureAwait(false);
                return;
            }
        }

        if (fence is null)
        {
            context.Response.StatusCode = 204;
            return;
        }

        await JsonResponse.Write(context, 200, new JsonObject { ["stopped"] = true, ["fence"] = StreamOffset.Format(fence.Value) }).ConfigureAwait(false);
    }

    /// <summary>The session's snapshot and the state it materializes (empty when there is no session).</summary>
    private async Task<((JsonArray Snapshot, long Offset)? Snapshot, SessionState State)> MaterializeAsync(string chatId, CancellationToken cancellationToken)
    {
        var snapshot = await sessions.SnapshotAsync(chatId, cancellationToken).ConfigureAwait(false);
        var state = new SessionState();
        foreach (var node in snapshot?.Snapshot ?? [])
        {
            state.Apply((JsonObject)node!);
        }

        return (snapshot, state);
    }

    /// <summary>
    /// Streams the reply to <paramref name="trigger"/> as UI message chunks, from the session's events after
    /// <paramref name="from"/>: the agent's run, or, for a message routed to <paramref name="human"/>, that human's answer.
    /// </summary>
    private async Task StreamReplyAsync(HttpContext context, string chatId, long from, string? trigger, (SessionRun Run, JsonObject? Message)? replay, string? human)
    {
        var writer = await StartStreamAsync(context.Response, context.RequestAborted).ConfigureAwait(false);

        string? runId = null;
        string? messageId = null;
        var textLength = 0;
        var reasoningLength = 0;
        var toolCount = 0;
        if (replay is { } r)
        {
            runId = r.Run.Id;
            messageId = r.Run.MessageId;
            await writer.StartAsync(messageId).ConfigureAwait(false);
            if (r.Message is { } message)
            {
                (textLength, reasoningLength, toolCount) = await writer.PartsAsync(message, textLength, reasoningLength, toolCount).ConfigureAwait(false);
            }
        }

        // A stopping server ends the stream (the client resumes with GET .../stream) instead of holding up shutdown, and so
        // does the request's token expiring, as every live response does: the client resumes with a fresh one.
        // (A token valid for longer than a timer can count, ~49 days, outlives any stream anyway.)
        using var expired = Auth.AccessControl.Current(context) is { ExpiresAt: { } expiresAt } && expiresAt - store.TimeProvider.GetUtcNow() is var left && left < MaxExpiryWait
            ? new CancellationTokenSource(Max(left, TimeSpan.FromMilliseconds(1)), store.TimeProvider)
            : new CancellationTokenSource();
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, lifetime.ApplicationStopping, expired.Token);
        if (runId is null && human is null)
        {
            // A human answers when they do; an agent that has not started within this long is not coming.
            deadline.CancelAfter(RunStartTimeout);
        }

        try
        {
            var keepAlive = streamOptions.Value.SseKeepAliveInterval;
            await foreach (var (e, _) in _feed.ReadAsync(SessionService.StreamPath(chatId), from, keepAlive, deadline.Token).ConfigureAwait(false))
            {
                if (e is null || writer.QuietFor(keepAlive))
                {
                    // Nothing written for the keep-alive interval (a human yet to answer, an agent yet to start; or only
                    // events this reply does not show): a comment, or proxies would cut the idle stream. The UI message
                    // stream's parser skips comments.
                    await writer.CommentAsync().ConfigureAwait(false);
                    if (e is null)
                    {
                        continue;
                    }
                }

                var type = SessionJson.Text(e, "type");
                var value = e["value"] as JsonObject;
                var id = SessionJson.EntityId(e);
                if (runId is null && human is not null && type == SessionEventTypes.Message && value is not null
                    && SessionJson.Text(e["headers"], "operation") == "insert" && SessionJson.Text(value, "status") == "complete"
                    && SessionJson.Text(value, "role") == "assistant" && SessionJson.Text(value, "author") == human)
                {
                    // The human holding the session answered (their next message): theirs is the reply, whole in one message.
                    await writer.StartAsync(id).ConfigureAwait(false);
                    await writer.PartsAsync(value, 0, 0, 0).ConfigureAwait(false);
                    await writer.EndAsync("finished", "stop", error: null, supersededBy: null).ConfigureAwait(false);
                    return;
                }

                if (runId is null && human is not null && type == SessionEventTypes.Handoff && SessionJson.Text(value, "holder") != human)
                {
                    // Agents leave a message routed to a human alone, also after control is handed back: say so now
                    // rather than wait for an answer nobody will write.
                    await writer.ErrorAsync($"Control of the chat was handed back before {human} answered this message.").ConfigureAwait(false);
                    return;
                }

                if (runId is null && trigger is not null && type == SessionEventTypes.Message && SessionJson.Text(e, "key") == trigger
                    && SessionJson.Text(e["headers"], "operation") == "delete")
                {
                    // An edit of an earlier message took this one out before anyone answered it: nobody will.
                    await writer.ErrorAsync("This message was taken out of the chat by an edit of an earlier message.").ConfigureAwait(false);
                    return;
                }

                if (type == SessionEventTypes.Run && value is not null)
                {
                    if (runId is null && SessionJson.Text(value, "trigger") == trigger && SessionJson.Text(value, "status") == "started" && id is not null)
                    {
                        runId = id;
                        messageId = SessionJson.Text(value, "messageId");
                        deadline.CancelAfter(Timeout.InfiniteTimeSpan);
                        await writer.StartAsync(messageId).ConfigureAwait(false);
                        continue;
                    }

                    if (runId is not null && id == runId && SessionJson.Text(value, "status") is { } status && status != "started")
                    {
                        await writer.EndAsync(status, SessionJson.Text(value, "finishReason"), SessionJson.Text(value, "error"), SessionJson.Text(value, "supersededBy")).ConfigureAwait(false);
                        return;
                    }
                }
                // A run may leave its messageId out: then no message is its reply, and nothing below matches an event
                // whose id or messageId is missing too (a delete of a message carries no value).
                else if (runId is not null && messageId is not null && type == SessionEventTypes.Delta && SessionJson.Text(value, "messageId") == messageId)
                {
                    var text = SessionJson.Text(value, "text") ?? string.Empty;
                    if (SessionJson.Number(value, "part") == 1)
                    {
                        await writer.ReasoningAsync(text, reasoningLength == 0).ConfigureAwait(false);
                        reasoningLength += text.Length;
                    }
                    else
                    {
                        await writer.TextAsync(text, textLength == 0).ConfigureAwait(false);
                        textLength += text.Length;
                    }
                }
                else if (runId is not null && messageId is not null && type == SessionEventTypes.Message && id == messageId && value is not null)
                {
                    // A message update carries the whole reply: emit only what the client has not seen yet.
                    (textLength, reasoningLength, toolCount) = await writer.PartsAsync(value, textLength, reasoningLength, toolCount).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (!context.RequestAborted.IsCancellationRequested)
        {
        }

        // The feed ended before the run did: say why, rather than end silently, which would read as a complete reply.
        if (context.RequestAborted.IsCancellationRequested)
        {
            return;
        }

        await writer.ErrorAsync(
            lifetime.ApplicationStopping.IsCancellationRequested ? "The server is restarting; resume the stream to continue the reply."
            : expired.IsCancellationRequested ? "The access token expired before the reply ended; with a fresh token, resume the stream (a reply being written) or reload the chat (one not started yet)."
            : runId is null && human is null ? "No agent started a reply to this message."
            : "The chat was deleted.").ConfigureAwait(false);
    }

    private static readonly TimeSpan MaxExpiryWait = TimeSpan.FromDays(30);

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    /// <summary>Starts a UI message stream response.</summary>
    private static async Task<ChunkWriter> StartStreamAsync(HttpResponse response, CancellationToken cancellationToken)
    {
        response.StatusCode = 200;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        response.Headers["x-vercel-ai-ui-message-stream"] = "v1";
        await response.StartAsync(cancellationToken).ConfigureAwait(false);
        return new ChunkWriter(response);
    }

    /// <summary>Writes UI message stream chunks; fields that would be null are omitted (the client validates strictly).</summary>
    private sealed class ChunkWriter(HttpResponse response)
    {
        /// <summary>The error a stream ends with when the run it follows was cut and another run answers again.</summary>
        private const string TakenOverText = "The agent writing this reply stopped, and the message is being answered again from the start: resume the stream to follow the new answer.";

        /// <summary>The error a stream ends with when the run it follows was cut and nothing answers again.</summary>
        private const string CutText = "The agent writing this reply stopped before it finished; the reply is incomplete.";

        private bool _textOpen;
        private bool _reasoningOpen;
        private long _lastWrite = System.Diagnostics.Stopwatch.GetTimestamp();

        public async Task StartAsync(string? messageId)
        {
            var start = new JsonObject { ["type"] = "start" };
            if (messageId is not null)
            {
                start["messageId"] = messageId;
            }

            await WriteAsync(start).ConfigureAwait(false);
            await WriteAsync(new JsonObject { ["type"] = "start-step" }).ConfigureAwait(false);
        }

        public async Task TextAsync(string delta, bool first)
        {
            if (!_textOpen)
            {
                _textOpen = true;
                await WriteAsync(new JsonObject { ["type"] = "text-start", ["id"] = "text-0" }).ConfigureAwait(false);
            }

            if (delta.Length > 0)
            {
                await WriteAsync(new JsonObject { ["type"] = "text-delta", ["id"] = "text-0", ["delta"] = delta }).ConfigureAwait(false);
            }
        }

        public async Task ReasoningAsync(string delta, bool first)
        {
            if (!_reasoningOpen)
            {
                _reasoningOpen = true;
                await WriteAsync(new JsonObject { ["type"] = "reasoning-start", ["id"] = "reasoning-0" }).ConfigureAwait(false);
            }

            if (delta.Length > 0)
            {
                await WriteAsync(new JsonObject { ["type"] = "reasoning-delta", ["id"] = "reasoning-0", ["delta"] = delta }).ConfigureAwait(false);
            }
        }

        /// <summary>Emits the parts of a full message beyond what was already sent; returns the new counts.</summary>
        public async Task<(int Text, int Reasoning, int Tools)> PartsAsync(JsonObject message, int textLength, int reasoningLength, int toolCount)
        {
            var parts = message["parts"] as JsonArray ?? [];
            var tools = 0;
            foreach (var part in parts.OfType<JsonObject>())
            {
                switch (SessionJson.Text(part, "type"))
                {
                    case "text":
                        var text = SessionJson.Text(part, "text") ?? string.Empty;
                        if (text.Length > textLength)
                        {
                            await TextAsync(text[textLength..], textLength == 0).ConfigureAwait(false);
                            textLength = text.Length;
                        }

                        break;
                    case "reasoning":
                        var reasoning = SessionJson.Text(part, "text") ?? string.Empty;
                        if (reasoning.Length > reasoningLength)
                        {
                            await ReasoningAsync(reasoning[reasoningLength..], reasoningLength == 0).ConfigureAwait(false);
                            reasoningLength = reasoning.Length;
                        }

                        break;
                    case "tool-call" or "tool-result" when ++tools > toolCount:
                        await ToolAsync(part).ConfigureAwait(false);
                        toolCount = tools;
                        break;
                }
            }

            return (textLength, reasoningLength, toolCount);
        }

        public async Task EndAsync(string status, string? finishReason, string? error, string? supersededBy)
        {
            if (_textOpen)
            {
                await WriteAsync(new JsonObject { ["type"] = "text-end", ["id"] = "text-0" }).ConfigureAwait(false);
            }

            if (_reasoningOpen)
            {
                await WriteAsync(new JsonObject { ["type"] = "reasoning-end", ["id"] = "reasoning-0" }).ConfigureAwait(false);
            }

            switch (status)
            {
                case "finished":
                    await WriteAsync(new JsonObject { ["type"] = "finish-step" }).ConfigureAwait(false);
                    await WriteAsync(new JsonObject { ["type"] = "finish", ["finishReason"] = MapFinishReason(finishReason) }).ConfigureAwait(false);
                    break;
                case "failed":
                    await WriteAsync(new JsonObject { ["type"] = "error", ["errorText"] = error ?? "The agent failed." }).ConfigureAwait(false);
                    break;
                case "interrupted":
                    // An abort would read as a reply stopped on purpose. In a takeover another run answers the same
                    // message again from empty, and a UI message stream cannot take back the text it sent: the client
                    // is told to resume, which replays the new answer in place of the cut one.
                    await WriteAsync(new JsonObject { ["type"] = "error", ["errorText"] = supersededBy is null ? CutText : TakenOverText }).ConfigureAwait(false);
                    break;
                default:
                    await WriteAsync(new JsonObject { ["type"] = "abort" }).ConfigureAwait(false);
                    break;
            }

            await DoneAsync().ConfigureAwait(false);
        }

        public async Task ErrorAsync(string message)
        {
            await WriteAsync(new JsonObject { ["type"] = "error", ["errorText"] = message }).ConfigureAwait(false);
            await DoneAsync().ConfigureAwait(false);
        }

        private Task ToolAsync(JsonObject part)
        {
            var id = SessionJson.Text(part, "toolCallId") ?? "tool";
            return SessionJson.Text(part, "type") == "tool-call"
                ? WriteAsync(new JsonObject { ["type"] = "tool-input-available", ["toolCallId"] = id, ["toolName"] = SessionJson.Text(part, "name") ?? "tool", ["input"] = part["input"]?.DeepClone() ?? new JsonObject() })
                : WriteAsync(new JsonObject { ["type"] = "tool-output-available", ["toolCallId"] = id, ["output"] = part["output"]?.DeepClone() ?? new JsonObject() });
        }

        /// <summary>Maps Microsoft.Extensions.AI finish reasons onto the AI SDK's enumeration.</summary>
        private static string MapFinishReason(string? reason) => reason switch
        {
            "stop" or null => "stop",
            "length" => "length",
            "tool_calls" or "tool-calls" => "tool-calls",
            "content_filter" or "content-filter" => "content-filter",
            "error" => "error",
            _ => "other",
        };

        /// <summary>Whether nothing was written for at least <paramref name="interval"/>.</summary>
        public bool QuietFor(TimeSpan interval) => System.Diagnostics.Stopwatch.GetElapsedTime(_lastWrite) >= interval;

        public async Task CommentAsync()
        {
            await response.WriteAsync(":\n\n").ConfigureAwait(false);
            await response.Body.FlushAsync().ConfigureAwait(false);
            _lastWrite = System.Diagnostics.Stopwatch.GetTimestamp();
        }

        private async Task DoneAsync()
        {
            await response.WriteAsync("data: [DONE]\n\n").ConfigureAwait(false);
            await response.Body.FlushAsync().ConfigureAwait(false);
        }

        private async Task WriteAsync(JsonObject chunk)
        {
            await response.WriteAsync("data: " + DurableJson.ToJsonString(chunk) + "\n\n", Encoding.UTF8).ConfigureAwait(false);
            await response.Body.FlushAsync().ConfigureAwait(false);
            _lastWrite = System.Diagnostics.Stopwatch.GetTimestamp();
        }
    }
}
