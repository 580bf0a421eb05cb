using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.WebSockets;
using System.Text.Json;

namespace DurableSessions.Client;

/// <summary>
/// Appends of every producer of one client, pipelined on one WebSocket (docs/websocket.md): each append is a message
/// answered by its acknowledgement, many in flight at once. When the connection drops, the appends without an answer
/// are sent again on a new one; their producer sequence numbers make the store keep each exactly once.
/// </summary>
/// <remarks>
/// When the server does not offer the transport (an older server, a proxy that refuses upgrades) the producers append
/// over HTTP, and the upgrade is tried again after <see cref="RefusedRetryDelay"/>. Thread-safe.
/// </remarks>
internal sealed class SocketAppender : IProducerAppendTransport, IDisposable
{
    private const string SubProtocol = "durable-streams.v1";

    // The least a server may set as its largest message (docs/websocket.md): appends up to it need not wait for hello.
    private const int MinMessageBytes = 1024;

    // How long opening the socket may take before this client appends over HTTP instead, and for how long then.
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan ConnectRetryDelay = TimeSpan.FromSeconds(30);

    // How long appends go over HTTP after the server answered the upgrade with something else (an older server, a proxy
    // that does not pass upgrades, a page served for any path). Not for good: a proxy's answer during a deployment, say,
    // would otherwise cost this client its WebSocket for the rest of its life.
    internal static readonly TimeSpan RefusedRetryDelay = TimeSpan.FromMinutes(5);

    // Time.GetTimestamp() before which no connect is tried (set when one timed out or was answered without an upgrade).
    private long _retryConnectAt;

    private readonly DurableSessionsClient _client;
    private readonly HttpMessageInvoker _invoker;
    private readonly SemaphoreSlim _connectGate = new(1, 1);
    private Connection? _connection;
    // Set when the handler cannot upgrade at all: that is this client's, not the server's, and lasts.
    private volatile bool _cannotUpgrade;
    private volatile bool _refused;
    private long _nextId;
    private long _appended;
    private long _connects;

    public SocketAppender(DurableSessionsClient client, HttpMessageInvoker invoker)
    {
        _client = client;
        _invoker = invoker;
    }

    /// <summary>
    /// Whether appends go over HTTP because the server answered the last upgrade without one (until
    /// <see cref="RefusedRetryDelay"/> has passed), or the handler cannot upgrade.
    /// </summary>
    public bool Unavailable => _cannotUpgrade || _refused;

    /// <summary>The clock of the delays before another connect is tried. Settable for tests.</summary>
    internal TimeProvider Time { get; set; } = TimeProvider.System;

    /// <summary>Appends acknowledged over the WebSocket so far.</summary>
    public long Appended => Interlocked.Read(ref _appended);

    /// <summary>WebSocket connections opened so far.</summary>
    public long Connects => Interlocked.Read(ref _connects);

    /// <summary>
    /// Appends a JSON array of messages as an idempotent producer. Returns the offset after it, or null when the
    /// WebSocket cannot be used now: the caller appends over HTTP with the same sequence number.
    /// </summary>
    /// <exception cref="DurableSessionsException">The server refused the append.</exception>
    public async Task<string?> AppendAsync(string path, ReadOnlyMemory<byte> messages, string producerId, long epoch, long seq, CancellationToken cancellationToken)
    {
        // Text that is not one JSON value in UTF-8 would make the server close the socket (a bad frame) under every
        // producer that shares it: such an append goes over HTTP, where it is refused alone.
        if (!System.Text.Unicode.Utf8.IsValid(messages.Span) || !IsOneJsonValue(messages.Span))
        {
            return null;
        }

        var refreshed = false;
        for (var attempt = 0; attempt < 3; attempt++)
        {
            var connection = await ConnectAsync(cancellationToken).ConfigureAwait(false);
            if (connection is null)
            {
                return null;
            }

            var id = Interlocked.Increment(ref _nextId).ToString(CultureInfo.InvariantCulture);
            var append = Append(id, path, messages, producerId, epoch, seq);
            if (append.Length > MinMessageBytes)
            {
                // The server's limit is known from its hello, the first message on a connection.
                await connection.Hello.WaitAsync(cancellationToken).ConfigureAwait(false);
            }

            if (append.Length > connection.MaxMessageBytes)
            {
                // The server would close the socket (1009), cutting every other append on it: this one goes over HTTP.
                return null;
            }

            var answer = await connection.SendAsync(id, append, cancellationToken).ConfigureAwait(false);
            if (answer is null)
            {
                // The connection dropped before the answer: send it again on a new one.
                continue;
            }

            using (answer)
            {
                var root = answer.RootElement;
                if (root.GetProperty("type").GetString() == "ack")
                {
                    Interlocked.Increment(ref _appended);
                    return root.TryGetProperty("offset", out var offset) ? offset.GetString() ?? string.Empty : string.Empty;
                }

                var status = root.TryGetProperty("status", out var s) && s.TryGetInt32(out var code) ? code : 400;
                if (status == 401 && !refreshed && _client.Options.AccessTokenProvider is not null)
                {
                    // The token may have expired: connect again with the provider's next one.
                    refreshed = true;
                    connection.Abort();
                    continue;
                }

                if (status is >= 500 or 408 or 429)
                {
                    return null;
                }

                throw new DurableSessionsException(
                    (HttpStatusCode)status,
                    root.TryGetProperty("code", out var c) ? c.GetString() ?? "UNKNOWN" : "UNKNOWN",
                    root.TryGetProperty("message", out var m) ? m.GetString() ?? string.Empty : string.Empty);
            }
        }

        return null;
    }

