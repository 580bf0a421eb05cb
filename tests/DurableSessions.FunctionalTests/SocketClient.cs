using System.Net.WebSockets;
using System.Text;
using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace DurableSessions.FunctionalTests;

/// <summary>A test client of the WebSocket transport: sends JSON messages and collects what the server sends.</summary>
public sealed class SocketClient : IAsyncDisposable
{
    private readonly ClientWebSocket _socket;
    private readonly Channel<JsonObject> _received = Channel.CreateUnbounded<JsonObject>();
    private readonly Task _receiving;
    private readonly List<JsonObject> _backlog = [];

    private readonly TaskCompletionSource _resumed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly bool _pauseAfterHello;

    private SocketClient(ClientWebSocket socket, bool pauseAfterHello)
    {
        _socket = socket;
        _pauseAfterHello = pauseAfterHello;
        if (!pauseAfterHello)
        {
            _resumed.TrySetResult();
        }

        _receiving = ReceiveAsync();
    }

    /// <summary>Starts reading the socket again after <c>pauseAfterHello</c>: until then the server's messages back up.</summary>
    public void Resume() => _resumed.TrySetResult();

    /// <summary>How the server closed the connection, once it has.</summary>
    public WebSocketCloseStatus? CloseStatus => _socket.CloseStatus;

    public Task Closed => _receiving;

    public static async Task<SocketClient> ConnectAsync(Uri server, string? token = null, bool tokenInQuery = false, bool pauseAfterHello = false)
    {
        var socket = new ClientWebSocket();
        socket.Options.AddSubProtocol("durable-streams.v1");
        var uri = new UriBuilder(server) { Scheme = server.Scheme == "https" ? "wss" : "ws", Path = "/v1/ws" };
        if (token is not null && tokenInQuery)
        {
            uri.Query = "access_token=" + Uri.EscapeDataString(token);
        }
        else if (token is not null)
        {
            socket.Options.SetRequestHeader("Authorization", "Bearer " + token);
        }

        await socket.ConnectAsync(uri.Uri, CancellationToken.None);
        var client = new SocketClient(socket, pauseAfterHello);
        var hello = await client.NextAsync(m => m["type"]?.GetValue<string>() == "hello");
        Assert.Equal("durable-streams.v1", hello["protocol"]!.GetValue<string>());
        return client;
    }

    public Task SendAsync(JsonObject message) => SendRawAsync(Encoding.UTF8.GetBytes(message.ToJsonString()));

    public async Task SendRawAsync(byte[] bytes, WebSocketMessageType type = WebSocketMessageType.Text)
        => await _socket.SendAsync(bytes, type, endOfMessage: true, CancellationToken.None);

    /// <summary>
    /// The first received message that matches, in arrival order. Messages that do not match stay for later calls, so
    /// interleaved subscriptions and answers can be awaited one at a time.
    /// </summary>
    public async Task<JsonObject> NextAsync(Func<JsonObject, bool> match, TimeSpan? timeout = null)
    {
        var kept = _backlog.FindIndex(m => match(m));
        if (kept >= 0)
        {
            var found = _backlog[kept];
            _backlog.RemoveAt(kept);
            return found;
        }

        using var cancel = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(30));
        while (true)
        {
            var message = await _received.Reader.ReadAsync(cancel.Token);
            if (match(message))
            {
                return message;
            }

            _backlog.Add(message);
        }
    }

    /// <summary>Everything the server sends until the connection closes.</summary>
    public async Task<List<JsonObject>> DrainUntilClosedAsync(TimeSpan? timeout = null)
    {
        using var cancel = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(30));
        var all = new List<JsonObject>(_backlog);
        _backlog.Clear();
        await foreach (var message in _received.Reader.ReadAllAsync(cancel.Token))
        {
            all.Add(message);
        }

        return all;
    }

    /// <summary>Cuts the connection without a close handshake, as a lost network would.</summary>
    public void Abort() => _socket.Abort();

    public async ValueTask DisposeAsync()
    {
        if (_socket.State == WebSocketState.Open)
        {
            try
            {
                await _socket.CloseAsync(WebSocketCloseStatus.NormalClosure, null, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(5));
            }
            catch (Exception ex) when (ex is WebSocketException or TimeoutException or OperationCanceledException)
            {
                // The server cut the connection meanwhile (a send on a socket cut under it fails as cancelled).
            }
        }

        _socket.Dispose();
        try
        {
            await _receiving;
        }
        catch (Exception)
        {
        }
    }

    private async Task ReceiveAsync()
    {
        var buffer = new byte[1 << 16];
        using var message = new MemoryStream();
        try
        {
            while (true)
            {
                var result = await _socket.ReceiveAsync(buffer, CancellationToken.None);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    return;
                }

                message.Write(buffer, 0, result.Count);
                if (result.EndOfMessage)
                {
                    var parsed = (JsonObject)JsonNode.Parse(message.ToArray())!;
                    _received.Writer.TryWrite(parsed);
                    message.SetLength(0);
                    if (parsed["type"]?.GetValue<string>() == "hello")
                    {
                        await _resumed.Task;
                    }
                }
            }
        }
        catch (WebSocketException)
        {
        }
        finally
        {
            _received.Writer.TryComplete();
        }
    }
}
