using System.ClientModel;
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

    /// <summary>
    /// How long a reply's tokens after its first gather before they are written together
    /// (<see cref="SessionAgentOptions.DeltaLinger"/>), at most one second. Default 30 ms; zero writes every token as soon
    /// as the previous write is acknowledged.
    /// </summary>
    public TimeSpan DeltaLinger { get; set; } = TimeSpan.FromMilliseconds(30);

    /// <summary>The OpenAI-compatible endpoint, e.g. <c>http://127.0.0.1:11434/v1</c> for Ollama.</summary>
    public string? Endpoint { get; set; }

    /// <summary>The model name at that endpoint.</summary>
    public string? ModelId { get; set; }

    /// <summary>The API key (any non-empty value for servers that ignore it).</summary>
    public string? ApiKey { get; set; }

    /// <summary>The system prompt.</summary>
    public string? Instructions { get; set; }

    /// <summary>
    /// The most replies the agent writes at once; more wait for a free place. Each reply in progress holds one live
    /// connection to this server (four descriptors of this process), so it is also capped at a sixteenth of the
    /// open-file limit. Default 1000.
    /// </summary>
    public int MaxConcurrentRuns { get; set; } = 1000;

    /// <summary>
    /// Whether the agent calls this server in process (no socket: requests go straight to the application, through the
    /// same routing, access control and endpoints) rather than over loopback HTTP. Default true.
    /// </summary>
    public bool InProcess { get; set; } = true;

    /// <summary>
    /// Whether the agent's appends (every reply's delta batches) are pipelined on one WebSocket (in memory when
    /// <see cref="InProcess"/>). Default: over the network yes; in process no, where each append goes straight to the
    /// server's append path with no request or message around it (the same checks, session rules and access control).
    /// </summary>
    public bool? UseWebSocket { get; set; }

    /// <summary>What is out of range in these settings, in one line, or null. Checked before the server starts.</summary>
    public string? Problem()
        => MaxConcurrentRuns < 1 ? "Agent:MaxConcurrentRuns must be at least 1."
            : DeltaLinger < TimeSpan.Zero || DeltaLinger > TimeSpan.FromSeconds(1) ? "Agent:DeltaLinger must be between 00:00:00 and 00:00:01."
            : TokensPerSecond is < 0 or > 100_000 || double.IsNaN(TokensPerSecond) ? "Agent:TokensPerSecond must be between 0 and 100000."
            : null;
}

