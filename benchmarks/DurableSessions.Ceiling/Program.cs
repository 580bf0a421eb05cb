// The ceiling for one append per HTTP request on this machine: Kestrel with nothing behind it. It answers
// `PUT /v1/stream/{path}` with 201 and `POST /v1/stream/{path}` with 204 and a next offset after reading the whole body,
// stores nothing and syncs nothing. The load tool's `append` scenario runs against it unchanged, so the ratio of the
// server's figure to this one is the share of Kestrel's own per-request ceiling the server keeps (BENCHMARKS.md).
//
//   dotnet benchmarks/DurableSessions.Ceiling/bin/Release/net10.0/DurableSessions.Ceiling.dll --urls http://127.0.0.1:5302
using System.Collections.Concurrent;
using System.Globalization;
using System.IO.Pipelines;

var builder = WebApplication.CreateSlimBuilder(args);
builder.Logging.ClearProviders();
var app = builder.Build();

// Bytes per stream, so that each append does the least a store must: find its stream and move its tail.
var tails = new ConcurrentDictionary<string, long>(StringComparer.Ordinal);

app.MapPut("/v1/stream/{**path}", async (string path, HttpContext context) =>
{
    await Drain(context.Request.BodyReader, context.RequestAborted);
    tails.TryAdd(path, 0);
    return Results.StatusCode(201);
});

app.MapPost("/v1/stream/{**path}", async (string path, HttpContext context) =>
{
    var length = await Drain(context.Request.BodyReader, context.RequestAborted);
    if (!tails.TryGetValue(path, out _))
    {
        return Results.NotFound();
    }

    var tail = tails.AddOrUpdate(path, length, (_, t) => t + length);
    context.Response.Headers["Stream-Next-Offset"] = tail.ToString("D16", CultureInfo.InvariantCulture);
    return Results.NoContent();
});

app.Run();

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