    private static bool IsOneJsonValue(ReadOnlySpan<byte> json)
    {
        try
        {
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 256 });
            return reader.Read() && reader.TrySkip() && !reader.Read();
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>
    /// The append message (docs/websocket.md) around the messages' JSON array, copied in as it is: the same bytes an HTTP
    /// append's body carries.
    /// </summary>
    private static byte[] Append(string id, string path, ReadOnlyMemory<byte> messages, string producerId, long epoch, long seq)
        => DurableJson.Write((id, path, messages, producerId, epoch, seq), static (writer, append) =>
        {
            writer.WriteStartObject();
            writer.WriteString("op"u8, "append"u8);
            writer.WriteString("id"u8, append.id);
            writer.WriteString("path"u8, append.path);
            writer.WritePropertyName("data"u8);
            writer.WriteRawValue(append.messages.Span, skipInputValidation: true);
            writer.WriteStartObject("producer"u8);
            writer.WriteString("id"u8, append.producerId);
            writer.WriteNumber("epoch"u8, append.epoch);
            writer.WriteNumber("seq"u8, append.seq);
            writer.WriteEndObject();
            writer.WriteEndObject();
        });

    private async Task<Connection?> ConnectAsync(CancellationToken cancellationToken)
    {
        if (_cannotUpgrade)
        {
            return null;
        }

        if (_connection is { IsOpen: true } open)
        {
            return open;
        }

        // A connect that timed out is not tried again for a while: appends go over HTTP meanwhile, rather than each
        // waiting out another timeout.
        if (Time.GetTimestamp() < Volatile.Read(ref _retryConnectAt))
        {
            return null;
        }

        if (!await _connectGate.WaitAsync(ConnectTimeout, cancellationToken).ConfigureAwait(false))
        {
            return null;
        }

        try
        {
            if (_connection is { IsOpen: true } current)
            {
                return current;
            }

            _connection?.Abort();
            _connection = null;
            var socket = new ClientWebSocket();
            var opened = false;
            try
            {
                var connection = await OpenAsync(socket, cancellationToken).ConfigureAwait(false);
                opened = connection is not null;
                return connection;
            }
            finally
            {
                if (!opened)
                {
                    socket.Dispose();
                }
            }
        }
        finally
        {
            _connectGate.Release();
        }
    }

