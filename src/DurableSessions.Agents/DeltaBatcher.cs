using System.Text;
using DurableSessions.Client;
using DurableSessions.Sessions;

namespace DurableSessions.Agents;

/// <summary>
/// Writes a run's token deltas behind the model, one event per part per write: the run's first token goes out at once,
/// and each later write gathers what was said since the write before it. It goes out a linger after the earlier of two
/// moments, the acknowledgement of the write before it and its own first token, and never before that acknowledgement.
/// </summary>
/// <remarks>
/// While writes are quick, a reply is written at most once per linger. When a write is slow, the tokens said during it
/// have already waited when it is acknowledged: they wait out the rest of their linger, not a whole linger more, so a
/// token's own write starts at most the longer of the linger and the write in flight after it was said, and each write
/// carries more tokens instead of queueing up. A token said a linger or more after the last acknowledgement goes out
/// at once. The loop ends once a linger passes with nothing to write, so no timer ticks between replies. The linger is
/// timed on the monotonic clock (<see cref="TimeProvider.GetTimestamp"/>). With no linger, a token is written as soon
/// as the previous write is acknowledged.
/// </remarks>
internal sealed class DeltaBatcher
{
    private readonly StreamProducer _producer;
    private readonly ActiveRun _run;
    private readonly SessionEvents _events;
    private readonly TimeProvider _time;
    private readonly TimeSpan _linger;
    private readonly Lock _lock = new();
    private readonly SortedDictionary<int, (string Type, StringBuilder Text)> _pending = [];
    private DateTimeOffset? _firstPendingAt;

    // The linger is timed on the monotonic clock: a wall clock stepped back must not hold a reply's text.
    private long _firstPendingTimestamp;
    private long? _lastWrittenTimestamp;
    private bool _writing;
    private bool _stopped;
    private Task _writer = Task.CompletedTask;
    private Exception? _failure;

    public DeltaBatcher(StreamProducer producer, ActiveRun run, TimeSpan linger, SessionEvents events, TimeProvider timeProvider)
    {
        _producer = producer;
        _run = run;
        _events = events;
        _time = timeProvider;
        _linger = linger;
    }

    public void Add(int part, string partType, string text)
    {
        if (_failure is { } failure)
        {
            throw failure;
        }

        lock (_lock)
        {
            if (_stopped)
            {
                return;
            }

            if (_firstPendingAt is null)
            {
                _firstPendingAt = _time.GetUtcNow();
                _firstPendingTimestamp = _time.GetTimestamp();
            }

            if (!_pending.TryGetValue(part, out var entry))
            {
                entry = (partType, new StringBuilder());
                _pending[part] = entry;
            }

            entry.Text.Append(text);
            if (!_writing)
            {
                // Off the caller's thread: an in-process append runs the server's whole write path before it yields.
                _writing = true;
                _writer = Task.Run(WriteLoopAsync);
            }
        }
    }

    /// <summary>Waits until every delta added so far is written.</summary>
    /// <exception cref="OperationCanceledException">The run was cancelled.</exception>
    public async Task FlushAsync()
    {
        Task writer;
        lock (_lock)
        {
            writer = _writer;
        }

        await writer.ConfigureAwait(false);
        if (_failure is { } failure)
        {
            throw failure;
        }

        _run.Token.ThrowIfCancellationRequested();
    }

    /// <summary>
    /// Stops writing: what is still pending is dropped and a write in flight is waited for, so that nothing of this
    /// batcher lands after what the caller writes next (a failed reply, which restates the whole text).
    /// </summary>
    public async Task StopAsync()
    {
        Task writer;
        lock (_lock)
        {
            _stopped = true;
            _pending.Clear();
            _firstPendingAt = null;
            writer = _writer;
        }

        try
        {
            await writer.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // Its failure is the run's to report, as the failure the caller is handling.
        }
    }

    private async Task WriteLoopAsync()
    {
        try
        {
            while (true)
            {
                // The wait for a reply's first token is what its reader notices; after it, a linger of tens of
                // milliseconds is not seen in a stream of text, and it keeps the writes per reply down under load.
                if (LingerLeft() is { } wait)
                {
                    await Task.Delay(wait, _time, _run.Token).ConfigureAwait(false);
                }

                if (Take() is not { } events)
                {
                    return;
                }

                await _producer.AppendAsync(events, _run.Token).ConfigureAwait(false);
                lock (_lock)
                {
                    _lastWrittenTimestamp = _time.GetTimestamp();
                }
            }
        }
        catch (OperationCanceledException)
        {
            // The run was cancelled mid-write: its end is handled by the run, and its later writes would be fenced.
        }
        catch (Exception ex) when (ex is DurableSessionsException or HttpRequestException)
        {
            _failure = ex;
        }
    }

    /// <summary>How long the next write still waits, or null when it goes out now (a reply's first, or a linger is up).</summary>
    private TimeSpan? LingerLeft()
    {
        lock (_lock)
        {
            if (_linger <= TimeSpan.Zero || _lastWrittenTimestamp is not { } written)
            {
                return null;
            }

            var start = _firstPendingAt is not null && _firstPendingTimestamp < written ? _firstPendingTimestamp : written;
            var left = _linger - _time.GetElapsedTime(start);
            return left > TimeSpan.Zero ? left : null;
        }
    }

    /// <summary>Takes everything pending as one event per part, or ends the write loop when nothing is.</summary>
    private List<SessionEvent>? Take()
    {
        lock (_lock)
        {
            if (_stopped)
            {
                return null;
            }

            // When the batch's first token was produced: readers can measure token-to-screen latency from it.
            var at = _firstPendingAt;
            _firstPendingAt = null;
            List<SessionEvent>? events = null;
            foreach (var (part, (type, text)) in _pending)
            {
                if (text.Length > 0)
                {
                    // Each delta names its run, so a cut run's late writes are fenced even in a message a new run took over.
                    (events ??= []).Add(_events.RunDelta(_run.MessageId, _run.RunId, takenOver: _run.RewritesMessage, _run.NextDeltaSequence(), part, type, text.ToString(), at));
                    text.Clear();
                }
            }

            if (events is null)
            {
                _writing = false;
            }

            return events;
        }
    }
}
