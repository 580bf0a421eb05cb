using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace DurableSessions.LoadTest;

/// <summary>
/// A minimal HTTP/1.1 keep-alive client connection for the write path: it sends prebuilt requests and reads only the
/// status line and enough of the response to find its end. It costs far less CPU per request than HttpClient, so on a
/// small machine the load generator takes less of the CPU that the server under test needs (the same reason tools such
/// as wrk exist). The latency scenario's SSE readers are <see cref="RawSseReader"/>, for the same reason.
/// </summary>
internal sealed class RawHttpConnection : IDisposable
{
    private static readonly byte[] HeaderEnd = "\r\n\r\n"u8.ToArray();
    private static readonly byte[] LastChunk = "0\r\n\r\n"u8.ToArray();
    private readonly Socket _socket;
    private readonly byte[] _buffer = new byte[16 * 1024];
    private int _start;
    private int _end;

    private RawHttpConnection(Socket socket) => _socket = socket;

    public static async Task<RawHttpConnection> ConnectAsync(Uri baseAddress)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, baseAddress.Port));
        return new RawHttpConnection(socket);
    }

    /// <summary>Builds a POST request with a JSON body.</summary>
    public static byte[] BuildPost(Uri baseAddress, string path, ReadOnlySpan<byte> body)
    {
        var head = Encoding.ASCII.GetBytes(
            $"POST {path} HTTP/1.1\r\nHost: {baseAddress.Authority}\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\n\r\n");
        var request = new byte[head.Length + body.Length];
        head.CopyTo(request, 0);
        body.CopyTo(request.AsSpan(head.Length));
        return request;
    }

    /// <summary>Sends one request and returns the response status code once the whole response has been read.</summary>
    public Task<int> SendAsync(ReadOnlyMemory<byte> request) => SendCoreAsync(request, blocking: false).AsTask();

    /// <summary>
    /// <see cref="SendAsync"/> with blocking socket calls, for a writer on a thread of its own: its acknowledgement is
    /// then timed without waiting behind the load tool's own thread pool queue (thousands of readers in the same process).
    /// </summary>
    public int Send(ReadOnlyMemory<byte> request) => SendCoreAsync(request, blocking: true).GetAwaiter().GetResult();

    private async ValueTask<int> SendCoreAsync(ReadOnlyMemory<byte> request, bool blocking)
    {
        while (!request.IsEmpty)
        {
            var sent = blocking ? _socket.Send(request.Span, SocketFlags.None) : await _socket.SendAsync(request, SocketFlags.None);
            request = request[sent..];
        }

        var headerEnd = await FillUntilAsync(HeaderEnd, blocking);
        var headers = Encoding.ASCII.GetString(_buffer, _start, headerEnd - _start);
        _start = headerEnd + 4;
        var status = int.Parse(headers.AsSpan(9, 3), System.Globalization.CultureInfo.InvariantCulture);
        var length = 0;
        var chunked = false;
        foreach (var line in headers.Split("\r\n"))
        {
            if (line.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase))
            {
                length = int.Parse(line.AsSpan(15).Trim(), System.Globalization.CultureInfo.InvariantCulture);
            }
            else if (line.StartsWith("Transfer-Encoding:", StringComparison.OrdinalIgnoreCase) && line.Contains("chunked", StringComparison.OrdinalIgnoreCase))
            {
                chunked = true;
            }
        }

        if (chunked)
        {
            _start = await FillUntilAsync(LastChunk, blocking) + 5;
        }
        else
        {
            while (_end - _start < length)
            {
                length -= _end - _start;
                _start = _end;
                await ReceiveAsync(blocking);
            }

            _start += length;
        }

        return status;
    }

    private async ValueTask<int> FillUntilAsync(ReadOnlyMemory<byte> marker, bool blocking)
    {
        while (true)
        {
            var index = _buffer.AsSpan(_start, _end - _start).IndexOf(marker.Span);
            if (index >= 0)
            {
                return _start + index;
            }

            await ReceiveAsync(blocking);
        }
    }

    private async ValueTask ReceiveAsync(bool blocking)
    {
        if (_start == _end)
        {
            _start = _end = 0;
        }
        else if (_end == _buffer.Length)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
            if (_end == _buffer.Length)
            {
                throw new InvalidOperationException("Response headers larger than the buffer.");
            }
        }

        var read = blocking ? _socket.Receive(_buffer.AsSpan(_end), SocketFlags.None) : await _socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None);
        if (read == 0)
        {
            throw new IOException("The server closed the connection.");
        }

        _end += read;
    }

    public void Dispose() => _socket.Dispose();
}
