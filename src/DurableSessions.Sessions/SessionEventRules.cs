using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace DurableSessions.Sessions;

/// <summary>Who appends events to a session stream directly (not through the sessions API).</summary>
/// <param name="Subject">The token's subject, or null when the server runs open (no identities to check).</param>
/// <param name="MayControl">Whether the writer holds <c>control</c> on the session.</param>
public sealed record SessionWriter(string? Subject, bool MayControl)
{
    /// <summary>A writer on a server without access control: identities are taken as written.</summary>
    public static SessionWriter Open { get; } = new(null, MayControl: true);
}

/// <summary>Why a session event was refused: an HTTP status, a stable code and a message naming the problem.</summary>
public sealed record SessionEventRejection(int Status, string Code, string Message)
{
    internal static SessionEventRejection Invalid(int index, string problem) => new(400, "INVALID_EVENT", $"Event {index}: {problem}");

    internal static SessionEventRejection Forbidden(int index, string code, string problem) => new(403, code, $"Event {index}: {problem}");
}

/// <summary>
/// The rules every event of a session stream must meet: its shape (checked for every writer and every reader) and who
/// may write it (checked on direct appends to <c>/v1/stream/sessions/{id}</c> and on raw creates under <c>sessions/</c>).
/// </summary>
/// <remarks>
/// <para>Shape: a State Protocol change message (<c>type</c> and <c>key</c> strings, <c>headers.operation</c> insert,
/// update or delete, <c>value</c> an object for insert and update), nested at most <see cref="MaxDepth"/> deep, with the
/// fields of the known types (see <c>docs/sessions.md</c>) of the right JSON kind. Control messages (<c>reset</c> and
/// the like) are not events.</para>
/// <para>Writers: <c>session</c>, <c>presence</c> and <c>handoff</c> events, deletes of runs and controls, and runs set
/// <c>cancelled</c> or <c>paused</c> are the server's own (written by the sessions API). With access control on, the
/// identity fields (<c>message.author</c>, <c>run.agent</c>, <c>control.by</c>) must be the writer's subject, a message or
/// run can be changed (and a message streamed into) only by the participant who wrote it, and controls need
/// <c>control</c>. Raw events are stored exactly as sent, so a forged identity is refused, never rewritten.</para>
/// <para>Stateless and thread-safe.</para>
/// </remarks>
public static class SessionEventRules
{
    /// <summary>How deep an event may nest (the event object is level 1).</summary>
    public const int MaxDepth = JsonMessageLimits.MaxDepth;

    /// <summary>The longest <c>key</c> (and <c>type</c>), in characters.</summary>
    public const int MaxKeyLength = 256;

    private static readonly string[] Roles = ["user", "assistant", "tool", "system"];
    private static readonly string[] MessageStatuses = ["streaming", "complete", "cancelled", "failed", "interrupted", "paused"];
    private static readonly string[] RunStatuses = ["started", "finished", "cancelled", "failed", "interrupted", "paused"];
    private static readonly string[] ControlActions = ["cancel", "steer", "pause", "regenerate"];
    private static readonly string[] PresenceKinds = ["client", "agent", "human"];
    private static readonly string[] PresenceStatuses = ["joined", "left"];
    private static readonly string[] HolderKinds = ["agent", "human"];
    private static readonly string[] MessagePolicies = ["queue", "interrupt", "reject"];
    private static readonly string[] HandoffPolicies = ["cancel", "pause"];

    /// <summary>
    /// Checks a batch of events a writer appends to a session whose current state is <paramref name="state"/>.
    /// Returns null when every event may be written, else the first refusal.
    /// </summary>
    /// <remarks>Events earlier in the batch count as written for the ones after them (a run and its message in one append).</remarks>
    public static SessionEventRejection? CheckAppend(SessionState state, IEnumerable<JsonNode?> events, SessionWriter writer)
        => CheckAppend(state, events, writer, framed: false);

