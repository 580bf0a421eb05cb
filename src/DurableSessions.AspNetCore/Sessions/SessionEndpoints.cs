using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using DurableSessions.Sessions;

namespace DurableSessions.AspNetCore.Sessions;

/// <summary>
/// The sessions API under <c>/v1/sessions/{id}</c>. The session's events themselves are read (and may be written) as the
/// ordinary Durable Stream <c>/v1/stream/sessions/{id}</c>.
/// </summary>
internal sealed class SessionEndpoints(SessionService sessions, PresenceService presence, Auth.AccessControl access, Microsoft.Extensions.Options.IOptions<Subscriptions.SubscriptionOptions> webhookPolicy, Microsoft.Extensions.Options.IOptions<DurableStreamsOptions> streamOptions)
{
    public const string Root = "/v1/sessions";

    public async Task HandleAsync(HttpContext context, string rest)
    {
        var segments = rest.Split('/');
        if (segments.Length == 0 || !Identifiers.IsValid(segments[0]))
        {
            await Problem.Write(context, 400, "INVALID_SESSION_ID", "Session ids are 1-128 characters of letters, digits, '-', '_' or '.'.").ConfigureAwait(false);
            return;
        }

        var id = segments[0];
        var method = context.Request.Method;
        var capability = (segments.Length, method) switch
        {
            (1, "GET") => Auth.Capability.Read,
            (4, _) when segments[1] == "runs" => Auth.Capability.Control,
            (2, _) when segments[1] == "handoff" => Auth.Capability.Control,
            _ => Auth.Capability.Write,
        };
        if (!await access.AuthorizeAsync(context, SessionService.StreamPath(id), capability).ConfigureAwait(false))
        {
            return;
        }

        switch (segments.Length, method)
        {
            case (1, "PUT"):
                await CreateAsync(context, id).ConfigureAwait(false);
                return;
            case (1, "GET"):
                await SnapshotAsync(context, id).ConfigureAwait(false);
                return;
            case (2, "POST") when segments[1] == "messages":
                await PostMessageAsync(context, id).ConfigureAwait(false);
                return;
            case (2, "POST" or "DELETE") when segments[1] == "handoff":
                await HandoffAsync(context, id, take: method == "POST").ConfigureAwait(false);
                return;
            case (2, "POST") when segments[1] == "presence":
                await HeartbeatAsync(context, id).ConfigureAwait(false);
                return;
            case (3, "DELETE") when segments[1] == "presence" && IsParticipant(context, Uri.UnescapeDataString(segments[2])):
                var leaving = Uri.UnescapeDataString(segments[2]);
                if (AccessControlOn(context) && leaving != Identity(context, null))
                {
                    await Problem.Write(context, 403, "FORBIDDEN", "A participant can only leave for itself.").ConfigureAwait(false);
                    return;
                }

                await WriteResult(context, await presence.LeaveAsync(id, leaving, context.RequestAborted).ConfigureAwait(false), "participantId", created: false).ConfigureAwait(false);
                return;
            case (4, "POST") when segments[1] == "runs" && Identifiers.IsValid(segments[2]) && segments[3] is "cancel" or "steer":
                await ControlAsync(context, id, segments[2], segments[3]).ConfigureAwait(false);
                return;
            case (4, "POST") when segments[1] == "messages" && Identifiers.IsValid(segments[2]) && segments[3] == "regenerate":
                await RegenerateAsync(context, id, segments[2]).ConfigureAwait(false);
                return;
            case (4, "POST") when segments[1] == "messages" && Identifiers.IsValid(segments[2]) && segments[3] == "edit":
                await EditMessageAsync(context, id, segments[2]).ConfigureAwait(false);
                return;
            default:
                await Problem.Write(context, 404, "NOT_FOUND", "Unknown sessions API route.").ConfigureAwait(false);
                return;
        }
    }

