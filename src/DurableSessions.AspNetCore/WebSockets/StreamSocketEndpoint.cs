using DurableSessions.AspNetCore.Auth;
using DurableSessions.AspNetCore.Streams;
using DurableSessions.Live;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DurableSessions.AspNetCore.WebSockets;

/// <summary>What every WebSocket connection of this server shares.</summary>
internal sealed class StreamSocketServices(
    StreamRequestHandler streams,
    StreamStore store,
    Sessions.SessionEndpoints sessions,
    AccessControl access,
    IOptions<StreamSocketOptions> options,
    IOptions<DurableStreamsOptions> streamOptions,
    IHostApplicationLifetime lifetime,
    ILogger<StreamSocketConnection> logger)
{
    public StreamRequestHandler Streams => streams;

    public StreamStore Store => store;

    public Sessions.SessionEndpoints Sessions => sessions;

    public AccessControl Access => access;

    public StreamSocketOptions Options => options.Value;

    public DurableStreamsOptions StreamOptions => streamOptions.Value;

    public TimeProvider Time => store.TimeProvider;

    public CancellationToken Stopping => lifetime.ApplicationStopping;

    public ILogger Logger => logger;

    /// <summary>
    /// Followers re-read from the store when the fan-out cuts them off; the connection's own send-queue bound decides
    /// when a subscription has fallen behind.
    /// </summary>
    public StreamFollowOptions FollowOptions { get; } = new() { MaxReadBytes = streamOptions.Value.MaxReadBytes };
}

/// <summary>The WebSocket transport's endpoint, <c>/v1/ws</c>: checks the upgrade and serves the connection.</summary>
internal sealed partial class StreamSocketEndpoint(StreamSocketServices services, ILogger<StreamSocketEndpoint> logger)
{
    public const string Path = "/v1/ws";

    private int _toldMissingMiddleware;

    public async Task HandleAsync(HttpContext context)
    {
        if (!context.WebSockets.IsWebSocketRequest && !HttpMethods.IsGet(context.Request.Method))
        {
            // Mapped for every method, so that one the endpoint does not take is told so (not left to the /v1 fallback).
            context.Response.Headers.Allow = "GET";
            await Problem.Write(context, 405, "METHOD_NOT_ALLOWED", $"This endpoint is a WebSocket: open it with GET and the subprotocol {StreamSocketOptions.SubProtocol}; see docs/websocket.md.").ConfigureAwait(false);
            return;
        }

        if (!context.WebSockets.IsWebSocketRequest)
        {
            if (context.Request.Headers.Upgrade.ToString().Contains("websocket", StringComparison.OrdinalIgnoreCase)
                && Interlocked.Exchange(ref _toldMissingMiddleware, 1) == 0)
            {
                Log.NoWebSocketMiddleware(logger);
            }

            await Problem.Write(context, 400, "WEBSOCKET_REQUIRED", $"This endpoint is a WebSocket with subprotocol {StreamSocketOptions.SubProtocol}; see docs/websocket.md.").ConfigureAwait(false);
            return;
        }

        if (!context.WebSockets.WebSocketRequestedProtocols.Contains(StreamSocketOptions.SubProtocol))
        {
            await Problem.Write(context, 400, "SUBPROTOCOL_REQUIRED", $"Offer the subprotocol {StreamSocketOptions.SubProtocol} (Sec-WebSocket-Protocol).").ConfigureAwait(false);
            return;
        }

        if (services.Access.Establish(context) is not { } access)
        {
            context.Response.Headers.WWWAuthenticate = "Bearer";
            await Problem.Write(context, 401, "UNAUTHENTICATED", "An access token is required (Authorization: Bearer <token>, or access_token=<token>).").ConfigureAwait(false);
            return;
        }

        var options = services.Options;
        using var socket = await context.WebSockets.AcceptWebSocketAsync(new WebSocketAcceptContext
        {
            SubProtocol = StreamSocketOptions.SubProtocol,
            KeepAliveInterval = options.KeepAliveInterval,
            KeepAliveTimeout = options.KeepAliveTimeout,
        }).ConfigureAwait(false);
        using var connection = new StreamSocketConnection(socket, context, access, BearerToken(context), services);
        await connection.RunAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Lets a browser, which cannot set headers on a WebSocket, give its token as <c>access_token</c> on this endpoint's
    /// URL. Only here: anywhere else a token in a URL would end up in logs and caches for nothing.
    /// </summary>
    public static Task TokenFromQuery(MessageReceivedContext context)
    {
        if (context.Token is null
            && !context.Request.Headers.ContainsKey("Authorization")
            && context.HttpContext.Request.Path.Equals(Path, StringComparison.Ordinal)
            && context.Request.Query["access_token"] is { Count: 1 } token
            && !string.IsNullOrEmpty(token[0]))
        {
            context.Token = token[0];
        }

        return Task.CompletedTask;
    }

    /// <summary>The token the upgrade request was authenticated with (its bearer header, or <c>access_token</c>), if any.</summary>
    private static string? BearerToken(HttpContext context)
    {
        var header = context.Request.Headers.Authorization.ToString();
        if (header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            return header["Bearer ".Length..].Trim() is { Length: > 0 } token ? token : null;
        }

        return header.Length == 0 && context.Request.Query["access_token"] is { Count: 1 } query && !string.IsNullOrEmpty(query[0]) ? query[0] : null;
    }

    private static partial class Log
    {
        [LoggerMessage(1301, LogLevel.Warning, "A WebSocket upgrade reached /v1/ws, but WebSockets are not enabled: call app.UseWebSockets() before mapping the endpoints.")]
        public static partial void NoWebSocketMiddleware(ILogger logger);
    }
}
