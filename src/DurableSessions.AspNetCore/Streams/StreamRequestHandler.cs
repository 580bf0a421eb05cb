using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using DurableSessions.Live;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Primitives;

namespace DurableSessions.AspNetCore.Streams;

/// <summary>
/// Serves the Durable Streams protocol for one stream URL: PUT (create/fork), POST (append/close), GET (catch-up,
/// long-poll, SSE), HEAD and DELETE.
/// </summary>
internal sealed partial class StreamRequestHandler
{
    /// <summary>
    /// The SSE read parameter naming a producer id prefix whose progress (<see cref="AppendRequest.Progress"/>) the reader
    /// is not sent live: a writer following its own session does not read its own deltas back (docs/sessions.md).
    /// </summary>
    public const string SkipProgressOfParameter = "skip-progress-of";

    private readonly StreamStore _store;
    private readonly IStreamAppendPolicy[] _policies;
    private readonly DurableStreamsOptions _options;

    // How the live reads follow a stream: SSE hands on live changes and ends when the reader falls behind (it resumes
    // with a new request); long-poll is only woken by a change and answers from the store.
    private readonly StreamFollowOptions _sseFollow;
    private readonly StreamFollowOptions _longPollFollow;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly AppendBudget _appendBudget;

    /// <summary>The bytes of large appends held at once, over HTTP and WebSockets alike.</summary>
    internal AppendBudget AppendBudget => _appendBudget;

    /// <summary>The largest append taken, on every transport (<see cref="DurableStreamsOptions.MaxAppendBytes"/>).</summary>
    internal long MaxAppendBytes => _options.MaxAppendBytes;

    // Live responses (SSE, long-poll) end when the server begins to stop, so shutdown is not held up for the host's
    // whole shutdown timeout; their clients resume from their last offset, here after a restart or on another node.
    private readonly CancellationToken _stopping;

    public StreamRequestHandler(StreamStore store, IEnumerable<IStreamAppendPolicy> policies, IOptions<DurableStreamsOptions> options, IHostApplicationLifetime lifetime, ILogger<StreamRequestHandler> logger)
    {
        _stopping = lifetime.ApplicationStopping;
        _store = store;
        _policies = [.. policies];
        _options = options.Value;
        _sseFollow = new StreamFollowOptions { MaxReadBytes = _options.MaxReadBytes, IdleTimeout = _options.SseKeepAliveInterval, EndOnFallBehind = true };
        _longPollFollow = new StreamFollowOptions { MaxReadBytes = _options.MaxReadBytes, LiveData = false, EndOnFallBehind = true };
        _appendBudget = new AppendBudget(Math.Max(_options.MaxAppendBytesInFlight, _options.MaxAppendBytes));
        _time = store.TimeProvider;
        _logger = logger;
    }

    public Task HandleAsync(HttpContext context, string path)
    {
        var method = context.Request.Method;
        if (HttpMethods.IsGet(method))
        {
            return ReadAsync(context, path);
        }

        if (HttpMethods.IsPost(method))
        {
            return AppendAsync(context, path);
        }

        if (HttpMethods.IsPut(method))
        {
            return CreateAsync(context, path);
        }

        if (HttpMethods.IsHead(method))
        {
            return HeadAsync(context, path);
        }

        if (HttpMethods.IsDelete(method))
        {
            return DeleteAsync(context, path);
        }

        context.Response.Headers.Allow = "GET, HEAD, POST, PUT, DELETE, OPTIONS";
        return Problem.Write(context, StatusCodes.Status405MethodNotAllowed, "METHOD_NOT_ALLOWED", $"{method} is not supported on streams.");
    }

