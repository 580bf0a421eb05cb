using System.ClientModel;
using System.Collections.Concurrent;
using DurableSessions;
using DurableSessions.Agents;
using DurableSessions.Client;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.AI;
using OpenAI;

/// <summary>Settings of the agent the server hosts itself (section <c>Agent</c>).</summary>
internal sealed class EmbeddedAgentOptions
{
    /// <summary>Whether the server hosts an agent on every session. Default true.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>The agent's participant id. Default <c>agent:demo</c>.</summary>
    public string Id { get; set; } = "agent:demo";

    /// <summary><c>demo</c> (built-in, no network) or <c>openai</c> (any OpenAI-compatible endpoint, e.g. a local Ollama).</summary>
    public string Model { get; set; } = "demo";

    /// <summary>Token rate of the demo model.</summary>
    public double TokensPerSecond { get; set; } = 25;

    /// <summary>The OpenAI-compatible endpoint, e.g. <c>http://127.0.0.1:11434/v1</c> for Ollama.</summary>
    public string? Endpoint { get; set; }

    /// <summary>The model name at that endpoint.</summary>
    public string? ModelId { get; set; }

    /// <summary>The API key (any non-empty value for servers that ignore it).</summary>
    public string? ApiKey { get; set; }

    /// <summary>The system prompt.</summary>
    public string? Instructions { get; set; }

    /// <summary>
    /// The most sessions the agent follows live at once. Each holds two connections to this server, four descriptors
    /// of this process (two of them outside the connection limit, from its headroom), so it is also capped at a
    /// sixteenth of the open-file limit. Past it, a session that changes takes the place of the followed session that
    /// has been quiet longest (at least <see cref="YieldAfterIdle"/>). Default 250.
    /// </summary>
    public int MaxLiveSessions { get; set; } = 250;

    /// <summary>
    /// How long a followed session must have been quiet before it gives its place to a session that changed, when
    /// <see cref="MaxLiveSessions"/> are followed. A session it stops following is followed again on its next change.
    /// A session where the agent is answering never gives its place. Default 2 seconds.
    /// </summary>
    public TimeSpan YieldAfterIdle { get; set; } = TimeSpan.FromSeconds(2);
}

