using System.Text.Json.Nodes;
using DurableSessions.AspNetCore.Sessions;
using DurableSessions.Sessions;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Options;

namespace DurableSessions.AspNetCore.Agents;

/// <summary>
/// The agents API under <c>/v1/agents/{agent}</c>: register an agent, then claim, heartbeat, ack and release its turns
/// (see docs/sessions.md, "Agents woken by work"). The bodies follow protocol §7.2's claim, ack and release.
/// </summary>
internal sealed class AgentTurnEndpoints(AgentTurnService turns, Auth.AccessControl access, IOptions<DurableStreamsOptions> streamOptions, Microsoft.Extensions.Hosting.IHostApplicationLifetime lifetime)
{
    public const string Root = "/v1/agents";

    public async Task HandleAsync(HttpContext context, string rest)
    {
        var segments = rest.Split('/');
        // The path is decoded once already (all but %2F, which no agent id holds): decoding it again would let
        // "%252E%252E" through as "..".
        var agent = segments.Length > 0 ? segments[0] : string.Empty;
        if (!AgentTurnService.IsValidAgentId(agent) || segments.Length > 2)
        {
            await Problem.Write(context, segments.Length > 2 ? 404 : 400, segments.Length > 2 ? "NOT_FOUND" : "INVALID_AGENT_ID",
                segments.Length > 2 ? "Unknown agents API route." : "Agent ids are 1-128 characters of letters, digits, '-', '_', '.' or ':', and not '.' or '..'.").ConfigureAwait(false);
            return;
        }

        // Serving an agent's turns is writing as it: the token needs write on agents/{agent}, and each session it is given
        // must also be one it may read and write. Unregistering drops turns of sessions a worker's token may not even
        // see, so it needs admin there, as deleting a stream does.
        // The route decides the capability: "/v1/agents/a" and "/v1/agents/a/" are the same route.
        var method = context.Request.Method;
        var route = segments.Length == 1 ? string.Empty : segments[1];
        var unregister = route.Length == 0 && HttpMethods.IsDelete(method);
        if (!await access.AuthorizeAsync(context, "agents/" + agent, unregister ? Auth.Capability.Admin : Auth.Capability.Write).ConfigureAwait(false))
        {
            return;
        }

        switch (route, method)
        {
            case ("", "PUT"):
                await RegisterAsync(context, agent).ConfigureAwait(false);
                return;
            case ("", "GET"):
                await DescribeAsync(context, agent).ConfigureAwait(false);
                return;
            case ("", "DELETE"):
                await UnregisterAsync(context, agent).ConfigureAwait(false);
                return;
            case ("claim", "POST"):
                await ClaimAsync(context, agent).ConfigureAwait(false);
                return;
            case ("ack" or "release", "POST"):
                await AckAsync(context, agent, release: segments[1] == "release").ConfigureAwait(false);
                return;
            default:
                await Problem.Write(context, 404, "NOT_FOUND", "Unknown agents API route.").ConfigureAwait(false);
                return;
        }
    }

    private async Task RegisterAsync(HttpContext context, string agent)
    {
        if (await ReadAsync(context, allowEmpty: true).ConfigureAwait(false) is not { } body)
        {
            return;
        }

        long? lease = null;
        if (body["lease_ttl_ms"] is { } leaseNode)
        {
            if (Whole(leaseNode) is not { } ms || ms < 1_000 || ms > 600_000)
            {
                await Problem.Write(context, 400, "INVALID_LEASE", "lease_ttl_ms must be a whole number from 1000 to 600000.").ConfigureAwait(false);
                return;
            }

            lease = ms;
        }

        var description = body["description"] is { } d ? SessionJson.Text(d) : null;
        if (body["description"] is not null && (description is null || description.Length > 1024))
        {
            await Problem.Write(context, 400, "INVALID_DESCRIPTION", "description must be a string of at most 1024 characters.").ConfigureAwait(false);
            return;
        }

        var (outcome, registration) = await turns.RegisterAsync(agent, lease, description, context.RequestAborted).ConfigureAwait(false);
        switch (outcome)
        {
            case AgentRegisterStatus.LimitReached:
                await Problem.Write(context, 403, "AGENT_LIMIT_REACHED", "This server holds its limit of registered agents (Agents:MaxAgents).").ConfigureAwait(false);
                return;
            case AgentRegisterStatus.WakeStreamUnavailable:
                await Problem.Write(context, 409, "WAKE_STREAM_CONFLICT", $"The agent's wake stream {AgentTurnService.WakeStreamOf(agent)} cannot be created: a stream of another configuration is there, or it was deleted while forks of it remain. Delete that stream, or its forks, and register again.").ConfigureAwait(false);
                return;
        }

        await JsonResponse.Write(context, outcome == AgentRegisterStatus.Created ? 201 : 200, Describe(registration!)).ConfigureAwait(false);
    }