    private async Task CreateAsync(HttpContext context, string path)
    {
        var request = context.Request;
        var headers = request.Headers;
        string? contentType = null;
        if (!StringValues.IsNullOrEmpty(headers.ContentType))
        {
            contentType = headers.ContentType.ToString();
            if (!StreamContentType.IsValid(contentType))
            {
                await Problem.Write(context, 400, "INVALID_CONTENT_TYPE", "Content-Type is not a valid media type.").ConfigureAwait(false);
                return;
            }
        }

        long? ttl = null;
        DateTimeOffset? expiresAt = null;
        var ttlHeader = headers[ProtocolHeaders.Ttl];
        var expiresHeader = headers[ProtocolHeaders.ExpiresAt];
        if (ttlHeader.Count > 0 && expiresHeader.Count > 0)
        {
            await Problem.Write(context, 400, "CONFLICTING_EXPIRY", "Send either Stream-TTL or Stream-Expires-At, not both.").ConfigureAwait(false);
            return;
        }

        if (ttlHeader.Count > 0)
        {
            if (ttlHeader.Count > 1 || !ProtocolParsing.TryParseCanonicalInteger(ttlHeader.ToString(), CreateRules.MaxTtlSeconds, out var seconds))
            {
                await Problem.Write(context, 400, "INVALID_TTL", $"Stream-TTL must be a whole number of seconds from 0 to {CreateRules.MaxTtlSeconds} (100 years), without sign or leading zeros.").ConfigureAwait(false);
                return;
            }

            ttl = seconds;
        }

        if (expiresHeader.Count > 0)
        {
            if (expiresHeader.Count > 1 || !ProtocolParsing.TryParseRfc3339(expiresHeader.ToString(), out var at))
            {
                await Problem.Write(context, 400, "INVALID_EXPIRES_AT", "Stream-Expires-At must be an RFC 3339 timestamp.").ConfigureAwait(false);
                return;
            }

            expiresAt = at;
        }

        var closed = ProtocolParsing.IsTrue(headers[ProtocolHeaders.Closed]);
        string? forkedFrom = null;
        long? forkOffset = null;
        long forkSubOffset = 0;
        var forkedFromHeader = headers[ProtocolHeaders.ForkedFrom];
        var forkOffsetHeader = headers[ProtocolHeaders.ForkOffset];
        var subOffsetHeader = headers[ProtocolHeaders.ForkSubOffset];
        if (forkedFromHeader.Count == 0)
        {
            if (forkOffsetHeader.Count > 0 || subOffsetHeader.Count > 0)
            {
                await Problem.Write(context, 400, "FORK_HEADER_WITHOUT_SOURCE", "Stream-Fork-Offset and Stream-Fork-Sub-Offset require Stream-Forked-From.").ConfigureAwait(false);
                return;
            }
        }
        else
        {
            forkedFrom = StreamPaths.FromForkHeader(forkedFromHeader.ToString(), context.Request.Host.Host);
            if (forkedFrom is null || StreamPaths.Validate(forkedFrom, _options.MaxPathLength) is not null)
            {
                await Problem.Write(context, 400, "INVALID_FORK_SOURCE", "Stream-Forked-From must be the path of a stream on this server (a whole URL must name this server).").ConfigureAwait(false);
                return;
            }

            // A fork serves the source's data under a new path, so it needs read on the source, not just write here.
            if (!await Auth.AccessControl.AllowsAsync(context, new Auth.StreamResource(forkedFrom), Auth.Capability.Read).ConfigureAwait(false))
            {
                await Problem.Write(context, 403, "FORBIDDEN", $"The token does not grant read on the fork source {forkedFrom}.").ConfigureAwait(false);
                return;
            }

            if (forkOffsetHeader.Count > 0)
            {
                var token = forkOffsetHeader.ToString();
                if (token == StreamOffset.Beginning)
                {
                    forkOffset = 0;
                }
                else if (StreamOffset.TryParse(token, out var position))
                {
                    forkOffset = position;
                }
                else
                {
                    await Problem.Write(context, 400, "INVALID_FORK_OFFSET", "Stream-Fork-Offset must be an offset returned by this server.").ConfigureAwait(false);
                    return;
                }
            }

            if (subOffsetHeader.Count > 0 && !ProtocolParsing.TryParseCanonicalInteger(subOffsetHeader.ToString(), long.MaxValue / 2, out forkSubOffset))
            {
                await Problem.Write(context, 400, "INVALID_FORK_SUB_OFFSET", "Stream-Fork-Sub-Offset must be a non-negative whole number without sign or leading zeros.").ConfigureAwait(false);
                return;
            }
        }

        var body = await ReadBodyAsync(context).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        // A fork without a Content-Type takes the source's, which decides how the body is framed and what the stream is.
        var effectiveType = contentType;
        if (effectiveType is null && forkedFrom is not null && (body.Value.Length > 0 || PolicyFor(path) is not null))
        {
            var source = await _store.GetAsync(forkedFrom, context.RequestAborted).ConfigureAwait(false);
            effectiveType = source.Stream?.ContentType;
        }

        var payload = StreamPayload.Empty;
        var jsonBody = false;
        if (body.Value.Length > 0)
        {
            if (!TryFrame(effectiveType ?? StreamContentType.Default, body.Value, allowEmptyArray: true, out payload, out var error))
            {
                await Problem.Write(context, 400, "INVALID_JSON", error!).ConfigureAwait(false);
                return;
            }

            jsonBody = StreamContentType.IsJson(effectiveType ?? StreamContentType.Default);
        }

        // A stream a policy governs (a raw create under sessions/ makes a session) meets its rules from its first events.
        // The type the stream will have: the declared one, else a fork's source's, else the protocol's default (null: a
        // fork of a source that is not there, which the store refuses).
        var createdType = effectiveType ?? (forkedFrom is null ? StreamContentType.Default : null);
        if (PolicyFor(path) is { } createPolicy
            && createPolicy.CheckCreate(path, createdType, forkedFrom, jsonBody ? payload : StreamPayload.Empty, closed,
                await PolicyWriter.ForAsync(context, path, createPolicy, jsonBody ? body.Value : ReadOnlyMemory<byte>.Empty, closing: closed).ConfigureAwait(false)) is { } refused)
        {
            await Problem.Write(context, refused.Status, refused.Code, refused.Message).ConfigureAwait(false);
            return;
        }

        // A governed stream's first events are seen through once handed to the store, as an append's are: what the policy
        // does after them (a session's turn) must not be skipped because the client hung up.
        var governed = forkedFrom is not null || (jsonBody && !payload.IsEmpty) ? PolicyFor(path) : null;
        var limits = Problem.StreamLimits(context, _options);
        var result = await _store.CreateAsync(new CreateStreamRequest
        {
            Path = path,
            ContentType = contentType,
            TtlSeconds = ttl,
            ExpiresAt = expiresAt,
            Closed = closed,
            InitialData = payload,
            ForkedFrom = forkedFrom,
            ForkOffset = forkOffset,
            ForkSubOffset = forkSubOffset,
            MaxStreams = limits.MaxStreams,
            Owner = limits.Owner,
            MaxStreamsPerOwner = limits.MaxStreamsPerOwner,
            MaxForkDepth = _options.MaxForkDepth,
        }, governed is null ? context.RequestAborted : CancellationToken.None).ConfigureAwait(false);

        var response = context.Response;
        switch (result.Status)
        {
            case CreateStreamStatus.Created:
            case CreateStreamStatus.AlreadyExists:
                var stream = result.Stream!;
                response.StatusCode = result.Status == CreateStreamStatus.Created ? 201 : 200;
                if (result.Status == CreateStreamStatus.Created)
                {
                    response.Headers.Location = $"{request.Scheme}://{request.Host}{request.PathBase}{request.Path}";
                    Log.Created(_logger, path, stream.ContentType, forkedFrom);
                }

                // A session created with its first events (a user message among them), or forked from one that was being
                // answered, is answered like one appended to; so is the same create repeated, whose first answer (and
                // what was to follow it) may have been lost.
                if (governed is not null)
                {
                    await governed.CreatedAsync(stream, payload, created: result.Status == CreateStreamStatus.Created, forked: forkedFrom is not null).ConfigureAwait(false);
                }

                response.ContentType = stream.ContentType;
                response.Headers[ProtocolHeaders.NextOffset] = StreamOffset.Format(stream.TailPosition);
                if (stream.Closed)
                {
                    response.Headers[ProtocolHeaders.Closed] = "true";
                }

                response.Headers.CacheControl = "no-store";
                return;
            case CreateStreamStatus.Conflict:
                await Problem.Write(context, 409, "STREAM_EXISTS", "A stream with a different configuration exists at this path.").ConfigureAwait(false);
                return;
            case CreateStreamStatus.SourceNotFound:
                await Problem.Write(context, 404, "FORK_SOURCE_NOT_FOUND", "The stream named by Stream-Forked-From does not exist.").ConfigureAwait(false);
                return;
            case CreateStreamStatus.SourceGone:
                await Problem.Write(context, 409, "FORK_SOURCE_DELETED", "The stream named by Stream-Forked-From has been deleted.").ConfigureAwait(false);
                return;
            case CreateStreamStatus.LimitReached or CreateStreamStatus.OwnerLimitReached:
                await Problem.StreamLimitReached(context, result.Status, _options)!.ConfigureAwait(false);
                return;
            case CreateStreamStatus.ContentTypeMismatch:
                await Problem.Write(context, 409, "CONTENT_TYPE_MISMATCH", "A fork must have its source's content type.").ConfigureAwait(false);
                return;
            case CreateStreamStatus.ForkOffsetGone:
                await Problem.Write(context, 410, "OFFSET_GONE", "The fork point lies before the source's retained data: that part of the source was removed by retention.").ConfigureAwait(false);
                return;
            case CreateStreamStatus.ForkTooDeep:
                await Problem.Write(context, 403, "FORK_TOO_DEEP", $"The fork source is already {_options.MaxForkDepth} forks deep: a chain of forks holds at most {_options.MaxForkDepth} (DurableStreams:MaxForkDepth). Fork a stream higher up the chain.").ConfigureAwait(false);
                return;
            default:
                await Problem.Write(context, 400, "INVALID_FORK_OFFSET", "The fork point is beyond the source stream's tail.").ConfigureAwait(false);
                return;
        }
    }

