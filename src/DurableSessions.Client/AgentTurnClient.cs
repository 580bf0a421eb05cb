using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace DurableSessions.Client;

/// <summary>
/// The turns of one agent (<c>/v1/agents/{agent}</c>): sessions where a user message waits for that agent's answer.
/// A worker claims a turn with a lease, heartbeats while it answers, and completes it; a turn whose lease runs out goes
/// to another worker. <see cref="DurableSessions.Client.DurableSessionsClient.Agent"/> creates it.
/// </summary>
/// <remarks>Thread-safe.</remarks>
public sealed class AgentTurnClient
{
    private readonly DurableSessionsClient _client;

    internal AgentTurnClient(DurableSessionsClient client, string agentId)
    {
        _client = client;
        AgentId = agentId;
    }

    /// <summary>The agent whose turns these are.</summary>
    public string AgentId { get; }

    private string Root => "/v1/agents/" + Uri.EscapeDataString(AgentId);

    /// <summary>
    /// Registers the agent (idempotent). From then on, every user message posted to any session is a turn of this agent.
    /// </summary>
    /// <param name="leaseTtl">How long a claim holds without a heartbeat; null keeps the registered one (or the server's default).</param>
    /// <param name="description">A description, shown by <c>GET /v1/agents/{agent}</c>.</param>
    /// <param name="cancellationToken">Cancels the request.</param>
    public async Task<AgentRegistrationInfo> RegisterAsync(TimeSpan? leaseTtl = null, string? description = null, CancellationToken cancellationToken = default)
    {
        var body = new JsonObject();
        if (leaseTtl is { } ttl)
        {
            body["lease_ttl_ms"] = (long)ttl.TotalMilliseconds;
        }

        if (description is not null)
        {
            body["description"] = description;
        }

        using var response = await _client.SendWithRetryAsync(() => _client.CreateRequest(HttpMethod.Put, Root, body.ToJsonString()), cancellationToken).ConfigureAwait(false);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false));
        var root = json.RootElement;
        return new AgentRegistrationInfo(root.GetProperty("agent").GetString()!, TimeSpan.FromMilliseconds(root.GetProperty("lease_ttl_ms").GetInt64()), root.GetProperty("wake_stream").GetString()!);
    }

    /// <summary>
    /// Unregisters the agent (the token needs <c>admin</c> on <c>agents/{agent}</c>): no message is its turn any more and
    /// the turns waiting for it are dropped; turns claimed now are finished by their workers. False when it was not
    /// registered (also when a retry of a request whose answer was lost finds it gone). An agent host still serving it
    /// (<c>SessionAgentHost</c>) registers it again: stop those first.
    /// </summary>
    public async Task<bool> UnregisterAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            using var response = await _client.SendWithRetryAsync(() => _client.CreateRequest(HttpMethod.Delete, Root), cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (DurableSessionsException ex) when (ex.Code == "AGENT_NOT_FOUND")
        {
            return false;
        }
    }

    /// <summary>
    /// Claims the oldest waiting turn for <paramref name="worker"/>, waiting up to <paramref name="wait"/> for one to
    /// come; null when none came.
    /// </summary>
    public async Task<AgentTurn?> ClaimAsync(string worker, TimeSpan wait, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(worker);
        // One claim id for this claim and its retries: a retry whose first answer was lost gets that turn back, rather
        // than a second turn while the first waits out its lease held by nobody.
        var body = new JsonObject
        {
            ["worker"] = worker,
            ["wait_ms"] = (long)Math.Max(0, wait.TotalMilliseconds),
            ["claim_id"] = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16)),
        }.ToJsonString();
        using var response = await _client.SendWithRetryAsync(() => _client.CreateRequest(HttpMethod.Post, Root + "/claim", body), cancellationToken).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.NoContent)
        {
            return null;
        }

        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false));
        var root = json.RootElement;
        return new AgentTurn(
            AgentId,
            root.GetProperty("stream").GetString()!,
            root.GetProperty("wake_id").GetString()!,
            root.GetProperty("generation").GetInt64(),
            root.GetProperty("token").GetString()!,
            TimeSpan.FromMilliseconds(root.GetProperty("lease_ttl_ms").GetInt64()));
    }

    /// <summary>Extends the lease of <paramref name="turn"/>; false when the claim has ended (its lease ran out, or its session is gone).</summary>
    public Task<bool> HeartbeatAsync(AgentTurn turn, CancellationToken cancellationToken = default) => AckAsync(turn, "ack", done: false, cancellationToken);

    /// <summary>
    /// Completes <paramref name="turn"/>, answered up to the session's <paramref name="offset"/>: only a message after
    /// it makes the session a turn again (null: everything waiting was answered, and any message that came since the
    /// claim makes it a turn again). False when the claim had already ended.
    /// </summary>
    public Task<bool> CompleteAsync(AgentTurn turn, string? offset = null, CancellationToken cancellationToken = default) => AckAsync(turn, "ack", done: true, cancellationToken, offset);

    /// <summary>Gives <paramref name="turn"/> back unanswered, at once, for another worker. False when the claim had already ended.</summary>
    public Task<bool> ReleaseAsync(AgentTurn turn, CancellationToken cancellationToken = default) => AckAsync(turn, "release", done: false, cancellationToken);

    private async Task<bool> AckAsync(AgentTurn turn, string action, bool done, CancellationToken cancellationToken, string? offset = null)
    {
        ArgumentNullException.ThrowIfNull(turn);
        var ack = new JsonObject
        {
            ["stream"] = turn.Stream,
            ["token"] = turn.Token,
            ["wake_id"] = turn.WakeId,
            ["generation"] = turn.Generation,
            ["done"] = done,
        };
        if (offset is not null)
        {
            ack["acks"] = new JsonArray(new JsonObject { ["stream"] = turn.Stream, ["offset"] = offset });
        }

        var body = ack.ToJsonString();
        try
        {
            using var response = await _client.SendWithRetryAsync(() => _client.CreateRequest(HttpMethod.Post, $"{Root}/{action}", body), cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (DurableSessionsException ex) when (ex.Code is "FENCED" or "STREAM_NOT_FOUND")
        {
            return false;
        }
    }
}

/// <summary>A claimed turn: the session to answer and the claim that proves it is this worker's.</summary>
/// <param name="Agent">The agent whose turn it is.</param>
/// <param name="Stream">The session's stream path, <c>sessions/{id}</c>.</param>
/// <param name="WakeId">The claim's wake id (protocol §7.3 fencing).</param>
/// <param name="Generation">The claim's generation (protocol §7.3 fencing).</param>
/// <param name="Token">The claim token, sent back with every heartbeat, ack and release.</param>
/// <param name="LeaseTtl">How long the claim holds without a heartbeat.</param>
public sealed record AgentTurn(string Agent, string Stream, string WakeId, long Generation, string Token, TimeSpan LeaseTtl)
{
    /// <summary>The session's id.</summary>
    public string SessionId => Stream.StartsWith("sessions/", StringComparison.Ordinal) ? Stream["sessions/".Length..] : Stream;
}

/// <summary>A registered agent.</summary>
/// <param name="Agent">The agent id.</param>
/// <param name="LeaseTtl">The lease of its claims.</param>
/// <param name="WakeStream">The stream that receives a wake event per waiting turn (protocol §7.2), for workers that follow it.</param>
public sealed record AgentRegistrationInfo(string Agent, TimeSpan LeaseTtl, string WakeStream);
