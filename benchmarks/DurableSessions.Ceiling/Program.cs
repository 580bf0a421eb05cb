// The ceilings of this machine for what the server does, measured with Kestrel and nothing behind it. The load tool's
// scenarios run against it unchanged, so the ratio of the server's figure to this one is the share of Kestrel's own
// ceiling the server keeps (BENCHMARKS.md).
//
// - One append per request: `PUT /v1/stream/{path}` answers 201 and `POST /v1/stream/{path}` 204 with a next offset
//   after reading the whole body; nothing is stored or synced.
// - Fan-out: `GET /v1/stream/{path}?live=sse` holds an SSE response open (from the tail only). Each `POST` encodes its
//   body once as a data event and a control event, and writes those bytes to every open reader of the stream from the
//   appending request itself before answering: no queue, wake-up or task per reader, the least a fan-out can do.
// - Appends over a WebSocket: `/v1/ws` (subprotocol `durable-streams.v1`) answers each `append` message with an `ack`
//   carrying its id and the stream's next offset, from the loop that received it; nothing is stored or synced.
// - Sessions answered by the demo model: `PUT /v1/sessions/{id}` makes the session's stream and `POST
//   /v1/sessions/{id}/messages` writes the user's message and starts a reply by the same model the server's agent
//   uses (`DemoChatClient`, `--TokensPerSecond`, default 50), written as the agent writes it (its first token at once,
//   then what gathered as one delta event, a 30 ms linger after the earlier of the write before and its first token,
//   then the complete message and the run's end), with the same events, made by the server's own factory
//   (`SessionEvents`). Each write goes to the session's SSE readers as above: no store, no turn, no fence, no request.
//
//   dotnet benchmarks/DurableSessions.Ceiling/bin/Release/net10.0/DurableSessions.Ceiling.dll --urls http://127.0.0.1:5302
using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.IO.Pipelines;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using DurableSessions;
using DurableSessions.Agents;
using DurableSessions.Sessions;
using Microsoft.Extensions.AI;

var builder = WebApplication.CreateSlimBuilder(args);
builder.Logging.ClearProviders();
var app = builder.Build();

// Bytes per stream, so that each append does the least a store must: find its stream and move its tail.
var tails = new ConcurrentDictionary<string, long>(StringComparer.Ordinal);
var live = new ConcurrentDictionary<string, LiveReaders>(StringComparer.Ordinal);

app.MapPut("/v1/stream/{**path}", async (string path, HttpContext context) =>
{
    await Drain(context.Request.BodyReader, context.RequestAborted);
    tails.TryAdd(path, 0);
    return Results.StatusCode(201);
});

app.UseWebSockets();
app.Map("/v1/ws", async (HttpContext context) =>
{
    if (!context.WebSockets.IsWebSocketRequest)
    {
        context.Response.StatusCode = 400;
        return;
    }

    using var socket = await context.WebSockets.AcceptWebSocketAsync("durable-streams.v1");
    var buffer = new byte[64 * 1024];
    var ack = new byte[256];
    while (true)
    {
        var length = 0;
        ValueWebSocketReceiveResult result;
        do
        {
            result = await socket.ReceiveAsync(buffer.AsMemory(length), context.RequestAborted);
            length += result.Count;
        }
        while (!result.EndOfMessage && length < buffer.Length);

        if (result.MessageType == WebSocketMessageType.Close)
        {
            await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, CancellationToken.None);
            return;
        }

        var message = buffer.AsSpan(0, length);
        var id = Field(message, "\"id\":\""u8);
        var path = Encoding.UTF8.GetString(Field(message, "\"path\":\""u8));
        var tail = tails.AddOrUpdate(path, length, (_, t) => t + length);
        var written = 0;
        Append(ack, ref written, "{\"type\":\"ack\",\"id\":\""u8);
        Append(ack, ref written, id);
        Append(ack, ref written, "\",\"offset\":\""u8);
        Append(ack, ref written, Encoding.ASCII.GetBytes(tail.ToString("D16", CultureInfo.InvariantCulture)));
        Append(ack, ref written, "\"}"u8);
        await socket.SendAsync(ack.AsMemory(0, written), WebSocketMessageType.Text, endOfMessage: true, context.RequestAborted);
    }
});

app.MapGet("/v1/stream/{**path}", async (string path, HttpContext context) =>
{
    if (context.Request.Query["live"] != "sse" || !tails.TryGetValue(path, out var tail))
    {
        context.Response.StatusCode = 404;
        return;
    }

    context.Response.ContentType = "text/event-stream";
    context.Response.Headers.CacheControl = "no-cache";
    var output = context.Response.BodyWriter;
    output.Write(ControlEvent(tail));
    await output.FlushAsync(context.RequestAborted);
    var readers = live.GetOrAdd(path, _ => new LiveReaders());
    var reader = new LiveReader(output, context);
    lock (readers)
    {
        readers.Items.Add(reader);
    }

    try
    {
        await Task.Delay(Timeout.Infinite, context.RequestAborted);
    }
    catch (OperationCanceledException)
    {
    }
    finally
    {
        // Under the lock that appends write under, so no append writes to a response that has ended.
        lock (readers)
        {
            readers.Items.Remove(reader);
        }
    }
});