    /// <inheritdoc cref="CheckAppend(SessionState, IEnumerable{JsonNode?}, SessionWriter)"/>
    /// <param name="state">The session's current state.</param>
    /// <param name="events">The events appended.</param>
    /// <param name="writer">Who appends them.</param>
    /// <param name="framed">
    /// Whether the events were parsed from a body <c>JsonFraming.TryFrame</c> accepted, which has checked that it is
    /// valid UTF-8, that no event nests deeper than <see cref="MaxDepth"/> and that every escaped string decodes. The
    /// walk of every node that checks the same (and decodes every string, a string allocated per field) is then skipped.
    /// </param>
    internal static SessionEventRejection? CheckAppend(SessionState state, IEnumerable<JsonNode?> events, SessionWriter writer, bool framed)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(events);
        ArgumentNullException.ThrowIfNull(writer);
        var batch = new Dictionary<(string, string), JsonObject>();
        bool Lookup(string type, string key, string field, out string? value)
        {
            if (batch.TryGetValue((type, key), out var pending))
            {
                value = Str(pending, field);
                return true;
            }

            return state.TryPeekText(type, key, field, out value);
        }

        var i = -1;
        foreach (var node in events)
        {
            i++;
            if (Validate(node, strict: true, walk: !framed) is { } problem)
            {
                return SessionEventRejection.Invalid(i, problem);
            }

            var message = (JsonObject)node!;
            if (Authorize(i, message, writer, Lookup) is { } refused)
            {
                return refused;
            }

            if (CheckUserMessage(i, state, message, Lookup) is { } held)
            {
                return held;
            }

            if (Str(message, "type") is { } type && Str(message, "key") is { } key && message["value"] is JsonObject value
                && Str((JsonObject)message["headers"]!, "operation") is "insert" or "update")
            {
                batch[(type, key)] = value;
            }
        }

