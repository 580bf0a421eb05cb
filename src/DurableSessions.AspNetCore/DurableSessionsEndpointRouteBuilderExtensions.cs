using DurableSessions.AspNetCore.Streams;
using DurableSessions.AspNetCore.Subscriptions;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace DurableSessions.AspNetCore;

/// <summary>Maps the Durable Streams endpoints.</summary>
public static class DurableSessionsEndpointRouteBuilderExtensions
{
    /// <summary>
    /// Maps the sessions API at <c>/v1/sessions/{id}</c> (snapshot, messages, cancel, steer) and the agents API at
    /// <c>/v1/agents/{agent}</c> (register, claim, ack and release turns).
    /// </summary>
    public static IEndpointConventionBuilder MapDurableSessions(this IEndpointRouteBuilder endpoints)
    {
        var agents = endpoints.ServiceProvider.GetRequiredService<Agents.AgentTurnEndpoints>();
        MapUnder(endpoints, Agents.AgentTurnEndpoints.Root, agents.HandleAsync);
        var sessions = endpoints.ServiceProvider.GetRequiredService<Sessions.SessionEndpoints>();
        return MapUnder(endpoints, Sessions.SessionEndpoints.Root, sessions.HandleAsync);
    }

    /// <summary>
    /// Maps the Vercel AI SDK chat endpoints (<c>useChat</c> / <c>DefaultChatTransport</c>) at <c>/api/chat</c>:
    /// send, resume (<c>/api/chat/{id}/stream</c>) and stop (<c>/api/chat/{id}/stop</c>), backed by sessions.
    /// </summary>
    public static IEndpointConventionBuilder MapAiSdkChat(this IEndpointRouteBuilder endpoints)
    {
        var chat = endpoints.ServiceProvider.GetRequiredService<AiSdk.AiSdkChatEndpoints>();
        return MapUnder(endpoints, AiSdk.AiSdkChatEndpoints.Root, chat.HandleAsync);
    }

    /// <summary>
    /// Maps the WebSocket transport at <c>/v1/ws</c> (docs/websocket.md): one connection for any number of subscriptions,
    /// pipelined appends and session operations. Needs <c>app.UseWebSockets()</c> earlier in the pipeline.
    /// </summary>
    public static IEndpointConventionBuilder MapDurableStreamsWebSocket(this IEndpointRouteBuilder endpoints)
    {
        var socket = endpoints.ServiceProvider.GetRequiredService<WebSockets.StreamSocketEndpoint>();
        var endpoint = endpoints.Map(WebSockets.StreamSocketEndpoint.Path, socket.HandleAsync);
        return Protect(endpoints, endpoint, _ => false);
    }

    /// <summary>
    /// Answers a request under <c>/v1/</c> that no endpoint takes (a typo, or dot segments folded away) with the API's
    /// JSON error, <c>404 NOT_FOUND</c>, instead of an empty 404. A fallback: every endpoint mapped, by this library or
    /// the host, wins over it. Map it once, after the others.
    /// </summary>
    public static IEndpointConventionBuilder MapDurableSessionsNotFound(this IEndpointRouteBuilder endpoints)
    {
        var options = endpoints.ServiceProvider.GetRequiredService<IOptions<DurableStreamsOptions>>().Value;
        return endpoints.MapFallback("/v1/{**path}", context =>
        {
            ApplyCommonHeaders(context, options);
            return Problem.Write(context, 404, "NOT_FOUND", $"No endpoint at this path: the API's paths are {StreamPaths.Root}/{{path}}, {Sessions.SessionEndpoints.Root}/{{id}}, {Agents.AgentTurnEndpoints.Root}/{{agent}} and {WebSockets.StreamSocketEndpoint.Path}.");
        });
    }

    /// <summary>Maps a handler for everything under <paramref name="root"/>, with the common headers and CORS preflight.</summary>
    private static IEndpointConventionBuilder MapUnder(IEndpointRouteBuilder endpoints, string root, Func<HttpContext, string, Task> handler)
    {
        var options = endpoints.ServiceProvider.GetRequiredService<IOptions<DurableStreamsOptions>>().Value;
        var endpoint = endpoints.Map(root + "/{**rest}", context =>
        {
            ApplyCommonHeaders(context, options);
            if (HttpMethods.IsOptions(context.Request.Method))
            {
                return Preflight(context);
            }

            var raw = context.Request.Path.Value ?? string.Empty;
            return Guarded(context, () => handler(context, raw.Length > root.Length + 1 ? raw[(root.Length + 1)..] : string.Empty));
        });
        return Protect(endpoints, endpoint, context => HttpMethods.IsOptions(context.Request.Method));
    }

    /// <summary>
    /// Requires <see cref="Auth.DurableSessionsAuthorization.Policy"/> on an endpoint when access control is on, except
    /// for the requests <paramref name="isAnonymous"/> lets through (CORS preflight, routes that check their own token).
    /// </summary>
    private static IEndpointConventionBuilder Protect(IEndpointRouteBuilder endpoints, IEndpointConventionBuilder endpoint, Func<HttpContext, bool> isAnonymous)
    {
        var options = endpoints.ServiceProvider.GetRequiredService<IOptions<DurableStreamsOptions>>().Value;
        endpoint.WithMetadata(new Auth.DurableSessionsEndpoint(isAnonymous, context => ApplyCommonHeaders(context, options)));
        if (endpoints.ServiceProvider.GetRequiredService<Auth.AccessControl>().Enabled)
        {
            endpoint.RequireAuthorization(Auth.DurableSessionsAuthorization.Policy);
        }

        return endpoint;
    }

