using System.Text;
using DurableSessions.Client;
using DurableSessions.Sessions;

namespace DurableSessions.Agents;

/// <summary>
/// Gathers token deltas and writes them as one event per part every linger interval, so a reply is a few events per
/// second instead of one per token.
/// </summary>
internal sealed class DeltaBatcher : IDisposable
{
    private readonly StreamProducer _producer;
    private readonly ActiveRun _run;
    private readonly SessionEvents _events;
    private readonly TimeProvider _time;
    private readonly SortedDictionary<int, (string Type, StringBuilder Text)> _pending = [];
    private DateTimeOffset? _firstPendingAt;
    private readonly PeriodicTimer _timer;
    private readonly SemaphoreSlim _writeGate = new(1, 1);
    private readonly Task _loop;
    private int _sequence;
    private Exception? _failure;

    public DeltaBatcher(StreamProducer producer, ActiveRun run, TimeSpan linger, SessionEvents events, TimeProvider timeProvider)
    {
        _producer = producer;
        _run = run;
        _events = events;
        _time = timeProvider;
        _timer = new PeriodicTimer(linger, timeProvider);
        _loop = Task.Run(LoopAsync);
    }

    public void Add(int part, string partType, string text)
    {
        if (_failure is { } failure)
        {
            throw failure;
        }

        lock (_pending)
        {
            _firstPendingAt ??= _time.GetUtcNow();
            if (!_pending.TryGetValue(part, out var entry))
            {
                entry = (partType, new StringBuilder());
                _pending[part] = entry;
            }

            entry.Text.Append(text);
        }
    }

    /// <summary>Stops the timer and writes whatever is pending.</summary>
    public async Task FlushAsync()
    {
        // A disposed timer ends the loop's wait with false rather than an exception: one less throw per reply.
        _timer.Dispose();
        await _loop.ConfigureAwait(false);
        if (_failure is { } failure)
        {
            throw failure;
        }

        await WritePendingAsync().ConfigureAwait(false);
    }

    /// <summary>Writes whatever is pending now, keeping the timer running.</summary>
    public Task FlushPendingAsync()
    {
        if (_failure is { } failure)
        {
            throw failure;
        }

        return WritePendingAsync();
    }

    private async Task LoopAsync()
    {
        try
        {
            while (await _timer.WaitForNextTickAsync().ConfigureAwait(false))
            {
                await WritePendingAsync().ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            // The run was cancelled mid-write: its end is handled by the run.
        }
        catch (Exception ex) when (ex is DurableSessionsException or HttpRequestException)
        {
            _failure = ex;
        }
    }

    private async Task WritePendingAsync()
    {
        // Taking the pending text and appending it happen under one gate, so batches land in the order they were taken.
        await _writeGate.WaitAsync().ConfigureAwait(false);
        try
        {
            await WritePendingCoreAsync().ConfigureAwait(false);
        }
        finally
        {
            _writeGate.Release();
        }
    }

    private async Task WritePendingCoreAsync()
    {
        var events = new List<SessionEvent>();
        lock (_pending)
        {
            // When the batch's first token was produced: readers can measure token-to-screen latency from it.
            var at = _firstPendingAt;
            _firstPendingAt = null;
            foreach (var (part, (type, text)) in _pending)
            {
                if (text.Length > 0)
                {
                    // Each delta names its run, so a cut run's late writes are fenced even in a message a new run took over.
                    events.Add(_events.RunDelta(_run.MessageId, _run.RunId, takenOver: _run.Supersedes is not null, _sequence++, part, type, text.ToString(), at));
                    text.Clear();
                }
            }
        }

        if (events.Count > 0)
        {
            await _producer.AppendAsync(events, _run.Token).ConfigureAwait(false);
        }
    }

    public void Dispose()
    {
        _timer.Dispose();
        _writeGate.Dispose();
    }
}