/// <summary>
/// Hosts one agent on every session of this server, talking to the server over HTTP like any external agent would.
/// New sessions are noticed through the store's change notifications; existing ones are picked up at start.
/// </summary>
internal sealed partial class EmbeddedAgentHost(
    StreamStore store,
    IServer server,
    DurableSessions.AspNetCore.Auth.AccessTokens tokens,
    Microsoft.Extensions.Options.IOptions<EmbeddedAgentOptions> options,
    ILoggerFactory loggerFactory,
    IHostApplicationLifetime lifetime) : BackgroundService
{
    private readonly ConcurrentDictionary<string, Followed> _sessions = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<string> _waiting = new();

    // Each waiting session once, however often it is appended to while it waits.
    private readonly ConcurrentDictionary<string, byte> _waitingPaths = new(StringComparer.Ordinal);
    // A path, and whether it changed (rather than being listed at start): only sessions with something new take a place
    // from a quiet one or wait for one.
    private readonly System.Threading.Channels.Channel<(string Path, bool Changed)> _discovered = System.Threading.Channels.Channel.CreateUnbounded<(string, bool)>();
    private readonly ILogger _logger = loggerFactory.CreateLogger<EmbeddedAgentHost>();
    private int _capWarned;

    /// <summary>The live-session cap in force: the setting, lowered to a sixteenth of the open-file limit.</summary>
    private static int EffectiveMaxLiveSessions(EmbeddedAgentOptions settings)
        => DurableSessions.AspNetCore.Connections.ConnectionLimitOptions.ReadDescriptorLimit() is { } fds
            ? (int)Math.Clamp(Math.Min(settings.MaxLiveSessions, fds / 16), 1, int.MaxValue)
            : settings.MaxLiveSessions;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var settings = options.Value;
        if (!settings.Enabled)
        {
            return;
        }

        var maxLive = EffectiveMaxLiveSessions(settings);

        // The agent connects to this server once it is listening.
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var registration = lifetime.ApplicationStarted.Register(() => started.TrySetResult());
        await started.Task.WaitAsync(stoppingToken);
        var address = server.Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault();
        if (address is null)
        {
            return;
        }

        using var chat = CreateChatClient(settings);
        using var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with
        {
            BaseAddress = new Uri(address.Replace("://+", "://127.0.0.1", StringComparison.Ordinal).Replace("://*", "://127.0.0.1", StringComparison.Ordinal).Replace("://0.0.0.0", "://127.0.0.1", StringComparison.Ordinal)),
            ParticipantId = settings.Id,

            // With access control on, the hosted agent gets a token for every session, like any other agent would.
            AccessToken = tokens.Enabled
                ? tokens.Issue(settings.Id, new Dictionary<string, DurableSessions.AspNetCore.Auth.Capability[]>
                {
                    ["sessions/*"] = [DurableSessions.AspNetCore.Auth.Capability.Read, DurableSessions.AspNetCore.Auth.Capability.Write, DurableSessions.AspNetCore.Auth.Capability.Control],
                }, TimeSpan.FromDays(365))
                : null,
        });
        var agent = new SessionAgent(chat, client, new SessionAgentOptions { AgentId = settings.Id, Instructions = settings.Instructions }, loggerFactory.CreateLogger<SessionAgent>());
        Log.Hosting(_logger, settings.Id, settings.Model);

        var discovered = _discovered;
        store.Fanout.AddObserver(change =>
        {
            if (change.Deleted || !change.Path.StartsWith("sessions/", StringComparison.Ordinal))
            {
                return;
            }

            if (_sessions.TryGetValue(change.Path, out var followed))
            {
                Volatile.Write(ref followed.LastActivity, Environment.TickCount64);
            }
            else if (!OnlyPresence(change))
            {
                // Presence alone (the agent itself marked left after it stopped following) is nothing to answer.
                discovered.Writer.TryWrite((change.Path, true));
            }
        });
        await foreach (var path in store.ListPathsAsync(stoppingToken))
        {
            discovered.Writer.TryWrite((path, false));
        }

        await foreach (var (path, changed) in discovered.Reader.ReadAllAsync(stoppingToken))
        {
            if (!path.StartsWith("sessions/", StringComparison.Ordinal) || path.IndexOf('/', "sessions/".Length) >= 0 || _sessions.ContainsKey(path))
            {
                continue;
            }

            // Following every session live would cost four descriptors each: past the cap, a session that changed takes
            // the place of the quietest followed one; one listed at start waits for its next change.
            if (_sessions.Count >= maxLive && !(changed && TryYieldQuietest(agent, settings.YieldAfterIdle)))
            {
                if (Interlocked.Exchange(ref _capWarned, 1) == 0)
                {
                    Log.LiveSessionCapReached(_logger, maxLive);
                }

                if (changed && _waitingPaths.TryAdd(path, 0))
                {
                    // It takes the first place that frees, or, once a followed session has had time to fall quiet, the
                    // place of the quietest.
                    _waiting.Enqueue(path);
                    _ = RetryAsync(path, settings.YieldAfterIdle, stoppingToken);
                }

                continue;
            }

            // Registered before it starts, so its own removal when it ends can never come first and leave it listed.
            var sessionId = path["sessions/".Length..];
            var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var followedSession = new Followed(CancellationTokenSource.CreateLinkedTokenSource(stoppingToken)) { LastActivity = Environment.TickCount64 };
            followedSession.Task = ServeAsync(start.Task, agent, path, sessionId, followedSession, stoppingToken);
            _sessions[path] = followedSession;
            start.SetResult();
        }
    }

    private async Task RetryAsync(string path, TimeSpan delay, CancellationToken stoppingToken)
    {
        try
        {
            await Task.Delay(delay, stoppingToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return;
        }

        if (_waitingPaths.TryRemove(path, out _))
        {
            _discovered.Writer.TryWrite((path, true));
        }
    }

    /// <summary>Stops following the session quiet for longest, if one has been quiet for <paramref name="idle"/>.</summary>
    private bool TryYieldQuietest(SessionAgent agent, TimeSpan idle)
    {
        var now = Environment.TickCount64;
        KeyValuePair<string, Followed>? quietest = null;
        foreach (var entry in _sessions)
        {
            // A session with a run in progress stays, however long its model has been quiet: stopping would cut the run.
            var last = Volatile.Read(ref entry.Value.LastActivity);
            if (now - last >= (long)idle.TotalMilliseconds && (quietest is null || last < quietest.Value.Value.LastActivity)
                && !agent.IsAnswering(entry.Key["sessions/".Length..]))
            {
                quietest = entry;
            }
        }

        if (quietest is not { } yielding || !_sessions.TryRemove(yielding))
        {
            return false;
        }

        try
        {
            yielding.Value.Stop.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // It ended on its own meanwhile: its place is free all the same.
        }

        return true;
    }

    private static bool OnlyPresence(DurableSessions.Live.LiveAppend change)
        => DurableSessions.Sessions.SessionState.ParseEvents(change.Chunk.Data.Span) is { Count: > 0 } events
            && events.All(e => DurableSessions.Sessions.SessionJson.Text(e, "type") == DurableSessions.Sessions.SessionEventTypes.Presence);

    private async Task ServeAsync(Task start, SessionAgent agent, string path, string sessionId, Followed followed, CancellationToken stoppingToken)
    {
        await start.ConfigureAwait(ConfigureAwaitOptions.ForceYielding);
        try
        {
            await agent.RunAsync(sessionId, followed.Stop.Token);
        }
        catch (DurableSessionsException ex)
        {
            // The session was deleted (or is not a session): forget it so a re-created one is served again.
            Log.SessionEnded(_logger, sessionId, ex.Code);
        }
        catch (OperationCanceledException) when (followed.Stop.IsCancellationRequested)
        {
        }
        catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
        {
            Log.SessionFailed(_logger, sessionId, ex);
        }
        finally
        {
            // Only this follow: the path may already be followed anew after it yielded its place.
            _sessions.TryRemove(new KeyValuePair<string, Followed>(path, followed));
            followed.Stop.Dispose();
            if (_waiting.TryDequeue(out var next))
            {
                _waitingPaths.TryRemove(next, out _);
                _discovered.Writer.TryWrite((next, true));
            }
        }
    }

    /// <summary>A session the agent follows: its serving task, how to stop it, and when it last changed.</summary>
    private sealed class Followed(CancellationTokenSource stop)
    {
        public CancellationTokenSource Stop { get; } = stop;

        public Task Task { get; set; } = Task.CompletedTask;

        public long LastActivity;
    }

    private static IChatClient CreateChatClient(EmbeddedAgentOptions settings)
    {
        if (!string.Equals(settings.Model, "openai", StringComparison.OrdinalIgnoreCase))
        {
            return new DemoChatClient(settings.TokensPerSecond);
        }

        if (string.IsNullOrEmpty(settings.Endpoint) || string.IsNullOrEmpty(settings.ModelId))
        {
            throw new InvalidOperationException("Agent:Model=openai needs Agent:Endpoint and Agent:ModelId (and Agent:ApiKey if the endpoint requires one).");
        }

        var openAi = new OpenAIClient(new ApiKeyCredential(settings.ApiKey ?? "unused"), new OpenAIClientOptions { Endpoint = new Uri(settings.Endpoint) });
        return openAi.GetChatClient(settings.ModelId).AsIChatClient();
    }

    private static partial class Log
    {
        [LoggerMessage(10, LogLevel.Information, "Hosting agent {AgentId} (model: {Model}) on every session")]
        public static partial void Hosting(ILogger logger, string agentId, string model);

        [LoggerMessage(11, LogLevel.Debug, "Agent stopped serving session {SessionId}: {Code}")]
        public static partial void SessionEnded(ILogger logger, string sessionId, string code);

        [LoggerMessage(13, LogLevel.Warning, "Agent stopped serving session {SessionId} after an unexpected error; it is served again on its next change")]
        public static partial void SessionFailed(ILogger logger, string sessionId, Exception exception);

        [LoggerMessage(12, LogLevel.Warning, "The agent follows {MaxLiveSessions} sessions live (Agent:MaxLiveSessions); further sessions wait until one ends")]
        public static partial void LiveSessionCapReached(ILogger logger, int maxLiveSessions);
    }
}
