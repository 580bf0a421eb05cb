using System.Text.Json;
using System.Text.Json.Nodes;
using DurableSessions.AspNetCore.Auth;
using DurableSessions.AspNetCore.Streams;
using Microsoft.AspNetCore.Http;

namespace DurableSessions.AspNetCore.Subscriptions;

/// <summary>How a request under <c>__ds/</c> is authenticated, decided from its exact route.</summary>
internal enum ControlRoute
{
    /// <summary>No such control API (still behind the bearer check, so nothing about it leaks).</summary>
    Unknown,

    /// <summary><c>GET|HEAD jwks.json</c>: the public webhook signing keys.</summary>
    KeySet,

    /// <summary>
    /// <c>POST subscriptions/{id}/callback|ack|release</c>: authenticated by the wake-scoped token the server issued with
    /// the wake or the claim (in <c>Authorization: Bearer</c>), which the handler checks against the subscription's
    /// current generation and wake.
    /// </summary>
    WakeScoped,

    /// <summary>Creating, reading, changing, deleting and claiming subscriptions: a bearer access token with admin on <c>__ds</c>.</summary>
    Managed,
}

/// <summary>
/// HTTP surface of the reserved control APIs under <c>/v1/stream/__ds/</c> (protocol §6–7).
/// </summary>
internal sealed class SubscriptionEndpoints(SubscriptionService service, Microsoft.Extensions.Options.IOptions<DurableStreamsOptions> options)
{
    // Control requests are small; they keep a tighter bound than the other JSON APIs.
    private const int MaxBodyBytes = 256 * 1024;

    /// <summary>Classifies <paramref name="rest"/> (the path after <c>__ds/</c>) by its exact segments, as <see cref="HandleAsync"/> routes it.</summary>
    public static ControlRoute Classify(string rest, string method)
    {
        if (rest == "jwks.json")
        {
            return HttpMethods.IsGet(method) || HttpMethods.IsHead(method) ? ControlRoute.KeySet : ControlRoute.Unknown;
        }

        var segments = rest.Split('/', 4);
        if (segments.Length < 2 || segments[0] != "subscriptions" || !Identifiers.IsValid(segments[1]))
        {
            return ControlRoute.Unknown;
        }

        return segments.Length == 3 && HttpMethods.IsPost(method) && segments[2] is "callback" or "ack" or "release"
            ? ControlRoute.WakeScoped
            : ControlRoute.Managed;
    }

    /// <summary>Handles <paramref name="rest"/>, the path after <c>__ds/</c>.</summary>
    public async Task HandleAsync(HttpContext context, string rest)
    {
        var method = context.Request.Method;
        if (Classify(rest, method) == ControlRoute.KeySet)
        {
            var jwks = service.Keys.JwksDocument();
            context.Response.ContentType = "application/jwk-set+json";
            context.Response.Headers.CacheControl = "public, max-age=300";
            context.Response.ContentLength = jwks.Length;
            if (HttpMethods.IsGet(method))
            {
                await context.Response.Body.WriteAsync(jwks, context.RequestAborted).ConfigureAwait(false);
            }

            return;
        }

        var segments = rest.Split('/', 4);
        if (segments.Length < 2 || segments[0] != "subscriptions" || !Identifiers.IsValid(segments[1]))
        {
            await Problem.Write(context, 404, "NOT_FOUND", "Unknown control API.").ConfigureAwait(false);
            return;
        }

        var id = segments[1];
        var action = segments.Length > 2 ? segments[2] : null;
        switch (action, method)
        {
            case (null, "PUT"):
                await PutAsync(context, id).ConfigureAwait(false);
                return;
            case (null, "GET"):
                await GetAsync(context, id).ConfigureAwait(false);
                return;
            case (null, "DELETE"):
                if (!await service.DeleteAsync(id, context.RequestAborted).ConfigureAwait(false))
                {
                    await NotFound(context).ConfigureAwait(false);
                    return;
                }

                context.Response.StatusCode = 204;
                return;
            case ("streams", "POST") when segments.Length == 3:
                await AddStreamsAsync(context, id).ConfigureAwait(false);
                return;
            case ("streams", "DELETE") when segments.Length == 4:
                if (!await service.RemoveStreamAsync(id, Uri.UnescapeDataString(segments[3]), context.RequestAborted).ConfigureAwait(false))
                {
                    await NotFound(context).ConfigureAwait(false);
                    return;
                }

                context.Response.StatusCode = 204;
                return;
            case ("callback", "POST") when segments.Length == 3:
            case ("ack", "POST") when segments.Length == 3:
                await AckAsync(context, id).ConfigureAwait(false);
                return;
            case ("release", "POST") when segments.Length == 3:
                await ReleaseAsync(context, id).ConfigureAwait(false);
                return;
            case ("claim", "POST") when segments.Length == 3:
                await ClaimAsync(context, id).ConfigureAwait(false);
                return;
            default:
                await Problem.Write(context, 405, "METHOD_NOT_ALLOWED", $"{method} is not supported here.").ConfigureAwait(false);
                return;
        }
    }