    private async Task CreateAsync(HttpContext context, string id)
    {
        var body = await ReadObjectAsync(context, allowEmpty: true).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        if (body["title"] is { } title && (SessionJson.Text(title) is not { } text || text.Length > 1024))
        {
            await Problem.Write(context, 400, "INVALID_TITLE", "title must be a string of at most 1024 characters.").ConfigureAwait(false);
            return;
        }

        var policy = body["newMessagePolicy"];
        if (policy is not null && (policy is not JsonValue value || !value.TryGetValue<string>(out var p) || p is not ("queue" or "interrupt" or "reject")))
        {
            await Problem.Write(context, 400, "INVALID_POLICY", "newMessagePolicy must be queue, interrupt or reject.").ConfigureAwait(false);
            return;
        }

        if (body["notifyUrl"] is { } notify
            && (notify is JsonValue url && url.TryGetValue<string>(out var address)
                ? Subscriptions.WebhookUrlPolicy.Check(address, webhookPolicy.Value.AllowLocalhostWebhooks)
                : "not a string") is { } refusal)
        {
            // Localhost refused is said as such, with the setting that allows it; anything else the same way.
            await Problem.Write(context, 400, "WEBHOOK_URL_REJECTED", refusal == Subscriptions.WebhookUrlPolicy.LocalhostDisabled
                ? refusal
                : "notifyUrl must be an https URL that is not a private or local address.").ConfigureAwait(false);
            return;
        }

        if (body["handoffPolicy"] is { } handoff && (handoff is not JsonValue h || !h.TryGetValue<string>(out var hp) || hp is not ("cancel" or "pause")))
        {
            await Problem.Write(context, 400, "INVALID_POLICY", "handoffPolicy must be cancel or pause.").ConfigureAwait(false);
            return;
        }

        var status = await sessions.CreateAsync(id, body, Problem.StreamLimits(context, streamOptions.Value), context.RequestAborted).ConfigureAwait(false);
        switch (status)
        {
            case CreateStreamStatus.Created:
            case CreateStreamStatus.AlreadyExists:
                await JsonResponse.Write(context, status == CreateStreamStatus.Created ? 201 : 200, new JsonObject
                {
                    ["id"] = id,
                    ["stream"] = $"/v1/stream/{SessionService.StreamPath(id)}",
                }).ConfigureAwait(false);
                return;
            case CreateStreamStatus.LimitReached or CreateStreamStatus.OwnerLimitReached:
                await Problem.StreamLimitReached(context, status, streamOptions.Value)!.ConfigureAwait(false);
                return;
            default:
                await Problem.Write(context, 409, "SESSION_CONFLICT", "A stream that is not a session exists at this session's path.").ConfigureAwait(false);
                return;
        }
    }

    private async Task SnapshotAsync(HttpContext context, string id)
    {
        var snapshot = await sessions.SnapshotAsync(id, context.RequestAborted).ConfigureAwait(false);
        if (snapshot is not { } found)
        {
            await Problem.Write(context, 404, "SESSION_NOT_FOUND", "No session with this id.").ConfigureAwait(false);
            return;
        }

        // The snapshot is a State Protocol message array; continue with the stream from Stream-Next-Offset.
        context.Response.Headers["Stream-Next-Offset"] = StreamOffset.Format(found.Offset);
        var bytes = DurableJson.ToUtf8Bytes(found.Snapshot);
        context.Response.StatusCode = 200;
        context.Response.ContentType = "application/json";
        context.Response.Headers.CacheControl = "no-store";
        context.Response.ContentLength = bytes.Length;
        await context.Response.Body.WriteAsync(bytes, context.RequestAborted).ConfigureAwait(false);
    }

