using System.Text.Json;
using System.Text.Json.Nodes;
using DurableSessions.AspNetCore.Outbound;
using DurableSessions.AspNetCore.Streams;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DurableSessions.AspNetCore.Subscriptions;

/// <summary>
/// Delivers a subscription's wake: a signed webhook POST through the <see cref="WebhookSender"/>, or wake events
/// appended to a pull-wake subscription's wake stream.
/// </summary>
/// <remarks>Holds no state of its own; thread-safe.</remarks>
internal sealed partial class SubscriptionDelivery(StreamStore store, WebhookSender sender, IOptions<SubscriptionOptions> options, ILogger<SubscriptionDelivery> logger)
{
    private readonly SubscriptionOptions _options = options.Value;

    /// <summary>The webhook request body of the current wake (protocol §6.5).</summary>
    public byte[] WebhookBody(Subscription subscription, List<JsonObject> streams, WebhookSigningKeys keys)
    {
        // The public base URL, when set, holds for every subscription, those created before it was set included.
        var baseUrl = _options.PublicBase ?? subscription.BaseUrl;
        var callbackUrl = $"{baseUrl}{StreamPaths.Root}/{StreamPaths.Reserved}/subscriptions/{Uri.EscapeDataString(subscription.Id)}/callback";
        return DurableJson.ToUtf8Bytes(new JsonObject
        {
            ["subscription_id"] = subscription.Id,
            ["wake_id"] = subscription.WakeId,
            ["generation"] = subscription.Generation,
            ["streams"] = new JsonArray([.. streams]),
            ["callback_url"] = callbackUrl,
            ["callback_token"] = keys.IssueToken(subscription.Id, subscription.Generation, subscription.WakeId!),
        });
    }

    /// <summary>
    /// POSTs a wake to the subscription's webhook, signed with <c>Webhook-Signature</c>. Returns null when the delivery
    /// failed (no 2xx answer), otherwise whether the receiver answered <c>{"done": true}</c>.
    /// </summary>
    public async Task<bool?> SendWebhookAsync(string subscriptionId, string url, byte[] body, WebhookSigningKeys keys, CancellationToken cancellationToken)
    {
        KeyValuePair<string, string>[] headers = [new("Webhook-Signature", keys.SignatureHeader(store.TimeProvider.GetUtcNow().ToUnixTimeSeconds(), body))];
        var outcome = await sender.SendAsync(url, body, headers, _options.WebhookTimeout, cancellationToken).ConfigureAwait(false);
        if (!outcome.IsSuccess)
        {
            Log.WebhookFailed(logger, subscriptionId, outcome.Status, outcome.Failure);
            return null;
        }

        if (outcome.Body.Length == 0)
        {
            return false;
        }

        try
        {
            return JsonNode.Parse(outcome.Body) is JsonObject reply && reply["done"] is JsonValue value && value.TryGetValue<bool>(out var done) && done;
        }
        catch (Exception ex) when (ex is JsonException or ArgumentException or InvalidOperationException)
        {
            // Any reply that is not a well-formed {"done": true} means not done.
            return false;
        }
    }

    /// <summary>
    /// Appends one wake event per stream with pending data to the subscription's wake stream; false (and logged) when the
    /// wake stream refused it.
    /// </summary>
    public async Task<bool> AppendWakeEventsAsync(Subscription subscription, List<JsonObject> streams, CancellationToken cancellationToken)
    {
        var now = store.TimeProvider.GetUtcNow().ToUnixTimeMilliseconds();
        var events = new JsonArray();
        foreach (var stream in streams.Where(s => (bool)s["has_pending"]!))
        {
            events.Add(new JsonObject
            {
                ["type"] = "wake",
                ["subscription_id"] = subscription.Id,
                ["stream"] = (string)stream["path"]!,
                ["generation"] = subscription.Generation,
                ["ts"] = now,
            });
        }

        var payload = DurableJson.ToUtf8Bytes(events);
        if (!JsonFraming.TryFrame(payload, allowEmptyArray: false, out var framed, out _))
        {
            return true;
        }

        var result = await store.AppendAsync(new AppendRequest { Path = subscription.Config.WakeStream!, ContentType = StreamContentType.Json, Data = framed }, cancellationToken).ConfigureAwait(false);
        if (result.Status != AppendStatus.Appended)
        {
            Log.WakeStreamRejected(logger, subscription.Id, subscription.Config.WakeStream!, result.Status);
            return false;
        }

        if (subscription.Config.TrimWakeStream
            && await WakeStreamRetention.TrimAfterAppendAsync(store, subscription.Config.WakeStream!, result.TailPosition, framed.Units, _options.WakeStreamRetention).ConfigureAwait(false) is { } failure)
        {
            Log.WakeStreamTrimFailed(logger, subscription.Id, subscription.Config.WakeStream!, failure);
        }

        return true;
    }

    private static partial class Log
    {
        [LoggerMessage(202, LogLevel.Warning, "Webhook delivery for subscription {Id} failed (status {Status}); retrying with backoff")]
        public static partial void WebhookFailed(ILogger logger, string id, int status, Exception? exception);

        [LoggerMessage(204, LogLevel.Warning, "Subscription {Id} could not write to its wake stream {WakeStream}: {Status}")]
        public static partial void WakeStreamRejected(ILogger logger, string id, string wakeStream, AppendStatus status);

        [LoggerMessage(208, LogLevel.Warning, "Subscription {Id} could not trim its wake stream {WakeStream}; tried again when it has grown by its retention")]
        public static partial void WakeStreamTrimFailed(ILogger logger, string id, string wakeStream, Exception exception);
    }
}