    private async Task AppendAsync(HttpContext context, string path)
    {
        // The append's span; the store's commit and the fan-out to live readers are its children.
        using var activity = Telemetry.Source.StartActivity("durable_sessions.append");
        activity?.SetTag("durable_sessions.stream", path);
        await AppendCoreAsync(context, path).ConfigureAwait(false);
        activity?.SetTag("http.response.status_code", context.Response.StatusCode);
    }

    private async Task AppendCoreAsync(HttpContext context, string path)
    {
        var headers = context.Request.Headers;
        var producerIdHeader = headers[ProtocolHeaders.ProducerId];
        var producerEpochHeader = headers[ProtocolHeaders.ProducerEpoch];
        var producerSeqHeader = headers[ProtocolHeaders.ProducerSeq];
        ProducerStamp? producer = null;
        var producerHeaders = (producerIdHeader.Count > 0 ? 1 : 0) + (producerEpochHeader.Count > 0 ? 1 : 0) + (producerSeqHeader.Count > 0 ? 1 : 0);
        if (producerHeaders is 1 or 2)
        {
            await Problem.Write(context, 400, "INCOMPLETE_PRODUCER_HEADERS", "Producer-Id, Producer-Epoch and Producer-Seq must be sent together.").ConfigureAwait(false);
            return;
        }

        if (producerHeaders == 3)
        {
            var id = producerIdHeader.ToString();
            if (producerIdHeader.Count > 1 || string.IsNullOrEmpty(id) || id.Length > ProtocolParsing.MaxProducerIdLength)
            {
                await Problem.Write(context, 400, "INVALID_PRODUCER_ID", "Producer-Id must be a non-empty string of at most 256 characters.").ConfigureAwait(false);
                return;
            }

            if (!ProtocolParsing.TryParseProducerInteger(producerEpochHeader.ToString(), out var epoch)
                || !ProtocolParsing.TryParseProducerInteger(producerSeqHeader.ToString(), out var seq))
            {
                await Problem.Write(context, 400, "INVALID_PRODUCER_HEADERS", "Producer-Epoch and Producer-Seq must be whole numbers from 0 to 2^53-1.").ConfigureAwait(false);
                return;
            }

            producer = new ProducerStamp(id, epoch, seq);
        }

        string? streamSeq = null;
        var seqHeader = headers[ProtocolHeaders.Seq];
        if (seqHeader.Count > 0)
        {
            streamSeq = seqHeader.ToString();
            if (seqHeader.Count > 1 || streamSeq.Length is 0 or > 256)
            {
                await Problem.Write(context, 400, "INVALID_STREAM_SEQ", "Stream-Seq must be a single non-empty value of at most 256 characters.").ConfigureAwait(false);
                return;
            }
        }

        var close = ProtocolParsing.IsTrue(headers[ProtocolHeaders.Closed]);
        var body = await ReadBodyAsync(context).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        var contentType = body.Value.Length > 0 ? headers.ContentType.ToString() : null;
        var command = new AppendCommand(path, contentType, body.Value, close, streamSeq, producer);
        var answer = await AppendAsync(command, context, context.RequestAborted).ConfigureAwait(false);
        var response = context.Response;
        response.Headers.CacheControl = "no-store";
        if (answer.Result is { } result)
        {
            // Headers that go with the answer, refusals included: where the tail is, the producer's state.
            if (answer.Succeeded || result.Status == AppendStatus.StreamClosed)
            {
                response.Headers[ProtocolHeaders.NextOffset] = StreamOffset.Format(result.TailPosition);
            }

            if ((answer.Succeeded && result.Closed) || result.Status == AppendStatus.StreamClosed)
            {
                response.Headers[ProtocolHeaders.Closed] = "true";
            }

            if (producer is not null && (answer.Succeeded ? result.Status != AppendStatus.AlreadyClosed : result.Status == AppendStatus.StaleEpoch))
            {
                response.Headers[ProtocolHeaders.ProducerEpoch] = result.ProducerEpoch.ToString(CultureInfo.InvariantCulture);
                if (answer.Succeeded)
                {
                    response.Headers[ProtocolHeaders.ProducerSeq] = result.ProducerSeq.ToString(CultureInfo.InvariantCulture);
                }
            }

            if (answer.Code == "PRODUCER_SEQ_GAP")
            {
                response.Headers[ProtocolHeaders.ProducerExpectedSeq] = result.ProducerSeq.ToString(CultureInfo.InvariantCulture);
                response.Headers[ProtocolHeaders.ProducerReceivedSeq] = producer!.Value.Seq.ToString(CultureInfo.InvariantCulture);
            }
        }

        if (answer.Succeeded)
        {
            response.StatusCode = answer.Status;
            return;
        }

        await Problem.Write(context, answer.Status, answer.Code!, answer.Message!).ConfigureAwait(false);
    }