    private async Task PostMessageAsync(HttpContext context, string id)
    {
        var body = await ReadObjectAsync(context, allowEmpty: false).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        if (FieldOfWrongKind(body, "role", "text", "author", "id") is { } field)
        {
            await Problem.Write(context, 400, "INVALID_FIELD", $"{field} must be a string.").ConfigureAwait(false);
            return;
        }

        // An id the client chooses makes the post idempotent: sent again (a retry after a lost answer), the message is
        // answered as before and not stored twice.
        var messageId = Str(body, "id");
        if (messageId is not null && !Identifiers.IsValid(messageId))
        {
            await Problem.Write(context, 400, "INVALID_MESSAGE_ID", "id must be 1 to 128 letters, digits, '-', '_' or '.'.").ConfigureAwait(false);
            return;
        }

        var role = Str(body, "role") ?? "user";
        if (role is not ("user" or "assistant" or "tool" or "system"))
        {
            await Problem.Write(context, 400, "INVALID_ROLE", "role must be user, assistant, tool or system.").ConfigureAwait(false);
            return;
        }

        if (await ReadPartsAsync(context, body).ConfigureAwait(false) is not { } parts)
        {
            return;
        }

        if (!ValidClaimedIdentity(context, Str(body, "author")))
        {
            await Problem.Write(context, 400, "INVALID_AUTHOR", "author must be a participant id: 1 to 128 letters, digits, '-', '_', '.' or ':'.").ConfigureAwait(false);
            return;
        }

        var author = Identity(context, Str(body, "author"));
        // Under the interrupt policy a message stops the runs still going: that asks control, as a cancel does.
        var mayInterrupt = await Auth.AccessControl.AllowsAsync(context, new Auth.StreamResource(SessionService.StreamPath(id)), Auth.Capability.Control).ConfigureAwait(false);
        var result = await sessions.PostMessageAsync(id, new PostMessageRequest(author, parts, new MessageRole(role)) { Id = messageId, MayStop = mayInterrupt }, context.RequestAborted).ConfigureAwait(false);
        await WriteResult(context, result, "messageId", created: true).ConfigureAwait(false);
    }

    /// <summary>A message's content: its text, or its parts. Null, with the problem answered, when neither is valid.</summary>
    private static async Task<IReadOnlyList<MessagePart>?> ReadPartsAsync(HttpContext context, JsonObject body)
    {
        var givenParts = body["parts"];

        // An empty text says nothing for an agent to answer (the AI SDK endpoint refuses it too).
        if (Str(body, "text") is { Length: > 0 } text && givenParts is null)
        {
            return [new TextPart(text)];
        }

        if (body["text"] is null && givenParts is JsonArray given && given.Count > 0 && given.All(p => p is JsonObject part && part["type"] is JsonValue))
        {
            return [.. given.Select(p => MessagePart.FromJson((JsonObject)p!))];
        }

        await Problem.Write(context, 400, "INVALID_MESSAGE", "A message needs text (not empty), or parts (not both): a non-empty array of objects with a type.").ConfigureAwait(false);
        return null;
    }

    private async Task EditMessageAsync(HttpContext context, string id, string messageId)
    {
        var body = await ReadObjectAsync(context, allowEmpty: false).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        if (FieldOfWrongKind(body, "text", "author") is { } field)
        {
            await Problem.Write(context, 400, "INVALID_FIELD", $"{field} must be a string.").ConfigureAwait(false);
            return;
        }

        if (await ReadPartsAsync(context, body).ConfigureAwait(false) is not { } parts)
        {
            return;
        }

        if (!ValidClaimedIdentity(context, Str(body, "author")))
        {
            await Problem.Write(context, 400, "INVALID_AUTHOR", "author must be a participant id: 1 to 128 letters, digits, '-', '_', '.' or ':'.").ConfigureAwait(false);
            return;
        }

        // As for a regenerate: stopping a reply still being written to the message needs control.
        var mayStop = await Auth.AccessControl.AllowsAsync(context, new Auth.StreamResource(SessionService.StreamPath(id)), Auth.Capability.Control).ConfigureAwait(false);
        var result = await sessions.EditMessageAsync(id, messageId, Identity(context, Str(body, "author")), parts, mayStop, context.RequestAborted).ConfigureAwait(false);
        await WriteResult(context, result, "messageId", created: false).ConfigureAwait(false);
    }