/// <summary>
/// Hosts the server's own agent with a <see cref="SessionAgentHost"/>: woken by turns (user messages waiting for it), it
/// holds a connection only for the replies in progress and nothing per idle session, however many sessions are stored.
/// It talks to this server over HTTP like any external agent, which shares the turns if it registers the same agent id.
/// </summary>
internal sealed partial class EmbeddedAgentHost(
    IServer server,
    DurableSessions.AspNetCore.InProcess.InProcessTransport transport,
    DurableSessions.AspNetCore.Auth.AccessTokens tokens,
    Microsoft.Extensions.Options.IOptions<EmbeddedAgentOptions> options,
    Microsoft.Extensions.Options.IOptions<DurableSessions.AspNetCore.DurableStreamsOptions> streams,
    ILoggerFactory loggerFactory,
    IHostApplicationLifetime lifetime) : BackgroundService
{
    private readonly ILogger _logger = loggerFactory.CreateLogger<EmbeddedAgentHost>();

    /// <summary>The concurrency in force: the setting, lowered to a sixteenth of the open-file limit.</summary>
    private static int EffectiveMaxConcurrentRuns(EmbeddedAgentOptions settings)
        => DurableSessions.AspNetCore.Connections.ConnectionLimitOptions.ReadDescriptorLimit() is { } fds
            ? (int)Math.Clamp(Math.Min(settings.MaxConcurrentRuns, fds / 16), 1, int.MaxValue)
            : settings.MaxConcurrentRuns;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var settings = options.Value;
        if (!settings.Enabled)
        {
            return;
        }

        // The agent connects to this server once it is listening.
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var registration = lifetime.ApplicationStarted.Register(() => started.TrySetResult());
        try
        {
            await started.Task.WaitAsync(stoppingToken);
        }
        catch (OperationCanceledException)
        {
            return;
        }

        var address = server.Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault();
        if (address is null)
        {
            return;
        }

        using var chat = CreateChatClient(settings);
        var inProcess = settings.InProcess && transport.IsReady;
        using var http = inProcess ? new HttpClient(transport.CreateHandler()) { Timeout = Timeout.InfiniteTimeSpan } : null;

        // With access control on, the hosted agent gets a token for every session and its own turns, like any other
        // agent would.
        var token = tokens.Enabled
            ? tokens.Issue(settings.Id, new Dictionary<string, DurableSessions.AspNetCore.Auth.Capability[]>
            {
                ["sessions/*"] = [DurableSessions.AspNetCore.Auth.Capability.Read, DurableSessions.AspNetCore.Auth.Capability.Write, DurableSessions.AspNetCore.Auth.Capability.Control],
                ["agents/" + settings.Id] = [DurableSessions.AspNetCore.Auth.Capability.Read, DurableSessions.AspNetCore.Auth.Capability.Write],
            }, TimeSpan.FromDays(365))
            : null;

        // The token is checked as the server checks every caller's. One the configured scheme does not take (an identity
        // provider's, with no Auth:SigningKey of the server's own) would be refused on every call: the agent is not
        // hosted, and the server says so and keeps serving.
        DurableSessions.AspNetCore.InProcess.InProcessAppender? checkedAppender = null;
        try
        {
            if (transport.IsReady)
            {
                checkedAppender = await transport.CreateAppenderAsync(token, stoppingToken);
            }
        }
        catch (UnauthorizedAccessException ex)
        {
            Log.TokenRefused(_logger, settings.Id, ex.Message);
            return;
        }

        // In process, its appends (every reply's delta batches) go straight to the append path, with no request each,
        // unless Agent:UseWebSocket asks for the in-memory WebSocket.
        await using var appender = inProcess && settings.UseWebSocket != true ? checkedAppender : null;
        if (appender is null && checkedAppender is not null)
        {
            await checkedAppender.DisposeAsync();
        }

        using var client = new DurableSessionsClient(httpClient: http, options: DurableSessionsClientOptions.Default with
        {
            BaseAddress = new Uri(address.Replace("://+", "://127.0.0.1", StringComparison.Ordinal).Replace("://*", "://127.0.0.1", StringComparison.Ordinal).Replace("://0.0.0.0", "://127.0.0.1", StringComparison.Ordinal)),
            ParticipantId = settings.Id,

            // Over the network its appends are pipelined on one WebSocket.
            UseWebSocket = settings.UseWebSocket ?? http is null,
            AppendTransport = appender is null ? null : new InProcessAppendTransport(appender),
            AccessToken = token,

            // A read over the in-process pipe cannot go silent while the server lives: no idle timeout. Over the network,
            // three of this server's keep-alive intervals (at least the default), so a keep-alive set long does not have
            // its own agent resume its reads for nothing.
            SseIdleTimeout = http is not null ? Timeout.InfiniteTimeSpan
                : TimeSpan.FromTicks(Math.Min(TimeSpan.FromDays(40).Ticks, Math.Max(DurableSessionsClientOptions.Default.SseIdleTimeout.Ticks, streams.Value.SseKeepAliveInterval.Ticks * 3))),
        });
        var agent = new SessionAgent(chat, client, new SessionAgentOptions { AgentId = settings.Id, Instructions = settings.Instructions, DeltaLinger = settings.DeltaLinger }, loggerFactory.CreateLogger<SessionAgent>());
        var host = new SessionAgentHost(agent, client, settings.Id, new SessionAgentHostOptions { MaxConcurrentRuns = EffectiveMaxConcurrentRuns(settings) }, loggerFactory.CreateLogger<SessionAgentHost>());
        Log.Hosting(_logger, settings.Id, settings.Model);
        try
        {
            await host.RunAsync(stoppingToken);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
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

        return CreateOpenAIChatClient(settings.Endpoint, settings.ModelId, settings.ApiKey);
    }

    // A method of its own: compiling it loads the OpenAI assemblies (two descriptors each for the process's life), which
    // a server running the demo model never needs.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static IChatClient CreateOpenAIChatClient(string endpoint, string modelId, string? apiKey)
    {
        var openAi = new OpenAIClient(new ApiKeyCredential(apiKey ?? "unused"), new OpenAIClientOptions { Endpoint = new Uri(endpoint) });
        return openAi.GetChatClient(modelId).AsIChatClient();
    }

    /// <summary>The client's append transport over the server's in-process appender.</summary>
    private sealed class InProcessAppendTransport(DurableSessions.AspNetCore.InProcess.InProcessAppender appender) : IProducerAppendTransport
    {
        public async Task<string?> AppendAsync(string path, ReadOnlyMemory<byte> messagesJson, string producerId, long epoch, long seq, CancellationToken cancellationToken)
        {
            var result = await appender.AppendAsync(path, messagesJson, producerId, epoch, seq, cancellationToken).ConfigureAwait(false);
            if (result.Succeeded)
            {
                return result.Offset ?? string.Empty;
            }

            // What a request would have been answered with again (the store unavailable, an expired token): the producer
            // sends it as a request, which retries and reports as for any client.
            if (result.Status is >= 500 or 401 or 408 or 429)
            {
                return null;
            }

            throw new DurableSessionsException((System.Net.HttpStatusCode)result.Status, result.Code!, result.Message!);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(10, LogLevel.Information, "Hosting agent {AgentId} (model: {Model}): it answers every session's new messages")]
        public static partial void Hosting(ILogger logger, string agentId, string model);

        [LoggerMessage(11, LogLevel.Error, "The hosted agent {AgentId} is not started: access control does not accept the token the server issues it ({Reason}). Configure Auth:SigningKey so the server can issue tokens its scheme accepts, or run agents with tokens of your identity provider (Agent:Enabled=false).")]
        public static partial void TokenRefused(ILogger logger, string agentId, string reason);

    }
}
