using System.Buffers;
using DurableSessions.Live;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Primitives;

namespace DurableSessions.AspNetCore.Streams;

internal sealed partial class StreamRequestHandler
{
    // Live changes are encoded for SSE readers in a buffer each thread keeps, up to this size.
    private const int MaxReusedFrameBuffer = 64 * 1024;

    [ThreadStatic]
    private static ArrayBufferWriter<byte>? t_frameBuffer;

    private string? _privateCacheControl;

    private enum LiveMode
    {
        None,
        LongPoll,
        Sse,
    }

    private async Task ReadAsync(HttpContext context, string path)
    {
        var query = context.Request.Query;
        var offsetValues = query["offset"];
        var liveValues = query["live"];
        var skipProgressValues = query[SkipProgressOfParameter];
        if (offsetValues.Count > 1 || liveValues.Count > 1 || skipProgressValues.Count > 1)
        {
            await Problem.Write(context, 400, "INVALID_QUERY", $"Send offset, live and {SkipProgressOfParameter} at most once each.").ConfigureAwait(false);
            return;
        }

        var skipProgressOf = skipProgressValues.Count == 0 ? null : skipProgressValues.ToString();
        if (skipProgressOf is { Length: 0 or > ProtocolParsing.MaxProducerIdLength })
        {
            await Problem.Write(context, 400, "INVALID_QUERY", $"{SkipProgressOfParameter} must be a producer id prefix of 1 to {ProtocolParsing.MaxProducerIdLength} characters.").ConfigureAwait(false);
            return;
        }

        var mode = liveValues.ToString() switch
        {
            "" when liveValues.Count == 0 => LiveMode.None,
            "long-poll" => LiveMode.LongPoll,
            "sse" => LiveMode.Sse,
            _ => (LiveMode)(-1),
        };
        if (mode < 0)
        {
            await Problem.Write(context, 400, "INVALID_LIVE_MODE", "live must be long-poll or sse.").ConfigureAwait(false);
            return;
        }

        var offset = offsetValues.Count == 0 ? null : offsetValues.ToString();
        if (offset is null && mode != LiveMode.None)
        {
            await Problem.Write(context, 400, "MISSING_OFFSET", "Live reads need an offset (use -1 for the beginning or now for the tail).").ConfigureAwait(false);
            return;
        }

        long? requested = null;
        var fromNow = offset == StreamOffset.Now;
        if (offset is not null && offset != StreamOffset.Beginning && !fromNow)
        {
            if (!StreamOffset.TryParse(offset, out var parsed))
            {
                await Problem.Write(context, 400, "INVALID_OFFSET", "offset must be -1, now, or an offset returned by this server.").ConfigureAwait(false);
                return;
            }

            requested = parsed;
        }

        var lookup = await _store.GetAsync(path, context.RequestAborted).ConfigureAwait(false);
        if (await WriteLookupFailure(context, lookup).ConfigureAwait(false))
        {
            return;
        }

        var stream = lookup.Stream!;
        if (requested > stream.TailPosition)
        {
            await Problem.Write(context, 400, "OFFSET_BEYOND_TAIL", "offset is beyond the end of this stream.").ConfigureAwait(false);
            return;
        }

        if (requested < stream.RetainedFrom)
        {
            await WriteOffsetGone(context, stream.RetainedFrom).ConfigureAwait(false);
            return;
        }

        await _store.TouchAsync(stream, context.RequestAborted).ConfigureAwait(false);
        var from = fromNow ? stream.TailPosition : requested ?? stream.RetainedFrom;
        var cursor = query["cursor"].ToString();
        switch (mode)
        {
            case LiveMode.Sse:
                using (Telemetry.Reader("sse"))
                {
                    await ServeSseAsync(context, stream, from, cursor, skipProgressOf).ConfigureAwait(false);
                }

                return;
            case LiveMode.LongPoll:
                using (Telemetry.Reader("long-poll"))
                {
                    await ServeLongPollAsync(context, stream, from, cursor).ConfigureAwait(false);
                }

                return;
            default:
                if (fromNow)
                {
                    await WriteNowAsync(context, stream).ConfigureAwait(false);
                }
                else
                {
                    await WriteCatchUpAsync(context, stream, from, cursor: null, startMoves: requested is null && stream.RetainedFrom > 0).ConfigureAwait(false);
                }

                return;
        }
    }

    /// <summary>
    /// The configured <c>Cache-Control</c> for one client only: <c>private</c> first, and without the directives that
    /// speak to shared caches (<c>public</c>, <c>s-maxage</c>, <c>proxy-revalidate</c>); <c>max-age</c> and the rest stay.
    /// </summary>
    internal static string PrivateCacheControl(string configured)
    {
        var kept = configured.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Where(d => !d.Equals("public", StringComparison.OrdinalIgnoreCase)
                && !d.Equals("private", StringComparison.OrdinalIgnoreCase)
                && !d.Equals("proxy-revalidate", StringComparison.OrdinalIgnoreCase)
                && !d.StartsWith("s-maxage", StringComparison.OrdinalIgnoreCase));
        return string.Join(", ", kept.Prepend("private"));
    }