    private async Task HandoffAsync(HttpContext context, string id, bool take)
    {
        // No body is needed when access control names the holder.
        var body = await ReadObjectAsync(context, allowEmpty: true).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        if (FieldOfWrongKind(body, "holder") is { } field)
        {
            await Problem.Write(context, 400, "INVALID_HANDOFF", $"{field} must be a string.").ConfigureAwait(false);
            return;
        }

        var holder = Identity(context, Str(body, "holder"));
        if (holder == "anonymous" || !IsParticipant(context, holder))
        {
            await Problem.Write(context, 400, "INVALID_HANDOFF", "A handoff needs holder, the human participant's id.").ConfigureAwait(false);
            return;
        }

        var result = take
            ? await sessions.TakeControlAsync(id, holder, context.RequestAborted).ConfigureAwait(false)
            : await sessions.ReturnControlAsync(id, holder, context.RequestAborted).ConfigureAwait(false);
        await WriteResult(context, result, "holder", created: false).ConfigureAwait(false);
    }

    private async Task HeartbeatAsync(HttpContext context, string id)
    {
        var body = await ReadObjectAsync(context, allowEmpty: false).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        if (FieldOfWrongKind(body, "participantId", "kind", "name") is { } field)
        {
            await Problem.Write(context, 400, "INVALID_PRESENCE", $"{field} must be a string.").ConfigureAwait(false);
            return;
        }

        var participant = AccessControlOn(context) ? Identity(context, null) : Str(body, "participantId");
        var kind = Str(body, "kind") ?? "client";
        if (participant is null || !IsParticipant(context, participant) || kind is not ("client" or "agent" or "human"))
        {
            await Problem.Write(context, 400, "INVALID_PRESENCE", "A heartbeat needs participantId (letters, digits, ':', '-', '_', '.') and kind client, agent or human.").ConfigureAwait(false);
            return;
        }

        if (Str(body, "name") is { Length: > 1024 })
        {
            await Problem.Write(context, 400, "INVALID_PRESENCE", "name must be a string of at most 1024 characters.").ConfigureAwait(false);
            return;
        }

        var result = await presence.HeartbeatAsync(id, participant, kind, Str(body, "name"), context.RequestAborted).ConfigureAwait(false);
        if (result.Status != 200)
        {
            await Problem.Write(context, result.Status, result.Code!, result.Message!).ConfigureAwait(false);
            return;
        }

        await JsonResponse.Write(context, 200, new JsonObject
        {
            ["participantId"] = participant,
            ["timeoutMs"] = (long)presence.Timeout.TotalMilliseconds,
        }).ConfigureAwait(false);
    }

    private async Task ControlAsync(HttpContext context, string id, string runId, string action)
    {
        var body = await ReadObjectAsync(context, allowEmpty: action == "cancel").ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        if (await ControlFieldsAsync(context, body).ConfigureAwait(false) is not { } fields)
        {
            return;
        }

        var (by, controlId) = fields;

        SessionOperationResult result;
        if (action == "cancel")
        {
            result = await sessions.CancelAsync(id, runId, by, controlId, context.RequestAborted).ConfigureAwait(false);
        }
        else
        {
            if (Str(body, "text") is not { Length: > 0 } text)
            {
                await Problem.Write(context, 400, "INVALID_STEER", "A steer needs text.").ConfigureAwait(false);
                return;
            }

            result = await sessions.SteerAsync(id, runId, by, text, controlId, context.RequestAborted).ConfigureAwait(false);
        }

        await WriteResult(context, result, "controlId", created: false).ConfigureAwait(false);
    }

    private async Task RegenerateAsync(HttpContext context, string id, string replyId)
    {
        var body = await ReadObjectAsync(context, allowEmpty: true).ConfigureAwait(false);
        if (body is null || await ControlFieldsAsync(context, body).ConfigureAwait(false) is not { } fields)
        {
            return;
        }

        // Asking needs write (checked with the route); stopping a reply still being written needs control, as a cancel does.
        var mayStop = await Auth.AccessControl.AllowsAsync(context, new Auth.StreamResource(SessionService.StreamPath(id)), Auth.Capability.Control).ConfigureAwait(false);
        var (result, _) = await sessions.RegenerateAsync(id, replyId, fields.By, fields.ControlId, mayStop, context.RequestAborted).ConfigureAwait(false);
        await WriteResult(context, result, "controlId", created: false).ConfigureAwait(false);
    }

