using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;

namespace DurableSessions.AspNetCore.Connections;

/// <summary>
/// Connection middleware that counts open connections, in total and per client address, and answers a connection past
/// a limit with a plain <c>HTTP/1.1 503</c> (with <c>Retry-After</c> and <c>Connection: close</c>) instead of serving it.
/// </summary>
/// <remarks>
/// It runs before any HTTP parsing, so a refused connection costs one descriptor for the few moments it takes to read
/// its request head and answer. At most <see cref="MaxRefusing"/> refused connections are held like that at once;
/// beyond those, and beyond the server's own connection limit (<see cref="Backstop"/>), connections are closed at once.
/// A refused connection that asks for <c>GET /health</c> gets the health answer, so monitoring keeps working while the
/// server is full. Thread-safe.
/// </remarks>
public sealed partial class ConnectionLimiter
{
    /// <summary>How many refused connections may be held at once while their request head is read and answered.</summary>
    public const int MaxRefusing = 64;

    private const int MaxRequestHead = 8 * 1024;
    private static readonly TimeSpan RequestHeadTimeout = TimeSpan.FromSeconds(3);

    private readonly ConcurrentDictionary<IPAddress, int> _perClient = new();
    private readonly ConnectionLimitOptions _options;
    private readonly Func<bool> _healthy;
    private readonly ILogger _logger;
    private readonly int _remoteLimit;
    private int _open;
    private int _refusing;
    private int _warned;

    /// <summary>Creates a limiter.</summary>
    /// <param name="options">The limits.</param>
    /// <param name="descriptorLimit">The process's open-file limit, or null when unknown.</param>
    /// <param name="healthy">Answers whether <c>/health</c> reports ok, for refused connections that ask for it.</param>
    /// <param name="logger">Where the first refusal is logged.</param>
    public ConnectionLimiter(ConnectionLimitOptions options, long? descriptorLimit, Func<bool> healthy, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Validate().FirstOrDefault() is { } error)
        {
            throw new InvalidOperationException(error);
        }

