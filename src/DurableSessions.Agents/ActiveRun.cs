namespace DurableSessions.Agents;

/// <summary>A run in progress: its ids, its cancellation, and steering instructions waiting to be applied.</summary>
internal sealed class ActiveRun : IDisposable
{
    private readonly CancellationTokenSource _cancel;
    private readonly Queue<string> _steers = new();
    private CancellationTokenSource _steer = new();

    public ActiveRun(string runId, string messageId, string triggerId, CancellationToken agentStopping)
    {
        RunId = runId;
        MessageId = messageId;
        TriggerId = triggerId;
        StartedAt = DateTimeOffset.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", System.Globalization.CultureInfo.InvariantCulture);
        _cancel = CancellationTokenSource.CreateLinkedTokenSource(agentStopping);
    }

    public string RunId { get; }

    /// <summary>
    /// The run this one answers again (a run of this agent cut by a crash or a lost lease, on the same message), or null.
    /// The new run writes into the cut run's message, which it starts again from empty, so the session never shows two
    /// answers to one message.
    /// </summary>
    public System.Text.Json.Nodes.JsonObject? Supersedes { get; init; }

    /// <summary>The prefix of this run's delta keys: unique per run, also when it writes into a cut run's message.</summary>
    public string DeltaKeyPrefix => Supersedes is null ? MessageId : MessageId + ":" + RunId;

    public string MessageId { get; }

    public string TriggerId { get; }

    public string StartedAt { get; }

    /// <summary>Fires when the run is cancelled (or the agent stops): the token handed to the model.</summary>
    public CancellationToken Token => _cancel.Token;

    /// <summary>Fires when a steering instruction arrives, to stop the current generation.</summary>
    public CancellationToken SteerToken
    {
        get
        {
            lock (_steers)
            {
                return _steer.Token;
            }
        }
    }

    public Task Completion { get; set; } = Task.CompletedTask;

    public void Cancel()
    {
        try
        {
            _cancel.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public void Steer(string instruction)
    {
        lock (_steers)
        {
            _steers.Enqueue(instruction);
            _steer.Cancel();
        }
    }

    public void Dispose()
    {
        _cancel.Dispose();
        lock (_steers)
        {
            _steer.Dispose();
        }
    }

    /// <summary>Takes the next steering instruction and re-arms the steer token; null when none is waiting.</summary>
    public string? TakeSteer()
    {
        lock (_steers)
        {
            if (_steers.Count == 0)
            {
                return null;
            }

            var instruction = string.Join("\n", _steers);
            _steers.Clear();
            _steer.Dispose();
            _steer = new CancellationTokenSource();
            return instruction;
        }
    }
}
