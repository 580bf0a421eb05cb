using System.IO.Pipelines;
using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Primitives;

namespace DurableSessions.AspNetCore.InProcess;

/// <summary>
/// Lets clients in the server's own process (the hosted agent) call it without a socket: an <see cref="IServer"/>
/// around the real one that keeps the application it starts, and an <see cref="HttpMessageHandler"/> that hands each
/// request straight to that application. Requests go through the same pipeline (routing, access control, endpoints)
/// as over the network; only the socket, the TCP stack and HTTP parsing are skipped. A WebSocket handshake is upgraded
/// too: the client and the application each get one end of an in-memory duplex pipe, so a <c>ClientWebSocket</c>
/// connected through this handler pipelines its messages exactly as over a socket.
/// </summary>
public sealed class InProcessTransport
{
    private Func<IFeatureCollection, CancellationToken, Task>? _process;
    private IServiceProvider? _services;

    /// <summary>Whether the server has started, so requests can be handed to it.</summary>
    public bool IsReady => _process is not null;

    /// <summary>Replaces the registered <see cref="IServer"/> with one that also serves <see cref="CreateHandler"/>.</summary>
    public static void AddTo(IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        var transport = new InProcessTransport();
        services.AddSingleton(transport);
        for (var i = services.Count - 1; i >= 0; i--)
        {
            if (services[i].ServiceType == typeof(IServer))
            {
                var inner = services[i];
                services[i] = ServiceDescriptor.Singleton<IServer>(sp =>
                {
                    transport._services = sp;
                    return new Server((IServer)Create(sp, inner), transport);
                });
                return;
            }
        }

        throw new InvalidOperationException("No IServer is registered to carry the in-process transport.");
    }

    /// <summary>A handler for an <see cref="HttpClient"/> whose requests go to this server in process.</summary>
    public HttpMessageHandler CreateHandler() => new Handler(this);

    /// <summary>
    /// An appender that hands a producer's appends straight to this server's append path, with no request, as the
    /// holder of <paramref name="accessToken"/> (none needed when access control is off).
    /// </summary>
    /// <exception cref="UnauthorizedAccessException">Access control is on and the token is missing or not valid.</exception>
    /// <exception cref="InvalidOperationException">The server has not started.</exception>
    public async Task<InProcessAppender> CreateAppenderAsync(string? accessToken, CancellationToken cancellationToken = default)
    {
        var services = _process is not null ? _services! : throw new InvalidOperationException("The server is not accepting requests.");
        var control = services.GetRequiredService<Auth.AccessControl>();
        if (!control.Enabled)
        {
            return new InProcessAppender(services, new ClaimsPrincipalAccess(new System.Security.Claims.ClaimsPrincipal(), Auth.Access.Everything));
        }

        if (string.IsNullOrEmpty(accessToken))
        {
            throw new UnauthorizedAccessException("An access token is required.");
        }

        cancellationToken.ThrowIfCancellationRequested();
        var (principal, error) = await control.ValidateAsync(services, accessToken).ConfigureAwait(false);
        if (principal is null || control.AccessOf(principal) is not { } access)
        {
            throw new UnauthorizedAccessException(error);
        }

        return new InProcessAppender(services, new ClaimsPrincipalAccess(principal, access));
    }

    private static object Create(IServiceProvider services, ServiceDescriptor descriptor)
        => descriptor.ImplementationInstance
           ?? descriptor.ImplementationFactory?.Invoke(services)
           ?? ActivatorUtilities.CreateInstance(services, descriptor.ImplementationType!);

    private sealed class Server(IServer inner, InProcessTransport transport) : IServer
    {
        public IFeatureCollection Features => inner.Features;

        public Task StartAsync<TContext>(IHttpApplication<TContext> application, CancellationToken cancellationToken)
            where TContext : notnull
        {
            transport._process = async (features, aborted) =>
            {
                var context = application.CreateContext(features);
                Exception? failure = null;
                try
                {
                    await application.ProcessRequestAsync(context).ConfigureAwait(false);
                }
                catch (Exception ex)
                {
                    failure = ex;
                    throw;
                }
                finally
                {
                    application.DisposeContext(context, failure);
                }
            };
            return inner.StartAsync(application, cancellationToken);
        }