    private async Task PutAsync(HttpContext context, string id)
    {
        var body = await ReadJsonObjectAsync(context).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        var type = Str(body, "type");
        if (type is not ("webhook" or "pull-wake"))
        {
            await Invalid(context, "type must be webhook or pull-wake.").ConfigureAwait(false);
            return;
        }

        var pattern = Str(body, "pattern");
        var streams = new List<string>();
        if (body["streams"] is JsonArray array)
        {
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var item in array)
            {
                if (item is not JsonValue value || !value.TryGetValue<string>(out var path) || StreamPaths.Validate(path, 1024) is not null)
                {
                    await Invalid(context, "streams must be an array of stream paths.").ConfigureAwait(false);
                    return;
                }

                if (seen.Add(path))
                {
                    streams.Add(path);
                }
            }

            // A new subscription past the limit is refused before each path's access is checked: nothing would be linked
            // anyway. One that exists is answered as before (confirmed, or a conflict): kept when the limit was lowered.
            if (streams.Count > service.Options.MaxStreamsPerSubscription && await service.GetAsync(id, context.RequestAborted).ConfigureAwait(false) is null)
            {
                await StreamLimit(context).ConfigureAwait(false);
                return;
            }
        }
        else if (body["streams"] is not null)
        {
            await Invalid(context, "streams must be an array of stream paths.").ConfigureAwait(false);
            return;
        }

        if (string.IsNullOrEmpty(pattern) && streams.Count == 0)
        {
            await Invalid(context, "A subscription needs a pattern, streams, or both.").ConfigureAwait(false);
            return;
        }

        if (!string.IsNullOrEmpty(pattern) && CheckPattern(pattern) is { } patternError)
        {
            await Problem.Write(context, 400, "PATTERN_TOO_LARGE", patternError).ConfigureAwait(false);
            return;
        }

        var leaseTtl = 30_000L;
        if (body["lease_ttl_ms"] is JsonValue leaseValue)
        {
            if (!leaseValue.TryGetValue<long>(out leaseTtl) || leaseTtl is < 1_000 or > 600_000)
            {
                await Invalid(context, "lease_ttl_ms must be a whole number from 1000 to 600000.").ConfigureAwait(false);
                return;
            }
        }

        // An extension of the protocol: keep the wake stream to its latest wakes (Subscriptions:WakeStreamRetention).
        // Asked for, never implied, since a trim removes whatever the stream holds. Absent or null is false.
        var trimWakeStream = false;
        if (body["trim_wake_stream"] is { } trim)
        {
            if (trim.GetValueKind() is not (JsonValueKind.True or JsonValueKind.False))
            {
                await Invalid(context, "trim_wake_stream must be true or false.").ConfigureAwait(false);
                return;
            }

            trimWakeStream = trim.GetValue<bool>();
            if (trimWakeStream && type == "webhook")
            {
                await Invalid(context, "trim_wake_stream applies to pull-wake subscriptions only: a webhook subscription has no wake stream.").ConfigureAwait(false);
                return;
            }
        }

        string? webhookUrl = null;
        string? wakeStream = null;
        if (type == "webhook")
        {
            webhookUrl = (body["webhook"] as JsonObject) is { } webhook ? Str(webhook, "url") : null;
            if (WebhookUrlPolicy.Check(webhookUrl, service.Options.AllowLocalhostWebhooks) is { } reason)
            {
                await Problem.Write(context, 400, "WEBHOOK_URL_REJECTED", reason).ConfigureAwait(false);
                return;
            }
        }
        else
        {
            wakeStream = Str(body, "wake_stream");
            if (wakeStream is null || StreamPaths.Validate(wakeStream, 1024) is not null)
            {
                await Invalid(context, "A pull-wake subscription needs wake_stream, the path of a JSON stream.").ConfigureAwait(false);
                return;
            }

            if (StreamPaths.IsReserved(wakeStream))
            {
                await Invalid(context, $"wake_stream cannot be under {StreamPaths.Reserved}/, which holds the control APIs, not streams.").ConfigureAwait(false);
                return;
            }

            // Wake events are appended by the server as they are, past the session rules: never into a session.
            if (Sessions.SessionService.IsSessionPath(wakeStream) || wakeStream == "sessions")
            {
                await Invalid(context, "wake_stream cannot be a session stream (sessions/...).").ConfigureAwait(false);
                return;
            }
        }

