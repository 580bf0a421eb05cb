using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace DurableSessions.AspNetCore.Subscriptions;

/// <summary>The configuration of a subscription as a client declares it (protocol §6.2).</summary>
internal sealed record SubscriptionConfig
{
    public required string Type { get; init; }

    public string? Pattern { get; init; }

    public IReadOnlyList<string> Streams { get; init; } = [];

    public string? WebhookUrl { get; init; }

    public string? WakeStream { get; init; }

    /// <summary>
    /// Whether the server keeps the wake stream to its latest wakes (<see cref="SubscriptionOptions.WakeStreamRetention"/>),
    /// as the client asked with <c>trim_wake_stream</c>. Never implied, since a trim removes whatever the stream holds; and
    /// accepted only from a creator who may delete the wake stream (<c>admin</c> on it).
    /// </summary>
    public bool TrimWakeStream { get; init; }

    public long LeaseTtlMs { get; init; } = 30_000;

    public string? Description { get; init; }

    public bool IsWebhook => Type == "webhook";

    /// <summary>A hash of the normalized configuration, compared for idempotent re-confirmation.</summary>
    public string Hash()
    {
        var normalized = string.Join('\n', Type, Pattern ?? string.Empty, string.Join('\u001f', Streams.Order(StringComparer.Ordinal)),
            WebhookUrl ?? string.Empty, WakeStream ?? string.Empty, LeaseTtlMs, Description ?? string.Empty);

        // Marked only when asked for, so that the hashes stored before trim_wake_stream existed still match; in front,
        // where no type can be confused with it.
        if (TrimWakeStream)
        {
            normalized = "trim_wake_stream\n" + normalized;
        }

        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(normalized)));
    }
}

/// <summary>One stream linked to a subscription and its cursor.</summary>
internal sealed class SubscriptionLink
{
    public bool Explicit { get; set; }

    public bool Glob { get; set; }

    /// <summary>The last processed position, inclusive of everything before it.</summary>
    public long AckedPosition { get; set; }

    /// <summary>
    /// The id of the stream last read at the path (null until it is read; links stored by earlier versions have none), so
    /// that a stream deleted and created again there is told apart from the one acked.
    /// </summary>
    public long? StreamId { get; set; }
}

/// <summary>The durable state of a subscription. Mutated only under the service's lock.</summary>
internal sealed class Subscription
{
    public required string Id { get; init; }

    public required SubscriptionConfig Config { get; set; }

    public required string ConfigHash { get; set; }

    public required string BaseUrl { get; set; }

    public DateTimeOffset CreatedAt { get; init; }

    public Dictionary<string, SubscriptionLink> Links { get; init; } = new(StringComparer.Ordinal);

    public long Generation { get; set; }

    /// <summary>The wake in flight, if any.</summary>
    public string? WakeId { get; set; }

    /// <summary>The tails included in the current wake's snapshot (auto-acked by a synchronous webhook "done").</summary>
    public Dictionary<string, long>? WakeSnapshot { get; set; }

    /// <summary>
    /// The ids of the streams the current wake's snapshot saw at their paths (those that existed): an ack of a path whose
    /// stream has been deleted, and perhaps created again, since is moot. Absent in wakes stored by earlier versions.
    /// </summary>
    public Dictionary<string, long>? WakeStreamIds { get; set; }

    public string? Holder { get; set; }

    public DateTimeOffset? LeaseExpiresAt { get; set; }

    public string Status { get; set; } = "active";

    public int FailedAttempts { get; set; }

    public DateTimeOffset? NextAttemptAt { get; set; }

    /// <summary>
    /// Whether a stream the pattern matched was left unlinked because the subscription links
    /// <see cref="SubscriptionOptions.MaxStreamsPerSubscription"/> streams already. Stays set once set.
    /// </summary>
    public bool StreamLimitReached { get; set; }

    [JsonIgnore]
    public bool Deleted { get; set; }


    public byte[] Serialize() => JsonSerializer.SerializeToUtf8Bytes(this);

    public static Subscription? Deserialize(byte[] data) => JsonSerializer.Deserialize<Subscription>(data);
}