    /// <summary>
    /// Appends to a stream for any transport (an HTTP request, a WebSocket message): the same checks, the stream's
    /// append policy (a session's rules) and the store, answered as the protocol's status, code and message.
    /// </summary>
    /// <param name="command">The append.</param>
    /// <param name="caller">The caller as the authorization handlers see it: its principal, and its access in its items.</param>
    /// <param name="cancellationToken">Cancels the append.</param>
    internal async Task<AppendAnswer> AppendAsync(AppendCommand command, HttpContext caller, CancellationToken cancellationToken)
    {
        var (path, contentType, data, close, streamSeq, producer) = command;
        if (BodyRefusal(command) is { } refused)
        {
            return refused;
        }

        // An append to an ungoverned stream goes straight to the store, which answers a missing, deleted or closed stream
        // and a content-type mismatch itself, atomically with the write: no lookup first (for Redis, one round trip less).
        // The body is framed by the request's own content type; when that does not match the stream's, the store refuses it.
        // A governed stream (a session: closing one ends it for everyone, an administrator's act) is held to its policy,
        // which needs the stream and appends atomically with its checks.
        var policy = PolicyFor(path);

        // Decided only for a governed stream, whose rules judge more than write (a session's control events, its close).
        var writer = policy is null ? null : await PolicyWriter.ForAsync(caller, path, policy, data, closing: close).ConfigureAwait(false);
        var payload = StreamPayload.Empty;
        string? framingError = null;
        var framed = data.Length == 0 || TryFrame(contentType!, data, allowEmptyArray: false, out payload, out framingError);
        var appendRequest = new AppendRequest
        {
            Path = path,
            ContentType = data.Length > 0 ? contentType : null,
            Data = payload,
            Close = close,
            StreamSeq = streamSeq,
            Producer = producer,
        };

        // A governed stream's policy may take the append with no lookup (a session held in memory, its stream known, takes it so).
        if (policy is not null && framed && !close && data.Length > 0 && StreamContentType.IsJson(contentType!)
            && await policy.TryAppendWithoutLookupAsync(appendRequest, writer!, cancellationToken).ConfigureAwait(false) is { } taken)
        {
            return taken.Refusal is { } refusal ? AppendAnswer.Refused(refusal.Status, refusal.Code, refusal.Message) : Answer(taken.Result, producer, payload);
        }

        StreamInfo? stream = null;
        if (policy is not null || !framed)
        {
            var lookup = await _store.GetAsync(path, cancellationToken).ConfigureAwait(false);
            if (LookupFailure(lookup.Status) is { } missing)
            {
                return missing;
            }

            stream = lookup.Stream!;
            if (data.Length > 0)
            {
                if (stream.Closed)
                {
                    // The store answers closed-stream requests (409, or 204 for a producer retry of the closing request).
                    // Only for this stream: one deleted and created again since the lookup must not take the body as
                    // it came, unframed.
                    payload = new StreamPayload(data, 1);
                    appendRequest = appendRequest with { Data = payload, ExpectedStreamId = stream.Id };
                }
                else if (!StreamContentType.Matches(contentType!, stream.ContentType))
                {
                    return AppendAnswer.Refused(409, "CONTENT_TYPE_MISMATCH", $"This stream's content type is {stream.ContentType}.");
                }
                else if (!framed)
                {
                    return AppendAnswer.Refused(400, "INVALID_JSON", framingError!);
                }
            }
        }

        if (close && stream is not null && policy?.CheckClose(stream, writer!) is { } closeRefused)
        {
            return AppendAnswer.Refused(closeRefused.Status, closeRefused.Code, closeRefused.Message);
        }

        AppendResult result;
        if (stream is not null && policy?.AppendAsync(stream, appendRequest, writer!, cancellationToken) is { } governed)
        {
            var (governedResult, refusal) = await governed.ConfigureAwait(false);
            if (refusal is not null)
            {
                return AppendAnswer.Refused(refusal.Status, refusal.Code, refusal.Message);
            }

            result = governedResult;
        }
        else
        {
            // Seen through once handed to the store, whoever stops waiting: the store commits a queued append anyway, and
            // until it does the request keeps its body's share of the append budget.
            result = await _store.AppendAsync(appendRequest, CancellationToken.None).ConfigureAwait(false);
        }

        return Answer(result, producer, payload);
    }

