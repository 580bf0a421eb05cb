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
    /// sixteenth of the open-file limit. Sessions past it wait until a followed session ends. Default 250.
    /// </summary>
    public int MaxLiveSessions { get; set; } = 250;
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
    private readonly ConcurrentDictionary<string, Task> _sessions = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<string> _waiting = new();

    // Each waiting session once, however often it is appended to while it waits.
    private readonly ConcurrentDictionary<string, byte> _waitingPaths = new(StringComparer.Ordinal);
    private readonly System.Threading.Channels.Channel<string> _discovered = System.Threading.Channels.Channel.CreateUnbounded<string>();
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
            if (!change.Deleted && change.Path.StartsWith("sessions/", StringComparison.Ordinal) && !_sessions.ContainsKey(change.Path))
            {
                discovered.Writer.TryWrite(change.Path);
            }
        });
        await foreach (var path in store.ListPathsAsync(stoppingToken))
        {
            discovered.Writer.TryWrite(path);
        }

        await foreach (var path in discovered.Reader.ReadAllAsync(stoppingToken))
        {
            if (!path.StartsWith("sessions/", StringComparison.Ordinal) || path.IndexOf('/', "sessions/".Length) >= 0 || _sessions.ContainsKey(path))
            {
                continue;
            }

            if (_sessions.Count >= maxLive)
            {
                // Following every session live would cost four descriptors each; the rest wait for a followed one to end.
                if (Interlocked.Exchange(ref _capWarned, 1) == 0)
                {
                    Log.LiveSessionCapReached(_logger, maxLive);
                }

                if (_waitingPaths.TryAdd(path, 0))
                {
                    _waiting.Enqueue(path);
                }

                continue;
            }

            // Registered before it starts, so its own removal when it ends can never come first and leave it listed.
            var sessionId = path["sessions/".Length..];
            var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _sessions[path] = ServeAsync(start.Task, agent, path, sessionId, stoppingToken);
            start.SetResult();
        }
    }

    private async Task ServeAsync(Task start, SessionAgent agent, string path, string sessionId, CancellationToken stoppingToken)
    {
        await start.ConfigureAwait(ConfigureAwaitOptions.ForceYielding);
        try
        {
            await agent.RunAsync(sessionId, stoppingToken);
        }
        catch (DurableSessionsException ex)
        {
            // The session was deleted (or is not a session): forget it so a re-created one is served again.
            Log.SessionEnded(_logger, sessionId, ex.Code);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
        {
            Log.SessionFailed(_logger, sessionId, ex);
        }
        finally
        {
            _sessions.TryRemove(path, out _);
            if (_waiting.TryDequeue(out var next))
            {
                _waitingPaths.TryRemove(next, out _);
                _discovered.Writer.TryWrite(next);
            }
        }
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
