namespace DurableSessions.AspNetCore.WebSockets;

/// <summary>Settings of the WebSocket transport (<c>/v1/ws</c>). Bound from the <c>WebSockets</c> configuration section.</summary>
public sealed class StreamSocketOptions
{
    /// <summary>The subprotocol a client must offer: the version of the message format.</summary>
    public const string SubProtocol = "durable-streams.v1";

    /// <summary>The largest message a client may send, in bytes. Larger closes the connection with 1009. Default 1 MiB.</summary>
    public int MaxMessageBytes { get; set; } = 1024 * 1024;

    /// <summary>
    /// The most bytes of stream data queued for one connection. A subscription whose next data does not fit is ended
    /// with <c>fell-behind</c> and resumes from its offset. Default 4 MiB.
    /// </summary>
    public long MaxSendQueueBytes { get; set; } = 4 * 1024 * 1024;

    /// <summary>The most subscriptions one connection holds at once. Default 1,000.</summary>
    public int MaxSubscriptions { get; set; } = 1000;

    /// <summary>
    /// The most appends and session operations in flight on one connection. Past it the server reads no further message
    /// until one completes. Default 256.
    /// </summary>
    public int MaxInFlight { get; set; } = 256;

    /// <summary>How often the server pings. Default 15 seconds.</summary>
    public TimeSpan KeepAliveInterval { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>How long the server waits for the answer to a ping before it closes the connection. Default 15 seconds.</summary>
    public TimeSpan KeepAliveTimeout { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>A connection with no subscription and no message for this long is closed. Default 2 minutes.</summary>
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>
    /// How often the token in force on a connection is validated again, so that one the server no longer accepts (its
    /// signing key withdrawn by the identity provider) closes the connection with <c>4401</c>, as HTTP requests with it
    /// are refused, instead of serving until it expires. Default 1 minute.
    /// </summary>
    public TimeSpan TokenRecheckInterval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>The problems with these settings; empty when they are valid.</summary>
    public IEnumerable<string> Validate()
    {
        if (MaxMessageBytes is < 1024 or > 64 * 1024 * 1024)
        {
            yield return "WebSockets:MaxMessageBytes must be from 1024 to 67108864.";
        }

        if (MaxSendQueueBytes < 1024)
        {
            yield return "WebSockets:MaxSendQueueBytes must be at least 1024.";
        }

        if (MaxSubscriptions is < 1 or > 100_000)
        {
            yield return "WebSockets:MaxSubscriptions must be from 1 to 100000.";
        }

        if (MaxInFlight is < 1 or > 100_000)
        {
            yield return "WebSockets:MaxInFlight must be from 1 to 100000.";
        }

        // A day at most: the connection's watch waits at most IdleTimeout (however long its token lives), and a timer
        // takes no wait past ~49 days.
        if (KeepAliveInterval <= TimeSpan.Zero || KeepAliveTimeout <= TimeSpan.Zero || IdleTimeout <= TimeSpan.Zero
            || KeepAliveInterval > TimeSpan.FromDays(1) || KeepAliveTimeout > TimeSpan.FromDays(1) || IdleTimeout > TimeSpan.FromDays(1))
        {
            yield return "WebSockets:KeepAliveInterval, KeepAliveTimeout and IdleTimeout must be positive and at most a day.";
        }

        // At least a second: each check validates the token anew (with an identity provider, its signature too).
        if (TokenRecheckInterval < TimeSpan.FromSeconds(1) || TokenRecheckInterval > TimeSpan.FromDays(1))
        {
            yield return "WebSockets:TokenRecheckInterval must be from 1 second to a day.";
        }
    }
}
