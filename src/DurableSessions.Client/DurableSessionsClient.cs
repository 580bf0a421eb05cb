using System.Net;
using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;

namespace DurableSessions.Client;

/// <summary>
/// The entry point of the .NET client: reads and writes Durable Streams and sessions on a DurableSessions server.
/// </summary>
/// <remarks>Thread-safe. One instance per server is enough; it shares one <see cref="HttpClient"/>.</remarks>
public sealed class DurableSessionsClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly bool _ownsHttp;

    /// <summary>Creates a client.</summary>
    /// <param name="options">Settings; <see cref="DurableSessionsClientOptions.Default"/> when null.</param>
    /// <param name="httpClient">An HTTP client to use (its base address is ignored); one is created when null.</param>
    public DurableSessionsClient(DurableSessionsClientOptions? options = null, HttpClient? httpClient = null)
    {
        Options = options ?? DurableSessionsClientOptions.Default;
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(Options.WebSocketKeepAlive, TimeSpan.Zero, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(Options.MaxSseEventLength, 1024, nameof(options));
        if (Options.SseIdleTimeout != Timeout.InfiniteTimeSpan)
        {
            // A timer holds at most 2^32-2 ms (about 49 days).
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(Options.SseIdleTimeout, TimeSpan.Zero, nameof(options));
            ArgumentOutOfRangeException.ThrowIfGreaterThan(Options.SseIdleTimeout, TimeSpan.FromMilliseconds(uint.MaxValue - 1), nameof(options));
        }
        _ownsHttp = httpClient is null;
        _http = httpClient ?? new HttpClient(new SocketsHttpHandler { PooledConnectionIdleTimeout = TimeSpan.FromMinutes(1) })
        {
            Timeout = Timeout.InfiniteTimeSpan,
        };
        Sockets = Options.UseWebSocket && Options.AppendTransport is null ? new SocketAppender(this, _http) : null;
        Appends = Options.AppendTransport ?? Sockets;
    }

    /// <summary>The producers' WebSocket, when <see cref="DurableSessionsClientOptions.UseWebSocket"/> is on and no other transport is set.</summary>
    internal SocketAppender? Sockets { get; }

    /// <summary>What carries producers' appends before HTTP: the configured transport, else the WebSocket, if any.</summary>
    internal IProducerAppendTransport? Appends { get; }

    /// <summary>The client's settings.</summary>
    public DurableSessionsClientOptions Options { get; }

    /// <summary>The turns of agent <paramref name="agentId"/>: claim, heartbeat and complete them (see <see cref="AgentTurnClient"/>).</summary>
    public AgentTurnClient Agent(string agentId)
    {
        ArgumentException.ThrowIfNullOrEmpty(agentId);
        return new AgentTurnClient(this, agentId);
    }

    /// <summary>Returns a handle on a session (no request is made until it is used).</summary>
    public SessionClient Session(string sessionId)
    {
        ArgumentException.ThrowIfNullOrEmpty(sessionId);
        return new SessionClient(this, sessionId);
    }

    /// <summary>
    /// Reads a JSON stream from <paramref name="offset"/> and then follows it live over SSE, reconnecting with backoff
    /// after any disconnect and resuming from the last offset it delivered: no gap, no duplicate.
    /// </summary>
    /// <remarks>
    /// Messages are delivered only together with the offset that follows them, so a connection cut in the middle of an
    /// event never yields a partial batch. The sequence ends when the stream is closed and fully read, or when
    /// <paramref name="cancellationToken"/> fires. A missing stream throws <see cref="DurableSessionsException"/>.
    /// </remarks>
    public IAsyncEnumerable<StreamBatch> ReadStreamAsync(string path, string offset = StreamOffset.Beginning, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentException.ThrowIfNullOrEmpty(offset);
        return ReadStreamCoreAsync(path, offset, skipProgressOf: null, cancellationToken);
    }

    /// <param name="path">The stream's path.</param>
    /// <param name="offset">Where to start.</param>
    /// <param name="skipProgressOf">
    /// A producer id prefix whose progress appends (a session's delta-only appends) the server does not send live, or null:
    /// a writer that follows its own stream does not read its own progress back. Reads that catch up still carry them.
    /// </param>
    /// <param name="cancellationToken">Ends the read.</param>
    internal async IAsyncEnumerable<StreamBatch> ReadStreamCoreAsync(string path, string offset, string? skipProgressOf, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var delay = Options.ReconnectDelay;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();

            // A request or read that hears nothing, not even a keep-alive comment, for SseIdleTimeout is cancelled: the
            // link died without a close, and the read resumes from its offset on a new request.
            using var idle = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var response = await TryOpenAsync(path, offset, skipProgressOf, idle, cancellationToken).ConfigureAwait(false);
            if (response is not null)
            {
                using (response)
                {
                    var body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
                    using var events = new SseEventReader(Options.SseIdleTimeout == Timeout.InfiniteTimeSpan ? body : new IdleTimeoutStream(body, idle, Options.SseIdleTimeout), Options.MaxSseEventLength);
                    var pending = new List<JsonElement>();
                    var pendingLength = 0L;
                    while (true)
                    {
                        SseEvent? next;
                        try
                        {
                            next = await events.NextAsync(idle.Token).ConfigureAwait(false);
                        }
                        catch (Exception ex) when (IsTransient(ex) && !cancellationToken.IsCancellationRequested)
                        {
                            next = null;
                        }

                        if (next is null)
                        {
                            break;
                        }

                        if (next.Value.Type == "data")
                        {
                            // One detached copy of the whole event's array; its elements stay valid with it, so the
                            // messages are not copied one by one.
                            // Data events before their control event are held together: bounded together too.
                            pendingLength += next.Value.Data.Length;
                            if (pendingLength > Options.MaxSseEventLength)
                            {
                                throw new InvalidDataException($"Data events from the server without a control event are longer than {Options.MaxSseEventLength} bytes (DurableSessionsClientOptions.MaxSseEventLength).");
                            }

                            foreach (var message in DetachedValue(next.Value.Data.Span).EnumerateArray())
                            {
                                pending.Add(message);
                            }
                        }
                        else if (next.Value.Type == "control")
                        {
                            using var json = JsonDocument.Parse(next.Value.Data);
                            var root = json.RootElement;
                            offset = root.GetProperty("streamNextOffset").GetString()!;
                            var closed = root.TryGetProperty("streamClosed", out var c) && c.GetBoolean();
                            var upToDate = closed || (root.TryGetProperty("upToDate", out var u) && u.GetBoolean());
                            yield return new StreamBatch(pending, offset, upToDate, closed);
                            pending = [];
                            pendingLength = 0;
                            delay = Options.ReconnectDelay;
                            if (closed)
                            {
                                yield break;
                            }
                        }
                    }
                }
            }

            // Dropped, refused or ended by the server: come back from the last delivered offset.
            var jitter = 0.5 + (Random.Shared.NextDouble() / 2);
            await Task.Delay(delay * jitter, cancellationToken).ConfigureAwait(false);
            delay = TimeSpan.FromTicks(Math.Min(Options.MaxReconnectDelay.Ticks, delay.Ticks * 2));
        }
    }

    /// <summary>
    /// The one JSON value <paramref name="json"/> holds, parsed into a document of its own (one copy of the text, which
    /// its elements keep); anything after the value but whitespace is refused, as <see cref="JsonDocument.Parse(string, JsonDocumentOptions)"/> refuses it.
    /// </summary>
    /// <exception cref="JsonException">The text is not one JSON value.</exception>
    private static JsonElement DetachedValue(ReadOnlySpan<byte> json)
    {
        var reader = new Utf8JsonReader(json);
        var value = JsonElement.ParseValue(ref reader);
        if (reader.Read())
        {
            throw new JsonException("An SSE data event holds more than one JSON value.");
        }

        return value;
    }

    /// <summary>
    /// Opens an SSE read; returns null on a transient failure, throws on a client error. <paramref name="idle"/> is
    /// cancelled when the server takes longer than the idle timeout to answer.
    /// </summary>
    private async Task<HttpResponseMessage?> TryOpenAsync(string path, string offset, string? skipProgressOf, CancellationTokenSource idle, CancellationToken cancellationToken)
    {
        HttpResponseMessage response;
        var skip = skipProgressOf is null ? string.Empty : "&skip-progress-of=" + Uri.EscapeDataString(skipProgressOf);
        for (var attempt = 1; ; attempt++)
        {
            using var request = CreateRequest(HttpMethod.Get, $"/v1/stream/{path}?offset={Uri.EscapeDataString(offset)}&live=sse{skip}");
            request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
            try
            {
                await AuthorizeAsync(request, cancellationToken).ConfigureAwait(false);
                if (Options.SseIdleTimeout != Timeout.InfiniteTimeSpan)
                {
                    idle.CancelAfter(Options.SseIdleTimeout);
                }

                response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, idle.Token).ConfigureAwait(false);
                idle.CancelAfter(Timeout.InfiniteTimeSpan);
            }
            catch (Exception ex) when (IsTransient(ex) && !cancellationToken.IsCancellationRequested)
            {
                return null;
            }

            // A token that expired between the provider's answer and the server's check: ask once more.
            if (response.StatusCode == HttpStatusCode.Unauthorized && Options.AccessTokenProvider is not null && attempt == 1)
            {
                response.Dispose();
                continue;
            }

            break;
        }

        if (response.IsSuccessStatusCode)
        {
            return response;
        }

        using (response)
        {
            if ((int)response.StatusCode is >= 400 and < 500 and not 408 and not 429)
            {
                throw await DurableSessionsException.FromResponseAsync(response, cancellationToken).ConfigureAwait(false);
            }

            return null;
        }
    }

    internal HttpRequestMessage CreateRequest(HttpMethod method, string relativeUri, string? jsonBody = null)
    {
        var request = new HttpRequestMessage(method, new Uri(Options.BaseAddress, relativeUri));
        if (Options.AccessToken is { } token)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        if (jsonBody is not null)
        {
            request.Content = new StringContent(jsonBody, Encoding.UTF8, "application/json");
        }

        return request;
    }

    /// <summary>A request with a JSON body already encoded as UTF-8 (sent as it is, with the same content type).</summary>
    internal HttpRequestMessage CreateRequest(HttpMethod method, string relativeUri, byte[] jsonBody)
    {
        var request = CreateRequest(method, relativeUri);
        request.Content = new ByteArrayContent(jsonBody);
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json") { CharSet = "utf-8" };
        return request;
    }

    /// <summary>Sets the bearer token from <see cref="DurableSessionsClientOptions.AccessTokenProvider"/>, when there is one.</summary>
    private async ValueTask AuthorizeAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        if (Options.AccessTokenProvider is { } provider)
        {
            var token = await provider(cancellationToken).ConfigureAwait(false);
            request.Headers.Authorization = token is null ? null : new AuthenticationHeaderValue("Bearer", token);
        }
    }

    /// <summary>Sends a request, retrying transient failures; throws <see cref="DurableSessionsException"/> on a 4xx.</summary>
    internal async Task<HttpResponseMessage> SendWithRetryAsync(Func<HttpRequestMessage> createRequest, CancellationToken cancellationToken)
    {
        var delay = Options.ReconnectDelay;
        var refreshed = false;
        while (true)
        {
            using var request = createRequest();
            HttpResponseMessage? response = null;
            TimeSpan? retryAfter = null;
            try
            {
                await AuthorizeAsync(request, cancellationToken).ConfigureAwait(false);
                response = await _http.SendAsync(request, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (IsTransient(ex) && !cancellationToken.IsCancellationRequested)
            {
            }

            if (response is not null)
            {
                if (response.IsSuccessStatusCode)
                {
                    return response;
                }

                if (response.StatusCode == HttpStatusCode.Unauthorized && Options.AccessTokenProvider is not null && !refreshed)
                {
                    // Once more with the provider's next token: the last one may have expired in flight.
                    refreshed = true;
                    response.Dispose();
                    continue;
                }

                if ((int)response.StatusCode is >= 400 and < 500 and not 408 and not 429)
                {
                    using (response)
                    {
                        throw await DurableSessionsException.FromResponseAsync(response, cancellationToken).ConfigureAwait(false);
                    }
                }

                retryAfter = RetryAfterOf(response);
                response.Dispose();
            }

            // Spread out (so that clients cut at once do not all come back at once), and never sooner than the server
            // asked (a 503's Retry-After, up to a minute).
            var wait = delay * (0.5 + Random.Shared.NextDouble());
            if (retryAfter is { } asked && asked > wait)
            {
                wait = asked;
            }

            await Task.Delay(wait, cancellationToken).ConfigureAwait(false);
            delay = TimeSpan.FromTicks(Math.Min(Options.MaxReconnectDelay.Ticks, delay.Ticks * 2));
        }
    }

    private static TimeSpan? RetryAfterOf(HttpResponseMessage response)
    {
        var asked = response.Headers.RetryAfter switch
        {
            { Delta: { } delta } => delta,
            { Date: { } date } => date - DateTimeOffset.UtcNow,
            _ => (TimeSpan?)null,
        };
        return asked is { } wait && wait > TimeSpan.Zero ? TimeSpan.FromTicks(Math.Min(wait.Ticks, TimeSpan.FromMinutes(1).Ticks)) : null;
    }

    private static bool IsTransient(Exception ex) => ex is HttpRequestException or IOException or TaskCanceledException or OperationCanceledException;

    /// <inheritdoc />
    public void Dispose()
    {
        Sockets?.Dispose();
        if (_ownsHttp)
        {
            _http.Dispose();
        }
    }
}

/// <summary>A request the server refused (4xx), with its error code and message.</summary>
public sealed class DurableSessionsException : Exception
{
    /// <summary>Creates the exception.</summary>
    public DurableSessionsException(HttpStatusCode status, string code, string message)
        : base(message)
    {
        Status = status;
        Code = code;
    }

    /// <summary>Creates the exception.</summary>
    public DurableSessionsException()
        : this(HttpStatusCode.BadRequest, "UNKNOWN", "The server refused the request.")
    {
    }

    /// <summary>Creates the exception.</summary>
    public DurableSessionsException(string message)
        : this(HttpStatusCode.BadRequest, "UNKNOWN", message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public DurableSessionsException(string message, Exception innerException)
        : base(message, innerException)
    {
        Code = "UNKNOWN";
    }

    /// <summary>The HTTP status.</summary>
    public HttpStatusCode Status { get; }

    /// <summary>The server's error code, e.g. <c>RUN_CANCELLED</c>.</summary>
    public string Code { get; }

    /// <summary>
    /// For <c>410 OFFSET_GONE</c> (a read from before data that retention removed): the offset the stream now starts
    /// at, to read on from. Otherwise <see langword="null"/>.
    /// </summary>
    public string? RetainedFrom { get; private init; }

    internal static async Task<DurableSessionsException> FromResponseAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        var code = "HTTP_" + (int)response.StatusCode;
        var message = $"The server answered {(int)response.StatusCode}.";
        string? retainedFrom = null;
        try
        {
            var text = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
            using var json = JsonDocument.Parse(text);
            var error = json.RootElement.GetProperty("error");
            code = error.GetProperty("code").GetString() ?? code;
            message = error.TryGetProperty("message", out var m) ? m.GetString() ?? message : message;
            retainedFrom = error.TryGetProperty("retainedFrom", out var r) && r.ValueKind == JsonValueKind.String ? r.GetString() : null;
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException)
        {
        }

        return new DurableSessionsException(response.StatusCode, code, message) { RetainedFrom = retainedFrom };
    }
}