    /// <summary>
    /// The store's request for an append that goes to the store as it is (<see cref="AppendAsync(AppendCommand, HttpContext, CancellationToken)"/> would hand it over with
    /// no lookup and no policy: an ungoverned stream, a body that frames by its own content type), for a transport that
    /// hands many to the store at once; or the append's refusal. Neither when it needs more than that: then it goes
    /// through <see cref="AppendAsync(AppendCommand, HttpContext, CancellationToken)"/>. Access is the caller's to check first, as for <see cref="AppendAsync(AppendCommand, HttpContext, CancellationToken)"/>.
    /// </summary>
    internal AppendAnswer? PrepareDirect(AppendCommand command, out AppendRequest? request)
    {
        request = null;
        if (BodyRefusal(command) is { } refused)
        {
            return refused;
        }

        var payload = StreamPayload.Empty;
        if (PolicyFor(command.Path) is not null
            || (command.Data.Length > 0 && !TryFrame(command.ContentType!, command.Data, allowEmptyArray: false, out payload, out _)))
        {
            return null;
        }

        request = new AppendRequest
        {
            Path = command.Path,
            ContentType = command.Data.Length > 0 ? command.ContentType : null,
            Data = payload,
            Close = command.Close,
            StreamSeq = command.StreamSeq,
            Producer = command.Producer,
        };
        return null;
    }