        // A subscription reports the paths and offsets of what it covers, and a pull-wake one appends to its wake
        // stream on the creator's behalf: the creator's token must allow the same directly.
        if (!string.IsNullOrEmpty(pattern) && !await AccessControl.AllowsAsync(context, new StreamResource(pattern, IsPattern: true), Capability.Read).ConfigureAwait(false))
        {
            await Forbidden(context, $"The token does not grant read on every stream the pattern {pattern} can match.").ConfigureAwait(false);
            return;
        }

        if (!await AllowsReadOnEach(context, streams).ConfigureAwait(false))
        {
            return;
        }

        if (wakeStream is not null && !await AccessControl.AllowsAsync(context, new StreamResource(wakeStream), Capability.Write).ConfigureAwait(false))
        {
            await Forbidden(context, $"The token does not grant write on the wake stream {wakeStream}.").ConfigureAwait(false);
            return;
        }

        // A trim removes older data, as a delete would: only for a creator who may delete the stream.
        if (trimWakeStream && !await AccessControl.AllowsAsync(context, new StreamResource(wakeStream!), Capability.Admin).ConfigureAwait(false))
        {
            await Forbidden(context, $"trim_wake_stream needs admin on the wake stream {wakeStream}: a trim removes its older data.").ConfigureAwait(false);
            return;
        }

        var config = new SubscriptionConfig
        {
            Type = type,
            Pattern = string.IsNullOrEmpty(pattern) ? null : pattern,
            Streams = streams,
            WebhookUrl = webhookUrl,
            WakeStream = wakeStream,
            TrimWakeStream = trimWakeStream,
            LeaseTtlMs = leaseTtl,
            Description = Str(body, "description"),
        };

        var request = context.Request;
        var baseUrl = $"{request.Scheme}://{request.Host}{request.PathBase}";
        var (status, subscription) = await service.PutAsync(id, config, baseUrl, context.RequestAborted).ConfigureAwait(false);
        switch (status)
        {
            case SubscriptionPutStatus.Conflict:
                await Problem.Write(context, 409, "SUBSCRIPTION_EXISTS", "A subscription with this id and a different configuration exists.").ConfigureAwait(false);
                return;
            case SubscriptionPutStatus.SubscriptionLimit:
                await Problem.Write(context, 403, "SUBSCRIPTION_LIMIT_REACHED", $"This server holds its limit of {service.Options.MaxSubscriptions} subscriptions (Subscriptions:MaxSubscriptions); delete one first.").ConfigureAwait(false);
                return;
            case SubscriptionPutStatus.StreamLimit:
                await StreamLimit(context).ConfigureAwait(false);
                return;
        }

