using System.Runtime.CompilerServices;
using System.Text.Json.Nodes;
using DurableSessions.Live;

namespace DurableSessions.AspNetCore.AiSdk;

/// <summary>Reads a session's events in-process from a position and follows them live (a <see cref="StreamFollower"/>).</summary>
internal sealed class SessionFeed(StreamStore store)
{
    /// <summary>
    /// Yields each event with the position after it, until cancelled or the stream is deleted or closed; and, once
    /// caught up, a null event whenever nothing came for <paramref name="idle"/>.
    /// </summary>
    public async IAsyncEnumerable<(JsonObject? Event, long Position)> ReadAsync(string path, long from, TimeSpan idle, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        StreamLookup lookup;
        try
        {
            lookup = await store.GetAsync(path, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            yield break;
        }

        if (lookup.Stream is not { } stream)
        {
            yield break;
        }

        using var reader = Telemetry.Reader("ai-sdk");
        var follow = new StreamFollower(store, stream, new StreamFollowOptions { IdleTimeout = idle }).FollowAsync(from, cancellationToken).GetAsyncEnumerator(cancellationToken);
        await using var followScope = follow.ConfigureAwait(false);
        while (true)
        {
            try
            {
                if (!await follow.MoveNextAsync().ConfigureAwait(false))
                {
                    yield break;
                }
            }
            catch (OperationCanceledException)
            {
                yield break;
            }

            var item = follow.Current;
            if (item.Kind == StreamFollowKind.Read)
            {
                foreach (var chunk in item.Read!.Chunks)
                {
                    foreach (var e in Events(chunk))
                    {
                        yield return e;
                    }
                }
            }
            else if (item.Kind == StreamFollowKind.Live)
            {
                foreach (var e in Events(item.Change!.Chunk))
                {
                    yield return e;
                }
            }
            else if (item.Kind == StreamFollowKind.Idle)
            {
                yield return (null, item.Position);
            }
        }
    }

    private static IEnumerable<(JsonObject? Event, long Position)> Events(StreamChunk chunk)
    {
        // Unreadable events (stored before events were validated) are skipped, never thrown.
        var events = DurableSessions.Sessions.SessionState.ParseEvents(chunk.Data.Span);
        var at = chunk.Start;
        foreach (var node in events)
        {
            at++;
            if (node is JsonObject e)
            {
                yield return (e, at);
            }
        }
    }
}
