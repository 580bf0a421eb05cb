using System.Text;
using DurableSessions.Client;
using DurableSessions.Sessions;

namespace DurableSessions.Agents;

/// <summary>
/// Writes a run's token deltas behind the model, one event per part per write: the run's first token goes out at once,
/// each later write waits the linger to gather tokens, and the tokens that arrive while a write is in flight go out
/// together in the next one.
/// </summary>
/// <remarks>
/// Only a run with tokens to write waits (no timer ticks between replies or after the last token), and when writes slow
/// down each carries more tokens, so the number of writes per reply falls instead of queueing up. With no linger, a
/// token is written as soon as the previous write is acknowledged.
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
    private bool _writing;
    private bool _wroteFirst;
    private Task _writer = Task.CompletedTask;
    private int _sequence;
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
            _firstPendingAt ??= _time.GetUtcNow();
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

    private async Task WriteLoopAsync()
    {
        try
        {
            while (true)
            {
                // The wait for a reply's first token is what its reader notices; after it, a linger of tens of
                // milliseconds is not seen in a stream of text, and it keeps the writes per reply down under load.
                if (_linger > TimeSpan.Zero && _wroteFirst)
                {
                    await Task.Delay(_linger, _time, _run.Token).ConfigureAwait(false);
                }

                _wroteFirst = true;

                if (Take() is not { } events)
                {
                    return;
                }

                await _producer.AppendAsync(events, _run.Token).ConfigureAwait(false);
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

    /// <summary>Takes everything pending as one event per part, or ends the write loop when nothing is.</summary>
    private List<SessionEvent>? Take()
    {
        lock (_lock)
        {
            // When the batch's first token was produced: readers can measure token-to-screen latency from it.
            var at = _firstPendingAt;
            _firstPendingAt = null;
            List<SessionEvent>? events = null;
            foreach (var (part, (type, text)) in _pending)
            {
                if (text.Length > 0)
                {
                    // Each delta names its run, so a cut run's late writes are fenced even in a message a new run took over.
                    (events ??= []).Add(_events.RunDelta(_run.MessageId, _run.RunId, takenOver: _run.Supersedes is not null, _sequence++, part, type, text.ToString(), at));
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