        _options = options;
        _healthy = healthy;
        _logger = logger;
        MaxConnections = options.EffectiveMaxConnections(descriptorLimit);
        _remoteLimit = Math.Max(1, MaxConnections - options.LoopbackReserve);
    }

    /// <summary>The total connection limit in force.</summary>
    public int MaxConnections { get; }

    /// <summary>
    /// The limit to give the server itself (Kestrel's <c>MaxConcurrentConnections</c>): this limiter's, plus the refused
    /// connections it may be answering. Past it the server closes new connections without a word.
    /// </summary>
    public long Backstop => (long)MaxConnections + MaxRefusing;

    /// <summary>The connections open now (not counting refused ones).</summary>
    public int OpenConnections => Volatile.Read(ref _open);

    /// <summary>Serves <paramref name="connection"/> through <paramref name="next"/> if it is within the limits; refuses it otherwise.</summary>
    public async Task OnConnectionAsync(ConnectionContext connection, ConnectionDelegate next)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(next);
        var address = (connection.RemoteEndPoint as IPEndPoint)?.Address;
        if (address is { IsIPv4MappedToIPv6: true })
        {
            address = address.MapToIPv4();
        }

        var loopback = address is null || IPAddress.IsLoopback(address);
        var perClient = _options.MaxConnectionsPerClient > 0 && address is not null && !(loopback && _options.ExemptLoopback);
        var open = Interlocked.Increment(ref _open);
        var admitted = open <= (loopback ? MaxConnections : _remoteLimit);
        var counted = false;
        if (admitted && perClient)
        {
            counted = true;
            address = ClientKey(address!);
            admitted = _perClient.AddOrUpdate(address, 1, static (_, n) => n + 1) <= _options.MaxConnectionsPerClient;
        }

        try
        {
            if (admitted)
            {
                await next(connection).ConfigureAwait(false);
                return;
            }
        }
        finally
        {
            Interlocked.Decrement(ref _open);
            if (counted)
            {
                Release(address!);
            }
        }

        await RefuseAsync(connection).ConfigureAwait(false);
    }

    /// <summary>
    /// The client an address counts as: itself for IPv4, its /64 network for IPv6, since one subscriber line gets a
    /// whole /64 and could otherwise open the per-client limit once per address in it.
    /// </summary>
    internal static IPAddress ClientKey(IPAddress address)
    {
        if (address.AddressFamily != System.Net.Sockets.AddressFamily.InterNetworkV6)
        {
            return address;
        }

        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out _);
        bytes[8..].Clear();
        return new IPAddress(bytes);
    }

    private void Release(IPAddress address)
    {
        while (true)
        {
            var current = _perClient.GetValueOrDefault(address);
            if (current <= 1)
            {
                if (_perClient.TryRemove(new KeyValuePair<IPAddress, int>(address, current)) || current == 0)
                {
                    return;
                }
            }
            else if (_perClient.TryUpdate(address, current - 1, current))
            {
                return;
            }
        }
    }

    private async Task RefuseAsync(ConnectionContext connection)
    {
        if (Interlocked.Exchange(ref _warned, 1) == 0)
        {
            Log.LimitReached(_logger, MaxConnections, _options.MaxConnectionsPerClient);
        }

        if (Interlocked.Increment(ref _refusing) > MaxRefusing)
        {
            Interlocked.Decrement(ref _refusing);
            connection.Abort();
            return;
        }

        try
        {
            using var timeout = new CancellationTokenSource(RequestHeadTimeout);
            var head = await ReadRequestHeadAsync(connection, timeout.Token).ConfigureAwait(false);
            if (head is null)
            {
                // Not HTTP/1.x in clear text (TLS, HTTP/2 prior knowledge) or nothing sent in time: nothing useful to say.
                connection.Abort();
                return;
            }

            var response = IsHealthRequest(head)
                ? _healthy()
                    ? Response("200 OK", "text/plain; charset=utf-8", "ok", retryAfter: false)
                    : Response("503 Service Unavailable", "text/plain; charset=utf-8", "storage unavailable", retryAfter: true)
                : Response(
                    "503 Service Unavailable",
                    "application/json",
                    """{"error":{"code":"TOO_MANY_CONNECTIONS","message":"The server has too many open connections; retry later."}}""",
                    retryAfter: true);
            await connection.Transport.Output.WriteAsync(response, timeout.Token).ConfigureAwait(false);
            await connection.Transport.Output.CompleteAsync().ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            connection.Abort();
        }
        catch (IOException)
        {
            // Includes a reset by the client: nothing left to answer.
        }
        finally
        {
            Interlocked.Decrement(ref _refusing);
        }
    }

    /// <summary>Reads up to the end of the request head, so the answer is not lost to a reset for unread data.</summary>
    private static async Task<string?> ReadRequestHeadAsync(ConnectionContext connection, CancellationToken cancellationToken)
    {
        var input = connection.Transport.Input;
        while (true)
        {
            var read = await input.ReadAsync(cancellationToken).ConfigureAwait(false);
            var buffer = read.Buffer;
            if (!buffer.IsEmpty && buffer.FirstSpan[0] is not ((byte)'G' or (byte)'H' or (byte)'P' or (byte)'D' or (byte)'O'))
            {
                input.AdvanceTo(buffer.End);
                return null;
            }

            var end = new SequenceReader<byte>(buffer).TryReadTo(out ReadOnlySequence<byte> head, "\r\n\r\n"u8)
                ? head
                : (ReadOnlySequence<byte>?)null;
            if (end is { } complete || buffer.Length >= MaxRequestHead || read.IsCompleted)
            {
                var text = Encoding.ASCII.GetString((end ?? buffer).Slice(0, Math.Min((end ?? buffer).Length, MaxRequestHead)));
                input.AdvanceTo(buffer.End);
                return text;
            }

            input.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    private static bool IsHealthRequest(string head)
        => head.StartsWith("GET /health ", StringComparison.Ordinal) || head.StartsWith("HEAD /health ", StringComparison.Ordinal);

    private byte[] Response(string status, string contentType, string body, bool retryAfter)
    {
        var bytes = Encoding.UTF8.GetBytes(body);
        var text = new StringBuilder()
            .Append("HTTP/1.1 ").Append(status).Append("\r\n")
            .Append("Content-Type: ").Append(contentType).Append("\r\n")
            .Append("Content-Length: ").Append(bytes.Length).Append("\r\n")
            .Append("Cache-Control: no-store\r\n")
            .Append(retryAfter ? $"Retry-After: {_options.RetryAfterSeconds}\r\n" : string.Empty)
            .Append("Connection: close\r\n\r\n")
            .ToString();
        return [.. Encoding.ASCII.GetBytes(text), .. bytes];
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Connection limit reached ({MaxConnections} in total, {MaxPerClient} per client): new connections are answered 503 until some close")]
        public static partial void LimitReached(ILogger logger, int maxConnections, int maxPerClient);
    }
}
