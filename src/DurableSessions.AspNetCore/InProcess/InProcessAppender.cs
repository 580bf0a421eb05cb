using DurableSessions.AspNetCore.Auth;
using DurableSessions.AspNetCore.Streams;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace DurableSessions.AspNetCore.InProcess;

/// <summary>
/// Appends as idempotent producers straight to this server's append path, with no request: the same checks, the
/// stream's append policy (a session's rules), access control and store as an append over HTTP or the WebSocket. The
/// hosted agent writes its replies' delta batches with it: a request each (headers, routing, the middleware, a response)
/// cost more than the append itself.
/// </summary>
/// <remarks>Thread-safe; appends to one stream are stored in the order their calls complete, as over HTTP.</remarks>
public sealed class InProcessAppender : IAsyncDisposable
{
    private const string JsonContentType = "application/json";

    private readonly AsyncServiceScope _scope;
    private readonly StreamRequestHandler _streams;
    private readonly DurableStreamsOptions _options;
    private readonly TimeProvider _time;
    private readonly HttpContext _caller;
    private readonly Access _access;

    internal InProcessAppender(IServiceProvider services, ClaimsPrincipalAccess caller)
    {
        // A scope of its own for the appender's life, as a WebSocket connection has its request's: the application's
        // authorization handlers may be scoped.
        _scope = services.GetRequiredService<IServiceScopeFactory>().CreateAsyncScope();
        _streams = services.GetRequiredService<StreamRequestHandler>();
        _options = services.GetRequiredService<Microsoft.Extensions.Options.IOptions<DurableStreamsOptions>>().Value;
        _time = services.GetRequiredService<StreamStore>().TimeProvider;
        _access = caller.Access;

        // The authorization handlers see the caller as they see a request's: its principal and access.
        _caller = new DefaultHttpContext { RequestServices = _scope.ServiceProvider, User = caller.Principal };
        _caller.Items[AccessControl.ItemKey] = caller.Access;
    }

    /// <summary>
    /// Appends a JSON array of messages to <paramref name="path"/> as producer <paramref name="producerId"/>, epoch
    /// <paramref name="epoch"/> and sequence number <paramref name="seq"/>.
    /// </summary>
    /// <returns>
    /// The status the protocol answers, with the offset after the append or the refusal's code and message (503
    /// <c>STORE_UNAVAILABLE</c> when the store cannot be reached: nothing was stored, and the same append may be sent again).
    /// </returns>
    public async Task<InProcessAppendResult> AppendAsync(string path, ReadOnlyMemory<byte> messagesJson, string producerId, long epoch, long seq, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(producerId);
        if (Refusal(path, messagesJson.Length, producerId, epoch, seq) is { } refused)
        {
            return refused;
        }

        if (_access.ExpiresAt is { } expiresAt && _time.GetUtcNow() >= expiresAt)
        {
            return new InProcessAppendResult(401, null, "UNAUTHENTICATED", "The access token has expired.");
        }

        if (!await AccessControl.AllowsAsync(_caller, new StreamResource(path), Capability.Write).ConfigureAwait(false))
        {
            return new InProcessAppendResult(403, null, "FORBIDDEN", $"The token does not grant write on {path}.");
        }

        // The stored change is handed to live readers after this returns, and the caller's buffer is the caller's to
        // reuse. An array of messages (what producers send) is framed into a buffer of its own (JsonFraming.TryFrame),
        // so only a single message, which framing stores as it is, is copied first.
        var body = IsArray(messagesJson.Span) ? messagesJson : messagesJson.ToArray();
        var command = new AppendCommand(path, JsonContentType, body, Close: false, StreamSeq: null, new ProducerStamp(producerId, epoch, seq));
        using var activity = Telemetry.Source.StartActivity("durable_sessions.append");
        activity?.SetTag("durable_sessions.stream", path);
        AppendAnswer answer;
        try
        {
            answer = await _streams.AppendAsync(command, _caller, cancellationToken).ConfigureAwait(false);
        }
        catch (StreamStoreUnavailableException ex)
        {
            Telemetry.StoreUnavailable.Add(1);
            return new InProcessAppendResult(503, null, "STORE_UNAVAILABLE", ex.Message);
        }

        return answer.Succeeded
            ? new InProcessAppendResult(answer.Status, answer.Result is { } result ? StreamOffset.Format(result.TailPosition) : null, null, null)
            : new InProcessAppendResult(answer.Status, null, answer.Code, answer.Message);
    }

    /// <inheritdoc />
    public ValueTask DisposeAsync() => _scope.DisposeAsync();

    private static bool IsArray(ReadOnlySpan<byte> json)
    {
        var start = json.IndexOfAnyExcept(" \t\r\n"u8);
        return start >= 0 && json[start] == (byte)'[';
    }

    // What an HTTP or WebSocket append is refused for before it reaches the stream: its path, its size, its producer.
    private InProcessAppendResult? Refusal(string path, int length, string producerId, long epoch, long seq)
    {
        if (StreamPaths.Validate(path, _options.MaxPathLength) is { } error)
        {
            return new InProcessAppendResult(400, null, "INVALID_PATH", error);
        }

        if (StreamPaths.IsReserved(path))
        {
            return new InProcessAppendResult(400, null, "INVALID_PATH", "The control APIs are not streams.");
        }

        if (length > _options.MaxAppendBytes)
        {
            return new InProcessAppendResult(413, null, "PAYLOAD_TOO_LARGE", $"The body exceeds the limit of {_options.MaxAppendBytes} bytes.");
        }

        return producerId.Length is 0 or > ProtocolParsing.MaxProducerIdLength || epoch is < 0 or > ProtocolParsing.MaxSafeInteger || seq is < 0 or > ProtocolParsing.MaxSafeInteger
            ? new InProcessAppendResult(400, null, "INVALID_PRODUCER", "The producer id must be 1 to 256 characters, and its epoch and sequence number whole numbers from 0 to 2^53-1.")
            : null;
    }
}

/// <summary>How the server answered an <see cref="InProcessAppender"/> append.</summary>
/// <param name="Status">The HTTP status the same append would get: 200 or 204 when stored, 4xx when refused.</param>
/// <param name="Offset">The stream's offset after the append, when stored.</param>
/// <param name="Code">The refusal's error code (as in a problem response), or null when stored.</param>
/// <param name="Message">The refusal's message, or null when stored.</param>
public readonly record struct InProcessAppendResult(int Status, string? Offset, string? Code, string? Message)
{
    /// <summary>Whether the append was stored (or was already: a retried sequence number).</summary>
    public bool Succeeded => Code is null;
}

/// <summary>A caller's principal and the access it holds.</summary>
internal sealed record ClaimsPrincipalAccess(System.Security.Claims.ClaimsPrincipal Principal, Access Access);
