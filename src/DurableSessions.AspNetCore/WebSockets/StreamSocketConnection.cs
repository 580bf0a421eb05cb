using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Net.WebSockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using DurableSessions.AspNetCore.Auth;
using DurableSessions.AspNetCore.Streams;
using DurableSessions.Live;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace DurableSessions.AspNetCore.WebSockets;

/// <summary>
/// One WebSocket connection of the transport specified in docs/websocket.md: a receive loop that runs each client
/// operation, a send loop that writes the server's messages from one queue bounded in bytes, and one follower per
/// subscription. Appends go through <c>StreamRequestHandler.AppendAsync</c> and session operations through the
/// session endpoints, so every rule and check is the one HTTP applies.
/// </summary>
internal sealed partial class StreamSocketConnection : IDisposable
{
    /// <summary>Close code for a frame that is not one JSON object with a string <c>op</c>.</summary>
    public const WebSocketCloseStatus BadFrame = (WebSocketCloseStatus)4400;

    /// <summary>Close code for a token that expired and was not replaced.</summary>
    public const WebSocketCloseStatus TokenExpired = (WebSocketCloseStatus)4401;

    private const int MaxIdLength = 128;

    // The envelope and one message's data: JSON past this depth is no frame at all (closed with 4400).
    private static readonly JsonDocumentOptions FrameOptions = new() { MaxDepth = 512 };

    private static readonly JsonWriterOptions WriterOptions = DurableJson.WriterOptions with { SkipValidation = true };

    private readonly WebSocket _socket;
    private readonly HttpContext _http;
    private readonly StreamSocketServices _services;
    private readonly StreamSocketOptions _options;
    private readonly CancellationTokenSource _closing;
    private readonly SendQueue<Outgoing> _outgoing = new();
    private readonly Dictionary<string, Subscription> _subscriptions = new(StringComparer.Ordinal);

    // Counts token replacements, so a subscribe granted under a token replaced meanwhile is checked again.
    private int _authEpoch;
    private readonly Dictionary<string, Task> _pathTails = new(StringComparer.Ordinal);

    // Appends received back to back are handed to the store together, once the receive loop would wait for more: one
    // hand-off and one completion for the burst instead of one per append (only on a store that takes appends so, in
    // order). A burst's Done stands as the tail of each path it holds; the bursts handed over and not yet answered are
    // kept here, under the lock of _pathTails, since a later burst may follow one of them on a path without waiting.
    private AppendBurst? _burst;
    private readonly HashSet<Task> _burstsInFlight = [];
    private const int MaxBurst = 64;
    private readonly SemaphoreSlim _inFlight;
    private readonly SemaphoreSlim _auth = new(1, 1);
    private readonly Lock _watchLock = new();

    // A connection's subscriptions hold at most this many store reads in memory at once, however many of them catch
    // up: without it, a thousand subscriptions to long streams would each hold a read while the queue is full.
    private const int CatchUpReads = 4;
    private readonly StreamFollowOptions _followOptions;
    private long _queuedBytes;

    // Bytes of answers and signals queued: the receive loop stops reading while more than MaxSendQueueBytes wait, so a
    // client that sends without reading its answers cannot grow the queue.
    private long _answerBytes;

    // Completed (and replaced) after each data message is sent, and after an answer while answers are over their bound:
    // what a catch-up waits on when the send queue is full, and the receive loop while answers are not being read.
    private TaskCompletionSource _sent = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _pending;
    private long _lastMessageAt;
    private Access _access;

    // The token in force (null when the server runs open), validated again every TokenRecheckInterval: a token that
    // passed when it was given can stop passing (its signing key withdrawn), and HTTP requests with it are refused then.
    private string? _token;
    private long _tokenCheckedAt;
    private int _recheckRunning;
    private readonly TaskCompletionSource _closeRequested = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private ITimer? _watch;
    private WebSocketCloseStatus? _closeStatus;
    private string? _closeReason;

    public StreamSocketConnection(WebSocket socket, HttpContext http, Access access, string? token, StreamSocketServices services)
    {
        _socket = socket;
        _http = http;
        _access = access;
        _token = services.Access.Enabled ? token : null;
        _tokenCheckedAt = services.Time.GetTimestamp();
        _services = services;
        _options = services.Options;
        _inFlight = new SemaphoreSlim(_options.MaxInFlight, _options.MaxInFlight);
        _followOptions = services.FollowOptions with { ReadGate = new SemaphoreSlim(CatchUpReads, CatchUpReads) };
        // The server stopping reaches the connection through RunAsync's registration, which also names the close code.
        _closing = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
        _lastMessageAt = services.Time.GetTimestamp();
    }

