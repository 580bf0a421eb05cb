using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace DurableSessions.AspNetCore;

/// <summary>Reads request bodies within a limit, while they arrive, whether they declare a length or are chunked.</summary>
internal static class RequestBody
{
    /// <summary>
    /// Reads the whole body, holding at most <paramref name="limit"/> bytes (plus one network read) in memory. Past the
    /// limit it answers <c>413 PAYLOAD_TOO_LARGE</c>, asks the client to close the connection, and returns null without
    /// reading the rest: a declared <c>Content-Length</c> is refused before anything is read.
    /// </summary>
    public static async Task<ReadOnlyMemory<byte>?> ReadAsync(HttpContext context, long limit)
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

                if (read.IsCompleted)
                {
                    var bytes = read.Buffer.IsEmpty ? [] : System.Buffers.BuffersExtensions.ToArray(read.Buffer);
                    reader.AdvanceTo(read.Buffer.End);
                    return bytes;
                }

                reader.AdvanceTo(read.Buffer.Start, read.Buffer.End);
            }
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            await TooLarge(context, limit).ConfigureAwait(false);
            return null;
        }
    }

    private static Task TooLarge(HttpContext context, long limit)
    {
        // The unread rest of the body is not wanted: closing is cheaper than draining it.
        context.Response.Headers.Connection = "close";
        return Problem.Write(context, StatusCodes.Status413PayloadTooLarge, "PAYLOAD_TOO_LARGE", $"The body exceeds the limit of {limit} bytes.");
    }
}