    private async Task DescribeAsync(HttpContext context, string agent)
    {
        if (await turns.GetAgentAsync(agent, context.RequestAborted).ConfigureAwait(false) is not { } registration)
        {
            await Problem.Write(context, 404, "AGENT_NOT_FOUND", $"No agent {agent} is registered.").ConfigureAwait(false);
            return;
        }

        await JsonResponse.Write(context, 200, Describe(registration)).ConfigureAwait(false);
    }

    private async Task UnregisterAsync(HttpContext context, string agent)
    {
        if (!await turns.UnregisterAsync(agent, context.RequestAborted).ConfigureAwait(false))
        {
            await Problem.Write(context, 404, "AGENT_NOT_FOUND", $"No agent {agent} is registered.").ConfigureAwait(false);
            return;
        }

        context.Response.StatusCode = 204;
    }

    private async Task ClaimAsync(HttpContext context, string agent)
    {
        if (await ReadAsync(context, allowEmpty: false).ConfigureAwait(false) is not { } body)
        {
            return;
        }

        var worker = SessionJson.Text(body, "worker");
        if (worker is null || worker.Length is 0 or > 256)
        {
            await Problem.Write(context, 400, "INVALID_WORKER", "worker must be a string of 1-256 characters naming the claimer.").ConfigureAwait(false);
            return;
        }

        string? claimId = null;
        if (body["claim_id"] is { } claimIdNode)
        {
            claimId = SessionJson.Text(claimIdNode);
            if (claimId is null || claimId.Length is < 16 or > 128)
            {
                await Problem.Write(context, 400, "INVALID_CLAIM_ID", "claim_id must be a string of 16-128 characters, random per claim and the same in its retries.").ConfigureAwait(false);
                return;
            }
        }

        string? stream = null;
        if (body["stream"] is { } streamNode)
        {
            stream = SessionJson.Text(streamNode);
            if (stream is null || !SessionService.IsSessionPath(stream) || !Identifiers.IsValid(stream[SessionService.Prefix.Length..]))
            {
                await Problem.Write(context, 400, "INVALID_STREAM", "stream must be a session's stream path, sessions/{id}.").ConfigureAwait(false);
                return;
            }
        }

        var wait = TimeSpan.Zero;
        if (body["wait_ms"] is { } waitNode)
        {
            if (Whole(waitNode) is not { } ms || ms < 0 || ms > 300_000)
            {
                await Problem.Write(context, 400, "INVALID_WAIT", "wait_ms must be a whole number from 0 to 300000.").ConfigureAwait(false);
                return;
            }

            wait = TimeSpan.FromMilliseconds(ms);
        }

        if (stream is not null && !await MayServeAsync(context, stream).ConfigureAwait(false))
        {
            return;
        }

        // A stopping server ends waiting claims at once (204), rather than holding up its shutdown.
        using var waiting = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, lifetime.ApplicationStopping);
        TurnClaim claim;

        // Which waiting turns this caller may take is decided from its grants in memory, under the turn table's lock:
        // thousands of candidates cannot each go through the authorization handlers.
        var caller = Auth.AccessControl.Current(context);