    private static Task WriteNowAsync(HttpContext context, StreamInfo stream)
    {
        var response = context.Response;
        response.StatusCode = 200;
        response.ContentType = stream.ContentType;
        response.Headers.CacheControl = "no-store";
        response.Headers[ProtocolHeaders.NextOffset] = StreamOffset.Format(stream.TailPosition);
        response.Headers[ProtocolHeaders.UpToDate] = "true";
        if (stream.Closed)
        {
            response.Headers[ProtocolHeaders.Closed] = "true";
        }

        if (stream.IsJson)
        {
            response.ContentLength = 2;
            return response.Body.WriteAsync("[]"u8.ToArray()).AsTask();
        }

        response.ContentLength = 0;
        return Task.CompletedTask;
    }

    /// <summary>Answers a read of <paramref name="stream"/> from <paramref name="from"/> from the store.</summary>
    /// <param name="context">The request.</param>
    /// <param name="stream">The stream as looked up.</param>
    /// <param name="from">Where the read starts.</param>
    /// <param name="cursor">The cursor to send back, for live reads.</param>
    /// <param name="startMoves">
    /// Whether <paramref name="from"/> is the start of a trimmed stream (a read from -1): where that is moves with the next
    /// trim, so the answer must not be cached, or a client sent back to -1 by a 410 would be given the old one again.
    /// </param>
    private async Task WriteCatchUpAsync(HttpContext context, StreamInfo stream, long from, string? cursor, bool startMoves = false)
    {
        var read = await _store.ReadAsync(stream, from, _options.MaxReadBytes, context.RequestAborted).ConfigureAwait(false);
        if (read.GoneBefore is { } retainedFrom)
        {
            await WriteOffsetGone(context, retainedFrom).ConfigureAwait(false);
            return;
        }

        if (read.Chunks.Count == 0 && read.NextPosition == from && from < stream.TailPosition)
        {
            // Deleted (or replaced) since the lookup: answered as a lookup now would be.
            var current = await _store.GetAsync(stream.Path, context.RequestAborted).ConfigureAwait(false);
            await WriteLookupFailure(context, current.Status == StreamLookupStatus.Found ? new StreamLookup(StreamLookupStatus.NotFound, null) : current).ConfigureAwait(false);
            return;
        }

        await WriteReadAsync(context, stream, from, read, cursor, startMoves).ConfigureAwait(false);
    }

    /// <summary>
    /// The answer to a read from before the stream's retained start (protocol §5.6: 410 Gone), with the offset it now
    /// starts at (<c>retainedFrom</c>).
    /// </summary>
    private static Task WriteOffsetGone(HttpContext context, long retainedFrom)
    {
        if (context.Response.HasStarted)
        {
            return Task.CompletedTask;
        }

        var offset = StreamOffset.Format(retainedFrom);
        return JsonResponse.Write(context, 410, new System.Text.Json.Nodes.JsonObject
        {
            ["error"] = new System.Text.Json.Nodes.JsonObject
            {
                ["code"] = "OFFSET_GONE",
                ["message"] = $"The data at this offset was removed by retention: the stream now starts at offset {offset}; read on from there.",
                ["retainedFrom"] = offset,
            },
        });
    }

