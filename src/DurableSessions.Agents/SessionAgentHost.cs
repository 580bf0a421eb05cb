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

    /// <summary>How long one claim request waits on the server for a turn to come. Default 20 seconds.</summary>
    public TimeSpan ClaimWait { get; set; } = TimeSpan.FromSeconds(20);
}

/// <summary>
/// Serves a <see cref="SessionAgent"/> on every session of a server, woken by work: it claims turns (sessions where a
/// user message waits for this agent) from the server with a lease, answers each with
/// <see cref="SessionAgent.ServeTurnAsync"/>, heartbeats the lease meanwhile and completes the turn. It holds a connection
/// only for the turns in progress, nothing per idle session.
/// </summary>
/// <remarks>
/// <para>Any number of processes can host the same agent: each turn is claimed by exactly one of them. When a process
/// dies mid-reply, its lease runs out and another process (or the same one after a restart) claims the turn, marks the
/// cut run <c>interrupted</c> (<c>supersededBy</c> the new run) and answers the message again in the same message, so the
/// session ends with one complete answer. A process stopping cleanly releases its turns at once.</para>
/// <para>One <see cref="RunAsync"/> at a time.</para>
/// </remarks>
public sealed partial class SessionAgentHost
{
    private readonly SessionAgent _agent;
    private readonly AgentTurnClient _turns;
    private readonly SessionAgentHostOptions _options;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, AgentTurn> _active = new(StringComparer.Ordinal);

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
        _logger = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <summary>The sessions whose turns this host is answering now. Thread-safe.</summary>
    public IReadOnlyCollection<string> ActiveSessions => [.. _active.Keys];

    /// <summary>Registers the agent and serves its turns until <paramref name="cancellationToken"/> fires; then releases the turns in progress.</summary>
    public async Task RunAsync(CancellationToken cancellationToken = default)
    {
        await _turns.RegisterAsync(_options.LeaseTtl, cancellationToken: cancellationToken).ConfigureAwait(false);
        Log.Serving(_logger, _turns.AgentId, _options.WorkerId, _options.MaxConcurrentRuns);
        using var slots = new SemaphoreSlim(_options.MaxConcurrentRuns, _options.MaxConcurrentRuns);
        var running = new ConcurrentDictionary<Task, byte>();
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                await slots.WaitAsync(cancellationToken).ConfigureAwait(false);
                AgentTurn? turn = null;
                try
                {
                    turn = await _turns.ClaimAsync(_options.WorkerId, _options.ClaimWait, cancellationToken).ConfigureAwait(false);
                }
                catch (DurableSessionsException ex)
                {
                    // Refused (a token without the grant, say): said once per attempt, tried again after a pause.
                    Log.ClaimRefused(_logger, _turns.AgentId, ex.Code, ex);
                    await Task.Delay(TimeSpan.FromSeconds(5), cancellationToken).ConfigureAwait(false);
                }
                finally
                {
                    if (turn is null)
                    {
                        slots.Release();
                    }
                }

                if (turn is null)
                {
                    continue;
                }

                var serving = Task.Run(() => ServeAsync(turn, cancellationToken), CancellationToken.None);
                running[serving] = 0;
                _ = serving.ContinueWith(
                    t =>
                    {
                        running.TryRemove(t, out _);
                        slots.Release();
                    },
                    CancellationToken.None,
                    TaskContinuationOptions.ExecuteSynchronously,
                    TaskScheduler.Default);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        finally
        {
            await Task.WhenAll(running.Keys).ConfigureAwait(false);
        }
    }

    /// <summary>Answers one claimed turn, keeping its lease alive, and completes or releases it.</summary>
    private async Task ServeAsync(AgentTurn turn, CancellationToken stopping)
    {
        _active[turn.SessionId] = turn;
        using var lease = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        var lost = false;
        var heartbeat = Task.Run(
            async () =>
            {
                try
                {
                    while (true)
                    {
                        await Task.Delay(turn.LeaseTtl / 3, lease.Token).ConfigureAwait(false);
                        if (!await _turns.HeartbeatAsync(turn, lease.Token).ConfigureAwait(false))
                        {
                            // The lease ran out (a long pause) and the turn may be another worker's now: stop writing.
                            lost = true;
                            Log.LeaseLost(_logger, turn.Stream);
                            await lease.CancelAsync().ConfigureAwait(false);
                            return;
                        }
                    }
                }
                catch (OperationCanceledException)
                {
                }
            },
            CancellationToken.None);

        var failed = false;
        try
        {
            await _agent.ServeTurnAsync(turn.SessionId, lease.Token).ConfigureAwait(false);
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
                await _turns.CompleteAsync(turn, timeout.Token).ConfigureAwait(false);
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

        [LoggerMessage(422, LogLevel.Warning, "The lease on {Stream} was lost; the turn goes to another worker")]
        public static partial void LeaseLost(ILogger logger, string stream);

        [LoggerMessage(423, LogLevel.Warning, "Serving {Stream} failed; the turn is given back")]
        public static partial void TurnFailed(ILogger logger, string stream, Exception exception);

        [LoggerMessage(424, LogLevel.Debug, "Acknowledging the turn of {Stream} failed; its lease runs out instead")]
        public static partial void AckFailed(ILogger logger, string stream, Exception exception);
    }
}