    /// <summary>
    /// An append to a governed stream that its policy decides at once (<see cref="IStreamAppendPolicy.TryHold"/>), for a
    /// transport that hands many to the store at once, as <see cref="PrepareDirect"/> does for ungoverned ones: the held
    /// append, whose request goes to the store; or null when it needs more than that (it then goes through
    /// <see cref="AppendAsync(AppendCommand, HttpContext, CancellationToken)"/>, refusals included). Only an append
    /// <see cref="AppendAsync(AppendCommand, HttpContext, CancellationToken)"/> would offer the policy with no lookup
    /// qualifies, and only if judging it asks no capability beyond write, which is the caller's to check first.
    /// </summary>
    internal HeldAppend? HoldGoverned(AppendCommand command, HttpContext caller)
    {
        if (command.Close || BodyRefusal(command) is not null || PolicyFor(command.Path) is not { } policy
            || !StreamContentType.IsJson(command.ContentType!) || policy.AsksControl(command.Data.Span)
            || !TryFrame(command.ContentType!, command.Data, allowEmptyArray: false, out var payload, out _))
        {
            return null;
        }

        // Asking neither control nor admin, the writer is decided at once.
        var writer = PolicyWriter.ForAsync(caller, command.Path, policy, command.Data, closing: false);
        if (!writer.IsCompletedSuccessfully)
        {
            return null;
        }

        return policy.TryHold(
            new AppendRequest
            {
                Path = command.Path,
                ContentType = command.ContentType,
                Data = payload,
                StreamSeq = command.StreamSeq,
                Producer = command.Producer,
            },
            writer.Result);
    }