    /// <summary>
    /// The fields every control request shares: its own id and who sends it. Null, with the problem answered, when one is
    /// not valid.
    /// </summary>
    private static async Task<(string By, string? ControlId)?> ControlFieldsAsync(HttpContext context, JsonObject body)
    {
        if (FieldOfWrongKind(body, "by", "text", "id") is { } field)
        {
            await Problem.Write(context, 400, "INVALID_FIELD", $"{field} must be a string.").ConfigureAwait(false);
            return null;
        }

        // As for a message: a control id the client chooses makes the request safe to send again after a lost answer.
        var controlId = Str(body, "id");
        if (controlId is not null && !Identifiers.IsValid(controlId))
        {
            await Problem.Write(context, 400, "INVALID_CONTROL_ID", "id must be 1 to 128 letters, digits, '-', '_' or '.'.").ConfigureAwait(false);
            return null;
        }

        if (!ValidClaimedIdentity(context, Str(body, "by")))
        {
            await Problem.Write(context, 400, "INVALID_FIELD", "by must be a participant id: 1 to 128 letters, digits, '-', '_', '.' or ':'.").ConfigureAwait(false);
            return null;
        }

        return (Identity(context, Str(body, "by")), controlId);
    }

    private static Task WriteResult(HttpContext context, SessionOperationResult result, string idName, bool created)
    {
        if (result.Status != 200)
        {
            if (result.Status == 503)
            {
                context.Response.Headers.RetryAfter = "1";
            }

            return Problem.Write(context, result.Status, result.Code!, result.Message!);
        }

        return JsonResponse.Write(context, created ? 201 : 200, new JsonObject
        {
            [idName] = result.Id,
            ["offset"] = StreamOffset.Format(result.Offset),
        });
    }

    private Task<JsonObject?> ReadObjectAsync(HttpContext context, bool allowEmpty)
        => RequestBody.ReadJsonObjectAsync(context, streamOptions.Value.MaxJsonBodyBytes, allowEmpty);

    /// <summary>The acting participant: the token's subject when access control is on, otherwise what the body says.</summary>
    private static string Identity(HttpContext context, string? claimed)
    {
        var current = Auth.AccessControl.Current(context);
        return current.IsAnonymous ? claimed ?? "anonymous" : current.Subject;
    }

    private static bool AccessControlOn(HttpContext context) => !Auth.AccessControl.Current(context).IsAnonymous;

    /// <summary>
    /// Whether <paramref name="id"/> names a participant: under access control, the token's own subject is one whatever
    /// its issuer spells it with (<c>auth0|abc</c>, an email address), as it already is for the messages it posts;
    /// otherwise an id the body gives must be a participant id.
    /// </summary>
    private static bool IsParticipant(HttpContext context, string id)
        => AccessControlOn(context) && id == Auth.AccessControl.Current(context).Subject ? Identifiers.IsSubject(id) : Identifiers.IsParticipant(id);

    /// <summary>
    /// Whether an identity the body claims (an author, who cancels) is one: absent, ignored under access control (the
    /// token names the participant), or a participant id as presence takes it.
    /// </summary>
    private static bool ValidClaimedIdentity(HttpContext context, string? claimed)
        => claimed is null || AccessControlOn(context) || Identifiers.IsParticipant(claimed);

    /// <summary>The first of <paramref name="names"/> present with a value that is neither a string nor null, or null.</summary>
    private static string? FieldOfWrongKind(JsonObject body, params ReadOnlySpan<string> names)
    {
        foreach (var name in names)
        {
            if (body[name] is { } value && Str(body, name) is null)
            {
                return name;
            }
        }

        return null;
    }

    private static string? Str(JsonObject body, string name) => DurableSessions.Sessions.SessionJson.Text(body, name);


}
