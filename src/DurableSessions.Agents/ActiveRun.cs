using DurableSessions.Sessions;

namespace DurableSessions.Agents;

/// <summary>A run in progress: its ids, its cancellation, and steering instructions waiting to be applied.</summary>
internal sealed class ActiveRun : IDisposable
{
    private readonly CancellationTokenSource _cancel;
    private readonly Queue<string> _steers = new();
    private CancellationTokenSource _steer = new();

    // The number of the run's last delta: each delta's key is {messageId}:{number}, unique over the whole reply,
    // across the generations a steer restarts.
    private int _deltaSequence = -1;

    /// <summary>A run about to start.</summary>
    /// <param name="run">The run as it starts (<see cref="RunStatus.Started"/>, with its ids and start time).</param>
    /// <param name="start">The events that start it, appended at once before anything else of the run.</param>
    /// <param name="supersedes">The cut run it answers again, or null.</param>
    /// <param name="rewritesMessage">Whether it writes its reply into a message an earlier run wrote.</param>
    /// <param name="agentStopping">Fires when the agent stops serving the session.</param>
    public ActiveRun(SessionRun run, IReadOnlyList<SessionEvent> start, SessionRun? supersedes, bool rewritesMessage, CancellationToken agentStopping)
    {
        Run = run;
        StartEvents = start;
        Supersedes = supersedes;
        RewritesMessage = rewritesMessage;
        AgentStopping = agentStopping;
        _cancel = CancellationTokenSource.CreateLinkedTokenSource(agentStopping);
    }

    /// <summary>The run as it started; its end is written from it.</summary>
    public SessionRun Run { get; }

    /// <summary>The events that start the run.</summary>
    public IReadOnlyList<SessionEvent> StartEvents { get; }

    public string RunId => Run.Id!;

    /// <summary>
    /// The run this one answers again (a run of this agent cut by a crash or a lost lease, on the same message), or null.
    /// The new run writes into the cut run's message, which it starts again from empty, so the session never shows two
    /// answers to one message.
    /// </summary>
    public SessionRun? Supersedes { get; }

    /// <summary>
    /// Whether the run writes into a message an earlier run wrote (one it took over, or a reply asked to be written
    /// again), starting it again from empty: its delta keys then name the run, to stay unique.
    /// </summary>
    public bool RewritesMessage { get; }

    public string MessageId => Run.MessageId!;

    public string TriggerId => Run.Trigger!;

    /// <summary>When the message it answers was last edited as the run read it (null if never): an edit after that makes its answer stale.</summary>
    public string? TriggerEditedAt { get; init; }

    public string StartedAt => Run.StartedAt!;

    /// <summary>Fires when the run is cancelled (or the agent stops): the token handed to the model.</summary>
    public CancellationToken Token => _cancel.Token;

    /// <summary>
    /// Fires when the agent stops serving the session (its lease lost, the host stopping), not when the run is cancelled:
    /// the run's last write (its reply complete or failed) is tried until then, and no longer, so a server that stays
    /// unreachable cannot hold the run, and the turn's slot, for good.
    /// </summary>
    public CancellationToken AgentStopping { get; }

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

    /// <summary>The number of the run's next delta (thread-safe).</summary>
    public int NextDeltaSequence() => Interlocked.Increment(ref _deltaSequence);

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
