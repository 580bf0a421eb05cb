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

    public long LeaseTtlMs { get; init; } = 30_000;

    public string? Description { get; init; }

    public bool IsWebhook => Type == "webhook";

    /// <summary>A hash of the normalized configuration, compared for idempotent re-confirmation.</summary>
    public string Hash()
    {
        var normalized = string.Join('\n', Type, Pattern ?? string.Empty, string.Join('\u001f', Streams.Order(StringComparer.Ordinal)),
            WebhookUrl ?? string.Empty, WakeStream ?? string.Empty, LeaseTtlMs, Description ?? string.Empty);
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

    public string? Holder { get; set; }

    public DateTimeOffset? LeaseExpiresAt { get; set; }

    public string Status { get; set; } = "active";

    public int FailedAttempts { get; set; }

    public DateTimeOffset? NextAttemptAt { get; set; }

    [JsonIgnore]
    public bool Deleted { get; set; }

    public byte[] Serialize() => JsonSerializer.SerializeToUtf8Bytes(this);

    public static Subscription? Deserialize(byte[] data) => JsonSerializer.Deserialize<Subscription>(data);
}

/// <summary>Glob matching over stream paths: <c>*</c> matches one segment, <c>**</c> zero or more.</summary>
internal static class PathGlob
{
    public static bool IsMatch(string pattern, string path)
        => Match(pattern.Split('/'), 0, path.Split('/'), 0);

    private static bool Match(string[] pattern, int pi, string[] path, int si)
    {
        while (true)
        {
            if (pi == pattern.Length)
            {
                return si == path.Length;
            }

            var segment = pattern[pi];
            if (segment == "**")
            {
                for (var skip = si; skip <= path.Length; skip++)
                {
                    if (Match(pattern, pi + 1, path, skip))
                    {
                        return true;
                    }
                }

                return false;
            }

            if (si == path.Length || !SegmentMatches(segment, path[si]))
            {
                return false;
            }

            pi++;
            si++;
        }
    }

    private static bool SegmentMatches(string pattern, string segment)
    {
        if (pattern == "*")
        {
            return true;
        }

        if (!pattern.Contains('*', StringComparison.Ordinal))
        {
            return string.Equals(pattern, segment, StringComparison.Ordinal);
        }

        // A '*' inside a segment matches any run of characters within that segment.
        var parts = pattern.Split('*');
        if (!segment.StartsWith(parts[0], StringComparison.Ordinal) || !segment.EndsWith(parts[^1], StringComparison.Ordinal))
        {
            return false;
        }

        var at = parts[0].Length;
        for (var i = 1; i < parts.Length - 1; i++)
        {
            var found = segment.IndexOf(parts[i], at, StringComparison.Ordinal);
            if (found < 0)
            {
                return false;
            }

            at = found + parts[i].Length;
        }

        return at <= segment.Length - parts[^1].Length;
    }
}
