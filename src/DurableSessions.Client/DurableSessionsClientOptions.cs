namespace DurableSessions.Client;

/// <summary>Settings of a <see cref="DurableSessionsClient"/>.</summary>
public sealed record DurableSessionsClientOptions
{
    /// <summary>The defaults: <c>http://127.0.0.1:4437</c>, reconnect backoff from 100 ms to 5 s.</summary>
    public static DurableSessionsClientOptions Default { get; } = new();

    /// <summary>The server's base address.</summary>
    public Uri BaseAddress { get; init; } = new("http://127.0.0.1:4437");

    /// <summary>A bearer token sent with every request, if the server requires one.</summary>
    public string? AccessToken { get; init; }

    /// <summary>
    /// Gives the bearer token for each request, called on every connect and reconnect (and again after a <c>401</c>), so
    /// a token that expires is replaced without losing the live tail: the server ends a live read when its token
    /// expires, and the client resumes from its offset with a fresh one. On the producers' WebSocket it is also called
    /// ahead of each expiry of the JWT in force, whose replacement is sent on the open socket (<c>auth</c>), so the
    /// server does not close it under the appends in flight. Takes precedence over <see cref="AccessToken"/>.
    /// </summary>
    public Func<CancellationToken, ValueTask<string?>>? AccessTokenProvider { get; init; }

    /// <summary>The first delay before reconnecting after a dropped connection; doubled per failure, with jitter.</summary>
    public TimeSpan ReconnectDelay { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>The longest delay between reconnection attempts.</summary>
    public TimeSpan MaxReconnectDelay { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Whether producers append over one WebSocket per client (docs/websocket.md), many appends in flight at once.
    /// Default true. When a server or proxy answers the upgrade without one, appends go over HTTP, and the upgrade is
    /// tried again five minutes later.
    /// </summary>
    public bool UseWebSocket { get; init; } = true;

    /// <summary>
    /// How often the WebSocket pings the server, and how long it waits for the answer before it gives the connection
    /// up (default 15 s). A connection the network dropped without a reset (a NAT timeout, a host gone) is then noticed
    /// within twice this, and the appends in flight on it are sent again on a new one, instead of waiting on TCP for many
    /// minutes. Must be positive.
    /// </summary>
    public TimeSpan WebSocketKeepAlive { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>
    /// How long a live read may hear nothing at all, not even the server's keep-alive comments, before it is taken for
    /// dead and resumed from its offset on a new request (default 45 s). A connection the network dropped without a reset
    /// (a NAT timeout, a host gone) would otherwise hold the read for as long as TCP takes to notice, which can be hours.
    /// Keep it above the server's SSE keep-alive interval (15 s by default). <see cref="Timeout.InfiniteTimeSpan"/>
    /// turns it off; otherwise it must be positive.
    /// </summary>
    public TimeSpan SseIdleTimeout { get; init; } = TimeSpan.FromSeconds(45);

    /// <summary>
    /// The longest event the client accepts on a live read, in bytes of its UTF-8 text: one SSE event, and the data events a server
    /// sends before their control event, together. Longer is refused with <see cref="InvalidDataException"/> instead of
    /// being held whole, so a server or proxy that misbehaves (a line that never ends) cannot exhaust the client's
    /// memory. Default 64 MiB, well above this server's largest event at its defaults (a message of up to its
    /// 16 MiB append limit): raise it with a server's <c>MaxAppendBytes</c>. Must be at least 1,024.
    /// </summary>
    public int MaxSseEventLength { get; init; } = 64 * 1024 * 1024;

    /// <summary>
    /// What carries producers' appends instead of the WebSocket, before HTTP (for example a server's own process, which
    /// hands them straight to its append path). Default null.
    /// </summary>
    public IProducerAppendTransport? AppendTransport { get; init; }

    /// <summary>The participant id this client writes as (messages, cancels, steering).</summary>
    public string ParticipantId { get; init; } = "client:" + Guid.NewGuid().ToString("N")[..8];
}