    /// <summary>Answers a read of <paramref name="stream"/> from <paramref name="from"/> with what was read.</summary>
    private async Task WriteReadAsync(HttpContext context, StreamInfo stream, long from, ReadResult read, string? cursor, bool uncacheable = false)
    {
        var upToDate = read.NextPosition >= stream.TailPosition;
        var closedAtTail = upToDate && stream.Closed;
        var response = context.Response;
        var etag = $"\"{stream.Id}:{from}:{read.NextPosition}{(closedAtTail ? ":c" : string.Empty)}\"";
        response.Headers.ETag = etag;
        response.Headers[ProtocolHeaders.NextOffset] = StreamOffset.Format(read.NextPosition);
        if (upToDate)
        {
            response.Headers[ProtocolHeaders.UpToDate] = "true";
        }

        if (closedAtTail)
        {
            response.Headers[ProtocolHeaders.Closed] = "true";
        }
        else if (cursor is not null)
        {
            response.Headers[ProtocolHeaders.Cursor] = cursor;
        }

        // Data chunks are immutable and cacheable; an empty answer at the tail changes with the next append. Under
        // access control the answer depends on the caller's token, so only the caller's own cache may keep it.
        var authenticated = !Auth.AccessControl.Current(context).IsAnonymous;
        response.Headers.CacheControl = read.Chunks.Count == 0 || uncacheable ? "no-store" : authenticated ? _privateCacheControl ??= PrivateCacheControl(_options.CacheControl) : _options.CacheControl;
        if (authenticated)
        {
            response.Headers.Vary = "Authorization";
        }
        if (IfNoneMatch(context.Request.Headers.IfNoneMatch, etag))
        {
            response.StatusCode = 304;
            return;
        }

        response.StatusCode = 200;
        response.ContentType = stream.ContentType;
        var jsonFraming = stream.IsJson ? 2 + Math.Max(0, read.Chunks.Count - 1) : 0;
        response.ContentLength = read.TotalBytes + jsonFraming;
        var body = response.BodyWriter;
        if (stream.IsJson)
        {
            body.Write("["u8);
        }

        for (var i = 0; i < read.Chunks.Count; i++)
        {
            if (stream.IsJson && i > 0)
            {
                body.Write(","u8);
            }

            body.Write(read.Chunks[i].Data.Span);
        }

        if (stream.IsJson)
        {
            body.Write("]"u8);
        }

        await body.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }

    private async Task ServeLongPollAsync(HttpContext context, StreamInfo stream, long from, string cursorParam)
    {
        var cursor = StreamCursor.Next(_time.GetUtcNow(), cursorParam);
        if (from < stream.TailPosition)
        {
            await WriteCatchUpAsync(context, stream, from, cursor).ConfigureAwait(false);
            return;
        }

        if (!stream.Closed)
        {
            // Changes only wake the request, which then answers from the store with everything there is.
            var follower = new StreamFollower(_store, stream, _longPollFollow);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, _stopping);
            timeout.CancelAfter(LiveLifetime(context, _options.LongPollTimeout));
            var looked = false;
            try
            {
                await foreach (var item in follower.FollowAsync(from, timeout.Token).ConfigureAwait(false))
                {
                    looked = true;
                    stream = item.Stream;
                    if (item.Kind == StreamFollowKind.Read)
                    {
                        await WriteReadAsync(context, stream, from, item.Read!, cursor).ConfigureAwait(false);
                        return;
                    }
                }
            }
            catch (OperationCanceledException) when (!context.RequestAborted.IsCancellationRequested)
            {
                // Timed out with nothing new.
            }

            if (follower.End == StreamFollowEnd.Deleted)
            {
                if (!looked && follower.EndLookup is { } lookup)
                {
                    // Gone before the wait began (checked after subscribing, so an append in between is not missed).
                    await WriteLookupFailure(context, lookup.Status == StreamLookupStatus.Found ? new StreamLookup(StreamLookupStatus.NotFound, null) : lookup).ConfigureAwait(false);
                }
                else
                {
                    await Problem.Write(context, 404, "STREAM_NOT_FOUND", "The stream was deleted.").ConfigureAwait(false);
                }

                return;
            }

            if (looked && follower.End != StreamFollowEnd.Closed)
            {
                // Timed out, or fell behind while waiting: answer from the store as it is now.
                var current = await _store.GetAsync(stream.Path, context.RequestAborted).ConfigureAwait(false);
                if (current.Stream?.Id != stream.Id)
                {
                    await Problem.Write(context, 404, "STREAM_NOT_FOUND", "The stream was deleted.").ConfigureAwait(false);
                    return;
                }

                stream = current.Stream;
            }
        }

        if (from < stream.TailPosition)
        {
            await WriteCatchUpAsync(context, stream, from, cursor).ConfigureAwait(false);
            return;
        }