    /// <summary>
    /// Answers <c>503</c> with <c>Retry-After</c> when the store cannot be reached: nothing was acknowledged, and a
    /// retry (deduplicated for idempotent producers) is the client's move. A response already under way is cut.
    /// </summary>
    private static async Task Guarded(HttpContext context, Func<Task> handler)
    {
        try
        {
            await handler().ConfigureAwait(false);
        }
        catch (StreamStoreUnavailableException ex)
        {
            Telemetry.StoreUnavailable.Add(1);
            if (context.Response.HasStarted)
            {
                context.Abort();
                return;
            }

            context.Response.Headers.RetryAfter = "1";
            await Problem.Write(context, 503, "STORE_UNAVAILABLE", ex.Message).ConfigureAwait(false);
        }
    }

    /// <summary>Maps the Durable Streams protocol at <c>/v1/stream/{path}</c>, including the reserved <c>__ds</c> control APIs.</summary>
    public static IEndpointConventionBuilder MapDurableStreams(this IEndpointRouteBuilder endpoints)
    {
        var handler = endpoints.ServiceProvider.GetRequiredService<StreamRequestHandler>();
        var control = endpoints.ServiceProvider.GetRequiredService<SubscriptionEndpoints>();
        var access = endpoints.ServiceProvider.GetRequiredService<Auth.AccessControl>();
        var options = endpoints.ServiceProvider.GetRequiredService<IOptions<DurableStreamsOptions>>().Value;
        var endpoint = endpoints.Map(StreamPaths.Root + "/{**path}", context => Guarded(context, () => Dispatch(context, handler, control, access, options)));
        return Protect(endpoints, endpoint, context => HttpMethods.IsOptions(context.Request.Method) || IsSelfAuthenticated(context));
    }

    /// <summary>
    /// The control routes that need no bearer token, decided from the route's exact shape: the public key set, and the
    /// routes that carry (and check) their own wake-scoped token. Everything else, claims included, needs admin on __ds.
    /// </summary>
    private static bool IsSelfAuthenticated(HttpContext context)
    {
        var raw = context.Request.Path.Value ?? string.Empty;
        var prefix = StreamPaths.Root + "/" + StreamPaths.Reserved + "/";
        return raw.StartsWith(prefix, StringComparison.Ordinal)
               && SubscriptionEndpoints.Classify(raw[prefix.Length..], context.Request.Method) is ControlRoute.KeySet or ControlRoute.WakeScoped;
    }

    private static async Task Dispatch(HttpContext context, StreamRequestHandler handler, SubscriptionEndpoints control, Auth.AccessControl access, DurableStreamsOptions options)
    {
        ApplyCommonHeaders(context, options);
        var method = context.Request.Method;
        if (HttpMethods.IsOptions(method))
        {
            await Preflight(context).ConfigureAwait(false);
            return;
        }

        var raw = context.Request.Path.Value ?? string.Empty;
        var path = raw.Length > StreamPaths.Root.Length + 1 ? raw[(StreamPaths.Root.Length + 1)..] : string.Empty;

        // Control APIs come first so reserved paths are never treated as streams (protocol §6).
        if (path.StartsWith(StreamPaths.Reserved + "/", StringComparison.Ordinal))
        {
            var rest = path[(StreamPaths.Reserved.Length + 1)..];
            if (IsSelfAuthenticated(context) || await access.AuthorizeAsync(context, StreamPaths.Reserved, Auth.Capability.Admin).ConfigureAwait(false))
            {
                await control.HandleAsync(context, rest).ConfigureAwait(false);
            }

            return;
        }

        if (path.Contains('%', StringComparison.Ordinal))
        {
            path = Uri.UnescapeDataString(path);
        }

        if (StreamPaths.Validate(path, options.MaxPathLength) is { } error)
        {
            await Problem.Write(context, path.Length > options.MaxPathLength ? 414 : 400, "INVALID_PATH", error).ConfigureAwait(false);
            return;
        }

        if (StreamPaths.IsReserved(path))
        {
            await Problem.Write(context, 404, "NOT_FOUND", "Unknown control API.").ConfigureAwait(false);
            return;
        }

        var capability = method switch
        {
            "GET" or "HEAD" => Auth.Capability.Read,
            "DELETE" => Auth.Capability.Admin,
            _ => Auth.Capability.Write,
        };
        if (await access.AuthorizeAsync(context, path, capability).ConfigureAwait(false))
        {
            await handler.HandleAsync(context, path).ConfigureAwait(false);
        }
    }

    private static void ApplyCommonHeaders(HttpContext context, DurableStreamsOptions options)
    {
        var headers = context.Response.Headers;
        headers.XContentTypeOptions = "nosniff";
        headers["Cross-Origin-Resource-Policy"] = "cross-origin";
        headers.AccessControlAllowOrigin = options.AllowedOrigin;
        headers.AccessControlExposeHeaders = ProtocolHeaders.ExposedHeaders;
    }

    private static Task Preflight(HttpContext context)
    {
        var headers = context.Response.Headers;
        headers.AccessControlAllowMethods = "GET, HEAD, POST, PUT, DELETE, OPTIONS";
        var requested = context.Request.Headers.AccessControlRequestHeaders.ToString();
        headers.AccessControlAllowHeaders = string.IsNullOrEmpty(requested) ? ProtocolHeaders.AllowedHeaders : requested;
        headers.AccessControlMaxAge = "86400";
        context.Response.StatusCode = StatusCodes.Status204NoContent;
        return Task.CompletedTask;
    }
}
