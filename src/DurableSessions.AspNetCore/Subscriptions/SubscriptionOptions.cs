namespace DurableSessions.AspNetCore.Subscriptions;

/// <summary>Settings of subscriptions. Bound from the <c>Subscriptions</c> configuration section.</summary>
public sealed class SubscriptionOptions
{
    /// <summary>
    /// Whether webhooks and session notifications may target <c>http://localhost</c> and <c>http://127.0.0.x</c>
    /// (development), and so connect to loopback addresses. Private and special-purpose addresses are refused either way.
    /// Default false: a session's <c>notifyUrl</c> is set by whoever may write the session, and what listens on a
    /// server's loopback is not for them to call. Turn it on to develop against a receiver on the same machine.
    /// </summary>
    public bool AllowLocalhostWebhooks { get; set; }

    /// <summary>
    /// How long one webhook delivery (a subscription's wake, or one attempt of a session notification) may take, its
    /// answer included. Default 10 seconds; from 1 second to 1 hour.
    /// </summary>
    public TimeSpan WebhookTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>The longest subscription pattern accepted, in characters; longer gets 400 <c>PATTERN_TOO_LARGE</c>. Default 1024.</summary>
    public int MaxPatternLength { get; set; } = 1024;

    /// <summary>The most segments in a subscription pattern; more gets 400 <c>PATTERN_TOO_LARGE</c>. Default 32.</summary>
    public int MaxPatternSegments { get; set; } = 32;

    /// <summary>
    /// How many of its latest wake events a pull-wake subscription's wake stream keeps, when the subscription asks for it
    /// with <c>"trim_wake_stream": true</c> (its creator needs <c>admin</c> on the wake stream). Once it holds twice this
    /// many, the older half is removed, so a wake stream that only its subscription writes to stays between this and twice
    /// this long however many wakes it is sent; reads from before what it keeps get <c>410 OFFSET_GONE</c>. Wakes are only
    /// hints: the subscription's streams and leases do not depend on them. A fork of the wake stream holds its trimming
    /// back while it exists. Default 10,000.
    /// </summary>
    public int WakeStreamRetention { get; set; } = 10_000;

    /// <summary>
    /// The most subscriptions a server holds; creating one more gets 403 <c>SUBSCRIPTION_LIMIT_REACHED</c>. Each holds
    /// at most one wake (webhook POST) in flight, so this also bounds the webhook POSTs in flight, but for those of
    /// subscriptions deleted meanwhile, which end within <see cref="WebhookTimeout"/>. Default 1,000.
    /// </summary>
    public int MaxSubscriptions { get; set; } = 1_000;

    /// <summary>
    /// The most streams one subscription links, by pattern and explicitly. A create whose pattern and streams would link
    /// more, or an explicit add past it, gets 403 <c>SUBSCRIPTION_STREAM_LIMIT</c>; a stream its pattern matches once it
    /// is full is not linked (its appends do not wake it), which the server logs once and its <c>GET</c> shows from then
    /// on as <c>"stream_limit_reached": true</c> (such a stream is linked at its first append once there is room). A subscription's state, links included, is written on each of its changes, so its size is
    /// what each wake and ack costs. Default 10,000.
    /// </summary>
    public int MaxStreamsPerSubscription { get; set; } = 10_000;

    /// <summary>
    /// The server's public base URL (scheme, host, and path base if any, e.g. <c>https://streams.example.com</c>), which
    /// webhook wakes' <c>callback_url</c> and a subscription's <c>jwks_url</c> start with. Unset (or empty), they start
    /// with the URL the request named (for <c>callback_url</c>, the subscription's create); set it when the server is
    /// reached through a proxy or a name its receivers should use instead.
    /// </summary>
    public string? PublicBaseUrl { get; set; }

    /// <summary><see cref="PublicBaseUrl"/> without a trailing slash, or null when it is unset or empty.</summary>
    internal string? PublicBase => string.IsNullOrWhiteSpace(PublicBaseUrl) ? null : PublicBaseUrl.Trim().TrimEnd('/');

    /// <summary>Validates the settings; called at start-up.</summary>
    public IEnumerable<string> Validate()
    {
        if (WebhookTimeout < TimeSpan.FromSeconds(1) || WebhookTimeout > TimeSpan.FromHours(1))
        {
            yield return "WebhookTimeout must be from 1 second to 1 hour.";
        }

        if (MaxSubscriptions is < 1 or > 1_000_000)
        {
            yield return "MaxSubscriptions must be between 1 and 1000000.";
        }

        if (MaxStreamsPerSubscription is < 1 or > 1_000_000)
        {
            yield return "MaxStreamsPerSubscription must be between 1 and 1000000.";
        }

        if (PublicBase is not null
            && (!Uri.TryCreate(PublicBase, UriKind.Absolute, out var baseUri) || baseUri.Scheme is not ("http" or "https")
                || !string.IsNullOrEmpty(baseUri.Query) || !string.IsNullOrEmpty(baseUri.Fragment) || !string.IsNullOrEmpty(baseUri.UserInfo)))
        {
            yield return "PublicBaseUrl must be an absolute http or https URL without a query, fragment or user info.";
        }

        if (MaxPatternLength is < 1 or > 8192)
        {
            yield return "MaxPatternLength must be between 1 and 8192.";
        }

        if (MaxPatternSegments is < 1 or > 256)
        {
            yield return "MaxPatternSegments must be between 1 and 256.";
        }

        if (WakeStreamRetention is < 10 or > 10_000_000)
        {
            yield return "WakeStreamRetention must be between 10 and 10000000.";
        }
    }
}