        // A claim id is bound to the caller that sent it: another caller naming the same worker and claim id (one that
        // read them somewhere) is not given the turn it names.
        var claimKey = claimId is null ? null : $"{caller.Subject.Length}:{caller.Subject}:{claimId}";
        try
        {
            claim = await turns.ClaimAsync(agent, worker, claimKey, stream, wait, s => caller.Allows(s, Auth.Capability.Read) && caller.Allows(s, Auth.Capability.Write), waiting.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (waiting.IsCancellationRequested)
        {
            if (!context.RequestAborted.IsCancellationRequested)
            {
                context.Response.StatusCode = 204;
            }

            return;
        }

        switch (claim.Status)
        {
            case TurnClaimStatus.Claimed:
                var turn = claim.Turn!;
                await JsonResponse.Write(context, 200, new JsonObject
                {
                    ["wake_id"] = turn.WakeId,
                    ["generation"] = turn.Generation,
                    ["token"] = claim.Token,
                    ["stream"] = turn.Stream,
                    ["streams"] = new JsonArray(new JsonObject
                    {
                        ["path"] = turn.Stream,
                        ["link_type"] = "explicit",
                        ["tail_offset"] = StreamOffset.Format(claim.TailPosition),
                        ["has_pending"] = true,
                    }),
                    ["lease_ttl_ms"] = claim.LeaseTtlMs,
                }).ConfigureAwait(false);
                return;
            case TurnClaimStatus.AlreadyClaimed:
                await JsonResponse.Write(context, 409, new JsonObject
                {
                    ["error"] = new JsonObject
                    {
                        ["code"] = "ALREADY_CLAIMED",
                        ["message"] = $"Another worker holds the turn of {stream}.",
                        ["current_holder"] = claim.Turn!.Holder,
                        ["generation"] = claim.Turn.Generation,
                    },
                }).ConfigureAwait(false);
                return;
            case TurnClaimStatus.UnknownAgent:
                await Problem.Write(context, 404, "AGENT_NOT_FOUND", $"No agent {agent} is registered; PUT {Root}/{agent} first.").ConfigureAwait(false);
                return;
            case TurnClaimStatus.StreamNotFound:
                await Problem.Write(context, 404, "STREAM_NOT_FOUND", $"The session {stream} does not exist.").ConfigureAwait(false);
                return;
            default:
                context.Response.StatusCode = 204;
                context.Response.Headers.CacheControl = "no-store";
                return;
        }
    }

    // A worker serves a session it may read and write; refused with 403 otherwise.
    private static async Task<bool> MayServeAsync(HttpContext context, string stream)
    {
        if (await Auth.AccessControl.AllowsAsync(context, new Auth.StreamResource(stream), Auth.Capability.Read).ConfigureAwait(false)
            && await Auth.AccessControl.AllowsAsync(context, new Auth.StreamResource(stream), Auth.Capability.Write).ConfigureAwait(false))
        {
            return true;
        }

        await Problem.Write(context, 403, "FORBIDDEN", $"The token does not grant read and write on {stream}.").ConfigureAwait(false);
        return false;
    }

    private async Task AckAsync(HttpContext context, string agent, bool release)
    {
        if (await ReadAsync(context, allowEmpty: false).ConfigureAwait(false) is not { } body)
        {
            return;
        }

        var stream = SessionJson.Text(body, "stream");
        var token = SessionJson.Text(body, "token");
        var wakeId = SessionJson.Text(body, "wake_id");
        var generation = Whole(body["generation"]);
        var done = body["done"] is JsonValue doneValue && doneValue.TryGetValue<bool>(out var d) && d;
        if (stream is null || token is null || wakeId is null || generation is null || (body["done"] is { } doneNode && !(doneNode is JsonValue v && v.TryGetValue<bool>(out _))))
        {
            await Problem.Write(context, 400, "INVALID_ACK", "An ack or release needs stream, token, wake_id and generation from the claim (and done, a boolean, if given).").ConfigureAwait(false);
            return;
        }

        // acks: [{ stream, offset }] names how far the worker has answered the session (at most one entry, for its stream).
        long? answered = null;
        if (body["acks"] is { } acks)
        {
            if (acks is not JsonArray list || list.Count > 1
                || (list.Count == 1 && (SessionJson.Text(list[0], "stream") != stream || !StreamOffset.TryParse(SessionJson.Text(list[0], "offset"), out var position))))
            {
                await Problem.Write(context, 400, "INVALID_ACK", "acks must be [{ \"stream\": <the claimed stream>, \"offset\": <an offset of it> }].").ConfigureAwait(false);
                return;
            }

            if (list.Count == 1 && StreamOffset.TryParse(SessionJson.Text(list[0], "offset"), out var offset))
            {
                answered = offset;
            }
        }

        // The claim needed read and write on the session, so its worker holds both; anyone else learns nothing here,
        // not even whether the session exists (which a 404 against a fence would tell).
        if (!await MayServeAsync(context, stream).ConfigureAwait(false))
        {
            return;
        }

        var outcome = release
            ? await turns.ReleaseAsync(agent, stream, token, wakeId, generation, context.RequestAborted).ConfigureAwait(false)
            : await turns.AckAsync(agent, stream, token, wakeId, generation, done, answered, context.RequestAborted).ConfigureAwait(false);
        switch (outcome.Status)
        {
            case TurnAckStatus.Fenced:
                await Problem.Write(context, 409, "FENCED", "This claim is no longer current: it was acked, released, or its lease ran out and the turn went to another claim.").ConfigureAwait(false);
                return;
            case TurnAckStatus.StreamNotFound:
                await Problem.Write(context, 404, "STREAM_NOT_FOUND", $"The session {stream} no longer exists; its turn has ended.").ConfigureAwait(false);
                return;
            case TurnAckStatus.OffsetBeyondTail:
                await Problem.Write(context, 400, "OFFSET_BEYOND_TAIL", $"The acked offset is past the end of {stream}; nothing was acked.").ConfigureAwait(false);
                return;
        }

        if (release)
        {
            context.Response.StatusCode = 204;
            return;
        }

        var answer = new JsonObject { ["ok"] = true, ["next_wake"] = outcome.NextWake };
        if (outcome.LeaseExpiresAt is { } expires)
        {
            answer["lease_expires_at"] = expires;
        }

        await JsonResponse.Write(context, 200, answer).ConfigureAwait(false);
    }

    private static JsonObject Describe(AgentRegistration registration) => new()
    {
        ["agent"] = registration.Agent,
        ["lease_ttl_ms"] = registration.LeaseTtlMs,
        ["wake_stream"] = registration.WakeStream,
        ["description"] = registration.Description,
    };

    private static long? Whole(JsonNode? node)
        => node is JsonValue value && value.GetValueKind() == System.Text.Json.JsonValueKind.Number && value.TryGetValue<long>(out var n) ? n : null;

    private Task<JsonObject?> ReadAsync(HttpContext context, bool allowEmpty)
        => RequestBody.ReadJsonObjectAsync(context, streamOptions.Value.MaxJsonBodyBytes, allowEmpty);
}