    /// <summary>Serves the connection until either side closes it or the server stops.</summary>
    /// <remarks>
    /// No socket call is ever cancelled: a cancelled WebSocket send or receive aborts the connection, and a close code
    /// could not be sent. The loops end by the close handshake instead; a peer that stops answering is cut by the
    /// keep-alive timeout.
    /// </remarks>
    public async Task RunAsync()
    {
        var sending = SendLoopAsync();
        _watch = _services.Time.CreateTimer(static self => ((StreamSocketConnection)self!).Watch(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _watch.Change(TimeSpan.Zero, Timeout.InfiniteTimeSpan);
        using var stopping = _services.Stopping.Register(() => CloseWith(WebSocketCloseStatus.EndpointUnavailable, "The server is stopping."));
        Enqueue(Hello());
        var receiving = ReceiveLoopAsync();
        await Task.WhenAny(receiving, _closeRequested.Task).ConfigureAwait(false);
        CloseWith(WebSocketCloseStatus.NormalClosure, null);

        // Operations and subscriptions end and queue their last messages; those are sent, then the close frame.
        await DrainAsync().ConfigureAwait(false);
        _outgoing.Complete();
        await sending.ConfigureAwait(false);
        await _watch.DisposeAsync().ConfigureAwait(false);
        await CloseAsync().ConfigureAwait(false);
        if (await Task.WhenAny(receiving, Task.Delay(TimeSpan.FromSeconds(5), _services.Time)).ConfigureAwait(false) != receiving)
        {
            // The peer never answered the close: cut it.
            _socket.Abort();
        }

        await receiving.ConfigureAwait(false);
    }

    public void Dispose()
    {
        _closing.Dispose();
        _inFlight.Dispose();
    }

    private async Task ReceiveLoopAsync()
    {
        // An idle connection holds no receive buffer: thousands of them wait at once. It waits with a zero-byte receive
        // (the WebSocket and Kestrel then hold nothing either), rents a buffer when a message starts, grows it for a
        // larger message and gives it back after each one.
        const int FirstBufferBytes = 4096;
        byte[]? buffer = null;
        try
        {
            while (!_closing.IsCancellationRequested)
            {
                var drained = WaitForAnswersToDrainAsync();
                if (!drained.IsCompleted)
                {
                    HandOverBurst();
                }

                await drained.ConfigureAwait(false);
                var receiving = _socket.ReceiveAsync(Memory<byte>.Empty, CancellationToken.None);
                if (!receiving.IsCompleted)
                {
                    // Nothing more has come in: the appends received so far go to the store now.
                    HandOverBurst();
                }

                var received = await receiving.ConfigureAwait(false);
                buffer = ArrayPool<byte>.Shared.Rent(FirstBufferBytes);
                var length = 0;
                while (!received.EndOfMessage && received.MessageType != WebSocketMessageType.Close)
                {
                    if (length >= _options.MaxMessageBytes)
                    {
                        // More is coming and the message is already at its bound.
                        CloseWith(WebSocketCloseStatus.MessageTooBig, $"A message is at most {_options.MaxMessageBytes} bytes.");
                        return;
                    }

                    if (length == buffer.Length)
                    {
                        var larger = ArrayPool<byte>.Shared.Rent(Math.Min(buffer.Length * 2, _options.MaxMessageBytes));
                        buffer.AsSpan(0, length).CopyTo(larger);
                        ArrayPool<byte>.Shared.Return(buffer);
                        buffer = larger;
                    }

                    var room = Math.Min(buffer.Length, _options.MaxMessageBytes) - length;
                    var rest = _socket.ReceiveAsync(buffer.AsMemory(length, room), CancellationToken.None);
                    if (!rest.IsCompleted)
                    {
                        // The rest of the message is still on its way, however long it takes: the appends before it go now.
                        HandOverBurst();
                    }

                    received = await rest.ConfigureAwait(false);
                    length += received.Count;
                }

                switch (received.MessageType)
                {
                    case WebSocketMessageType.Close:
                        CloseWith(WebSocketCloseStatus.NormalClosure, null);
                        return;
                    case WebSocketMessageType.Binary:
                        CloseWith(WebSocketCloseStatus.InvalidMessageType, "Messages are JSON text frames.");
                        return;
                }

                Volatile.Write(ref _lastMessageAt, _services.Time.GetTimestamp());
                var dispatched = await DispatchAsync(buffer.AsMemory(0, length)).ConfigureAwait(false);
                ArrayPool<byte>.Shared.Return(buffer);
                buffer = null;
                if (!dispatched)
                {
                    return;
                }
            }
        }
        catch (Exception ex) when (ex is WebSocketException or OperationCanceledException or IOException)
        {
            // The peer went away (or the connection was cut): nothing to answer.
            CloseWith(WebSocketCloseStatus.NormalClosure, null);
        }
        catch (Exception ex)
        {
            // A message the server failed on (its own fault: client input is answered with an error and the connection
            // goes on). Logged, and said as such to the client rather than as a normal closure.
            Log.OperationFailed(_services.Logger, ex);
            CloseWith(WebSocketCloseStatus.InternalServerError, "The server failed to handle a message.");
        }
        finally
        {
            HandOverBurst();
            if (buffer is not null)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    /// <summary>Parses one client message and starts its operation; false when the frame closes the connection.</summary>
    private async Task<bool> DispatchAsync(ReadOnlyMemory<byte> message)
    {
        JsonDocument document;
        try
        {
            // Read as deep as any JSON the server reads at all, so that data nested past what may be stored is refused by
            // the operation that carries it (as over HTTP), not by closing the connection.
            document = JsonDocument.Parse(message, FrameOptions);
        }
        catch (JsonException)
        {
            CloseWith(BadFrame, "A message must be one JSON object.");
            return false;
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !NamesAreText(root) || !root.TryGetProperty("op", out var opElement) || opElement.ValueKind != JsonValueKind.String
                || !TryGetText(opElement, out var op))
            {
                CloseWith(BadFrame, "A message must be a JSON object with a string \"op\" (and member names of Unicode text).");
                return false;
            }

            var id = OptionalString(root, "id");
            if (id is { Length: 0 or > MaxIdLength } || (id is null && root.TryGetProperty("id", out var given) && given.ValueKind != JsonValueKind.Null))
            {
                Enqueue(Error("id", null, 400, "INVALID_ID", $"id must be a string of 1 to {MaxIdLength} characters."));
                return true;
            }

            if (FieldOfWrongKind(root) is { } problem)
            {
                // Answered where the client looks for it: a subscription's errors carry its sub, an operation's its id.
                Enqueue(op is "subscribe" or "unsubscribe" && OptionalString(root, "sub") is { Length: > 0 and <= MaxIdLength } sub
                    ? Error("sub", sub, 400, "INVALID_FIELD", problem)
                    : Error("id", id, 400, "INVALID_FIELD", problem));
                return true;
            }

            if (op == "append" && TryAddToBurst(id, root))
            {
                return true;
            }

            // Anything else runs after the appends received before it were handed over.
            HandOverBurst();
            switch (op)
            {
                case "subscribe":
                    await SubscribeAsync(root).ConfigureAwait(false);
                    return true;
                case "unsubscribe":
                    Unsubscribe(root);
                    return true;
                case "append":
                    await StartAsync(id, root, AppendAsync).ConfigureAwait(false);
                    return true;
                case "auth":
                    await StartAsync(id, root, AuthAsync).ConfigureAwait(false);
                    return true;
                case "session.message" or "session.cancel" or "session.steer" or "session.regenerate" or "session.edit" or "session.presence":
                    await StartAsync(id, root, (i, r) => SessionAsync(op, i, r)).ConfigureAwait(false);
                    return true;
                case "ping":
                    // For clients that cannot send WebSocket pings (browsers): an answer proves the path both ways is
                    // alive. Answered in order behind what is already queued, and bounded as every answer is.
                    Enqueue(Pong(id));
                    return true;
                default:
                    Enqueue(Error("id", id, 400, "UNKNOWN_OP", $"Unknown op \"{Truncate(op)}\"; see docs/websocket.md."));
                    return true;
            }
        }
    }

    /// <summary>
    /// Starts an operation that answers its <c>id</c>, within <see cref="StreamSocketOptions.MaxInFlight"/>: the receive
    /// loop waits for a slot, which is the connection's back-pressure. The message is parsed before this returns.
    /// </summary>
    private async Task StartAsync(string? id, JsonElement root, Func<string, JsonElement, Task<byte[]>> operation)
    {
        if (id is null)
        {
            Enqueue(Error("id", null, 400, "MISSING_ID", "This operation needs an id to answer."));
            return;
        }

        await _inFlight.WaitAsync(_closing.Token).ConfigureAwait(false);
        Interlocked.Increment(ref _pending);
        Task<byte[]> work;
        try
        {
            work = operation(id, root);
        }
        catch (Exception ex)
        {
            // Whatever a message makes fail is that operation's answer: the connection and its subscriptions go on.
            work = Task.FromException<byte[]>(ex);
        }

        _ = AnswerAsync(id, work);
    }

    private async Task AnswerAsync(string id, Task<byte[]> work)
    {
        try
        {
            Enqueue(await work.ConfigureAwait(false));
        }
        catch (OperationCanceledException)
        {
            // The connection is closing: the client retries after it reconnects (producers deduplicate).
        }
        catch (Exception ex)
        {
            Enqueue(Failed(id, ex));
        }
        finally
        {
            Release();
        }
    }

    /// <summary>
    /// The answer to an operation that failed: the store unable to take it now as <c>503</c>, anything else (the server's
    /// own fault, logged) as <c>500</c>.
    /// </summary>
    private byte[] Failed(string id, Exception exception, bool logged = false)
    {
        if (exception is StreamStoreUnavailableException)
        {
            return Error("id", id, 503, "STORE_UNAVAILABLE", exception.Message);
        }

        if (!logged)
        {
            Log.OperationFailed(_services.Logger, exception);
        }

        return Error("id", id, 500, "INTERNAL", "The operation failed.");
    }

    private void Release()
    {
        Interlocked.Decrement(ref _pending);
        _inFlight.Release();
    }

    // ---- appends ------------------------------------------------------------------------------------------------------

    private Task<byte[]> AppendAsync(string id, JsonElement root)
    {
        var path = OptionalString(root, "path");
        if (PathError(path) is { } pathError)
        {
            return Task.FromResult(pathError.WithId(id));
        }

        if (!TryReadAppend(root, out var contentType, out var data, out var close, out var seq, out var producer, out var error))
        {
            return Task.FromResult(Error("id", id, 400, error.Code, error.Message));
        }

        // The same limit as an HTTP body's, whatever the frame size allows.
        if (data.Length > _services.Streams.MaxAppendBytes)
        {
            return Task.FromResult(Error("id", id, 413, "PAYLOAD_TOO_LARGE", $"The append's data exceeds the limit of {_services.Streams.MaxAppendBytes} bytes."));
        }

        // A large append is held until it is stored, possibly behind others to its path: it takes its bytes from the
        // server's append budget, shared with HTTP appends, as an HTTP body would (DurableStreams:MaxAppendBytesInFlight).
        if (!_services.Streams.AppendBudget.TryHold(data.Length, out var held))
        {
            return Task.FromResult(Error("id", id, 503, "SERVER_BUSY", "Too many large appends are in progress; retry shortly."));
        }

        var command = new AppendCommand(path!, contentType, data, close, seq, producer);

        // Appends to one path run in the order they were sent; appends to different paths run side by side.
        Task<byte[]> work;
        lock (_pathTails)
        {
            var previous = _pathTails.GetValueOrDefault(path!) ?? Task.CompletedTask;
            work = AppendAfterAsync(previous, id, command, held);
            _pathTails[path!] = work;
        }

        _ = work.ContinueWith(
            (done, state) =>
            {
                var (connection, key) = ((StreamSocketConnection, string))state!;
                lock (connection._pathTails)
                {
                    if (connection._pathTails.TryGetValue(key, out var tail) && tail == done)
                    {
                        connection._pathTails.Remove(key);
                    }
                }
            },
            (this, path!),
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
        return work;
    }

    /// <summary>
    /// Takes an append into the current burst if it can go to the store as it is, after whatever this connection
    /// appended to its path before: a small body, the write allowed at once, no other append to its path in flight but in
    /// a burst; for an ungoverned stream as it came, for a governed one (a session) once its policy decided it at once on
    /// what it holds in memory. Anything else (refusals included) goes through <see cref="AppendAsync(string, JsonElement)"/>.
    /// </summary>
    private bool TryAddToBurst(string? id, JsonElement root)
    {
        var streams = _services.Streams;
        if (id is null || !streams.TakesAppendsInOrder || _closing.IsCancellationRequested)
        {
            // A connection closing takes no more (the operation's own path refuses it as before).
            return false;
        }

        var path = OptionalString(root, "path");
        if (PathError(path) is not null
            || !TryReadAppend(root, out var contentType, out var data, out var close, out var seq, out var producer, out _)
            || data.Length > AppendBudget.SmallBody || data.Length > streams.MaxAppendBytes)
        {
            return false;
        }

        var allowed = AccessControl.AllowsAsync(_http, new StreamResource(path!), Capability.Write);
        if (!allowed.IsCompletedSuccessfully || !allowed.Result)
        {
            return false;
        }

        var command = new AppendCommand(path!, contentType, data, close, seq, producer);
        if (streams.PrepareDirect(command, out var request) is not null)
        {
            return false;
        }

        if (!_inFlight.Wait(0, CancellationToken.None))
        {
            // At the bound of operations in flight: the burst goes now, and this append waits for room as any other.
            return false;
        }

        AppendBurst burst;
        HeldAppend? held = null;
        lock (_pathTails)
        {
            // A governed append is decided only here, after everything this connection sent to its path before: what its
            // policy holds (a session's state and lock) is then as those appends left it, or still held by one in a burst.
            if ((_pathTails.TryGetValue(path!, out var tail) && !_burstsInFlight.Contains(tail) && tail != _burst?.Done.Task)
                || (request is null && (held = TryHold(command)) is null))
            {
                _inFlight.Release();
                return false;
            }

            burst = _burst ??= new AppendBurst();
            _pathTails[path!] = burst.Done.Task;
        }

        Interlocked.Increment(ref _pending);
        burst.Items.Add(new BurstItem(id, held?.Request ?? request!, command, held));
        if (burst.Items.Count >= MaxBurst)
        {
            HandOverBurst();
        }

        return true;
    }

    /// <summary>A governed append its policy decides at once, or null (then, whatever went wrong deciding it, it goes the usual way).</summary>
    private HeldAppend? TryHold(AppendCommand command)
    {
        try
        {
            return _services.Streams.HoldGoverned(command, _http);
        }
        catch (Exception ex)
        {
            Log.OperationFailed(_services.Logger, ex);
            return null;
        }
    }

    /// <summary>Hands the current burst of appends to the store (or, if it cannot take them at once, appends them one by one, in order).</summary>
    private void HandOverBurst()
    {
        var burst = _burst;
        if (burst is null)
        {
            return;
        }

        var requests = new AppendRequest[burst.Items.Count];
        for (var i = 0; i < requests.Length; i++)
        {
            requests[i] = burst.Items[i].Request;
        }

        lock (_pathTails)
        {
            _burst = null;
            _burstsInFlight.Add(burst.Done.Task);
        }

        Task<AppendResult[]>? taken;
        try
        {
            taken = _services.Streams.TryAppendInOrder(requests, out var results) ? results : null;
        }
        catch (Exception ex)
        {
            // Whatever the store threw, it took none of them: they go one by one, each answered for itself.
            Log.OperationFailed(_services.Logger, ex);
            taken = null;
        }

        if (taken is null)
        {
            // Taken one by one, so not in order with later bursts: appends after it to its paths wait for its answers.
            lock (_pathTails)
            {
                _burstsInFlight.Remove(burst.Done.Task);
            }
        }

        _ = AnswerBurstAsync(burst, taken);
    }

    /// <summary>Answers each append of a burst the store took at once (<paramref name="taken"/>), or appends and answers them one by one.</summary>
    private async Task AnswerBurstAsync(AppendBurst burst, Task<AppendResult[]>? taken)
    {
        var items = burst.Items;
        try
        {
            if (taken is null)
            {
                // What a policy held for the burst is let go first: each append is then decided again as it goes.
                foreach (var item in items)
                {
                    item.Held?.Complete(null);
                }

                foreach (var item in items)
                {
                    // One at a time, in order: each append's answer is its own, whatever happens to the others.
                    if (await (item.Held is null ? AppendAndAnswerAsync(item.Id, item.Request) : AppendAgainAsync(item)).ConfigureAwait(false) is { } answer)
                    {
                        Enqueue(answer);
                    }
                }

                return;
            }

            AppendResult[] results;
            try
            {
                results = await taken.ConfigureAwait(false);
                if (results.Length != items.Count)
                {
                    throw new InvalidOperationException($"The store answered {results.Length} appends of {items.Count}.");
                }
            }
            catch (Exception ex)
            {
                // One failure of the whole burst, logged once.
                for (var i = 0; i < items.Count; i++)
                {
                    Enqueue(Failed(items[i].Id, ex, logged: i > 0));
                }

                return;
            }

            if (items.Where((item, i) => item.Held is not null && results[i].Status == AppendStatus.TailMoved).Any())
            {
                // Some held append is to be made again once its policy let go of what it held: from then on, appends to this
                // burst's paths wait for this burst's end (its last re-run), not only for its store command, so none is
                // decided and stored before a re-run sent ahead of it.
                lock (_pathTails)
                {
                    _burstsInFlight.Remove(burst.Done.Task);
                }
            }

            var answered = new bool[items.Count];
            for (var i = 0; i < items.Count; i++)
            {
                var (id, request, _, held) = items[i];
                try
                {
                    if ((held is null ? results[i] : held.Complete(results[i])) is { } result)
                    {
                        Enqueue(Ack(id, StreamRequestHandler.AnswerDirect(request, result), request.Producer));
                        answered[i] = true;
                    }
                }
                catch (Exception ex)
                {
                    Enqueue(Failed(id, ex));
                    answered[i] = true;
                }
            }

            // A held append its policy found unwritten (another node moved the session meanwhile) is made again the usual
            // way, once every other one let go of what it held, in the order sent.
            for (var i = 0; i < items.Count; i++)
            {
                if (!answered[i] && await AppendAgainAsync(items[i]).ConfigureAwait(false) is { } again)
                {
                    Enqueue(again);
                }
            }
        }
        finally
        {
            lock (_pathTails)
            {
                _burstsInFlight.Remove(burst.Done.Task);
                foreach (var item in items)
                {
                    item.Held?.Complete(null);
                    if (_pathTails.TryGetValue(item.Request.Path, out var tail) && tail == burst.Done.Task)
                    {
                        _pathTails.Remove(item.Request.Path);
                    }
                }
            }

            for (var i = 0; i < items.Count; i++)
            {
                Release();
            }

            burst.Done.TrySetResult();
        }
    }

    private async Task<byte[]?> AppendAndAnswerAsync(string id, AppendRequest request)
    {
        try
        {
            return Ack(id, StreamRequestHandler.AnswerDirect(request, await _services.Streams.AppendDirectAsync(request).ConfigureAwait(false)), request.Producer);
        }
        catch (Exception ex)
        {
            return Failed(id, ex);
        }
    }

    /// <summary>
    /// A burst's append to a governed stream that was not written as held, made again as any other append is; no answer
    /// when the connection closes first (the client retries after it reconnects, as for any operation cut so).
    /// </summary>
    private async Task<byte[]?> AppendAgainAsync(BurstItem item)
    {
        try
        {
            return Ack(item.Id, await _services.Streams.AppendAsync(item.Command, _http, _closing.Token).ConfigureAwait(false), item.Command.Producer);
        }
        catch (OperationCanceledException) when (_closing.IsCancellationRequested)
        {
            return null;
        }
        catch (Exception ex)
        {
            return Failed(item.Id, ex);
        }
    }

    private sealed class AppendBurst
    {
        public List<BurstItem> Items { get; } = [];

        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>An append of a burst: the store's request, the append as it came, and what its policy held for it (a governed stream's).</summary>
    private readonly record struct BurstItem(string Id, AppendRequest Request, AppendCommand Command, HeldAppend? Held);

    private async Task<byte[]> AppendAfterAsync(Task previous, string id, AppendCommand command, long heldBytes)
    {
        try
        {
            try
            {
                await previous.ConfigureAwait(false);
            }
            catch (Exception)
            {
                // The earlier append answered its own failure; this one still runs.
            }

            if (!await AccessControl.AllowsAsync(_http, new StreamResource(command.Path), Capability.Write).ConfigureAwait(false))
            {
                return Error("id", id, 403, "FORBIDDEN", $"The token does not grant write on {command.Path}.");
            }

            var answer = await _services.Streams.AppendAsync(command, _http, _closing.Token).ConfigureAwait(false);
            return Ack(id, answer, command.Producer);
        }
        finally
        {
            if (heldBytes > 0)
            {
                _services.Streams.AppendBudget.Return(heldBytes);
            }
        }
    }

    private static bool TryReadAppend(JsonElement root, out string? contentType, out ReadOnlyMemory<byte> data, out bool close, out string? seq, out ProducerStamp? producer, out (string Code, string Message) error)
    {
        contentType = OptionalString(root, "contentType");
        data = ReadOnlyMemory<byte>.Empty;
        close = root.TryGetProperty("close", out var closeElement) && closeElement.ValueKind == JsonValueKind.True;
        seq = null;
        producer = null;
        error = default;
        var forms = 0;
        if (root.TryGetProperty("data", out var json))
        {
            forms++;
            data = JsonMarshal.GetRawUtf8Value(json).ToArray();
            contentType ??= "application/json";
        }

        if (root.TryGetProperty("text", out var text))
        {
            forms++;
            if (text.ValueKind != JsonValueKind.String || !TryGetText(text, out var value))
            {
                error = ("INVALID_APPEND", "text must be a string of Unicode text.");
                return false;
            }

            data = Encoding.UTF8.GetBytes(value);
        }

        if (root.TryGetProperty("base64", out var base64))
        {
            forms++;
            if (base64.ValueKind != JsonValueKind.String || !TryGetBase64(base64, out var bytes))
            {
                error = ("INVALID_APPEND", "base64 must be a base64 string.");
                return false;
            }

            data = bytes;
        }

        if (forms > 1)
        {
            error = ("INVALID_APPEND", "An append carries one of data, text or base64.");
            return false;
        }

        if (root.TryGetProperty("seq", out var seqElement))
        {
            seq = seqElement.ValueKind == JsonValueKind.String && TryGetText(seqElement, out var given) ? given : null;
            if (seq is null or { Length: 0 or > 256 })
            {
                error = ("INVALID_STREAM_SEQ", "seq must be a non-empty string of at most 256 characters.");
                return false;
            }
        }

        if (root.TryGetProperty("producer", out var producerElement))
        {
            if (producerElement.ValueKind != JsonValueKind.Object || !NamesAreText(producerElement)
                || OptionalString(producerElement, "id") is not { Length: > 0 and <= ProtocolParsing.MaxProducerIdLength } producerId
                || !TryReadProducerInteger(producerElement, "epoch", out var epoch)
                || !TryReadProducerInteger(producerElement, "seq", out var producerSeq))
            {
                error = ("INVALID_PRODUCER", "producer must be {\"id\": 1-256 characters, \"epoch\" and \"seq\": whole numbers from 0 to 2^53-1}.");
                return false;
            }

            producer = new ProducerStamp(producerId, epoch, producerSeq);
        }

        return true;
    }

    private static bool TryReadProducerInteger(JsonElement parent, string name, out long value)
    {
        value = 0;
        return parent.TryGetProperty(name, out var element)
               && element.ValueKind == JsonValueKind.Number
               && element.TryGetInt64(out value)
               && value is >= 0 and <= (1L << 53) - 1;
    }

    // ---- subscriptions ------------------------------------------------------------------------------------------------

    private async Task SubscribeAsync(JsonElement root)
    {
        var sub = OptionalString(root, "sub");
        if (RefusedSub(sub))
        {
            return;
        }

        var path = OptionalString(root, "path");
        if (PathError(path) is { } pathError)
        {
            Enqueue(pathError.WithSub(sub));
            return;
        }

        var offset = OptionalString(root, "offset") ?? StreamOffset.Beginning;
        long? requested = null;
        if (offset != StreamOffset.Beginning && offset != StreamOffset.Now)
        {
            if (!StreamOffset.TryParse(offset, out var parsed))
            {
                Enqueue(Error("sub", sub, 400, "INVALID_OFFSET", "offset must be -1, now, or an offset returned by this server."));
                return;
            }

            requested = parsed;
        }

        Subscription? ending;
        lock (_subscriptions)
        {
            ending = _subscriptions.GetValueOrDefault(sub) is { Unsubscribed: true } unsubscribing ? unsubscribing : null;
        }

        if (ending?.Task is { } endingTask)
        {
            // Unsubscribed just before and still ending (its follower stops at its next step): this one starts after it,
            // so the client sees the old one's unsubscribed first and nothing of it after.
            await endingTask.WaitAsync(_closing.Token).ConfigureAwait(false);
        }

        lock (_subscriptions)
        {
            if (_subscriptions.ContainsKey(sub))
            {
                Enqueue(Error("sub", sub, 409, "SUBSCRIPTION_EXISTS", "A subscription with this sub is live on this connection."));
                return;
            }

            if (_subscriptions.Count >= _options.MaxSubscriptions)
            {
                Enqueue(Error("sub", sub, 429, "TOO_MANY_SUBSCRIPTIONS", $"A connection holds at most {_options.MaxSubscriptions} subscriptions."));
                return;
            }
        }

        // An auth running beside this subscribe changes the token: read its count first, check again below if it moved.
        var authEpoch = Volatile.Read(ref _authEpoch);
        if (!await AccessControl.AllowsAsync(_http, new StreamResource(path!), Capability.Read).ConfigureAwait(false))
        {
            Enqueue(Error("sub", sub, 403, "FORBIDDEN", $"The token does not grant read on {path}."));
            return;
        }

        StreamLookup lookup;
        try
        {
            lookup = await _services.Store.GetAsync(path!, _closing.Token).ConfigureAwait(false);
            if (lookup.Status == StreamLookupStatus.Found)
            {
                await _services.Store.TouchAsync(lookup.Stream!, _closing.Token).ConfigureAwait(false);
            }
        }
        catch (StreamStoreUnavailableException ex)
        {
            Enqueue(Error("sub", sub, 503, "STORE_UNAVAILABLE", ex.Message));
            return;
        }

        if (lookup.Status != StreamLookupStatus.Found)
        {
            Enqueue(lookup.Status == StreamLookupStatus.Gone
                ? Error("sub", sub, 410, "STREAM_DELETED", "The stream has been deleted.")
                : Error("sub", sub, 404, "STREAM_NOT_FOUND", "No stream exists at this path."));
            return;
        }

        var stream = lookup.Stream!;
        if (requested > stream.TailPosition)
        {
            Enqueue(Error("sub", sub, 400, "OFFSET_BEYOND_TAIL", "offset is beyond the end of this stream."));
            return;
        }

        if (requested < stream.RetainedFrom)
        {
            Enqueue(OffsetGone(sub, stream.RetainedFrom));
            return;
        }

        var from = offset == StreamOffset.Now ? stream.TailPosition : requested ?? stream.RetainedFrom;
        // Not linked to the connection's token (a registration per subscription): closing stops each one itself.
        var subscription = new Subscription(sub, path!, new CancellationTokenSource());
        lock (_subscriptions)
        {
            // Checked again: the lookup awaited, and another subscribe with this sub may have started meanwhile.
            if (!_subscriptions.TryAdd(sub, subscription))
            {
                subscription.Stop.Dispose();
                Enqueue(Error("sub", sub, 409, "SUBSCRIPTION_EXISTS", "A subscription with this sub is live on this connection."));
                return;
            }

            if (_closing.IsCancellationRequested)
            {
                // The connection started closing while this subscribe looked the stream up.
                subscription.Cancel();
            }
        }

        // Granted under a token that an auth replaced meanwhile, perhaps after that auth looked at the live
        // subscriptions: the token in force decides, before anything is sent.
        if (Volatile.Read(ref _authEpoch) != authEpoch && !await StillAllowedAsync(path!).ConfigureAwait(false))
        {
            lock (_subscriptions)
            {
                _subscriptions.Remove(sub);
            }

            subscription.Stop.Dispose();
            Enqueue(Error("sub", sub, 403, "FORBIDDEN", $"The token now in force does not grant read on {path}."));
            return;
        }

        subscription.Task = FollowAsync(subscription, stream, from);
    }

    private async Task<bool> StillAllowedAsync(string path)
    {
        try
        {
            return await AccessControl.AllowsAsync(_http, new StreamResource(path), Capability.Read).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // An authorization handler that fails grants nothing.
            Log.OperationFailed(_services.Logger, ex);
            return false;
        }
    }

    /// <summary>Answers a missing or malformed sub with <c>400 INVALID_SUB</c>, for subscribe and unsubscribe alike.</summary>
    private bool RefusedSub([NotNullWhen(false)] string? sub)
    {
        if (sub is { Length: > 0 and <= MaxIdLength })
        {
            return false;
        }

        Enqueue(Error("sub", sub is null ? null : Truncate(sub), 400, "INVALID_SUB", $"sub must be a string of 1 to {MaxIdLength} characters."));
        return true;
    }

    /// <summary>The most unsubscribes of one ending subscription that wait for it to end; more are refused.</summary>
    private const int MaxUnsubscribesWaiting = 16;

    private void Unsubscribe(JsonElement root)
    {
        var sub = OptionalString(root, "sub");
        if (RefusedSub(sub))
        {
            return;
        }

        Subscription? subscription;
        var counted = false;
        lock (_subscriptions)
        {
            subscription = _subscriptions.GetValueOrDefault(sub);

            // Counted under the lock that its follower takes to leave: each unsubscribe it counts is answered when it ends.
            // A few at most, since all of them are answered at once then, past the receive loop's check of what waits
            // to be sent.
            if (subscription is not null && subscription.UnsubscribeRequests < MaxUnsubscribesWaiting)
            {
                subscription.UnsubscribeRequests++;
                counted = true;
            }
        }

        if (subscription is null)
        {
            Enqueue(Error("sub", sub, 404, "SUBSCRIPTION_NOT_FOUND", "No live subscription with this sub."));
            return;
        }

        if (!counted)
        {
            Enqueue(Error("sub", sub, 409, "UNSUBSCRIBE_PENDING", $"This subscription is ending; the {MaxUnsubscribesWaiting} unsubscribes already sent for it are answered when it has."));
            return;
        }

        subscription.Unsubscribed = true;
        subscription.Cancel();
    }

    private async Task FollowAsync(Subscription subscription, StreamInfo stream, long from)
    {
        // Let the subscribe's caller go on reading messages: following is this task's alone.
        await Task.Yield();
        var position = from;
        var follower = new StreamFollower(_services.Store, stream, _followOptions);
        var toldUpToDate = false;
        var ended = false;

        // The subscription leaves the connection's table as its last message is queued, under the table's lock: a
        // client that subscribes the same sub again on seeing that message (closed, fell-behind, an error) is not
        // refused as a duplicate, and nothing of that new subscription, nor the connection's closing drain, comes
        // between. Unsubscribes counted until then are answered right after that message; later ones find none.
        var left = false;
        void Final(byte[]? message)
        {
            if (left)
            {
                return;
            }

            left = true;
            lock (_subscriptions)
            {
                if (_subscriptions.TryGetValue(subscription.Sub, out var current) && ReferenceEquals(current, subscription))
                {
                    _subscriptions.Remove(subscription.Sub);
                }

                if (message is not null)
                {
                    Enqueue(message);
                }

                // One per unsubscribe the client sent: nothing of this subscription follows its unsubscribed.
                for (var i = 0; i < subscription.UnsubscribeRequests; i++)
                {
                    Enqueue(Signal("unsubscribed", subscription.Sub, position: null));
                }
            }
        }

        try
        {
            using (Telemetry.Reader("websocket"))
            {
                await foreach (var item in follower.FollowAsync(from, subscription.Stop.Token).ConfigureAwait(false))
                {
                    // Stopped (unsubscribed, or a refreshed token no longer grants the path): nothing more is queued, not even
                    // what the follower still had in hand when it was stopped.
                    subscription.Stop.Token.ThrowIfCancellationRequested();

                    // Data says itself whether the reader is at the tail; "up-to-date" alone is sent only when no data
                    // told it (a subscription that starts at the tail, or a read that ends exactly there).
                    var sentData = false;
                    switch (item.Kind)
                    {
                        case StreamFollowKind.Read:
                            // Catching up reads the store only as fast as the connection sends: no reason to give up.
                            // Once the queue is within its bound, the read (at most MaxReadBytes, already in memory) is
                            // queued whole, so the queue passes its bound by at most one read per read slot of the
                            // connection (CatchUpReads), which the read holds until it is queued.
                            await WaitForRoomAsync(subscription.Stop.Token).ConfigureAwait(false);
                            subscription.Stop.Token.ThrowIfCancellationRequested();
                            EnqueueCatchUp(DataMessage(subscription.Sub, stream.ContentType, [.. item.Read!.Chunks.Select(c => c.Data)], item.Position, item.AtTail && !item.ClosedAtTail));

                            position = item.Position;
                            sentData = true;
                            break;
                        case StreamFollowKind.Live:
                            var change = item.Change!;
                            if (change.Chunk.End > change.Chunk.Start)
                            {
                                var upToDate = item.AtTail && !change.Closed;
                                var message = StreamContentType.IsJson(stream.ContentType)
                                    ? LiveJsonMessage(subscription.DataPrefix ??= DataPrefix(subscription.Sub), change, item.Position, upToDate)
                                    : DataMessage(subscription.Sub, stream.ContentType, [change.Chunk.Data], item.Position, upToDate);
                                if (!EnqueueData(message))
                                {
                                    Final(Signal("fell-behind", subscription.Sub, position));
                                    ended = true;
                                    break;
                                }

                                sentData = true;
                            }

                            position = item.Position;
                            break;
                    }

                    if (ended)
                    {
                        break;
                    }

                    if (item.ClosedAtTail)
                    {
                        Final(Signal("closed", subscription.Sub, position));
                        ended = true;
                        break;
                    }

                    if (sentData)
                    {
                        toldUpToDate = item.AtTail;
                    }
                    else if (item.AtTail && !toldUpToDate && item.Kind != StreamFollowKind.Idle)
                    {
                        Enqueue(Signal("up-to-date", subscription.Sub, position));
                        toldUpToDate = true;
                    }
                }
            }

            if (!ended)
            {
                if (follower.End == StreamFollowEnd.Deleted)
                {
                    Final(Error("sub", subscription.Sub, 410, "STREAM_DELETED", "The stream has been deleted."));
                }
                else if (follower.End == StreamFollowEnd.Closed)
                {
                    Final(Signal("closed", subscription.Sub, position));
                }
                else if (follower.End == StreamFollowEnd.Trimmed)
                {
                    Final(OffsetGone(subscription.Sub, follower.EndRetainedFrom ?? position));
                }
            }
        }
        catch (OperationCanceledException) when (subscription.Stop.IsCancellationRequested)
        {
            if (subscription.Revoked)
            {
                // The offset reached, as with fell-behind: a client given read again resumes from there.
                Final(Write(w =>
                {
                    WriteError(w, "sub", subscription.Sub, 403, "FORBIDDEN", $"The token now in force does not grant read on {stream.Path}.");
                    w.WriteString("offset", StreamOffset.Format(position));
                }));
            }
        }
        catch (Exception ex) when (ex is StreamStoreUnavailableException or OperationCanceledException)
        {
            // The store could not read on (or gave up a read the subscription did not stop): resumed from the offset.
            Final(Signal("fell-behind", subscription.Sub, position));
        }
        catch (Exception ex)
        {
            Log.OperationFailed(_services.Logger, ex);
            Final(Error("sub", subscription.Sub, 500, "INTERNAL", "The subscription failed; subscribe again from its offset."));
        }
        finally
        {
            Final(null);
            subscription.Stop.Dispose();
        }
    }

    /// <summary>Waits until the send queue is within its byte bound.</summary>
    private async Task WaitForRoomAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var sent = Volatile.Read(ref _sent);
            if (Interlocked.Read(ref _queuedBytes) <= _options.MaxSendQueueBytes)
            {
                return;
            }

            await sent.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Queues a catch-up read's data message; the caller has waited for room (<see cref="WaitForRoomAsync"/>).</summary>
    private void EnqueueCatchUp(byte[] message)
    {
        Interlocked.Add(ref _queuedBytes, message.Length);
        if (!_outgoing.TryWrite(new Outgoing(message, IsData: true)))
        {
            Interlocked.Add(ref _queuedBytes, -message.Length);
        }
    }

    /// <summary>
    /// Queues a live data message, unless the connection's send queue is over its byte bound: then it queues nothing and
    /// answers false, and the subscription ends with <c>fell-behind</c> where the reader stands, to resume from there.
    /// </summary>
    private bool EnqueueData(byte[] message)
    {
        var queued = Interlocked.Add(ref _queuedBytes, message.Length);
        if (queued > _options.MaxSendQueueBytes && queued != message.Length)
        {
            Interlocked.Add(ref _queuedBytes, -message.Length);
            return false;
        }

        if (!_outgoing.TryWrite(new Outgoing(message, IsData: true)))
        {
            Interlocked.Add(ref _queuedBytes, -message.Length);
        }

        return true;
    }

    // ---- session operations and tokens ---------------------------------------------------------------------------------

    /// <summary>
    /// Runs a session operation through the session endpoint itself, with this connection's identity: the same parsing,
    /// rules, fence and answer as over HTTP. Only the transport differs.
    /// </summary>
    private async Task<byte[]> SessionAsync(string op, string id, JsonElement root)
    {
        var session = OptionalString(root, "session");
        var run = OptionalString(root, "run");
        if (session is null || !Identifiers.IsValid(session))
        {
            return Error("id", id, 400, "INVALID_SESSION_ID", "session must be a session id.");
        }

        if (op is "session.cancel" or "session.steer" && (run is null || !Identifiers.IsValid(run)))
        {
            return Error("id", id, 400, "INVALID_RUN_ID", "run must be a run id.");
        }

        var message = OptionalString(root, "message");
        if (op is "session.regenerate" or "session.edit" && (message is null || !Identifiers.IsValid(message)))
        {
            return Error("id", id, 400, "INVALID_MESSAGE_ID", "message must be a message id.");
        }

        var rest = op switch
        {
            "session.message" => session + "/messages",
            "session.presence" => session + "/presence",
            "session.cancel" => $"{session}/runs/{run}/cancel",
            "session.regenerate" => $"{session}/messages/{message}/regenerate",
            "session.edit" => $"{session}/messages/{message}/edit",
            _ => $"{session}/runs/{run}/steer",
        };
        var body = root.TryGetProperty("body", out var bodyElement) ? JsonMarshal.GetRawUtf8Value(bodyElement).ToArray() : [];

        // A large body is held until the operation is answered, possibly behind others on its session's lock: it takes
        // its bytes from the append budget that large appends over HTTP and here share (DurableStreams:MaxAppendBytesInFlight).
        var budget = _services.Streams.AppendBudget;
        if (body.Length > AppendBudget.SmallBody && body.Length > budget.Capacity)
        {
            return Error("id", id, 413, "PAYLOAD_TOO_LARGE", $"The operation's body exceeds the {budget.Capacity} bytes this server holds for large bodies at once.");
        }

        if (!budget.TryHold(body.Length, out var held))
        {
            return Error("id", id, 503, "SERVER_BUSY", "Too many large operations are in progress; retry shortly.");
        }

        try
        {
            return await RunSessionOperationAsync(id, rest, body).ConfigureAwait(false);
        }
        finally
        {
            if (held > 0)
            {
                budget.Return(held);
            }
        }
    }

    private async Task<byte[]> RunSessionOperationAsync(string id, string rest, byte[] body)
    {
        var context = new DefaultHttpContext { RequestServices = _http.RequestServices, User = _http.User };
        context.Items[AccessControl.ItemKey] = _access;
        context.Request.Method = HttpMethods.Post;
        context.Request.Path = Sessions.SessionEndpoints.Root + "/" + rest;
        context.Request.ContentType = "application/json";
        context.Request.ContentLength = body.Length;
        context.Request.Body = new MemoryStream(body, writable: false);
        using var response = new MemoryStream();
        context.Response.Body = response;
        context.RequestAborted = _closing.Token;
        await _services.Sessions.HandleAsync(context, rest).ConfigureAwait(false);
        return Response(id, context.Response.StatusCode, response.ToArray());
    }

    private async Task<byte[]> AuthAsync(string id, JsonElement root)
    {
        if (OptionalString(root, "token") is not { Length: > 0 and <= 16 * 1024 } token)
        {
            return Error("id", id, 400, "INVALID_TOKEN_FIELD", "token must be a non-empty string.");
        }

        if (!_services.Access.Enabled)
        {
            return Ack(id, new AppendAnswer(204), producer: null);
        }

        // One refresh at a time, in the order sent: two pipelined refreshes leave the later token in force.
        await _auth.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            var (principal, error) = await _services.Access.ValidateAsync(_http.RequestServices, token).ConfigureAwait(false);
            if (principal is null)
            {
                return Error("id", id, 401, "INVALID_TOKEN", error);
            }

            var access = _services.Access.AccessOf(principal)!;
            if (access.Subject != _access.Subject)
            {
                return Error("id", id, 403, "SUBJECT_CHANGED", "A connection keeps its subject; connect again to act as another.");
            }

            // Each operation from now on is checked with the new token. A subscription goes on only while the token in
            // force grants read on its path: a refresh that narrows the grants ends the others (403 on their sub), so
            // taking a right away from a token takes it away from the connections that already use it.
            _http.User = principal;
            _access = _services.Access.Establish(_http)!;
            Volatile.Write(ref _token, token);
            Volatile.Write(ref _tokenCheckedAt, _services.Time.GetTimestamp());
            Interlocked.Increment(ref _authEpoch);
            Subscription[] live;
            lock (_subscriptions)
            {
                live = [.. _subscriptions.Values];
            }

            foreach (var subscription in live)
            {
                if (!await AccessControl.AllowsAsync(_http, new StreamResource(subscription.Path), Capability.Read).ConfigureAwait(false))
                {
                    subscription.Revoked = true;
                    subscription.Cancel();
                }
            }

            // The connection now closes when this token expires, sooner or later than the one before it: the check
            // runs here, after any under way for the token before, and re-arms the timer for this one.
            Watch();

            return Ack(id, new AppendAnswer(204), producer: null);
        }
        finally
        {
            _auth.Release();
        }
    }

    // ---- sending, closing, keep-alive ---------------------------------------------------------------------------------

    /// <summary>
    /// Queues a message that is always sent: an answer or a signal. Their bytes are bounded by the receive loop, which
    /// reads nothing more while more than <see cref="StreamSocketOptions.MaxSendQueueBytes"/> of them wait.
    /// </summary>
    private void Enqueue(byte[] message)
    {
        Interlocked.Add(ref _answerBytes, message.Length);
        if (!_outgoing.TryWrite(new Outgoing(message, IsData: false)))
        {
            Interlocked.Add(ref _answerBytes, -message.Length);
        }
    }

    /// <summary>
    /// Waits while the answers queued are over the send queue's bound: the client is not reading them, so its next
    /// message is not read either (TCP back-pressure), and the keep-alive closes a peer that stops reading altogether.
    /// </summary>
    private async ValueTask WaitForAnswersToDrainAsync()
    {
        while (true)
        {
            var sent = Volatile.Read(ref _sent);
            if (Interlocked.Read(ref _answerBytes) <= _options.MaxSendQueueBytes)
            {
                return;
            }

            await sent.Task.WaitAsync(_closing.Token).ConfigureAwait(false);
        }
    }

    private async Task SendLoopAsync()
    {
        while (await _outgoing.WaitToReadAsync().ConfigureAwait(false))
        {
            while (_outgoing.TryRead(out var outgoing))
            {
                await SendAsync(outgoing).ConfigureAwait(false);
            }
        }
    }

    private async ValueTask SendAsync(Outgoing outgoing)
    {
        var (message, isData) = outgoing;
        try
        {
            if (_socket.State == WebSocketState.Open)
            {
                await _socket.SendAsync(message, WebSocketMessageType.Text, endOfMessage: true, CancellationToken.None).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is WebSocketException or IOException or ObjectDisposedException or OperationCanceledException)
        {
            // The WebSocket reports a write that fails after it aborted itself (the keep-alive giving up on a peer) as
            // OperationCanceledException: the connection ends as for any broken send, and the loop goes on discarding.
            CloseWith(WebSocketCloseStatus.NormalClosure, null);
        }
        finally
        {
            if (isData)
            {
                Interlocked.Add(ref _queuedBytes, -message.Length);
                Interlocked.Exchange(ref _sent, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
            }
            else if (Interlocked.Add(ref _answerBytes, -message.Length) + message.Length > _options.MaxSendQueueBytes)
            {
                // The receive loop may be waiting for the answers to drain.
                Interlocked.Exchange(ref _sent, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
            }
        }
    }

    /// <summary>
    /// Closes the connection when its token expires unreplaced, or when it has been idle too long. Called by the
    /// connection's one timer, which it re-arms: an idle connection waits on a timer only, not on a task.
    /// </summary>
    private void Watch()
    {
        // One check at a time, each reading the token in force when it runs. A refresh runs one itself once the new
        // token is in force, so a check under way for the token before cannot re-arm the timer after it.
        lock (_watchLock)
        {
            if (_closing.IsCancellationRequested)
            {
                return;
            }

            var time = _services.Time;
            var wait = _options.IdleTimeout;
            if (_access.ExpiresAt is { } expiresAt)
            {
                var left = expiresAt - time.GetUtcNow();
                if (left <= TimeSpan.Zero)
                {
                    CloseWith(TokenExpired, "The access token expired; connect again with a fresh one.");
                    return;
                }

                wait = left < wait ? left : wait;
            }

            if (Volatile.Read(ref _token) is not null)
            {
                var recheckLeft = _options.TokenRecheckInterval - time.GetElapsedTime(Volatile.Read(ref _tokenCheckedAt));
                if (recheckLeft <= TimeSpan.Zero)
                {
                    RecheckToken();
                    recheckLeft = _options.TokenRecheckInterval;
                }

                wait = recheckLeft < wait ? recheckLeft : wait;
            }

            // Idle: no subscription, no operation under way, and no message for IdleTimeout. A connection that may become
            // idle is checked again when its IdleTimeout since the last message is up, not a whole IdleTimeout later.
            TimeSpan? idleLeft;
            lock (_subscriptions)
            {
                idleLeft = _subscriptions.Count == 0 && Volatile.Read(ref _pending) == 0
                    ? _options.IdleTimeout - time.GetElapsedTime(Volatile.Read(ref _lastMessageAt))
                    : null;
            }

            if (idleLeft <= TimeSpan.Zero)
            {
                CloseWith(WebSocketCloseStatus.NormalClosure, "Idle.");
                return;
            }

            if (idleLeft < wait)
            {
                wait = idleLeft.Value;
            }

            try
            {
                _watch?.Change(wait, Timeout.InfiniteTimeSpan);
            }
            catch (ObjectDisposedException)
            {
                // The connection ended meanwhile.
            }
        }
    }

    /// <summary>
    /// Validates the token in force again, off the watch's timer; one the server no longer accepts closes the connection
    /// with <c>4401</c>. Skipped while an <c>auth</c> replaces the token: that validates the new one.
    /// </summary>
    private void RecheckToken()
    {
        Volatile.Write(ref _tokenCheckedAt, _services.Time.GetTimestamp());
        if (Interlocked.Exchange(ref _recheckRunning, 1) == 1)
        {
            return;
        }

        _ = Task.Run(async () =>
        {
            try
            {
                if (!await _auth.WaitAsync(0).ConfigureAwait(false))
                {
                    return;
                }

                try
                {
                    if (_closing.IsCancellationRequested || Volatile.Read(ref _token) is not { } token)
                    {
                        return;
                    }

                    switch (await _services.Access.StillValidAsync(_http.RequestServices, token).ConfigureAwait(false))
                    {
                        case false:
                            CloseWith(TokenExpired, "The access token is no longer accepted; connect again with a fresh one.");
                            break;
                        case null:
                            // The scheme could not judge the token (an identity provider's keys out of reach): the
                            // connection goes on, as HTTP requests with the same token would be answered no worse.
                            Log.TokenRecheckUndecided(_services.Logger);
                            break;
                    }
                }
                finally
                {
                    _auth.Release();
                }
            }
            catch (Exception ex) when (ex is ObjectDisposedException or OperationCanceledException)
            {
                // The connection ended meanwhile.
            }
            catch (Exception ex)
            {
                // The scheme failed to answer (an identity provider out of reach is answered as a failed token, not
                // thrown): the connection goes on, and the next check tries again.
                Log.TokenRecheckFailed(_services.Logger, ex);
            }
            finally
            {
                Volatile.Write(ref _recheckRunning, 0);
            }
        });
    }

    /// <summary>Starts closing the connection with <paramref name="status"/>; the first reason given is the one sent.</summary>
    private void CloseWith(WebSocketCloseStatus status, string? reason)
    {
        lock (_closeRequested)
        {
            if (_closeStatus is not null)
            {
                return;
            }

            _closeStatus = status;
            _closeReason = reason;
        }

        try
        {
            _closing.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }

        // A subscribe that adds itself after this sees _closing cancelled and stops at once.
        Subscription[] subscriptions;
        lock (_subscriptions)
        {
            subscriptions = [.. _subscriptions.Values];
        }

        foreach (var subscription in subscriptions)
        {
            subscription.Cancel();
        }

        _closeRequested.TrySetResult();
    }

    /// <summary>Waits for the operations in flight and the subscriptions to end, so their last messages are queued.</summary>
    private async Task DrainAsync()
    {
        Task[] followers;
        lock (_subscriptions)
        {
            followers = _subscriptions.Values.Select(s => s.Task ?? Task.CompletedTask).ToArray();
        }

        try
        {
            await Task.WhenAll(followers).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Each follower ended on the connection's cancellation.
        }

        for (var i = 0; i < _options.MaxInFlight; i++)
        {
            await _inFlight.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    private async Task CloseAsync()
    {
        if (_socket.State is not (WebSocketState.Open or WebSocketState.CloseReceived))
        {
            return;
        }

        var status = _closeStatus ?? WebSocketCloseStatus.NormalClosure;
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await _socket.CloseOutputAsync(status, _closeReason, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is WebSocketException or OperationCanceledException or IOException)
        {
        }
    }

    // ---- messages -----------------------------------------------------------------------------------------------------

    private byte[] Hello() => Write(w =>
    {
        w.WriteString("type", "hello");
        w.WriteString("protocol", StreamSocketOptions.SubProtocol);
        w.WriteNumber("maxMessageBytes", _options.MaxMessageBytes);
        w.WriteNumber("maxInFlight", _options.MaxInFlight);
    });

    internal static byte[] DataMessage(string sub, string contentType, IReadOnlyList<ReadOnlyMemory<byte>> chunks, long to, bool upToDate) => Write(w =>
    {
        w.WriteString("type", "data");
        w.WriteString("sub", sub);
        w.WriteString("offset", StreamOffset.Format(to));
        if (upToDate)
        {
            w.WriteBoolean("upToDate", true);
        }

        if (StreamContentType.IsJson(contentType))
        {
            var joined = new ArrayBufferWriter<byte>();
            SseEncoder.WriteJsonArray(joined, chunks);
            w.WritePropertyName("data");
            w.WriteRawValue(joined.WrittenSpan, skipInputValidation: true);
        }
        else
        {
            var all = new ArrayBufferWriter<byte>();
            for (var i = 0; i < chunks.Count; i++)
            {
                all.Write(chunks[i].Span);
            }

            if (StreamContentType.IsTextForSse(contentType) && System.Text.Unicode.Utf8.IsValid(all.WrittenSpan))
            {
                w.WriteString("text", all.WrittenSpan);
            }
            else
            {
                w.WriteBase64String("base64", all.WrittenSpan);
            }
        }
    });

    // The key of a live change's data as a JSON array, shared by every WebSocket subscriber of its stream.
    private static readonly object JsonArrayEncoding = new();

    /// <summary>
    /// A <c>data</c> message for a live change of a JSON stream, as <see cref="DataMessage"/> writes it, assembled from
    /// the subscription's encoded prefix and the change's JSON array, which is encoded once for every subscriber: one
    /// array per delivery instead of a JSON writer, its buffers and a copy of the data.
    /// </summary>
    internal static byte[] LiveJsonMessage(byte[] prefix, LiveAppend change, long to, bool upToDate)
    {
        var data = change.GetOrAddEncoding(JsonArrayEncoding, static c =>
        {
            var joined = new ArrayBufferWriter<byte>(c.Chunk.Data.Length + 2);
            SseEncoder.WriteJsonArray(joined, [c.Chunk.Data]);
            return joined.WrittenSpan.ToArray();
        });
        var upToDateField = upToDate ? ",\"upToDate\":true"u8 : [];
        var message = new byte[prefix.Length + StreamOffset.Width + 1 + upToDateField.Length + DataField.Length + data.Length + 1];
        var at = 0;
        Put(message, ref at, prefix);
        Span<char> offset = stackalloc char[StreamOffset.Width];
        StreamOffset.TryFormat(to, offset, out _);
        at += Encoding.ASCII.GetBytes(offset, message.AsSpan(at));
        Put(message, ref at, "\""u8);
        Put(message, ref at, upToDateField);
        Put(message, ref at, DataField);
        Put(message, ref at, data);
        Put(message, ref at, "}"u8);
        return message;

        static void Put(byte[] target, ref int at, ReadOnlySpan<byte> bytes)
        {
            bytes.CopyTo(target.AsSpan(at));
            at += bytes.Length;
        }
    }

    private static ReadOnlySpan<byte> DataField => ",\"data\":"u8;

    // {"type":"data","sub":"<sub>","offset":" with the sub escaped as the JSON writer escapes it.
    internal static byte[] DataPrefix(string sub)
    {
        var buffer = new ArrayBufferWriter<byte>(64);
        using (var writer = new Utf8JsonWriter(buffer, WriterOptions))
        {
            writer.WriteStartObject();
            writer.WriteString("type", "data");
            writer.WriteString("sub", sub);
            writer.Flush();
        }

        return [.. buffer.WrittenSpan, .. ",\"offset\":\""u8];
    }

    private static byte[] Signal(string type, string sub, long? position) => Write(w =>
    {
        w.WriteString("type", type);
        w.WriteString("sub", sub);
        if (position is { } at)
        {
            w.WriteString("offset", StreamOffset.Format(at));
        }
    });

    private static byte[] Pong(string? id) => Write(w =>
    {
        w.WriteString("type", "pong");
        if (id is not null)
        {
            w.WriteString("id", id);
        }
    });

    private static byte[] Ack(string id, AppendAnswer answer, ProducerStamp? producer) => Write(w =>
    {
        if (!answer.Succeeded)
        {
            WriteError(w, "id", id, answer.Status, answer.Code!, answer.Message!);
            if (answer.Code == "PRODUCER_SEQ_GAP" && answer.Result is { } gap)
            {
                w.WriteNumber("expectedSeq", gap.ProducerSeq);
            }
            else if (answer.Code == "STALE_PRODUCER_EPOCH" && answer.Result is { } stale)
            {
                w.WriteNumber("epoch", stale.ProducerEpoch);
            }

            return;
        }

        w.WriteString("type", "ack");
        w.WriteString("id", id);
        w.WriteNumber("status", answer.Status);
        if (answer.Result is { } result)
        {
            w.WriteString("offset", StreamOffset.Format(result.TailPosition));
            if (result.Closed)
            {
                w.WriteBoolean("closed", true);
            }

            if (producer is not null && result.Status != AppendStatus.AlreadyClosed)
            {
                w.WriteStartObject("producer");
                w.WriteNumber("epoch", result.ProducerEpoch);
                w.WriteNumber("seq", result.ProducerSeq);
                w.WriteEndObject();
            }
        }
    });

    private static byte[] Response(string id, int status, byte[] body) => Write(w =>
    {
        w.WriteString("type", "response");
        w.WriteString("id", id);
        w.WriteNumber("status", status);
        if (body.Length > 0)
        {
            w.WritePropertyName("body");
            w.WriteRawValue(body, skipInputValidation: true);
        }
    });

    private static byte[] Error(string key, string? value, int status, string code, string message) => Write(w => WriteError(w, key, value, status, code, message));

    /// <summary>A subscription's start, or its next read, lies before the stream's retained data (as HTTP's 410).</summary>
    private static byte[] OffsetGone(string sub, long retainedFrom) => Write(w =>
    {
        WriteError(w, "sub", sub, 410, "OFFSET_GONE", "The data at this offset was removed by retention; subscribe again from retainedFrom.");
        w.WriteString("retainedFrom", StreamOffset.Format(retainedFrom));
    });

    private static void WriteError(Utf8JsonWriter w, string key, string? value, int status, string code, string message)
    {
        w.WriteString("type", "error");
        if (value is not null)
        {
            w.WriteString(key, value);
        }

        w.WriteNumber("status", status);
        w.WriteString("code", code);
        w.WriteString("message", message);
    }

    private static byte[] Write(Action<Utf8JsonWriter> body)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var writer = new Utf8JsonWriter(buffer, WriterOptions))
        {
            writer.WriteStartObject();
            body(writer);
            writer.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    // ---- parsing helpers ----------------------------------------------------------------------------------------------

    private PathRefusal? PathError(string? path)
    {
        if (path is null)
        {
            return new PathRefusal(400, "INVALID_PATH", "path must be a stream path.");
        }

        if (StreamPaths.Validate(path, _services.StreamOptions.MaxPathLength) is { } error)
        {
            return new PathRefusal(400, "INVALID_PATH", error);
        }

        return StreamPaths.IsReserved(path)
            ? new PathRefusal(400, "INVALID_PATH", "The control APIs are not streams.")
            : null;
    }

    /// <summary>
    /// The problem with a field the protocol defines that holds a value of the wrong kind (a number as an offset, a string
    /// as <c>close</c>), or null. Such a field is refused, not read as absent: an offset of 5 must not mean the start.
    /// </summary>
    private static string? FieldOfWrongKind(JsonElement root)
    {
        // One pass over the message's properties: looking each field up by name would scan them all once per field, for
        // every append received.
        foreach (var property in root.EnumerateObject())
        {
            var value = property.Value;
            if (property.NameEquals("close"u8))
            {
                if (value.ValueKind is not (JsonValueKind.True or JsonValueKind.False or JsonValueKind.Null))
                {
                    return "close must be true or false.";
                }

                continue;
            }

            if (StringField(property) is not { } name)
            {
                continue;
            }

            if (value.ValueKind is not (JsonValueKind.String or JsonValueKind.Null))
            {
                return $"{name} must be a string.";
            }

            if (value.ValueKind == JsonValueKind.String && !IsText(value))
            {
                return $"{name} must be a string of Unicode text (it escapes a lone surrogate).";
            }
        }

        return null;
    }

    /// <summary>The name of the protocol's string field <paramref name="property"/> is, or null for any other property.</summary>
    private static string? StringField(JsonProperty property)
    {
        foreach (var (name, utf8) in StringFields)
        {
            if (property.NameEquals(utf8))
            {
                return name;
            }
        }

        return null;
    }

    private static readonly (string Name, byte[] Utf8)[] StringFields =
        [.. new[] { "path", "contentType", "sub", "offset", "session", "run", "message", "token" }.Select(n => (n, System.Text.Encoding.UTF8.GetBytes(n)))];

    /// <summary>
    /// Decodes a JSON string as base64. Like <see cref="TryGetText"/>, a string that escapes a lone surrogate throws when
    /// read; it is not base64 either.
    /// </summary>
    private static bool TryGetBase64(JsonElement element, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out byte[]? bytes)
    {
        try
        {
            return element.TryGetBytesFromBase64(out bytes);
        }
        catch (InvalidOperationException)
        {
            bytes = null;
            return false;
        }
    }

    /// <summary>A string field's value; null when it is absent, not a string, or not text (see <see cref="TryGetText"/>).</summary>
    private static string? OptionalString(JsonElement parent, string name)
        => parent.TryGetProperty(name, out var element) && element.ValueKind == JsonValueKind.String && TryGetText(element, out var text) ? text : null;

    /// <summary>
    /// Reads a JSON string as text. JSON lets a string escape a lone surrogate (<c>"\ud800"</c>), which is valid UTF-8 on
    /// the wire but no .NET string can hold; reading one throws, so every string a client sends is read through here.
    /// </summary>
    private static bool TryGetText(JsonElement element, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out string? text)
    {
        try
        {
            text = element.GetString()!;
            return true;
        }
        catch (InvalidOperationException)
        {
            text = null;
            return false;
        }
    }

    /// <summary>
    /// Whether a JSON string holds text, checked without reading it into a string when it has no escape (the parser has
    /// already checked its UTF-8; only an escape can spell a lone surrogate), so fields checked here and read later are
    /// decoded once.
    /// </summary>
    private static bool IsText(JsonElement element) => !IsEscaped(element) || TryGetText(element, out _);

    private static bool IsEscaped(JsonElement element) => JsonMarshal.GetRawUtf8Value(element).Contains((byte)'\\');

    /// <summary>
    /// Whether every member name of an object is text. A name that escapes a lone surrogate (valid JSON and UTF-8) cannot
    /// be compared with the names the server looks up: the JSON reader throws when it unescapes it.
    /// </summary>
    private static bool NamesAreText(JsonElement element)
    {
        foreach (var property in element.EnumerateObject())
        {
            if (JsonMarshal.GetRawUtf8PropertyName(property).Contains((byte)'\\'))
            {
                try
                {
                    _ = property.Name;
                }
                catch (InvalidOperationException)
                {
                    return false;
                }
            }
        }

        return true;
    }

    private static string Truncate(string? value) => value is { Length: > 64 } ? value[..64] + "…" : value ?? string.Empty;

    private sealed record PathRefusal(int Status, string Code, string Message)
    {
        public byte[] WithId(string id) => Error("id", id, Status, Code, Message);

        public byte[] WithSub(string sub) => Error("sub", sub, Status, Code, Message);
    }

    /// <summary>A message waiting to be sent; stream data counts against the send queue's byte bound.</summary>
    private readonly record struct Outgoing(byte[] Message, bool IsData);

    private sealed class Subscription(string sub, string path, CancellationTokenSource stop)
    {
        public string Sub { get; } = sub;

        public string Path { get; } = path;

        public CancellationTokenSource Stop { get; } = stop;

        public Task? Task { get; set; }

        public volatile bool Unsubscribed;

        /// <summary>The unsubscribes received for it, each answered once it ends (guarded by the subscriptions' lock).</summary>
        public int UnsubscribeRequests;

        /// <summary>Set when a refreshed token no longer grants read on <see cref="Path"/>.</summary>
        public volatile bool Revoked;

        /// <summary>The start of this subscription's <c>data</c> messages, encoded on its first live change.</summary>
        public byte[]? DataPrefix { get; set; }

        /// <summary>Stops the subscription's follower; a no-op once it ended and released its token.</summary>
        public void Cancel()
        {
            try
            {
                Stop.Cancel();
            }
            catch (ObjectDisposedException)
            {
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(1300, LogLevel.Error, "A WebSocket operation failed")]
        public static partial void OperationFailed(ILogger logger, Exception exception);

        [LoggerMessage(1302, LogLevel.Warning, "Validating a WebSocket connection's token again failed; it is tried again at the next check")]
        public static partial void TokenRecheckFailed(ILogger logger, Exception exception);

        [LoggerMessage(1303, LogLevel.Warning, "The authentication scheme could not judge a WebSocket connection's token again (its keys out of reach?); the connection goes on and the token is checked again at the next check")]
        public static partial void TokenRecheckUndecided(ILogger logger);
    }
}