        return null;
    }

    /// <summary>
    /// Checks a batch of plain delta inserts (<see cref="SessionDeltas"/>) a writer appends: the same decision
    /// <see cref="CheckAppend(SessionState, IEnumerable{JsonNode?}, SessionWriter)"/> reaches for those events.
    /// </summary>
    internal static SessionEventRejection? CheckDeltas(SessionState state, IReadOnlyList<DeltaChange> deltas, SessionWriter writer)
    {
        if (writer.Subject is null)
        {
            return null;
        }

        for (var i = 0; i < deltas.Count; i++)
        {
            var exists = state.TryPeekText(SessionEventTypes.Message, deltas[i].MessageId, "author", out var author);
            var run = exists ? default : RunOf(state.TryPeekText, deltas[i].RunId);
            if (AuthorizeDelta(i, writer.Subject, exists, author, deltas[i].RunId, run.Status, run.Agent) is { } refused)
            {
                return refused;
            }
        }

        return null;
    }

    // The status and agent of run runId (null when there is none), read only for a delta into a message that is gone.
    private static (string? Status, string? Agent) RunOf(EntityLookup lookup, string? runId)
    {
        string? status = null, agent = null;
        if (runId is not null)
        {
            lookup(SessionEventTypes.Run, runId, "status", out status);
            lookup(SessionEventTypes.Run, runId, "agent", out agent);
        }

        return (status, agent);
    }

    // Text streams only into a message the writer wrote (when identities are checked). A message gone with its run
    // stopped (taken out by an edit of an earlier one) answers the run's own agent as the fence does, so it knows it was
    // stopped.
    private static SessionEventRejection? AuthorizeDelta(int index, string? subject, bool exists, string? author, string? runId, string? runStatus, string? runAgent)
        => subject is null ? null
            : !exists && SessionRules.IsFenced(runStatus) && runAgent == subject
                ? new SessionEventRejection(409, SessionRejection.RunCancelled, $"Run {runId} was cancelled; nothing more is accepted for it.")
            : !exists || author != subject
                ? SessionEventRejection.Forbidden(index, "NOT_OWNER", "deltas can only stream into a message the writer wrote.")
                : null;

    /// <summary>Whether a stored event can be materialized: its shape is sound (known values are not enforced, so older data still reads).</summary>
    public static bool IsReadable(JsonNode? message) => Validate(message, strict: false) is null;

    /// <summary>
    /// <see cref="IsReadable"/> for an event parsed from text that passed <see cref="JsonMessageLimits.TryValidate"/>, by a
    /// parse that refused duplicate names: its depth, strings and names are known good, so only its shape is checked.
    /// </summary>
    internal static bool IsReadableParsed(JsonNode? message) => Validate(message, strict: false, walk: false) is null;

    /// <summary>
    /// Checks an event's shape. <paramref name="strict"/> also requires the known types' mandatory fields and known
    /// values (statuses, roles, policies); without it only the JSON kinds are checked, which is what readers rely on.
    /// Returns null when sound, else the problem.
    /// </summary>
    public static string? Validate(JsonNode? node, bool strict) => Validate(node, strict, walk: true);

    private static string? Validate(JsonNode? node, bool strict, bool walk)
    {
        try
        {
            return ValidateCore(node, strict, walk);
        }
        catch (Exception ex) when (ex is InvalidOperationException or JsonException or FormatException or ArgumentException or DecoderFallbackException)
        {
            // Invalid UTF-8 or a lone surrogate in a string or name: System.Text.Json refuses to decode it.
            return "contains text that is not valid UTF-8.";
        }
    }

    private static string? ValidateCore(JsonNode? node, bool strict, bool walk)
    {
        if (node is not JsonObject message)
        {
            return "session events must be JSON objects (State Protocol change messages).";
        }

        if (walk && !WithinDepth(message, 1))
        {
            return $"events may nest at most {MaxDepth} levels deep.";
        }

        if (message["headers"] is not JsonObject headers)
        {
            return "headers must be an object with operation insert, update or delete.";
        }

        if (headers.ContainsKey("control"))
        {
            return "control messages (headers.control) are not session events.";
        }

        if (Str(headers, "operation") is not ("insert" or "update" or "delete") || !IsStringOrAbsent(headers, "timestamp"))
        {
            return "headers.operation must be insert, update or delete (and headers.timestamp a string).";
        }

        if (Str(message, "type") is not { Length: > 0 and <= MaxKeyLength } type)
        {
            return $"type must be a string of 1 to {MaxKeyLength} characters.";
        }

        if (Str(message, "key") is not { Length: > 0 and <= MaxKeyLength })
        {
            return $"key must be a string of 1 to {MaxKeyLength} characters.";
        }

        if (Str(headers, "operation") == "delete")
        {
            return null;
        }

        if (message["value"] is not JsonObject value)
        {
            return "value must be an object for insert and update.";
        }

        return type switch
        {
            SessionEventTypes.Message => CheckMessage(message, value, strict),
            SessionEventTypes.Delta => CheckDelta(value, strict),
            SessionEventTypes.Run => CheckRun(message, value, strict),
            SessionEventTypes.Control => CheckControl(message, value, strict),
            SessionEventTypes.Presence => Fields(value, strict, PresenceFields),
            SessionEventTypes.Handoff => Str(message, "key") != "lease" ? "a handoff's key must be lease." : Fields(value, strict, HandoffFields),
            SessionEventTypes.Session => Str(message, "key") != "session" ? "a session event's key must be session." : Fields(value, strict, SessionFields),
            _ => null,
        };
    }

    private static string? CheckMessage(JsonObject message, JsonObject value, bool strict)
    {
        if (Fields(value, strict, MessageFields) is { } problem)
        {
            return problem;
        }

        if (strict && Str(value, "id") is { } id && id != Str(message, "key"))
        {
            return "a message's id must equal its key.";
        }

        if (value["parts"] is null)
        {
            return null;
        }

        if (value["parts"] is not JsonArray parts || parts.Any(p => p is not JsonObject part || Str(part, "type") is null || !IsStringOrAbsent(part, "text")))
        {
            return "message.parts must be an array of objects with a string type (and text, if any, a string).";
        }

        return null;
    }

    private static string? CheckDelta(JsonObject value, bool strict)
    {
        if (Fields(value, strict, DeltaFields) is { } problem)
        {
            return problem;
        }

        if (value["part"] is { } part && (part is not JsonValue number || !number.TryGetValue<int>(out var index) || index is < 0 or > 10_000))
        {
            return "delta.part must be a whole number from 0 to 10000.";
        }

        return null;
    }

    private static string? CheckRun(JsonObject message, JsonObject value, bool strict)
    {
        if (Fields(value, strict, RunFields) is { } problem)
        {
            return problem;
        }

        return strict && Str(value, "id") is { } id && id != Str(message, "key") ? "a run's id must equal its key." : null;
    }

    private static string? CheckControl(JsonObject message, JsonObject value, bool strict)
    {
        if (Fields(value, strict, ControlFields) is { } problem)
        {
            return problem;
        }

        return strict && Str(value, "id") is { } id && id != Str(message, "key") ? "a control's id must equal its key." : null;
    }

    // The fields each entity type may hold, made once rather than as a new array for every event checked.
    private static readonly (string Name, string[]? Known, bool Required)[] PresenceFields = [("id", null, false), ("kind", PresenceKinds, true), ("name", null, false), ("status", PresenceStatuses, true), ("lastSeen", null, false)];
    private static readonly (string Name, string[]? Known, bool Required)[] HandoffFields = [("holder", null, false), ("kind", HolderKinds, true), ("since", null, false)];
    private static readonly (string Name, string[]? Known, bool Required)[] SessionFields = [("id", null, false), ("newMessagePolicy", MessagePolicies, false), ("handoffPolicy", HandoffPolicies, false), ("notifyUrl", null, false), ("createdAt", null, false)];
    private static readonly (string Name, string[]? Known, bool Required)[] MessageFields = [("id", null, false), ("role", Roles, true), ("author", null, false), ("runId", null, false), ("status", MessageStatuses, false), ("routedTo", null, false), ("createdAt", null, false), ("editedAt", null, false), ("error", null, false)];
    private static readonly (string Name, string[]? Known, bool Required)[] DeltaFields = [("messageId", null, true), ("text", null, true), ("partType", null, false), ("at", null, false)];
    private static readonly (string Name, string[]? Known, bool Required)[] RunFields = [("id", null, false), ("agent", null, false), ("messageId", null, false), ("trigger", null, false), ("status", RunStatuses, true), ("startedAt", null, false), ("endedAt", null, false), ("finishReason", null, false), ("cancelledBy", null, false), ("error", null, false)];
    private static readonly (string Name, string[]? Known, bool Required)[] ControlFields = [("id", null, false), ("action", ControlActions, true), ("runId", null, true), ("by", null, false), ("text", null, false), ("reason", null, false), ("status", null, false), ("createdAt", null, false)];

    /// <summary>
    /// Checks fields that must be strings (or null) when present. In strict mode, required ones must be present and ones
    /// with known values must have one of them.
    /// </summary>
    private static string? Fields(JsonObject value, bool strict, params (string Name, string[]? Known, bool Required)[] fields)
    {
        foreach (var (name, known, required) in fields)
        {
            if (!IsStringOrAbsent(value, name))
            {
                return $"{name} must be a string.";
            }

            if (!strict)
            {
                continue;
            }

            var text = Str(value, name);
            if (required && text is null)
            {
                return known is null ? $"{name} is required." : $"{name} is required: {string.Join(", ", known)}.";
            }

            if (known is not null && text is not null && Array.IndexOf(known, text) < 0)
            {
                return $"{name} must be one of {string.Join(", ", known)}.";
            }
        }

        return null;
    }

    private static SessionEventRejection? Authorize(int index, JsonObject message, SessionWriter writer, EntityLookup lookup)
    {
        var type = Str(message, "type")!;
        var key = Str(message, "key")!;
        var operation = Str((JsonObject)message["headers"]!, "operation")!;
        var value = message["value"] as JsonObject;
        var subject = writer.Subject;
        switch (type)
        {
            case SessionEventTypes.Session:
            case SessionEventTypes.Presence:
            case SessionEventTypes.Handoff:
                return SessionEventRejection.Forbidden(index, "SERVER_OWNED_EVENT", $"{type} events are written by the server; use the sessions API (/v1/sessions/{{id}}).");
            case SessionEventTypes.Run:
                if (operation == "delete")
                {
                    return SessionEventRejection.Forbidden(index, "SERVER_OWNED_EVENT", "runs cannot be deleted.");
                }

                if (Str(value!, "status") is "cancelled" or "paused")
                {
                    return SessionEventRejection.Forbidden(index, "SERVER_OWNED_EVENT", "a run is cancelled or paused through the sessions API (runs/{id}/cancel, handoff), which fences it.");
                }

                if (subject is not null)
                {
                    if (Str(value!, "agent") != subject)
                    {
                        return SessionEventRejection.Forbidden(index, "IDENTITY_MISMATCH", $"run.agent must be the token's subject ({subject}).");
                    }

                    if (lookup(SessionEventTypes.Run, key, "agent", out var owner) && owner != subject)
                    {
                        return SessionEventRejection.Forbidden(index, "NOT_OWNER", $"run {key} belongs to another participant.");
                    }

                    // A run's reply is its agent's own message: a cancel or pause of the run rewrites that message's status,
                    // so a run naming someone else's message would let its writer have that message rewritten.
                    if (Str(value!, "messageId") is { } replyId && lookup(SessionEventTypes.Message, replyId, "author", out var replyAuthor) && replyAuthor != subject)
                    {
                        return SessionEventRejection.Forbidden(index, "NOT_OWNER", $"message {replyId} belongs to another participant: a run's reply is its agent's own message.");
                    }
                }

                return null;
            case SessionEventTypes.Message:
                if (subject is null)
                {
                    return null;
                }

                if (lookup(SessionEventTypes.Message, key, "author", out var author) && author != subject)
                {
                    return SessionEventRejection.Forbidden(index, "NOT_OWNER", $"message {key} belongs to another participant.");
                }

                if (operation != "delete")
                {
                    if (Str(value!, "author") != subject)
                    {
                        return SessionEventRejection.Forbidden(index, "IDENTITY_MISMATCH", $"message.author must be the token's subject ({subject}).");
                    }

                    if (Str(value!, "runId") is { } runId && lookup(SessionEventTypes.Run, runId, "agent", out var runOwner) && runOwner != subject)
                    {
                        return SessionEventRejection.Forbidden(index, "NOT_OWNER", $"run {runId} belongs to another participant.");
                    }
                }

                return null;
            case SessionEventTypes.Delta:
                if (operation == "delete")
                {
                    return null;
                }

                var exists = lookup(SessionEventTypes.Message, Str(value!, "messageId")!, "author", out var writtenBy);
                var deltaRun = Str(value!, "runId");
                var run = exists ? default : RunOf(lookup, deltaRun);
                return AuthorizeDelta(index, subject, exists, writtenBy, deltaRun, run.Status, run.Agent);
            case SessionEventTypes.Control:
                if (operation == "delete")
                {
                    return SessionEventRejection.Forbidden(index, "SERVER_OWNED_EVENT", "controls cannot be deleted.");
                }

                if (Str(value!, "action") == "regenerate")
                {
                    // Agents act on it: only the sessions API, which checks which reply may be written again, writes one.
                    return SessionEventRejection.Forbidden(index, "SERVER_OWNED_EVENT", "a reply is asked to be written again through the sessions API (messages/{id}/regenerate).");
                }

                if (!writer.MayControl)
                {
                    return SessionEventRejection.Forbidden(index, "FORBIDDEN", "control events need the control capability.");
                }

                return subject is not null && Str(value!, "by") != subject
                    ? SessionEventRejection.Forbidden(index, "IDENTITY_MISMATCH", $"control.by must be the token's subject ({subject}).")
                    : null;
            default:
                return null;
        }
    }

    private static bool WithinDepth(JsonNode node, int depth)
    {
        // Counted as framing counts on append (JsonMessageLimits.TryValidate): objects and arrays nest at most MaxDepth
        // levels, the event itself the first; a value inside the deepest of them is within it.
        if (depth > MaxDepth && node is JsonObject or JsonArray)
        {
            return false;
        }

        switch (node)
        {
            case JsonObject obj:
                foreach (var (name, child) in obj)
                {
                    _ = name.Length;
                    if (child is not null && !WithinDepth(child, depth + 1))
                    {
                        return false;
                    }
                }

                return true;
            case JsonArray array:
                foreach (var child in array)
                {
                    if (child is not null && !WithinDepth(child, depth + 1))
                    {
                        return false;
                    }
                }

                return true;
            default:
                // Decoding every string here finds invalid UTF-8 and lone surrogates before anything else reads them.
                if (node.GetValueKind() == JsonValueKind.String)
                {
                    _ = node.GetValue<string>();
                }

                return true;
        }
    }

    private static bool IsStringOrAbsent(JsonObject obj, string name)
        => obj[name] is null || obj[name]!.GetValueKind() == JsonValueKind.String;

    private static string? Str(JsonObject obj, string name) => SessionJson.Text(obj, name);

    // Whether an entity exists (written earlier in the batch, or in the state), with one string field of its value.
    private delegate bool EntityLookup(string type, string key, string field, out string? value);

    /// <summary>
    /// A new user message appended directly meets what the sessions API does with one: while a human holds the session,
    /// another participant's message is that human's to answer (it names them in <c>routedTo</c>, or the agents would
    /// answer it after the hand-back); under the <c>reject</c> policy none is taken while a run is active.
    /// </summary>
    private static SessionEventRejection? CheckUserMessage(int index, SessionState state, JsonObject message, EntityLookup lookup)
    {
        // An update of a key the session does not hold stores a new message as an insert does.
        if (Str(message, "type") != SessionEventTypes.Message || Str((JsonObject)message["headers"]!, "operation") is not ("insert" or "update")
            || message["value"] is not JsonObject value || Str(value, "role") != "user" || Str(message, "key") is not { } key)
        {
            return null;
        }

        if (lookup(SessionEventTypes.Message, key, "role", out _))
        {
            // A message already held keeps whom it was routed to: dropping routedTo would hand it to the agents.
            lookup(SessionEventTypes.Message, key, "routedTo", out var routed);
            return routed is not null && Str(value, "routedTo") != routed
                ? new SessionEventRejection(409, "NOT_ROUTED", $"Event {index}: the message is routed to {routed}, who answers it; an update keeps its routedTo.")
                : null;
        }

        if (state.HumanHolder is { } human && Str(value, "author") != human && Str(value, "routedTo") != human)
        {
            return new SessionEventRejection(409, "NOT_ROUTED", $"Event {index}: {human} holds this session, so a user message from another participant is theirs to answer: it names them in routedTo, as the sessions API routes it.");
        }

        if ((state.Session?.NewMessagePolicy ?? NewMessagePolicy.Queue) == NewMessagePolicy.Reject && state.ActiveRun is { } active)
        {
            return new SessionEventRejection(409, SessionRejection.RunActive, $"Event {index}: run {active.Id} is still running; this session rejects new messages until it ends.");
        }

        return null;
    }
}

