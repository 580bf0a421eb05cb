namespace DurableSessions.AspNetCore.Subscriptions;

/// <summary>Settings of subscriptions. Bound from the <c>Subscriptions</c> configuration section.</summary>
public sealed class SubscriptionOptions
{
    /// <summary>
    /// Whether webhooks and session notifications may target <c>http://localhost</c> and <c>http://127.0.0.x</c>
    /// (development), and so connect to loopback addresses. Private and special-purpose addresses are refused either way.
    /// Default true; set it to false in production.
    /// </summary>
    public bool AllowLocalhostWebhooks { get; set; } = true;

    /// <summary>How long one webhook delivery may take. Default 10 seconds.</summary>
    public TimeSpan WebhookTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>The longest subscription pattern accepted, in characters; longer gets 400 <c>PATTERN_TOO_LARGE</c>. Default 1024.</summary>
    public int MaxPatternLength { get; set; } = 1024;

    /// <summary>The most segments in a subscription pattern; more gets 400 <c>PATTERN_TOO_LARGE</c>. Default 32.</summary>
    public int MaxPatternSegments { get; set; } = 32;

    /// <summary>Validates the settings; called at start-up.</summary>
    public IEnumerable<string> Validate()
    {
        if (MaxPatternLength is < 1 or > 8192)
        {
            yield return "MaxPatternLength must be between 1 and 8192.";
        }

        if (MaxPatternSegments is < 1 or > 256)
        {
            yield return "MaxPatternSegments must be between 1 and 256.";
        }
    }
}
