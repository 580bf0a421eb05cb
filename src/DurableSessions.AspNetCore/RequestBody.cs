using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace DurableSessions.AspNetCore;

/// <summary>Reads request bodies within a limit, while they arrive, whether they declare a length or are chunked.</summary>
internal static class RequestBody
{
    private static readonly JsonDocumentOptions NoDuplicates = new() { AllowDuplicateProperties = false };

    /// <summary>
    /// Reads the whole body, holding at most <paramref name="limit"/> bytes (plus one network read) in memory. Past the
    /// limit it answers <c>413 PAYLOAD_TOO_LARGE</c>, asks the client to close the connection, and returns null without
    /// reading the rest: a declared <c>Content-Length</c> is refused before anything is read.
    /// </summary>
    /// <remarks>
    /// With a <paramref name="budget"/>, a body larger than <see cref="Streams.AppendBudget.SmallBody"/> takes its bytes
    /// from it as they arrive and gives them back when the request ends; when the budget is
    /// spent the answer is <c>503 SERVER_BUSY</c> with <c>Retry-After</c>.
    /// </remarks>
    public static async Task<ReadOnlyMemory<byte>?> ReadAsync(HttpContext context, long limit, Streams.AppendBudget? budget = null)
    {
        var request = context.Request;
        if (request.ContentLength is { } declared && declared > limit)
        {
            await TooLarge(context, limit).ConfigureAwait(false);
            return null;
        }

        if (request.ContentLength == 0)
        {
            return ReadOnlyMemory<byte>.Empty;
        }

        // The server enforces the same limit on its side, so the rest of an oversized body is never drained into memory
        // by anything else either.
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } sizeFeature)
        {
            sizeFeature.MaxRequestBodySize = limit;
        }

        // Only bytes that have arrived are held, never a declared length: a client that declares a large body and then
        // trickles it holds no more of the budget than it has sent.
        var held = budget is null ? null : new HeldBytes(budget);
        if (held is not null)
        {
            context.Response.RegisterForDispose(held);
        }

        var reader = request.BodyReader;
        try
        {
            while (true)
            {
                var read = await reader.ReadAsync(context.RequestAborted).ConfigureAwait(false);
                if (read.Buffer.Length > limit)
                {
                    reader.AdvanceTo(read.Buffer.End);
                    await TooLarge(context, limit).ConfigureAwait(false);
                    return null;
                }

                if (held is not null && !held.TryHold(read.Buffer.Length, limit))
                {
                    reader.AdvanceTo(read.Buffer.End);
                    await Busy(context).ConfigureAwait(false);
                    return null;
                }

                if (read.IsCompleted)
                {
                    var bytes = read.Buffer.IsEmpty ? [] : System.Buffers.BuffersExtensions.ToArray(read.Buffer);
                    reader.AdvanceTo(read.Buffer.End);
                    return bytes;
                }

                reader.AdvanceTo(read.Buffer.Start, read.Buffer.End);
            }
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge && !context.Response.HasStarted)
        {
            await TooLarge(context, limit).ConfigureAwait(false);
            return null;
        }
        catch (Exception ex) when (!context.Response.HasStarted
            && (ex is BadHttpRequestException || (ex is IOException && !context.RequestAborted.IsCancellationRequested)))
        {
            // A body the server could not read as HTTP (bad chunk framing, cut short, a chunk size past what a length
            // can hold, which Kestrel reports as a plain IOException): the client's fault, answered here rather than left
            // to the server's unhandled-exception path, which logs every such request as an error.
            var status = ex is BadHttpRequestException bad ? bad.StatusCode : StatusCodes.Status400BadRequest;
            context.Response.StatusCode = status;
            context.Response.Headers.Connection = "close";
            if (!context.RequestAborted.IsCancellationRequested)
            {
                await Problem.Write(context, status, "BAD_REQUEST_BODY", $"The request body could not be read: {ex.Message}").ConfigureAwait(false);
            }

            return null;
        }
    }

    private static Task Busy(HttpContext context)
    {
        context.Response.Headers.Connection = "close";
        context.Response.Headers.RetryAfter = "1";
        return Problem.Write(context, StatusCodes.Status503ServiceUnavailable, "SERVER_BUSY", "Too many large appends are in progress; retry shortly.");
    }

    /// <summary>
    /// Reads the body within <paramref name="limit"/> (as <see cref="ReadAsync"/>) and parses it as a JSON object. The
    /// body must be valid UTF-8 with decodable strings and bounded nesting (<see cref="JsonFraming.TryValidate"/>), so no
    /// field read later can throw. Otherwise it answers <c>400</c> with <paramref name="code"/> and returns null. An
    /// empty body is an empty object when <paramref name="allowEmpty"/> is set.
    /// </summary>
    public static async Task<JsonObject?> ReadJsonObjectAsync(HttpContext context, long limit, bool allowEmpty = false, string code = "INVALID_BODY", string message = "The body must be a JSON object.")
    {
        if (await ReadAsync(context, limit).ConfigureAwait(false) is not { } body)
        {
            return null;
        }

        if (body.IsEmpty && allowEmpty)
        {
            return [];
        }

        if (!JsonFraming.TryValidate(body.Span, out var error))
        {
            await Problem.Write(context, 400, code, error!).ConfigureAwait(false);
            return null;
        }

        try
        {
            if (JsonNode.Parse(body.Span, documentOptions: NoDuplicates) is JsonObject parsed)
            {
                return parsed;
            }
        }
        catch (JsonException)
        {
            // A property named twice: refused here rather than failing when the object is first read.
            await Problem.Write(context, 400, code, "The body names a property twice.").ConfigureAwait(false);
            return null;
        }

        await Problem.Write(context, 400, code, message).ConfigureAwait(false);
        return null;
    }

    private static Task TooLarge(HttpContext context, long limit)
    {
        // The unread rest of the body is not wanted: closing is cheaper than draining it.
        context.Response.Headers.Connection = "close";
        return Problem.Write(context, StatusCodes.Status413PayloadTooLarge, "PAYLOAD_TOO_LARGE", $"The body exceeds the limit of {limit} bytes.");
    }

    /// <summary>The budget bytes one request holds, given back when the request ends.</summary>
    private sealed class HeldBytes(Streams.AppendBudget budget) : IDisposable
    {
        private const long Step = Streams.AppendBudget.SmallBody;
        private long _held;

        /// <summary>Holds enough for <paramref name="bytes"/> (in steps, at most <paramref name="limit"/>); false when the budget is spent.</summary>
        public bool TryHold(long bytes, long limit)
        {
            if (bytes <= Streams.AppendBudget.SmallBody || bytes <= _held)
            {
                return true;
            }

            var target = Math.Min(limit, ((bytes + Step - 1) / Step) * Step);
            if (!budget.TryTake(target - _held))
            {
                return false;
            }

            _held = target;
            return true;
        }

        public void Dispose()
        {
            var held = Interlocked.Exchange(ref _held, 0);
            if (held > 0)
            {
                budget.Return(held);
            }
        }
    }
}