/// <summary>Reads session event fields without throwing on values of an unexpected kind.</summary>
internal static class SessionJson
{
    /// <summary>The string value of <paramref name="node"/>, or null when it is absent or not a string.</summary>
    public static string? Text(JsonNode? node)
    {
        if (node is not JsonValue value || value.GetValueKind() != JsonValueKind.String)
        {
            return null;
        }

        try
        {
            return value.GetValue<string>();
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>The string field <paramref name="name"/> of <paramref name="obj"/>, or null when absent or not a string.</summary>
    public static string? Text(JsonNode? obj, string name) => obj is JsonObject o ? Text(o[name]) : null;

    /// <summary>
    /// The id of the entity a change message writes: its value's <c>id</c>, or its key when the value leaves the id out
    /// (messages, runs and controls are keyed by their id); null for a change without a value (a delete).
    /// </summary>
    public static string? EntityId(JsonNode? message)
        => message is JsonObject o && o["value"] is JsonObject value ? Text(value, "id") ?? Text(o, "key") : null;

    /// <summary>The whole-number field <paramref name="name"/> of <paramref name="obj"/>, or null.</summary>
    public static int? Number(JsonNode? obj, string name)
        => obj is JsonObject o && o[name] is JsonValue value && value.GetValueKind() == JsonValueKind.Number && value.TryGetValue<int>(out var n) ? n : null;
}