app.MapPost("/v1/stream/{**path}", async (string path, HttpContext context) =>
{
    var body = await ReadBody(context.Request.BodyReader, context.RequestAborted);
    if (!tails.TryGetValue(path, out _))
    {
        return Results.NotFound();
    }

    context.Response.Headers["Stream-Next-Offset"] = Publish(path, body).ToString("D16", CultureInfo.InvariantCulture);
    return Results.NoContent();
});

var model = new DemoChatClient(app.Configuration.GetValue("TokensPerSecond", 50.0));

// Each session's conversation, which the model is given as the server's agent gives it: the same questions then get
// different replies, of the same spread of lengths.
var conversations = new ConcurrentDictionary<string, List<ChatMessage>>(StringComparer.Ordinal);
const string Agent = "agent:demo";

app.MapPut("/v1/sessions/{id}", async (string id, HttpContext context) =>
{
    await Drain(context.Request.BodyReader, context.RequestAborted);
    tails.TryAdd("sessions/" + id, 0);
    return Results.StatusCode(201);
});

app.MapPost("/v1/sessions/{id}/messages", async (string id, HttpContext context) =>
{
    var body = await ReadBody(context.Request.BodyReader, context.RequestAborted);
    var path = "sessions/" + id;
    if (!tails.ContainsKey(path))
    {
        return Results.NotFound();
    }

    var text = JsonDocument.Parse(body).RootElement.GetProperty("text").GetString() ?? string.Empty;
    var posted = SessionEvents.System.PostedMessage("anonymous", [new TextPart(text)]);
    var question = posted.Key;
    var tail = Publish(path, Body(posted));
    _ = Task.Run(() => ReplyAsync(path, question, text));
    return Results.Json(new { messageId = question, offset = tail.ToString("D16", CultureInfo.InvariantCulture) }, statusCode: 201);
});

// How many live readers were cut off for falling behind: a cut reader of a session makes its load smaller.
app.MapGet("/ceiling/cut", () => LiveReader.Cut);

app.Run();

// Writes one append to the stream's live readers; returns the stream's new tail.
long Publish(string path, byte[] body)
{
    var tail = tails.AddOrUpdate(path, body.Length, (_, t) => t + body.Length);
    if (live.TryGetValue(path, out var readers))
    {
        var frame = Frame(body, tail);
        lock (readers)
        {
            foreach (var reader in readers.Items)
            {
                reader.Offer(frame);
            }
        }
    }

    return tail;
}

// One reply, as the server's agent writes it.
async Task ReplyAsync(string path, string trigger, string question)
{
    var events = SessionEvents.System;
    var started = events.RunStarted(events.NewId("r"), Agent, events.NewId("m"), trigger);
    var run = (SessionRun)started.Value!;
    Publish(path, Body(started, events.Reply(ChangeOperation.Insert, run.MessageId!, Agent, run.Id!, [new TextPart()], MessageStatus.Streaming, run.StartedAt!)));

    var reply = new StringBuilder();
    var deltas = new DeltaWriter(delta => Publish(path, Body(delta)), run, TimeSpan.FromMilliseconds(30));
    var conversation = conversations.GetOrAdd(path, _ => []);
    List<ChatMessage> history;
    lock (conversation)
    {
        conversation.Add(new ChatMessage(ChatRole.User, question));
        history = [.. conversation];
    }

    await foreach (var update in model.GetStreamingResponseAsync(history))
    {
        if (update.Text is { Length: > 0 } token)
        {
            reply.Append(token);
            deltas.Add(token);
        }
    }

    await deltas.FlushAsync();
    lock (conversation)
    {
        conversation.Add(new ChatMessage(ChatRole.Assistant, reply.ToString()));
    }

    Publish(path, Body(
        events.Reply(ChangeOperation.Update, run.MessageId!, Agent, run.Id!, [new TextPart(reply.ToString())], MessageStatus.Complete, run.StartedAt!),
        events.RunEnded(run, RunStatus.Finished, "stop")));
}

// Events as one append's body, the way the agent writes them, without the array's brackets: a live read wraps each
// append's messages in one JSON array.
static byte[] Body(params SessionEvent[] events)
{
    var array = DurableJson.Write(events, static (writer, events) =>
    {
        writer.WriteStartArray();
        foreach (var change in events)
        {
            change.WriteTo(writer);
        }

        writer.WriteEndArray();
    });
    return array[1..^1];
}