        await JsonResponse.Write(context, status == SubscriptionPutStatus.Created ? 201 : 200, await DescribeAsync(context, subscription!).ConfigureAwait(false)).ConfigureAwait(false);
    }

    private async Task GetAsync(HttpContext context, string id)
    {
        if (await service.GetAsync(id, context.RequestAborted).ConfigureAwait(false) is not { } subscription)
        {
            await NotFound(context).ConfigureAwait(false);
            return;
        }

        await JsonResponse.Write(context, 200, await DescribeAsync(context, subscription).ConfigureAwait(false)).ConfigureAwait(false);
    }

    private async Task AddStreamsAsync(HttpContext context, string id)
    {
        var body = await ReadJsonObjectAsync(context).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        var paths = new List<string>();
        if (body["streams"] is not JsonArray array)
        {
            await Invalid(context, "streams must be an array of stream paths.").ConfigureAwait(false);
            return;
        }

        foreach (var item in array)
        {
            if (item is not JsonValue value || !value.TryGetValue<string>(out var path) || StreamPaths.Validate(path, 1024) is not null)
            {
                await Invalid(context, "streams must be an array of stream paths.").ConfigureAwait(false);
                return;
            }

            paths.Add(path);
        }

        // Refused before each path's access is checked: past the limit nothing would be linked anyway.
        if (paths.Distinct(StringComparer.Ordinal).Count() > service.Options.MaxStreamsPerSubscription)
        {
            await (await service.GetAsync(id, context.RequestAborted).ConfigureAwait(false) is null ? NotFound(context) : StreamLimit(context)).ConfigureAwait(false);
            return;
        }

        if (!await AllowsReadOnEach(context, paths).ConfigureAwait(false))
        {
            return;
        }

        switch (await service.AddStreamsAsync(id, paths, context.RequestAborted).ConfigureAwait(false))
        {
            case SubscriptionAddStatus.NotFound:
                await NotFound(context).ConfigureAwait(false);
                return;
            case SubscriptionAddStatus.StreamLimit:
                await StreamLimit(context).ConfigureAwait(false);
                return;
        }

        context.Response.StatusCode = 204;
    }

    private async Task AckAsync(HttpContext context, string id)
    {
        var body = await ReadJsonObjectAsync(context).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        var acks = new List<(string, string)>();
        if (body["acks"] is JsonArray array)
        {
            foreach (var item in array)
            {
                if (item is not JsonObject ack || Str(ack, "stream") is not { } stream || Str(ack, "offset") is not { } offset)
                {
                    await Invalid(context, "acks must be an array of { stream, offset }.").ConfigureAwait(false);
                    return;
                }

                acks.Add((stream, offset));
            }
        }
        else if (body["acks"] is not null)
        {
            await Invalid(context, "acks must be an array of { stream, offset }.").ConfigureAwait(false);
            return;
        }

        var done = body["done"] is JsonValue doneValue && doneValue.TryGetValue<bool>(out var d) && d;
        var outcome = await service.AckAsync(id, BearerToken(context), Str(body, "wake_id"), Generation(body), acks, done, context.RequestAborted).ConfigureAwait(false);
        await WriteAckOutcome(context, outcome, writeBody: true).ConfigureAwait(false);
    }

    private async Task ReleaseAsync(HttpContext context, string id)
    {
        var body = await ReadJsonObjectAsync(context).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        var outcome = await service.ReleaseAsync(id, BearerToken(context), Str(body, "wake_id"), Generation(body), context.RequestAborted).ConfigureAwait(false);
        await WriteAckOutcome(context, outcome, writeBody: false).ConfigureAwait(false);
    }

    private async Task ClaimAsync(HttpContext context, string id)
    {
        var body = await ReadJsonObjectAsync(context).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        var worker = Str(body, "worker");
        if (string.IsNullOrEmpty(worker))
        {
            await Invalid(context, "worker is required.").ConfigureAwait(false);
            return;
        }

        var outcome = await service.ClaimAsync(id, worker, context.RequestAborted).ConfigureAwait(false);
        var subscription = outcome.Subscription;
        switch (outcome.Status)
        {
            case ClaimStatus.NotFound:
                await NotFound(context).ConfigureAwait(false);
                return;
            case ClaimStatus.WrongType:
                await Problem.Write(context, 409, "NOT_PULL_WAKE", "Only pull-wake subscriptions can be claimed.").ConfigureAwait(false);
                return;
            case ClaimStatus.NothingPending:
                await Problem.Write(context, 409, "NOTHING_PENDING", "The subscription has no pending work to claim.").ConfigureAwait(false);
                return;
            case ClaimStatus.AlreadyClaimed:
                await JsonResponse.Write(context, 409, new JsonObject
                {
                    ["error"] = new JsonObject
                    {
                        ["code"] = "ALREADY_CLAIMED",
                        ["message"] = "Another worker holds the lease.",
                        ["current_holder"] = subscription!.Holder,
                        ["generation"] = subscription.Generation,
                    },
                }).ConfigureAwait(false);
                return;
            default:
                await JsonResponse.Write(context, 200, new JsonObject
                {
                    ["wake_id"] = subscription!.WakeId,
                    ["generation"] = subscription.Generation,
                    ["token"] = service.Keys.IssueToken(subscription.Id, subscription.Generation, subscription.WakeId!),
                    ["streams"] = new JsonArray([.. outcome.Streams!]),
                    ["lease_ttl_ms"] = subscription.Config.LeaseTtlMs,
                }).ConfigureAwait(false);
                return;
        }
    }

    private async Task<JsonObject> DescribeAsync(HttpContext context, Subscription subscription)
    {
        var request = context.Request;
        var streams = await service.DescribeStreamsAsync(subscription, context.RequestAborted).ConfigureAwait(false);
        foreach (var stream in streams)
        {
            stream.Remove("tail_offset");
            stream.Remove("has_pending");
        }

        var config = subscription.Config;
        JsonObject? webhook = null;
        if (config.IsWebhook)
        {
            webhook = new JsonObject
            {
                ["url"] = config.WebhookUrl,
                ["signing"] = new JsonObject
                {
                    ["alg"] = "ed25519",
                    ["kid"] = service.Keys.KeyId,
                    ["jwks_url"] = $"{service.Options.PublicBase ?? $"{request.Scheme}://{request.Host}{request.PathBase}"}{StreamPaths.Root}/{StreamPaths.Reserved}/jwks.json",
                },
            };
        }

        var described = new JsonObject
        {
            ["id"] = subscription.Id,
            ["subscription_id"] = subscription.Id,
            ["type"] = config.Type,
            ["pattern"] = config.Pattern,
            ["streams"] = new JsonArray([.. streams]),
            ["webhook"] = webhook,
            ["wake_stream"] = config.WakeStream,
            ["trim_wake_stream"] = config.WakeStream is null ? null : config.TrimWakeStream,
            ["lease_ttl_ms"] = config.LeaseTtlMs,
            ["created_at"] = ProtocolParsing.FormatRfc3339(subscription.CreatedAt),
            ["status"] = subscription.Status,
            ["description"] = config.Description,
        };
        if (subscription.StreamLimitReached)
        {
            // An extension: streams the pattern matched past Subscriptions:MaxStreamsPerSubscription were left unlinked.
            described["stream_limit_reached"] = true;
        }

        return described;
    }

    private static async Task WriteAckOutcome(HttpContext context, AckOutcome outcome, bool writeBody)
    {
        switch (outcome.Status)
        {
            case 404:
                await NotFound(context).ConfigureAwait(false);
                return;
            case 409:
                await Problem.Write(context, 409, "FENCED", "This wake is no longer current (stale generation, wake id or token).").ConfigureAwait(false);
                return;
            case 400:
                await Problem.Write(context, 400, outcome.Code!, outcome.Code == "INVALID_OFFSET"
                    ? $"The ack of {outcome.Stream} names no offset of this server's (acks take offsets a read or wake returned); nothing was acked."
                    : $"The ack of {outcome.Stream} is beyond the end of that stream; nothing was acked.").ConfigureAwait(false);
                return;
            default:
                if (writeBody)
                {
                    await JsonResponse.Write(context, 200, new JsonObject { ["ok"] = true, ["next_wake"] = outcome.NextWake }).ConfigureAwait(false);
                }
                else
                {
                    context.Response.StatusCode = 204;
                }

                return;
        }
    }

    private Task<JsonObject?> ReadJsonObjectAsync(HttpContext context)
        => RequestBody.ReadJsonObjectAsync(context, Math.Min(MaxBodyBytes, options.Value.MaxJsonBodyBytes), code: "INVALID_SUBSCRIPTION");

    private static string? Str(JsonObject body, string name) => DurableSessions.Sessions.SessionJson.Text(body, name);

    private static long? Generation(JsonObject body)
        => body["generation"] is JsonValue value && value.TryGetValue<long>(out var g) ? g : null;

    private static string? BearerToken(HttpContext context)
    {
        var header = context.Request.Headers.Authorization.ToString();
        return header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header[7..].Trim() : null;
    }


    /// <summary>Why a subscription pattern is refused (past the configured size), or null when it is acceptable.</summary>
    private string? CheckPattern(string pattern)
    {
        var options = service.Options;
        if (pattern.Length > options.MaxPatternLength)
        {
            return $"pattern is longer than {options.MaxPatternLength} characters.";
        }

        var segments = pattern.AsSpan().Count('/') + 1;
        return segments > options.MaxPatternSegments ? $"pattern has more than {options.MaxPatternSegments} segments." : null;
    }

    private static async Task<bool> AllowsReadOnEach(HttpContext context, IEnumerable<string> paths)
    {
        foreach (var path in paths)
        {
            if (!await AccessControl.AllowsAsync(context, new StreamResource(path), Capability.Read).ConfigureAwait(false))
            {
                await Forbidden(context, $"The token does not grant read on {path}.").ConfigureAwait(false);
                return false;
            }
        }

        return true;
    }

    private static Task Forbidden(HttpContext context, string message) => Problem.Write(context, 403, "FORBIDDEN", message);

    private Task StreamLimit(HttpContext context)
        => Problem.Write(context, 403, "SUBSCRIPTION_STREAM_LIMIT", $"A subscription links at most {service.Options.MaxStreamsPerSubscription} streams (Subscriptions:MaxStreamsPerSubscription); nothing was changed. Narrow its pattern or streams.");

    private static Task Invalid(HttpContext context, string message) => Problem.Write(context, 400, "INVALID_SUBSCRIPTION", message);

    private static Task NotFound(HttpContext context) => Problem.Write(context, 404, "SUBSCRIPTION_NOT_FOUND", "No subscription with this id.");

}
