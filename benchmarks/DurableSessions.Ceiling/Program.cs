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
//
//   dotnet benchmarks/DurableSessions.Ceiling/bin/Release/net10.0/DurableSessions.Ceiling.dll --urls http://127.0.0.1:5302
using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.IO.Pipelines;
using System.Net.WebSockets;
using System.Text;

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

    context.Response.Headers["Stream-Next-Offset"] = tail.ToString("D16", CultureInfo.InvariantCulture);
    return Results.NoContent();
});

app.Run();

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

    /// <summary>Writes a frame unless the reader's last one is still waiting on its socket; then it is cut off.</summary>
    public void Offer(byte[] frame)
    {
        if (!_flush.IsCompleted)
        {
            context.Abort();
            return;
        }

        output.Write(frame);
        _flush = output.FlushAsync();
    }
}