// The value of a string field, found by its prefix (the load tool's messages have no escapes in these).
static ReadOnlySpan<byte> Field(ReadOnlySpan<byte> message, ReadOnlySpan<byte> prefix)
{
    var start = message.IndexOf(prefix) + prefix.Length;
    var length = message[start..].IndexOf((byte)'"');
    return message.Slice(start, length);
}

static void Append(byte[] target, ref int written, ReadOnlySpan<byte> bytes)
{
    bytes.CopyTo(target.AsSpan(written));
    written += bytes.Length;
}

static async Task<byte[]> ReadBody(PipeReader reader, CancellationToken ct)
{
    while (true)
    {
        var result = await reader.ReadAsync(ct);
        if (result.IsCompleted)
        {
            var body = result.Buffer.ToArray();
            reader.AdvanceTo(result.Buffer.End);
            return body;
        }

        reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
    }
}

// One append as the server sends it to a live reader: a data event holding the JSON array, then a control event.
static byte[] Frame(byte[] body, long tail)
{
    var frame = new List<byte>(body.Length + 128);
    frame.AddRange("event: data\ndata: ["u8.ToArray());
    frame.AddRange(body);
    frame.AddRange("]\n\n"u8.ToArray());
    frame.AddRange(ControlEvent(tail));
    return [.. frame];
}

static byte[] ControlEvent(long tail) => Encoding.ASCII.GetBytes(
    $"event: control\ndata: {{\"streamNextOffset\":\"{tail.ToString("D16", CultureInfo.InvariantCulture)}\",\"upToDate\":true}}\n\n");

static async Task<long> Drain(PipeReader reader, CancellationToken ct)
{
    long length = 0;
    while (true)
    {
        var result = await reader.ReadAsync(ct);
        length += result.Buffer.Length;
        reader.AdvanceTo(result.Buffer.End);
        if (result.IsCompleted)
        {
            return length;
        }
    }
}

internal sealed class LiveReaders
{
    public List<LiveReader> Items { get; } = [];
}

internal sealed class LiveReader(PipeWriter output, HttpContext context)
{
    private ValueTask<FlushResult> _flush;

    private static long s_cut;

    /// <summary>How many readers were cut off for falling behind.</summary>
    public static long Cut => Interlocked.Read(ref s_cut);

    /// <summary>Writes a frame unless the reader's last one is still waiting on its socket; then it is cut off.</summary>
    public void Offer(byte[] frame)
    {
        if (!_flush.IsCompleted)
        {
            Interlocked.Increment(ref s_cut);
            context.Abort();
            return;
        }

        output.Write(frame);
        _flush = output.FlushAsync();
    }
}

/// <summary>
/// A reply's token deltas written the way the server's agent batches them: the first token at once, then everything
/// that gathered as one delta event, a linger after the earlier of the write before it and its own first token. A write
/// here cannot be waited on: it is done when its publish returns.
/// </summary>
internal sealed class DeltaWriter(Action<SessionEvent> publish, SessionRun run, TimeSpan linger)
{
    private readonly Lock _lock = new();
    private readonly StringBuilder _pending = new();
    private DateTimeOffset? _firstPendingAt;
    private long _firstPendingTimestamp;
    private long? _lastWrittenTimestamp;
    private bool _writing;
    private Task _writer = Task.CompletedTask;
    private long _sequence;

    public void Add(string text)
    {
        lock (_lock)
        {
            if (_firstPendingAt is null)
            {
                _firstPendingAt = DateTimeOffset.UtcNow;
                _firstPendingTimestamp = Stopwatch.GetTimestamp();
            }
            _pending.Append(text);
            if (!_writing)
            {
                _writing = true;
                _writer = Task.Run(WriteLoopAsync);
            }
        }
    }

    public Task FlushAsync()
    {
        lock (_lock)
        {
            return _writer;
        }
    }

    private async Task WriteLoopAsync()
    {
        while (true)
        {
            TimeSpan? wait = null;
            lock (_lock)
            {
                if (_lastWrittenTimestamp is { } written)
                {
                    var start = _firstPendingAt is not null && _firstPendingTimestamp < written ? _firstPendingTimestamp : written;
                    var left = linger - Stopwatch.GetElapsedTime(start);
                    wait = left > TimeSpan.Zero ? left : null;
                }
            }

            if (wait is { } delay)
            {
                await Task.Delay(delay);
            }

            string text;
            DateTimeOffset at;
            lock (_lock)
            {
                if (_pending.Length == 0)
                {
                    _writing = false;
                    return;
                }

                text = _pending.ToString();
                at = _firstPendingAt!.Value;
                _pending.Clear();
                _firstPendingAt = null;
            }

            publish(SessionEvents.System.RunDelta(run.MessageId!, run.Id!, takenOver: false, _sequence++, 0, "text", text, at));
            lock (_lock)
            {
                _lastWrittenTimestamp = Stopwatch.GetTimestamp();
            }
        }
    }
}