    // Opens the socket _connectGate guards; null when this client appends over HTTP instead, for now or for good.
    private async Task<Connection?> OpenAsync(ClientWebSocket socket, CancellationToken cancellationToken)
    {
        socket.Options.AddSubProtocol(SubProtocol);
        socket.Options.CollectHttpResponseDetails = true;

        // Pings that must be answered: a connection dropped without a reset is given up, and what was in flight on
        // it is sent again, rather than waiting on TCP.
        var keepAlive = _client.Options.WebSocketKeepAlive;
        socket.Options.KeepAliveInterval = keepAlive;
        socket.Options.KeepAliveTimeout = keepAlive;
        var token = _client.Options.AccessTokenProvider is { } provider ? await provider(cancellationToken).ConfigureAwait(false) : _client.Options.AccessToken;
        if (token is not null)
        {
            socket.Options.SetRequestHeader("Authorization", "Bearer " + token);
        }

        var baseAddress = _client.Options.BaseAddress;
        var target = new UriBuilder(baseAddress) { Scheme = baseAddress.Scheme == Uri.UriSchemeHttps ? "wss" : "ws", Path = "/v1/ws" }.Uri;
        // Every producer of the client waits on this connect: one that a proxy accepts and never answers is given up
        // (appends go over HTTP meanwhile), as the TypeScript client gives up its socket.
        using var connecting = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        connecting.CancelAfter(ConnectTimeout);
        try
        {
            await socket.ConnectAsync(target, _invoker, connecting.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            RetryAfter(ConnectRetryDelay);
            return null;
        }
        catch (Exception ex) when (ex is WebSocketException or HttpRequestException or IOException or NotSupportedException or ArgumentException)
        {
            // Over a handler that cannot upgrade: this client appends over HTTP from now on. Answered, but not with an
            // upgrade: over HTTP for a while. A network failure is only this attempt's.
            if (ex is NotSupportedException or ArgumentException)
            {
                _cannotUpgrade = true;
            }
            else if (socket.HttpStatusCode is HttpStatusCode.OK or HttpStatusCode.BadRequest or HttpStatusCode.NotFound or HttpStatusCode.MethodNotAllowed or HttpStatusCode.UpgradeRequired)
            {
                Refused();
            }

            return null;
        }

        if (socket.SubProtocol != SubProtocol)
        {
            // Upgraded, but not to this protocol (a WebSocket endpoint of something else): over HTTP for a while.
            Refused();
            return null;
        }

        _refused = false;

        Interlocked.Increment(ref _connects);
        var connection = new Connection(socket);
        _connection = connection;
        if (_client.Options.AccessTokenProvider is { } refresh && token is not null)
        {
            _ = Task.Run(() => KeepTokenFreshAsync(connection, refresh, token), CancellationToken.None);
        }

        return connection;
    }

    /// <summary>
    /// Replaces the connection's token (<c>auth</c>, docs/websocket.md) with the provider's next one ahead of each
    /// expiry, so that the server does not close the connection (4401) under the appends in flight on it. Runs while
    /// the connection is open and the tokens are JWTs whose expiry can be read; it stops, leaving the server to close
    /// the connection at expiry and this client to connect again, when the provider's next token expires no later or an
    /// <c>auth</c> is refused.
    /// </summary>
    private async Task KeepTokenFreshAsync(Connection connection, Func<CancellationToken, ValueTask<string?>> provider, string token)
    {
        var ended = connection.Ended;
        try
        {
            while (TokenTimes.Of(token) is { } current)
            {
                // When a quarter of the time left is left (at most a minute before expiry), but not within a second, as
                // the TypeScript client does.
                var left = current.Left(Time.GetUtcNow());
                var wait = TimeSpan.FromTicks(Math.Max(TimeSpan.TicksPerSecond, left.Ticks - Math.Min(TimeSpan.TicksPerMinute, left.Ticks / 4)));
                await Task.Delay(TimeSpan.FromTicks(Math.Min(wait.Ticks, MaxTimerDelay.Ticks)), Time, ended).ConfigureAwait(false);
                if (wait > MaxTimerDelay)
                {
                    // A token valid for years is waited on a day at a time.
                    continue;
                }

                var next = await provider(ended).ConfigureAwait(false);
                if (next is null || TokenTimes.Of(next) is not { } fresh || fresh.Expires <= current.Expires)
                {
                    return;
                }

                var id = "auth-" + Interlocked.Increment(ref _nextId).ToString(CultureInfo.InvariantCulture);
                using var answer = await connection.SendAsync(id, Auth(id, next), ended).ConfigureAwait(false);
                if (answer is null || !answer.RootElement.TryGetProperty("type", out var type) || !type.ValueEquals("ack"u8))
                {
                    return;
                }

                token = next;
            }
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // The connection ended, or the provider failed: the server closes the connection at expiry, and the next
            // connect asks the provider again.
        }
    }

    // The longest single timer wait.
    private static readonly TimeSpan MaxTimerDelay = TimeSpan.FromDays(1);

    private static byte[] Auth(string id, string token)
        => DurableJson.Write((id, token), static (writer, auth) =>
        {
            writer.WriteStartObject();
            writer.WriteString("op"u8, "auth"u8);
            writer.WriteString("id"u8, auth.id);
            writer.WriteString("token"u8, auth.token);
            writer.WriteEndObject();
        });

    private void RetryAfter(TimeSpan delay)
        => Volatile.Write(ref _retryConnectAt, Time.GetTimestamp() + (long)(delay.TotalSeconds * Time.TimestampFrequency));

    private void Refused()
    {
        _refused = true;
        RetryAfter(RefusedRetryDelay);
    }

    public void Dispose()
    {
        _connection?.Abort();
        _connectGate.Dispose();
    }

    /// <summary>One WebSocket: one loop sends the appends in order, answers are matched to their append by id.</summary>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001:Types that own disposable fields should be disposable", Justification = "The token source has no timer, so it holds nothing to dispose.")]
    private sealed class Connection
    {
        private readonly ClientWebSocket _socket;
        private readonly System.Threading.Channels.Channel<byte[]> _outgoing = System.Threading.Channels.Channel.CreateUnbounded<byte[]>(new System.Threading.Channels.UnboundedChannelOptions { SingleReader = true });
        private readonly ConcurrentDictionary<string, TaskCompletionSource<JsonDocument?>> _pending = new(StringComparer.Ordinal);
        private volatile bool _closed;
        private readonly TaskCompletionSource _hello = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly CancellationTokenSource _ended = new();

        public Connection(ClientWebSocket socket)
        {
            _socket = socket;
            _ = Task.Run(ReceiveAsync);
            _ = Task.Run(SendLoopAsync);
        }

        public bool IsOpen => !_closed && _socket.State == WebSocketState.Open;

        /// <summary>Fires when the connection has ended.</summary>
        public CancellationToken Ended => _ended.Token;

        /// <summary>
        /// The largest message the server takes, from its <c>hello</c>; until that arrives, the documented default
        /// (docs/websocket.md).
        /// </summary>
        public int MaxMessageBytes { get; private set; } = 1024 * 1024;

        /// <summary>Completes when the server's hello has arrived, or the connection has ended without one.</summary>
        public Task Hello => _hello.Task;

        /// <summary>Sends one append and waits for its answer; null when the connection dropped first.</summary>
        public async Task<JsonDocument?> SendAsync(string id, byte[] message, CancellationToken cancellationToken)
        {
            var answer = new TaskCompletionSource<JsonDocument?>(TaskCreationOptions.RunContinuationsAsynchronously);
            _pending[id] = answer;
            if (_closed || !_outgoing.Writer.TryWrite(message))
            {
                _pending.TryRemove(id, out _);
                return null;
            }

            // Only the wait is cancelled: a send cut part-way would abort the socket for every other append on it.
            using var registration = cancellationToken.Register(() => answer.TrySetCanceled(cancellationToken));
            try
            {
                return await answer.Task.ConfigureAwait(false);
            }
            finally
            {
                _pending.TryRemove(id, out _);
            }
        }

        private async Task SendLoopAsync()
        {
            try
            {
                await foreach (var message in _outgoing.Reader.ReadAllAsync().ConfigureAwait(false))
                {
                    await _socket.SendAsync(message, WebSocketMessageType.Text, endOfMessage: true, CancellationToken.None).ConfigureAwait(false);
                }
            }
            catch (Exception ex) when (ex is WebSocketException or IOException or ObjectDisposedException or OperationCanceledException)
            {
                // A socket the keep-alive gave up fails its pending send as cancelled.
                Abort();
            }
        }

        public void Abort()
        {
            _closed = true;
            _hello.TrySetResult();
            try
            {
                _ended.Cancel();
            }
            catch (AggregateException)
            {
                // A callback of a waiter threw: the connection is ended all the same.
            }

            _outgoing.Writer.TryComplete();
            _socket.Abort();
            foreach (var (_, pending) in _pending)
            {
                pending.TrySetResult(null);
            }
        }

        // The longest message taken from the server on this socket, which carries answers to appends, not data.
        private const int MaxAnswerBytes = 1024 * 1024;

        private async Task ReceiveAsync()
        {
            var buffer = new byte[16 * 1024];
            using var message = new MemoryStream();
            try
            {
                while (true)
                {
                    var result = await _socket.ReceiveAsync(buffer, CancellationToken.None).ConfigureAwait(false);
                    if (result.MessageType == WebSocketMessageType.Close)
                    {
                        break;
                    }

                    message.Write(buffer, 0, result.Count);
                    if (message.Length > MaxAnswerBytes)
                    {
                        // Answers to appends are small: a message this long is not one, and is not held whole.
                        break;
                    }

                    if (!result.EndOfMessage)
                    {
                        continue;
                    }

                    var document = JsonDocument.Parse(message.ToArray());
                    message.SetLength(0);
                    if (document.RootElement.TryGetProperty("type", out var type) && type.ValueEquals("hello"u8)
                        && document.RootElement.TryGetProperty("maxMessageBytes", out var max) && max.TryGetInt32(out var bytes) && bytes > 0)
                    {
                        MaxMessageBytes = bytes;
                    }

                    _hello.TrySetResult();

                    if (document.RootElement.TryGetProperty("id", out var id) && id.GetString() is { } key && _pending.TryRemove(key, out var pending))
                    {
                        if (!pending.TrySetResult(document))
                        {
                            document.Dispose();
                        }
                    }
                    else
                    {
                        document.Dispose();
                    }
                }
            }
            catch (Exception ex) when (ex is WebSocketException or IOException or JsonException or ObjectDisposedException or OperationCanceledException)
            {
            }
            finally
            {
                Abort();
            }
        }
    }
}
