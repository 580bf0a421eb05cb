using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using DurableSessions.Sessions;

namespace DurableSessions.Client;

/// <summary>One session: join it (snapshot + live tail), send messages, cancel or steer runs.</summary>
/// <remarks>Methods are thread-safe; <see cref="JoinAsync"/> materializes into a state owned by its enumeration.</remarks>
public sealed class SessionClient
{
    private readonly DurableSessionsClient _client;

    internal SessionClient(DurableSessionsClient client, string id)
    {
        _client = client;
        Id = id;
    }

    /// <summary>The session id.</summary>
    public string Id { get; }

    /// <summary>The session's stream path (readable by any Durable Streams client).</summary>
    public string StreamPath => "sessions/" + Id;

    /// <summary>Creates the session if it does not exist.</summary>
    /// <param name="newMessagePolicy">What a new user message does while a run is active: <c>queue</c>, <c>interrupt</c> or <c>reject</c>.</param>
    /// <param name="title">An optional title.</param>
    /// <param name="handoffPolicy">What a human taking over does to the active run: <c>cancel</c> it, or <c>pause</c> it so the agent answers again after hand-back.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    public async Task CreateAsync(string newMessagePolicy = "queue", string? title = null, string handoffPolicy = "cancel", CancellationToken cancellationToken = default)
    {
        var body = new JsonObject { ["newMessagePolicy"] = newMessagePolicy, ["title"] = title, ["handoffPolicy"] = handoffPolicy }.ToJsonString();
        using var response = await _client.SendWithRetryAsync(() => _client.CreateRequest(HttpMethod.Put, $"/v1/sessions/{Id}", body), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Joins the session: hydrates from the server's snapshot, then follows the live tail, resuming after any
    /// disconnect with no gap or duplicate. Each update carries the materialized state after it was applied.
    /// </summary>
    public IAsyncEnumerable<SessionUpdate> JoinAsync(CancellationToken cancellationToken = default) => JoinCoreAsync(skipDeltasOf: null, cancellationToken);

    /// <summary>
    /// Joins the session as a writer: as <see cref="JoinAsync"/>, but the delta-only appends of producers whose id starts
    /// with <paramref name="producerPrefix"/> are not sent live. An agent following a session it writes to does not read
    /// its own reply deltas back: its reply's final message event restates them in full, and until then the state holds
    /// that reply as its last full event left it. Catching up after a reconnect still reads everything.
    /// </summary>
    public IAsyncEnumerable<SessionUpdate> JoinAsWriterAsync(string producerPrefix, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(producerPrefix);
        return JoinCoreAsync(producerPrefix, cancellationToken);
    }

    private async IAsyncEnumerable<SessionUpdate> JoinCoreAsync(string? skipDeltasOf, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        // Each event is applied from its text as it came in: checked in one pass over the text, not by a walk of its
        // parsed nodes.
        var state = new SessionState();
        var (snapshot, offset) = await GetSnapshotAsync(cancellationToken).ConfigureAwait(false);
        using (snapshot)
        {
            foreach (var message in snapshot.RootElement.EnumerateArray())
            {
                state.ApplyEvent(JsonMarshal.GetRawUtf8Value(message));
            }
        }

        yield return new SessionUpdate(state, [], offset, UpToDate: false, IsSnapshot: true);
        await foreach (var batch in _client.ReadStreamCoreAsync(StreamPath, offset, skipDeltasOf, cancellationToken).ConfigureAwait(false))
        {
            foreach (var message in batch.Messages)
            {
                state.ApplyEvent(JsonMarshal.GetRawUtf8Value(message));
            }

            yield return new SessionUpdate(state, batch.Messages, batch.NextOffset, batch.UpToDate, IsSnapshot: false);
        }
    }

    /// <summary>Fetches the snapshot, retrying until a complete one arrives (a cut connection mid-body is retried).</summary>
    private async Task<(JsonDocument Snapshot, string Offset)> GetSnapshotAsync(CancellationToken cancellationToken)
    {
        var delay = _client.Options.ReconnectDelay;
        while (true)
        {
            try
            {
                using var response = await _client.SendWithRetryAsync(() => _client.CreateRequest(HttpMethod.Get, $"/v1/sessions/{Id}"), cancellationToken).ConfigureAwait(false);
                var offset = response.Headers.GetValues(StreamHeaders.NextOffset).Single();
                var body = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
                var snapshot = JsonDocument.Parse(body);
                if (snapshot.RootElement.ValueKind != JsonValueKind.Array)
                {
                    // Not a body cut short (that is retried): an answer that is no snapshot goes to the caller.
                    snapshot.Dispose();
                    throw new InvalidOperationException("The server's session snapshot is not a JSON array.");
                }

                return (snapshot, offset);
            }
            catch (Exception ex) when (ex is HttpRequestException or IOException or JsonException && !cancellationToken.IsCancellationRequested)
            {
                await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
                delay = TimeSpan.FromTicks(Math.Min(_client.Options.MaxReconnectDelay.Ticks, delay.Ticks * 2));
            }
        }
    }

    /// <summary>Posts a message (by default as the user); returns its id.</summary>
    /// <remarks>
    /// The message's id is chosen here and sent with it, so the request's retries (after a lost answer or a server
    /// error) post it once: the server answers a message it already holds as it did the first time.
    /// </remarks>
    /// <param name="text">The text.</param>
    /// <param name="role"><c>user</c>, or <c>assistant</c> for a human answering in an agent's place.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    public async Task<string> SendMessageAsync(string text, string role = "user", CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(text);
        var body = new JsonObject { ["id"] = "m-" + Guid.NewGuid().ToString("N"), ["text"] = text, ["role"] = role, ["author"] = _client.Options.ParticipantId };
        using var json = await PostAsync("messages", body, cancellationToken).ConfigureAwait(false);
        return json.RootElement.GetProperty("messageId").GetString()!;
    }

    /// <summary>Cancels a running run. The acknowledgement names the fence: nothing for the run is accepted after it.</summary>
    /// <remarks>
    /// Sent with a control id of its own, so a retry after a lost answer is acknowledged as the cancel it repeats (with
    /// the session's offset then, at or after the fence), not refused because the run has ended since.
    /// </remarks>
    public async Task<ControlAcknowledgement> CancelAsync(string runId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        var body = new JsonObject { ["id"] = NewControlId(), ["by"] = _client.Options.ParticipantId };
        return await AcknowledgeAsync($"runs/{runId}/cancel", body, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Sends a new instruction to a running agent.</summary>
    /// <remarks>Sent with a control id of its own, so a retry after a lost answer never steers the run twice.</remarks>
    public async Task<ControlAcknowledgement> SteerAsync(string runId, string text, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        ArgumentException.ThrowIfNullOrEmpty(text);
        var body = new JsonObject { ["id"] = NewControlId(), ["by"] = _client.Options.ParticipantId, ["text"] = text };
        return await AcknowledgeAsync($"runs/{runId}/steer", body, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Edits one of this client's messages in the session: its text is replaced, and every agent's reply to it is written
    /// again, in place, from the new text (a reply still being written is cancelled first). An earlier message takes the
    /// conversation after it out of the session (its later messages are deleted); with another participant's message among
    /// them, the edit is refused (409 <c>NOT_LATEST_MESSAGE</c>).
    /// </summary>
    /// <param name="messageId">The message: this client's own, with no other participant's message after it.</param>
    /// <param name="text">Its new text.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>The session's offset after the edit.</returns>
    /// <remarks>
    /// Safe to send again: the same edit repeated is answered as done, and the replies are asked for once. Once its author
    /// has asked something after it, the same text is a new edit, which takes those later turns out.
    /// </remarks>
    public async Task<string> EditMessageAsync(string messageId, string text, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(messageId);
        ArgumentException.ThrowIfNullOrEmpty(text);
        var body = new JsonObject { ["text"] = text, ["author"] = _client.Options.ParticipantId };
        using var json = await PostAsync($"messages/{Uri.EscapeDataString(messageId)}/edit", body, cancellationToken).ConfigureAwait(false);
        return json.RootElement.GetProperty("offset").GetString()!;
    }

    /// <summary>
    /// Asks for a reply to be written again: the agent that wrote it answers its message anew, in the same message, which
    /// starts again from empty (a reply still being written is cancelled first, in the same append). Only the reply to
    /// the session's latest user message can be written again.
    /// </summary>
    /// <param name="messageId">The reply, or the user message it answers (which stands for its latest reply).</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>The regenerate control's id and the session's offset after it.</returns>
    /// <remarks>Sent with a control id of its own, so a retry after a lost answer asks once.</remarks>
    public async Task<ControlAcknowledgement> RegenerateAsync(string messageId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(messageId);
        var body = new JsonObject { ["id"] = NewControlId(), ["by"] = _client.Options.ParticipantId };
        return await AcknowledgeAsync($"messages/{Uri.EscapeDataString(messageId)}/regenerate", body, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Announces this client (or, with <paramref name="participantId"/>, another participant such as the agent it runs)
    /// in the session, or keeps it announced. Call at least once per returned timeout; a participant that stops is marked
    /// left.
    /// </summary>
    /// <param name="kind"><c>client</c>, <c>agent</c> or <c>human</c>.</param>
    /// <param name="name">A display name.</param>
    /// <param name="participantId">Who is present; null for this client's participant id. A server with access control
    /// takes it from the token instead.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    /// <returns>How long the server waits for the next heartbeat.</returns>
    public async Task<TimeSpan> HeartbeatAsync(string kind = "client", string? name = null, string? participantId = null, CancellationToken cancellationToken = default)
    {
        var body = new JsonObject { ["participantId"] = participantId ?? _client.Options.ParticipantId, ["kind"] = kind, ["name"] = name }.ToJsonString();
        using var response = await _client.SendWithRetryAsync(() => _client.CreateRequest(HttpMethod.Post, $"/v1/sessions/{Id}/presence", body), cancellationToken).ConfigureAwait(false);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false));
        return TimeSpan.FromMilliseconds(json.RootElement.GetProperty("timeoutMs").GetInt64());
    }

    /// <summary>Takes the session's control lease as a human: the agent's active run is cancelled and new user messages are routed to this participant.</summary>
    public async Task TakeControlAsync(CancellationToken cancellationToken = default)
    {
        var body = new JsonObject { ["holder"] = _client.Options.ParticipantId }.ToJsonString();
        using var response = await _client.SendWithRetryAsync(() => _client.CreateRequest(HttpMethod.Post, $"/v1/sessions/{Id}/handoff", body), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Hands control back to the agents.</summary>
    public async Task ReturnControlAsync(CancellationToken cancellationToken = default)
    {
        var body = new JsonObject { ["holder"] = _client.Options.ParticipantId }.ToJsonString();
        using var response = await _client.SendWithRetryAsync(() => _client.CreateRequest(HttpMethod.Delete, $"/v1/sessions/{Id}/handoff", body), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Marks this client, or <paramref name="participantId"/> (an agent it heartbeats for), left at once. A participant
    /// that is not present (gone already, or never announced) is no error.
    /// </summary>
    public async Task LeaveAsync(string? participantId = null, CancellationToken cancellationToken = default)
    {
        participantId ??= _client.Options.ParticipantId;
        ArgumentException.ThrowIfNullOrEmpty(participantId);
        try
        {
            using var response = await _client.SendWithRetryAsync(() => _client.CreateRequest(HttpMethod.Delete, $"/v1/sessions/{Id}/presence/{Uri.EscapeDataString(participantId)}"), cancellationToken).ConfigureAwait(false);
        }
        catch (DurableSessionsException ex) when (ex.Code == "NOT_PRESENT")
        {
            // Gone already: by this call's first attempt (its answer lost), a timeout, or another surface.
        }
    }

    private static string NewControlId() => "c-" + Guid.NewGuid().ToString("N");

    /// <summary>Posts <paramref name="body"/> to the session's operation <paramref name="operation"/> (retried as the client retries) and reads the answer.</summary>
    private async Task<JsonDocument> PostAsync(string operation, JsonObject body, CancellationToken cancellationToken)
    {
        var json = body.ToJsonString();
        using var response = await _client.SendWithRetryAsync(() => _client.CreateRequest(HttpMethod.Post, $"/v1/sessions/{Id}/{operation}", json), cancellationToken).ConfigureAwait(false);
        return JsonDocument.Parse(await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false));
    }

    /// <summary>Posts a control operation and reads its acknowledgement.</summary>
    private async Task<ControlAcknowledgement> AcknowledgeAsync(string operation, JsonObject body, CancellationToken cancellationToken)
    {
        using var json = await PostAsync(operation, body, cancellationToken).ConfigureAwait(false);
        return new ControlAcknowledgement(json.RootElement.GetProperty("controlId").GetString()!, json.RootElement.GetProperty("offset").GetString()!);
    }
}

/// <summary>One step of a joined session.</summary>
/// <param name="State">The materialized state after this update (owned by the enumeration; read it before moving on).</param>
/// <param name="Events">The events applied by this update (empty for the snapshot).</param>
/// <param name="Offset">The stream offset after this update.</param>
/// <param name="UpToDate">Whether the client has caught up with the live tail.</param>
/// <param name="IsSnapshot">Whether this is the initial hydration from the snapshot.</param>
public sealed record SessionUpdate(SessionState State, IReadOnlyList<JsonElement> Events, string Offset, bool UpToDate, bool IsSnapshot);

/// <summary>The server's acknowledgement of a cancel or steer.</summary>
/// <param name="ControlId">The id of the recorded control event.</param>
/// <param name="Offset">The offset after the control event; for a cancel, the fence.</param>
public sealed record ControlAcknowledgement(string ControlId, string Offset);