        var response = context.Response;
        response.StatusCode = 204;
        response.Headers.CacheControl = "no-store";
        response.Headers[ProtocolHeaders.NextOffset] = StreamOffset.Format(stream.TailPosition);
        response.Headers[ProtocolHeaders.UpToDate] = "true";
        if (stream.Closed)
        {
            response.Headers[ProtocolHeaders.Closed] = "true";
        }
        else
        {
            response.Headers[ProtocolHeaders.Cursor] = cursor;
        }
    }

    /// <summary>
    /// How long a live response may last: <paramref name="limit"/>, or less when the request's token expires sooner.
    /// An expired token reads nothing more; the client reconnects from its offset with a fresh one.
    /// </summary>
    private TimeSpan LiveLifetime(HttpContext context, TimeSpan limit)
    {
        if (Auth.AccessControl.Current(context) is { ExpiresAt: { } expiresAt })
        {
            var left = expiresAt - _time.GetUtcNow();
            return left < limit ? (left > TimeSpan.Zero ? left : TimeSpan.FromMilliseconds(1)) : limit;
        }

        return limit;
    }

    private async Task ServeSseAsync(HttpContext context, StreamInfo stream, long from, string cursorParam, string? skipProgressOf)
    {
        var response = context.Response;
        response.StatusCode = 200;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        if (SseEncoder.UsesBase64(stream.ContentType))
        {
            response.Headers[ProtocolHeaders.SseDataEncoding] = "base64";
        }

        context.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        using var lifetime = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, _stopping);
        lifetime.CancelAfter(LiveLifetime(context, _options.SseConnectionLifetime));
        var token = lifetime.Token;
        var output = response.BodyWriter;
        var cursor = StreamCursor.Next(_time.GetUtcNow(), cursorParam);
        var contentType = stream.ContentType;

        // A reader that falls behind is disconnected and resumes from its offset with a new request.
        var follower = new StreamFollower(_store, stream, _sseFollow);
        try
        {
            await response.StartAsync(token).ConfigureAwait(false);
            await output.FlushAsync(token).ConfigureAwait(false);
            var told = false;
            var toldUpToDate = false;
            await foreach (var item in follower.FollowAsync(from, token).ConfigureAwait(false))
            {
                switch (item.Kind)
                {
                    case StreamFollowKind.Read:
                        var chunks = new ReadOnlyMemory<byte>[item.Read!.Chunks.Count];
                        for (var i = 0; i < chunks.Length; i++)
                        {
                            chunks[i] = item.Read.Chunks[i].Data;
                        }

                        SseEncoder.WriteDataEvent(output, contentType, chunks);
                        SseEncoder.WriteControlEvent(output, item.Position, cursor, item.AtTail, item.ClosedAtTail);
                        await output.FlushAsync(token).ConfigureAwait(false);
                        told = true;
                        toldUpToDate = item.AtTail;
                        break;
                    case StreamFollowKind.CaughtUp when !told || item.ClosedAtTail:
                        // Nothing was sent yet (or the stream is closed at the tail): say where the reader stands.
                        SseEncoder.WriteControlEvent(output, item.Position, cursor, upToDate: true, closed: item.ClosedAtTail);
                        await output.FlushAsync(token).ConfigureAwait(false);
                        told = true;
                        toldUpToDate = true;
                        break;
                    case StreamFollowKind.Live:
                        var change = item.Change!;
                        if (change.IsProgressOf(skipProgressOf))
                        {
                            // The reader's own progress, which it asked not to be sent. At the end of a burst it is
                            // still told where it stands, so that it knows it is up to date.
                            if (item.AtTail && !toldUpToDate)
                            {
                                SseEncoder.WriteControlEvent(output, item.Position, cursor, upToDate: true, closed: false);
                                await output.FlushAsync(token).ConfigureAwait(false);
                                toldUpToDate = true;
                            }

                            break;
                        }

                        if (change.Chunk.End > change.Chunk.Start)
                        {
                            // Encoded once per change, shared by every live reader of the stream.
                            output.Write(change.GetOrAddEncoding(c => EncodeDataFrame(contentType, c)));
                        }

                        SseEncoder.WriteControlEvent(output, item.Position, cursor, item.AtTail, change.Closed);
                        await output.FlushAsync(token).ConfigureAwait(false);
                        toldUpToDate = item.AtTail;
                        break;
                    case StreamFollowKind.Idle:
                        await output.WriteAsync(SseEncoder.KeepAlive, token).ConfigureAwait(false);
                        break;
                }
            }

            if (follower.End == StreamFollowEnd.FellBehind)
            {
                Log.ReaderFellBehind(_logger, stream.Path);
            }
        }
        catch (OperationCanceledException)
        {
            // Client went away, the connection reached its lifetime or the server is stopping; it resumes from its last offset.
        }
    }

    private static byte[] EncodeDataFrame(string contentType, LiveAppend change)
    {
        // Encoded into this thread's buffer, then copied out at its size: one allocation per change.
        var buffer = t_frameBuffer ??= new ArrayBufferWriter<byte>(1024);
        buffer.ResetWrittenCount();
        SseEncoder.WriteDataEvent(buffer, contentType, [change.Chunk.Data]);
        var frame = buffer.WrittenSpan.ToArray();
        if (buffer.Capacity > MaxReusedFrameBuffer)
        {
            // A large change is not kept alive by the thread that encoded it.
            t_frameBuffer = null;
        }

        return frame;
    }

    private static bool IfNoneMatch(StringValues header, string etag)
    {
        foreach (var value in header)
        {
            if (value is null)
            {
                continue;
            }

            foreach (var part in value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                var candidate = part.StartsWith("W/", StringComparison.Ordinal) ? part[2..] : part;
                if (candidate == "*" || string.Equals(candidate, etag, StringComparison.Ordinal))
                {
                    return true;
                }
            }
        }

        return false;
    }
}
