using System.Collections.Concurrent;
using System.Security.Cryptography;
using DurableSessions.Client;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace DurableSessions.Agents;

/// <summary>Settings of a <see cref="SessionAgentHost"/>.</summary>
public sealed class SessionAgentHostOptions
{
    /// <summary>
    /// The most turns this process answers at once; more wait on the server for a free worker. Each turn in progress
    /// holds one live connection to its session. Default 64.
    /// </summary>
    public int MaxConcurrentRuns { get; set; } = 64;

    /// <summary>This worker's name in claims (<c>current_holder</c>). Default: machine, process id and a random suffix.</summary>
    public string WorkerId { get; set; } = $"{Environment.MachineName}/{Environment.ProcessId}/{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}";

    /// <summary>
    /// The lease registered for the agent's claims: a worker that stops heartbeating for this long (a crash) loses its
    /// turns to another worker. Null keeps the registered lease, or the server's default (10 seconds).
    /// </summary>
    public TimeSpan? LeaseTtl { get; set; }

    /// <summary>
    /// How long a turn stays joined after everything is answered, so a conversation's next message is answered in the
    /// same turn (no new claim, join and presence). The connection is held that much longer per turn. Default 2 seconds.
    /// </summary>
    public TimeSpan FollowUpWait { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>How long one claim request waits on the server for a turn to come. Default 20 seconds.</summary>
    public TimeSpan ClaimWait { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>The clock of the lease's heartbeats and deadlines, and of the pause after a refused claim. Default the system's.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;
}

/// <summary>
/// Serves a <see cref="SessionAgent"/> on every session of a server, woken by work: it claims turns (sessions where a
/// user message waits for this agent) from the server with a lease, answers each with
/// <see cref="SessionAgent.ServeTurnAsync(string, TimeSpan, CancellationToken)"/>, heartbeats the lease meanwhile and completes the turn. It holds a connection
/// only for the turns in progress, nothing per idle session.
/// </summary>
/// <remarks>
/// <para>Any number of processes can host the same agent: each turn is claimed by exactly one of them. When a process
/// dies mid-reply, its lease runs out and another process (or the same one after a restart) claims the turn, marks the
/// cut run <c>interrupted</c> (<c>supersededBy</c> the new run) and answers the message again in the same message, so the
/// session ends with one complete answer. A process stopping cleanly releases its turns at once.</para>
/// <para>A long-running process calls <see cref="RunAsync"/>, which claims turns as they come; a host woken from outside
/// (a webhook, a queue, a timer) calls <see cref="ServeWaitingTurnsAsync"/> on each wake instead. Both serve a turn the
/// same way and share <see cref="SessionAgentHostOptions.MaxConcurrentRuns"/>. One <see cref="RunAsync"/> at a time;
/// <see cref="ServeWaitingTurnsAsync"/> calls may overlap each other and <see cref="RunAsync"/>.</para>
/// </remarks>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001:Types that own disposable fields should be disposable", Justification = "The semaphore's wait handle is never created, so it holds nothing to dispose.")]
public sealed partial class SessionAgentHost
{
    private readonly SessionAgent _agent;
    private readonly AgentTurnClient _turns;
    private readonly SessionAgentHostOptions _options;
    private readonly ILogger _logger;

    // How many claims a running host keeps waiting on the server at once.
    private const int ParallelClaims = 4;
    private readonly ConcurrentDictionary<string, AgentTurn> _active = new(StringComparer.Ordinal);

    // One slot per turn in progress, shared by every caller, so the process never answers more than MaxConcurrentRuns.
    private readonly SemaphoreSlim _slots;

    /// <summary>Creates a host for <paramref name="agent"/>, claiming the turns of <paramref name="agentId"/> through <paramref name="client"/>.</summary>
    public SessionAgentHost(SessionAgent agent, DurableSessionsClient client, string agentId, SessionAgentHostOptions? options = null, ILogger<SessionAgentHost>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(agent);
        ArgumentNullException.ThrowIfNull(client);
        ArgumentException.ThrowIfNullOrEmpty(agentId);
        _agent = agent;
        _turns = client.Agent(agentId);
        _options = options ?? new SessionAgentHostOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.MaxConcurrentRuns, 1, nameof(options));
        _slots = new SemaphoreSlim(_options.MaxConcurrentRuns, _options.MaxConcurrentRuns);
        _logger = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <summary>The sessions whose turns this host is answering now. Thread-safe.</summary>
    public IReadOnlyCollection<string> ActiveSessions => [.. _active.Keys];

    /// <summary>
    /// Registers the agent on the server with <see cref="SessionAgentHostOptions.LeaseTtl"/> (idempotent): from then on,
    /// every user message posted to a session is a turn of it. <see cref="RunAsync"/> does this itself.
    /// </summary>
    /// <returns>The registration, with the agent's wake stream (<c>agents/{agent}/wake</c>).</returns>
    public Task<AgentRegistrationInfo> RegisterAsync(CancellationToken cancellationToken = default)
        => _turns.RegisterAsync(_options.LeaseTtl, cancellationToken: cancellationToken);

    /// <summary>Registers the agent and serves its turns until <paramref name="cancellationToken"/> fires; then releases the turns in progress.</summary>
    public async Task RunAsync(CancellationToken cancellationToken = default)
    {
        await RegisterAsync(cancellationToken).ConfigureAwait(false);
        Log.Serving(_logger, _turns.AgentId, _options.WorkerId, _options.MaxConcurrentRuns);

        // A few claims wait on the server at once, so a burst of turns is handed out in parallel rather than one round
        // trip at a time; the slots still bound the turns served.
        var claimers = Math.Clamp(_options.MaxConcurrentRuns, 1, ParallelClaims);
        await Task.WhenAll(Enumerable.Range(0, claimers).Select(_ => ClaimLoopAsync(cancellationToken))).ConfigureAwait(false);
    }

    private async Task ClaimLoopAsync(CancellationToken cancellationToken)
    {
        List<Task> running = [];
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                ClaimedTurn? turn;
                try
                {
                    turn = await ClaimIntoSlotAsync(_options.ClaimWait, cancellationToken).ConfigureAwait(false);
                }
                catch (DurableSessionsException ex) when (ex.Code == "AGENT_NOT_FOUND")
                {
                    // Unregistered (DELETE /v1/agents/{agent}) while this host serves it: a running host keeps its agent
                    // registered, so that its users' messages are answered again.
                    await RegisterAgainAsync(cancellationToken).ConfigureAwait(false);
                    continue;
                }
                catch (DurableSessionsException ex)
                {
                    // Refused (a token without the grant, say): said once per attempt, tried again after a pause.
                    Log.ClaimRefused(_logger, _turns.AgentId, ex.Code, ex);
                    await Task.Delay(TimeSpan.FromSeconds(5), _options.TimeProvider, cancellationToken).ConfigureAwait(false);
                    continue;
                }
                catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
                {
                    // Anything else (a token provider that threw, an answer that is not the protocol's): this loop goes
                    // on after the same pause, so that the host does not lose a claimer for good.
                    Log.ClaimFailed(_logger, _turns.AgentId, ex);
                    await Task.Delay(TimeSpan.FromSeconds(5), _options.TimeProvider, cancellationToken).ConfigureAwait(false);
                    continue;
                }

                if (turn is { } claimed)
                {
                    running.RemoveAll(t => t.IsCompleted);
                    running.Add(StartServing(claimed, cancellationToken));
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        finally
        {
            await Task.WhenAll(running).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Serves the turns waiting now and returns: claims them without waiting, several at once up to
    /// <see cref="SessionAgentHostOptions.MaxConcurrentRuns"/>, answers each exactly as <see cref="RunAsync"/> does, and
    /// returns once a claim finds nothing left and none of its turns is in progress. For hosts that do not run a claim
    /// loop but are woken from outside, such as an HTTP endpoint that receives the webhook of a subscription on the
    /// agent's wake stream. The agent must be registered (<see cref="RegisterAsync"/>).
    /// </summary>
    /// <remarks>
    /// A turn completed while a new message came waits again at once, and is served by the same call. A turn whose
    /// serving fails is released, so this call or another worker claims it again. Thread-safe: calls may overlap (each
    /// turn is claimed by one of them), sharing <see cref="SessionAgentHostOptions.MaxConcurrentRuns"/>.
    /// </remarks>
    /// <param name="cancellationToken">Stops claiming and releases the turns in progress (each goes to another worker at once).</param>
    /// <returns>How many turns it claimed and served.</returns>
    /// <exception cref="DurableSessionsException">The server refused a claim (an unregistered agent, a token without the grant).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired; the turns in progress were released first.</exception>
    public async Task<int> ServeWaitingTurnsAsync(CancellationToken cancellationToken = default)
    {
        List<Task> running = [];
        var served = 0;
        try
        {
            while (true)
            {
                if (await ClaimIntoSlotAsync(TimeSpan.Zero, cancellationToken).ConfigureAwait(false) is { } turn)
                {
                    served++;
                    running.RemoveAll(t => t.IsCompleted);
                    running.Add(StartServing(turn, cancellationToken));
                    continue;
                }

                // Nothing waits now, but a turn served here waits again when a message came while it was answered:
                // look once more after each of them ends.
                running.RemoveAll(t => t.IsCompleted);
                if (running.Count == 0)
                {
                    return served;
                }

                await Task.WhenAny(running).WaitAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            await Task.WhenAll(running).ConfigureAwait(false);
        }
    }

    /// <summary>A turn claimed into a slot, with the time its claim was answered.</summary>
    private readonly record struct ClaimedTurn(AgentTurn Turn, long AnsweredAt);

    /// <summary>Takes a slot and claims a turn into it, waiting up to <paramref name="wait"/>; null (the slot given back) when none came.</summary>
    private async Task<ClaimedTurn?> ClaimIntoSlotAsync(TimeSpan wait, CancellationToken cancellationToken)
    {
        await _slots.WaitAsync(cancellationToken).ConfigureAwait(false);
        AgentTurn? turn = null;
        try
        {
            turn = await _turns.ClaimAsync(_options.WorkerId, wait, cancellationToken).ConfigureAwait(false);

            // The lease runs from the server's grant, which is before this: its deadline is counted from the answer's
            // arrival, not from whenever the serving task gets a thread (later still on a busy pool).
            return turn is null ? null : new ClaimedTurn(turn, _options.TimeProvider.GetTimestamp());
        }
        finally
        {
            if (turn is null)
            {
                _slots.Release();
            }
        }
    }

    private async Task RegisterAgainAsync(CancellationToken cancellationToken)
    {
        try
        {
            await RegisterAsync(cancellationToken).ConfigureAwait(false);
            Log.Reregistered(_logger, _turns.AgentId);
        }
        catch (DurableSessionsException ex)
        {
            Log.ClaimRefused(_logger, _turns.AgentId, ex.Code, ex);
            await Task.Delay(TimeSpan.FromSeconds(5), _options.TimeProvider, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Serves a turn claimed into a slot on the thread pool; the slot is free again by the time the task ends.</summary>
    private Task StartServing(ClaimedTurn claimed, CancellationToken stopping)
        => Task.Run(
            async () =>
            {
                var turn = claimed.Turn;
                try
                {
                    await ServeAsync(turn, claimed.AnsweredAt, stopping).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is not OperationCanceledException || !stopping.IsCancellationRequested)
                {
                    // Nobody awaits this task for its outcome: whatever escaped is said here.
                    Log.ServingFailed(_logger, turn.Stream, ex);
                }
                finally
                {
                    _slots.Release();
                }
            },
            CancellationToken.None);

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    /// <summary>Answers one claimed turn, keeping its lease alive, and completes or releases it.</summary>
    private async Task ServeAsync(AgentTurn turn, long claimAnsweredAt, CancellationToken stopping)
    {
        _active[turn.SessionId] = turn;
        using var lease = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        var lost = false;
        var heartbeat = Task.Run(
            async () =>
            {
                // Each renewal must land before the lease it renews runs out: past that the turn may be another
                // worker's, so a heartbeat the server refuses, or one still retrying when the lease ends, stops the run.
                var time = _options.TimeProvider;
                var renewed = claimAnsweredAt;
                try
                {
                    while (true)
                    {
                        // A third of the lease after the last renewal (the first: after the claim's answer arrived).
                        await Task.Delay(Max(turn.LeaseTtl / 3 - time.GetElapsedTime(renewed), TimeSpan.Zero), time, lease.Token).ConfigureAwait(false);
                        var attempt = time.GetTimestamp();
                        using var leaseEnds = new CancellationTokenSource(Max(turn.LeaseTtl - time.GetElapsedTime(renewed), TimeSpan.Zero), time);
                        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(lease.Token, leaseEnds.Token);
                        bool held;
                        try
                        {
                            held = await _turns.HeartbeatAsync(turn, deadline.Token).ConfigureAwait(false);
                        }
                        catch (Exception ex) when (!lease.IsCancellationRequested)
                        {
                            Log.HeartbeatFailed(_logger, turn.Stream, ex);
                            held = false;
                        }

                        if (!held)
                        {
                            // The lease ran out (a long pause) or could not be renewed: stop writing.
                            lost = true;
                            Log.LeaseLost(_logger, turn.Stream);
                            await lease.CancelAsync().ConfigureAwait(false);
                            return;
                        }

                        // Counted from the request, not its answer: the server renewed the lease somewhere in between.
                        renewed = attempt;
                    }
                }
                catch (OperationCanceledException) when (lease.IsCancellationRequested)
                {
                }
            },
            CancellationToken.None);

        var failed = false;
        string? answered = null;
        try
        {
            answered = await _agent.ServeTurnAsync(turn.SessionId, _options.FollowUpWait, lease.Token).ConfigureAwait(false);
        }
        catch (DurableSessionsException ex) when (ex.Status == System.Net.HttpStatusCode.NotFound)
        {
            // The session was deleted: completing the turn ends it.
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !lease.IsCancellationRequested)
        {
            failed = true;
            Log.TurnFailed(_logger, turn.Stream, ex);
        }
        finally
        {
            _active.TryRemove(turn.SessionId, out _);
        }

        await lease.CancelAsync().ConfigureAwait(false);
        await heartbeat.ConfigureAwait(false);
        if (lost)
        {
            return;
        }

        try
        {
            // Stopping or failed: given back for another worker at once. Answered: completed (woken again if a message came meanwhile).
            // On the way out only briefly: a server stopping with this process (the hosted agent) answers no more, and the
            // lease then runs out on its own.
            using var timeout = new CancellationTokenSource(stopping.IsCancellationRequested ? TimeSpan.FromSeconds(1) : TimeSpan.FromSeconds(10));
            if (stopping.IsCancellationRequested || failed)
            {
                await _turns.ReleaseAsync(turn, timeout.Token).ConfigureAwait(false);
            }
            else
            {
                await _turns.CompleteAsync(turn, answered, timeout.Token).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is HttpRequestException or DurableSessionsException or OperationCanceledException)
        {
            // The lease runs out on its own, and the turn is woken again.
            Log.AckFailed(_logger, turn.Stream, ex);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(420, LogLevel.Information, "Agent {AgentId} serves its turns as worker {WorkerId} (at most {MaxConcurrentRuns} at once)")]
        public static partial void Serving(ILogger logger, string agentId, string workerId, int maxConcurrentRuns);

        [LoggerMessage(421, LogLevel.Warning, "Agent {AgentId}: the server refused a claim ({Code}); trying again shortly")]
        public static partial void ClaimRefused(ILogger logger, string agentId, string code, Exception exception);

        [LoggerMessage(428, LogLevel.Warning, "Agent {AgentId}: a claim failed; trying again shortly")]
        public static partial void ClaimFailed(ILogger logger, string agentId, Exception exception);

        [LoggerMessage(427, LogLevel.Warning, "Agent {AgentId} was unregistered while this host serves it; it is registered again")]
        public static partial void Reregistered(ILogger logger, string agentId);

        [LoggerMessage(426, LogLevel.Error, "Serving {Stream} failed unexpectedly; its lease runs out and the turn is served again")]
        public static partial void ServingFailed(ILogger logger, string stream, Exception exception);

        [LoggerMessage(425, LogLevel.Warning, "Renewing the lease on {Stream} failed")]
        public static partial void HeartbeatFailed(ILogger logger, string stream, Exception exception);

        [LoggerMessage(422, LogLevel.Warning, "The lease on {Stream} was lost; the turn goes to another worker")]
        public static partial void LeaseLost(ILogger logger, string stream);

        [LoggerMessage(423, LogLevel.Warning, "Serving {Stream} failed; the turn is given back")]
        public static partial void TurnFailed(ILogger logger, string stream, Exception exception);

        [LoggerMessage(424, LogLevel.Debug, "Acknowledging the turn of {Stream} failed; its lease runs out instead")]
        public static partial void AckFailed(ILogger logger, string stream, Exception exception);
    }
}