    /// <summary>The answer to a request of <see cref="PrepareDirect"/> that the store took, as <see cref="AppendAsync(AppendCommand, HttpContext, CancellationToken)"/> gives it.</summary>
    internal static AppendAnswer AnswerDirect(AppendRequest request, AppendResult result) => Answer(result, request.Producer, request.Data);

    /// <summary>Whether the store takes requests of <see cref="PrepareDirect"/> several at once, in order (<see cref="StreamStore.TakesAppendsInOrder"/>).</summary>
    internal bool TakesAppendsInOrder => _store.TakesAppendsInOrder;

    /// <inheritdoc cref="StreamStore.TryAppendInOrder"/>
    internal bool TryAppendInOrder(IReadOnlyList<AppendRequest> requests, out Task<AppendResult[]> results) => _store.TryAppendInOrder(requests, out results);

    /// <summary>Hands one request of <see cref="PrepareDirect"/> to the store; the write commits once handed over, whoever stops waiting.</summary>
    internal ValueTask<AppendResult> AppendDirectAsync(AppendRequest request) => _store.AppendAsync(request, CancellationToken.None);

    private static AppendAnswer? BodyRefusal(AppendCommand command)
    {
        if (command.Data.Length == 0)
        {
            return command.Close ? null : AppendAnswer.Refused(400, "EMPTY_BODY", "An append needs a body (or Stream-Closed: true to close the stream).");
        }

        if (string.IsNullOrEmpty(command.ContentType))
        {
            return AppendAnswer.Refused(400, "MISSING_CONTENT_TYPE", "An append with a body needs a Content-Type.");
        }

        return StreamContentType.IsValid(command.ContentType) ? null : AppendAnswer.Refused(400, "INVALID_CONTENT_TYPE", "Content-Type is not a valid media type.");
    }

    /// <summary>An append's outcome as the protocol's status, code and message.</summary>
    private static AppendAnswer Answer(AppendResult result, ProducerStamp? producer, StreamPayload payload)
        => result.Status switch
        {
            AppendStatus.Appended or AppendStatus.Duplicate or AppendStatus.AlreadyClosed
                => new AppendAnswer(result.Status == AppendStatus.Appended && producer is not null && !payload.IsEmpty ? 200 : 204, result),
            AppendStatus.NotFound or AppendStatus.Gone
                => LookupFailure(result.Status == AppendStatus.Gone ? StreamLookupStatus.Gone : StreamLookupStatus.NotFound)!.Value,
            AppendStatus.StreamClosed => AppendAnswer.Refused(409, "STREAM_CLOSED", "The stream is closed; no further appends are accepted.", result),
            AppendStatus.ContentTypeMismatch => AppendAnswer.Refused(409, "CONTENT_TYPE_MISMATCH", "The Content-Type differs from the stream's.", result),
            AppendStatus.SequenceConflict => AppendAnswer.Refused(409, "SEQUENCE_CONFLICT", "Stream-Seq must be greater than the last one accepted.", result),
            AppendStatus.StaleEpoch => AppendAnswer.Refused(403, "STALE_PRODUCER_EPOCH", "A newer epoch of this producer has written to the stream.", result),
            AppendStatus.TailMoved => AppendAnswer.Refused(409, "CONFLICT", "The stream changed while the append was decided; retry.", result),
            AppendStatus.InvalidEpochSeq => AppendAnswer.Refused(400, "INVALID_EPOCH_SEQ", "A new producer epoch must start at Producer-Seq 0.", result),
            _ => AppendAnswer.Refused(409, "PRODUCER_SEQ_GAP", "Producer-Seq skipped ahead; resend the missing sequence numbers first.", result),
        };