        // In-process requests keep being served while the host stops, until the application is disposed: the hosted
        // agent stops after the network listener, and its last writes (a reply cut by the stop) must still land.
        public Task StopAsync(CancellationToken cancellationToken) => inner.StopAsync(cancellationToken);

        public void Dispose() => inner.Dispose();
    }

    private sealed class Handler(InProcessTransport transport) : HttpMessageHandler
    {
        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var process = transport._process ?? throw new HttpRequestException("The server is not accepting requests.", null, HttpStatusCode.ServiceUnavailable);
            var uri = request.RequestUri ?? throw new InvalidOperationException("The request has no URI.");
            var exchange = new Exchange();
            var requestFeature = new HttpRequestFeature
            {
                Protocol = "HTTP/1.1",
                Scheme = uri.Scheme,
                Method = request.Method.Method,
                PathBase = string.Empty,
                Path = PathString.FromUriComponent(uri),
                QueryString = QueryString.FromUriComponent(uri).Value ?? string.Empty,
                RawTarget = uri.PathAndQuery,
            };
            requestFeature.Headers.Host = uri.Authority;
            foreach (var (name, values) in request.Headers)
            {
                requestFeature.Headers.Append(name, new StringValues([.. values]));
            }

            if (request.Content is { } content)
            {
                foreach (var (name, values) in content.Headers)
                {
                    requestFeature.Headers.Append(name, new StringValues([.. values]));
                }

                var body = await content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
                requestFeature.Headers.ContentLength = body.Length;
                requestFeature.Body = new MemoryStream(body, writable: false);
            }

            var features = new FeatureCollection();
            features.Set<IHttpRequestFeature>(requestFeature);
            if (IsUpgrade(request))
            {
                // A WebSocket handshake: the application's upgrade hands it one end of an in-memory duplex pipe, and the
                // client gets the other end as the 101 response's content, as it would get a socket.
                features.Set<IHttpUpgradeFeature>(exchange);
            }

            features.Set<IHttpResponseFeature>(exchange);
            features.Set<IHttpResponseBodyFeature>(exchange);
            features.Set<IHttpRequestLifetimeFeature>(exchange);
            features.Set<IHttpConnectionFeature>(new HttpConnectionFeature
            {
                ConnectionId = Guid.NewGuid().ToString("N"),
                LocalIpAddress = IPAddress.Loopback,
                RemoteIpAddress = IPAddress.Loopback,
            });

            using var registration = cancellationToken.Register(() => exchange.Abort());
            _ = Task.Run(async () =>
            {
                try
                {
                    await process(features, exchange.RequestAborted).ConfigureAwait(false);
                    await exchange.CompleteAsync().ConfigureAwait(false);
                }
                catch (Exception ex)
                {
                    exchange.Fail(ex);
                }
                finally
                {
                    exchange.Dispose();
                }
            }, CancellationToken.None);

            await exchange.Started.WaitAsync(cancellationToken).ConfigureAwait(false);
            var response = new HttpResponseMessage((HttpStatusCode)exchange.StatusCode)
            {
                RequestMessage = request,
                Content = exchange.Upgraded is { } upgraded ? new UpgradedContent(upgraded) : new StreamContent(new ResponseStream(exchange)),
            };
            foreach (var (name, values) in exchange.Headers)
            {
                var texts = values.Select(v => v ?? string.Empty).ToArray();
                if (!response.Headers.TryAddWithoutValidation(name, texts))
                {
                    response.Content.Headers.TryAddWithoutValidation(name, texts);
                }
            }

            return response;
        }

