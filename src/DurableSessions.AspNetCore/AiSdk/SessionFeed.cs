using System.Runtime.CompilerServices;
using System.Text.Json.Nodes;

namespace DurableSessions.AspNetCore.AiSdk;

/// <summary>Reads a session's events in-process from a position and follows them live (woken by the store's fan-out).</summary>
internal sealed class SessionFeed(StreamStore store)
{
    /// <summary>Yields each event with the position after it, until cancelled or the stream disappears.</summary>
    public async IAsyncEnumerable<(JsonObject Event, long Position)> ReadAsync(string path, long from, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var lookup = await store.GetAsync(path, cancellationToken).ConfigureAwait(false);
        if (lookup.Stream is not { } stream)
        {
            yield break;
        }

        var subscription = store.Fanout.Subscribe(stream.Id);
        var position = from;
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                var current = await store.GetAsync(path, cancellationToken).ConfigureAwait(false);
                if (current.Stream?.Id != stream.Id)
                {
                    yield break;
                }

                stream = current.Stream;
                if (position < stream.TailPosition)
                {
                    var read = await store.ReadAsync(stream, position, 1 << 20, cancellationToken).ConfigureAwait(false);
                    foreach (var chunk in read.Chunks)
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

                    position = read.NextPosition;
                    continue;
                }

                // Caught up: wait for the next committed change (or a fall-behind, after which the store is read again).
                try
                {
                    if (!await subscription.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
                    {
                        // Cut off (fell behind, or the store's notifications were interrupted): subscribe again and
                        // read from the store what was missed.
                        subscription.Dispose();
                        subscription = store.Fanout.Subscribe(stream.Id);
                        continue;
                    }
                }
                catch (OperationCanceledException)
                {
                    yield break;
                }

                while (subscription.Reader.TryRead(out _))
                {
                }
            }
        }
        finally
        {
            subscription.Dispose();
        }
    }
}
