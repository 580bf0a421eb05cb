using System.Text;
using System.Text.Json.Nodes;
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
    private readonly TimeSpan _linger;
    private readonly SortedDictionary<int, (string Type, StringBuilder Text)> _pending = [];
    private DateTimeOffset? _firstPendingAt;
    private readonly CancellationTokenSource _stop = new();
    private readonly SemaphoreSlim _writeGate = new(1, 1);
    private readonly Task _loop;
    private int _sequence;
    private Exception? _failure;

    public DeltaBatcher(StreamProducer producer, ActiveRun run, TimeSpan linger)
    {
        _producer = producer;
        _run = run;
        _linger = linger;
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
            _firstPendingAt ??= DateTimeOffset.UtcNow;
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
        await _stop.CancelAsync().ConfigureAwait(false);
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
            using var timer = new PeriodicTimer(_linger);
            while (await timer.WaitForNextTickAsync(_stop.Token).ConfigureAwait(false))
            {
                await WritePendingAsync().ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
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
        var events = new JsonArray();
        lock (_pending)
        {
            // When the batch's first token was produced: readers can measure token-to-screen latency from it.
            var at = _firstPendingAt?.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", System.Globalization.CultureInfo.InvariantCulture);
            _firstPendingAt = null;
            foreach (var (part, (type, text)) in _pending)
            {
                if (text.Length > 0)
                {
                    events.Add(SessionAgent.Change(SessionEventTypes.Delta, $"{_run.DeltaKeyPrefix}:{_sequence++}", "insert", new JsonObject
                    {
                        ["messageId"] = _run.MessageId,

                        // Names its run, so a cut run's late writes are fenced even in a message a new run took over.
                        ["runId"] = _run.RunId,
                        ["part"] = part,
                        ["partType"] = type,
                        ["text"] = text.ToString(),
                        ["at"] = at,
                    }));
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
        _stop.Cancel();
        _stop.Dispose();
        _writeGate.Dispose();
    }
}