        private static bool IsUpgrade(HttpRequestMessage request)
            => request.Method == HttpMethod.Get && request.Headers.Upgrade.Any(u => string.Equals(u.Name, "websocket", StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>The client's end of an upgraded request: the duplex stream itself, readable and writable.</summary>
    private sealed class UpgradedContent(Stream stream) : HttpContent
    {
        protected override Stream CreateContentReadStream(CancellationToken cancellationToken) => stream;

        protected override Task<Stream> CreateContentReadStreamAsync() => Task.FromResult(stream);

        protected override Task SerializeToStreamAsync(Stream target, System.Net.TransportContext? context) => stream.CopyToAsync(target);

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }

        // A client that refuses the handshake disposes the response: the connection ends, as its socket would close.
        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                stream.Dispose();
            }

            base.Dispose(disposing);
        }
    }

    /// <summary>
    /// One end of an in-memory connection: reads what the other end writes and writes what it reads. Disposing it ends
    /// both directions, as closing a socket does.
    /// </summary>
    private sealed class DuplexPipeStream(PipeReader input, PipeWriter output, Action? onDispose = null) : Stream
    {
        private readonly Stream _input = input.AsStream();
        private readonly Stream _output = output.AsStream();
        private int _disposed;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush()
        {
        }

        public override Task FlushAsync(CancellationToken cancellationToken) => _output.FlushAsync(cancellationToken);

        public override int Read(byte[] buffer, int offset, int count) => _input.Read(buffer, offset, count);

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => _input.ReadAsync(buffer, cancellationToken);

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => _input.ReadAsync(buffer, offset, count, cancellationToken);

        public override void Write(byte[] buffer, int offset, int count) => _output.Write(buffer, offset, count);

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => _output.WriteAsync(buffer, cancellationToken);

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => _output.WriteAsync(buffer, offset, count, cancellationToken);

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing && Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                input.Complete();
                output.Complete();
                onDispose?.Invoke();
            }

            base.Dispose(disposing);
        }
    }

    /// <summary>One request in flight: the response's status, headers and body pipe, and its cancellation.</summary>
    private sealed class Exchange : IHttpResponseFeature, IHttpResponseBodyFeature, IHttpRequestLifetimeFeature, IHttpUpgradeFeature, IDisposable
    {
        private volatile bool _readerGone;
        private readonly Pipe _pipe = new(new PipeOptions(pauseWriterThreshold: 1 << 20, resumeWriterThreshold: 1 << 19, useSynchronizationContext: false));
        private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly CancellationTokenSource _aborted = new();
        private readonly List<(Func<object, Task> Callback, object State)> _onStarting = [];
        private readonly List<(Func<object, Task> Callback, object State)> _onCompleted = [];
        private readonly Lock _gate = new();
        private Stream? _stream;
        private int _done;

        public int StatusCode { get; set; } = 200;

        public string? ReasonPhrase { get; set; }

        public IHeaderDictionary Headers { get; set; } = new HeaderDictionary();

        public Stream Body
        {
            get => Stream;
            set => throw new NotSupportedException("The in-process response body cannot be replaced.");
        }

        public bool HasStarted { get; private set; }

        public Task Started => _started.Task;

        public Stream Stream => _stream ??= new BodyStream(this);

        public PipeWriter Writer => _pipe.Writer;

        /// <summary>The client's end of the connection, once the application has upgraded the request.</summary>
        public Stream? Upgraded { get; private set; }

        public bool IsUpgradableRequest => true;

        public async Task<Stream> UpgradeAsync()
        {
            if (Upgraded is not null)
            {
                throw new InvalidOperationException("The request has already been upgraded.");
            }

            var toServer = new Pipe(new PipeOptions(useSynchronizationContext: false));
            var toClient = new Pipe(new PipeOptions(useSynchronizationContext: false));

            // Either end going away ends the connection for the other, and the application's RequestAborted fires.
            Upgraded = new DuplexPipeStream(toClient.Reader, toServer.Writer, CancelRequest);
            var server = new DuplexPipeStream(toServer.Reader, toClient.Writer);

            // The 101 and its headers go to the client now; the body pipe is not used.
            StatusCode = StatusCodes.Status101SwitchingProtocols;
            await StartAsync().ConfigureAwait(false);
            return server;
        }

        private void CancelRequest()
        {
            lock (_gate)
            {
                if (_done == 0)
                {
                    _aborted.Cancel();
                }
            }
        }

        public PipeReader Reader => _pipe.Reader;

        /// <summary>Whether the response's reading side was completed by an abort (a cancelled request, a disposed response).</summary>
        public bool ReaderGone => _readerGone;

        public CancellationToken RequestAborted
        {
            get => _aborted.Token;
            set => throw new NotSupportedException();
        }

        public void Abort()
        {
            // A response read to its end (the common case: every append's answer) has nothing left to abort; cancelling
            // a finished request would only cost an exception per request.
            if (Volatile.Read(ref _done) == 0)
            {
                lock (_gate)
                {
                    if (_done == 0)
                    {
                        _aborted.Cancel();
                    }
                }
            }

            // The reading side goes away, as a closed socket would: the application's next write or flush sees the
            // response completed rather than failing.
            _readerGone = true;
            _pipe.Reader.Complete();
            if (!_started.Task.IsCompleted)
            {
                _started.TrySetException(new OperationCanceledException("The request was aborted."));
            }
        }

        /// <summary>Called once the application is done with the request.</summary>
        public void Dispose()
        {
            lock (_gate)
            {
                _done = 1;
                _aborted.Dispose();
            }
        }

        public void OnStarting(Func<object, Task> callback, object state)
        {
            lock (_gate)
            {
                _onStarting.Add((callback, state));
            }
        }

        public void OnCompleted(Func<object, Task> callback, object state)
        {
            lock (_gate)
            {
                _onCompleted.Add((callback, state));
            }
        }

        public void DisableBuffering()
        {
        }

        public async Task StartAsync(CancellationToken cancellationToken = default)
        {
            if (HasStarted)
            {
                return;
            }

            (Func<object, Task> Callback, object State)[] callbacks;
            lock (_gate)
            {
                callbacks = [.. _onStarting];
            }

            // Registered last, run first, as servers do.
            for (var i = callbacks.Length - 1; i >= 0; i--)
            {
                await callbacks[i].Callback(callbacks[i].State).ConfigureAwait(false);
            }

            HasStarted = true;
            _started.TrySetResult();
        }

        public async Task SendFileAsync(string path, long offset, long? count, CancellationToken cancellationToken = default)
        {
            await StartAsync(cancellationToken).ConfigureAwait(false);
            using var file = File.OpenRead(path);
            file.Seek(offset, SeekOrigin.Begin);
            await file.CopyToAsync(Stream, cancellationToken).ConfigureAwait(false);
        }

        public async Task CompleteAsync()
        {
            await StartAsync().ConfigureAwait(false);
            await _pipe.Writer.CompleteAsync().ConfigureAwait(false);
            (Func<object, Task> Callback, object State)[] callbacks;
            lock (_gate)
            {
                callbacks = [.. _onCompleted];
            }

            foreach (var (callback, state) in callbacks)
            {
                await callback(state).ConfigureAwait(false);
            }
        }

        public void Fail(Exception exception)
        {
            if (!HasStarted)
            {
                StatusCode = 500;
                HasStarted = true;
                _started.TrySetResult();
            }

            _pipe.Writer.Complete(exception is OperationCanceledException ? null : exception);
        }
    }

    /// <summary>The application's view of the response body: writes start the response and go into the pipe.</summary>
    private sealed class BodyStream(Exchange exchange) : Stream
    {
        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush() => FlushAsync(CancellationToken.None).GetAwaiter().GetResult();

        public override async Task FlushAsync(CancellationToken cancellationToken)
        {
            await exchange.StartAsync(cancellationToken).ConfigureAwait(false);
            await exchange.Writer.FlushAsync(cancellationToken).ConfigureAwait(false);
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await exchange.StartAsync(cancellationToken).ConfigureAwait(false);
            await exchange.Writer.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
    }

    /// <summary>The client's view of the response body; disposing it before the end aborts the request, as closing a socket does.</summary>
    private sealed class ResponseStream(Exchange exchange) : Stream
    {
        private readonly Stream _inner = exchange.Reader.AsStream();

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count)
        {
            try
            {
                return _inner.Read(buffer, offset, count);
            }
            catch (InvalidOperationException ex) when (exchange.ReaderGone)
            {
                throw Aborted(ex);
            }
        }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            try
            {
                return await _inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
            }
            catch (InvalidOperationException ex) when (exchange.ReaderGone)
            {
                throw Aborted(ex);
            }
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
            => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        // An aborted request (its caller cancelled it, or the server is stopping) completes the pipe's reader; a read
        // after that fails as a read from a closed connection does, which clients treat as a dropped connection.
        private static IOException Aborted(InvalidOperationException inner) => new("The request was aborted.", inner);

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                exchange.Abort();
                _inner.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