    private static AppendAnswer? LookupFailure(StreamLookupStatus status) => status switch
    {
        StreamLookupStatus.Found => null,
        StreamLookupStatus.Gone => AppendAnswer.Refused(410, "STREAM_DELETED", "The stream has been deleted."),
        _ => AppendAnswer.Refused(404, "STREAM_NOT_FOUND", "No stream exists at this path."),
    };

    /// <summary>The first registered policy that governs <paramref name="path"/>, if any.</summary>
    private IStreamAppendPolicy? PolicyFor(string path)
    {
        foreach (var policy in _policies)
        {
            if (policy.Governs(path))
            {
                return policy;
            }
        }

        return null;
    }

    private async Task HeadAsync(HttpContext context, string path)
    {
        var lookup = await _store.GetAsync(path, context.RequestAborted).ConfigureAwait(false);
        var response = context.Response;
        response.Headers.CacheControl = "no-store";
        if (lookup.Status != StreamLookupStatus.Found)
        {
            response.StatusCode = lookup.Status == StreamLookupStatus.Gone ? 410 : 404;
            return;
        }

        var stream = lookup.Stream!;
        response.StatusCode = 200;
        response.ContentType = stream.ContentType;
        response.Headers[ProtocolHeaders.NextOffset] = StreamOffset.Format(stream.TailPosition);
        if (stream.TtlSeconds is { } ttl)
        {
            response.Headers[ProtocolHeaders.Ttl] = ttl.ToString(CultureInfo.InvariantCulture);
        }

        if (stream.ExpiresAt is { } expiresAt)
        {
            response.Headers[ProtocolHeaders.ExpiresAt] = ProtocolParsing.FormatRfc3339(expiresAt);
        }

        if (stream.Closed)
        {
            response.Headers[ProtocolHeaders.Closed] = "true";
        }
    }

    private async Task DeleteAsync(HttpContext context, string path)
    {
        var status = await _store.DeleteAsync(path, context.RequestAborted).ConfigureAwait(false);
        switch (status)
        {
            case DeleteStreamStatus.Deleted:
                Log.Deleted(_logger, path);
                context.Response.StatusCode = 204;
                return;
            case DeleteStreamStatus.Gone:
                await Problem.Write(context, 410, "STREAM_DELETED", "The stream has been deleted.").ConfigureAwait(false);
                return;
            default:
                await Problem.Write(context, 404, "STREAM_NOT_FOUND", "No stream exists at this path.").ConfigureAwait(false);
                return;
        }
    }

    private static bool TryFrame(string contentType, ReadOnlyMemory<byte> body, bool allowEmptyArray, out StreamPayload payload, out string? error)
    {
        if (StreamContentType.IsJson(contentType))
        {
            return JsonFraming.TryFrame(body, allowEmptyArray, out payload, out error);
        }

        payload = new StreamPayload(body, body.Length);
        error = null;
        return true;
    }

    /// <summary>Reads the whole body within <see cref="DurableStreamsOptions.MaxAppendBytes"/>; answers 413 and returns null past it.</summary>
    private Task<ReadOnlyMemory<byte>?> ReadBodyAsync(HttpContext context) => RequestBody.ReadAsync(context, _options.MaxAppendBytes, _appendBudget);

    private static async Task<bool> WriteLookupFailure(HttpContext context, StreamLookup lookup)
    {
        if (LookupFailure(lookup.Status) is not { } failure)
        {
            return false;
        }

        await Problem.Write(context, failure.Status, failure.Code!, failure.Message!).ConfigureAwait(false);
        return true;
    }

    private static partial class Log
    {
        [LoggerMessage(100, LogLevel.Debug, "Created stream {Path} ({ContentType}, forked from {ForkedFrom})")]
        public static partial void Created(ILogger logger, string path, string contentType, string? forkedFrom);

        [LoggerMessage(101, LogLevel.Debug, "Deleted stream {Path}")]
        public static partial void Deleted(ILogger logger, string path);

        [LoggerMessage(102, LogLevel.Debug, "Live reader of {Path} fell behind and was disconnected")]
        public static partial void ReaderFellBehind(ILogger logger, string path);
    }
}
