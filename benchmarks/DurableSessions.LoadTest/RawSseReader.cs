using System.Net;
using System.Net.Sockets;
using System.Text;

namespace DurableSessions.LoadTest;

/// <summary>Called for each complete SSE event: its type and its data lines joined with newlines.</summary>
internal delegate void SseEventHandler(ReadOnlySpan<byte> type, ReadOnlySpan<byte> data);

/// <summary>
/// A live SSE reader on a raw loopback socket: it sends one GET, takes the chunked body apart and hands each event to a
/// callback as bytes. With thousands of readers in the load tool, HttpClient, a <see cref="StreamReader"/> and a string
/// per line cost the load tool more CPU per delivery than the server spends; on a two-core machine that CPU is taken
/// from the server under test (the same reason <see cref="RawHttpConnection"/> exists for writers).
/// </summary>
internal sealed class RawSseReader : IDisposable
{
    private static readonly byte[] HeaderEnd = "\r\n\r\n"u8.ToArray();
    private readonly Socket _socket;
    private byte[] _raw = new byte[8 * 1024];
    private int _rawStart;
    private int _rawEnd;
    private byte[] _body = new byte[8 * 1024];
    private int _bodyEnd;

    private RawSseReader(Socket socket) => _socket = socket;

    /// <summary>Connects and sends <c>GET <paramref name="pathAndQuery"/></c>; the response is read by <see cref="RunAsync"/>.</summary>
    public static async Task<RawSseReader> ConnectAsync(Uri baseAddress, string pathAndQuery, CancellationToken cancellationToken)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, baseAddress.Port), cancellationToken);
            var request = Encoding.ASCII.GetBytes($"GET {pathAndQuery} HTTP/1.1\r\nHost: {baseAddress.Authority}\r\nAccept: text/event-stream\r\n\r\n");
            await socket.SendAsync(request, SocketFlags.None, cancellationToken);
            return new RawSseReader(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads the response until the server ends it or <paramref name="cancellationToken"/> fires, calling
    /// <paramref name="onEvent"/> for each event. Throws <see cref="IOException"/> on a status other than 200.
    /// </summary>
    public async Task RunAsync(SseEventHandler onEvent, CancellationToken cancellationToken)
    {
        await using var registration = cancellationToken.Register(static s => ((Socket)s!).Dispose(), _socket);
        int headerEnd;
        while ((headerEnd = _raw.AsSpan(0, _rawEnd).IndexOf(HeaderEnd)) < 0)
        {
            if (!await ReceiveAsync(cancellationToken))
            {
                throw new IOException("The server closed the connection before its response headers.");
            }
        }

        var headers = Encoding.ASCII.GetString(_raw, 0, headerEnd);
        if (!headers.StartsWith("HTTP/1.1 200", StringComparison.Ordinal))
        {
            throw new IOException($"SSE request answered {headers.Split("\r\n")[0]}");
        }

        var chunked = headers.Contains("transfer-encoding: chunked", StringComparison.OrdinalIgnoreCase);
        _rawStart = headerEnd + HeaderEnd.Length;
        long chunkLeft = 0;
        var state = chunked ? ChunkState.Size : ChunkState.Data;
        while (true)
        {
            // Take the body out of its chunk framing into _body.
            while (_rawStart < _rawEnd)
            {
                var raw = _raw.AsSpan(_rawStart, _rawEnd - _rawStart);
                if (state == ChunkState.Size)
                {
                    var lineEnd = raw.IndexOf("\r\n"u8);
                    if (lineEnd < 0)
                    {
                        break;
                    }

                    chunkLeft = Convert.ToInt64(Encoding.ASCII.GetString(raw[..lineEnd]).Split(';')[0].Trim(), 16);
                    if (chunkLeft == 0)
                    {
                        return;
                    }

                    _rawStart += lineEnd + 2;
                    state = ChunkState.Data;
                }
                else if (state == ChunkState.Data)
                {
                    var take = chunked ? (int)Math.Min(chunkLeft, raw.Length) : raw.Length;
                    AppendBody(raw[..take]);
                    _rawStart += take;
                    chunkLeft -= take;
                    if (chunked && chunkLeft == 0)
                    {
                        state = ChunkState.End;
                    }
                }
                else
                {
                    if (raw.Length < 2)
                    {
                        break;
                    }

                    _rawStart += 2;
                    state = ChunkState.Size;
                }
            }

            DispatchEvents(onEvent);
            if (!await ReceiveAsync(cancellationToken))
            {
                return;
            }
        }
    }

    private void AppendBody(ReadOnlySpan<byte> data)
    {
        if (_bodyEnd + data.Length > _body.Length)
        {
            Array.Resize(ref _body, Math.Max(_body.Length * 2, _bodyEnd + data.Length));
        }

        data.CopyTo(_body.AsSpan(_bodyEnd));
        _bodyEnd += data.Length;
    }

    private void DispatchEvents(SseEventHandler onEvent)
    {
        var start = 0;
        while (true)
        {
            var pending = _body.AsSpan(start, _bodyEnd - start);
            var end = pending.IndexOf("\n\n"u8);
            if (end < 0)
            {
                break;
            }

            var block = pending[..end];
            start += end + 2;
            ReadOnlySpan<byte> type = default;
            ReadOnlySpan<byte> data = default;
            var dataLines = 0;
            while (!block.IsEmpty)
            {
                var lineEnd = block.IndexOf((byte)'\n');
                var line = lineEnd < 0 ? block : block[..lineEnd];
                block = lineEnd < 0 ? default : block[(lineEnd + 1)..];
                if (line.StartsWith("event:"u8))
                {
                    type = line[6..].Trim((byte)' ');
                }
                else if (line.StartsWith("data:"u8))
                {
                    var value = line.Length > 5 && line[5] == (byte)' ' ? line[6..] : line[5..];
                    // A second data line is rare (a payload with newlines): the lines are joined as the SSE rules say.
                    data = dataLines++ == 0 ? value : (byte[])[.. data, (byte)'\n', .. value];
                }
            }

            if (!type.IsEmpty)
            {
                onEvent(type, data);
            }
        }

        if (start > 0)
        {
            _body.AsSpan(start, _bodyEnd - start).CopyTo(_body);
            _bodyEnd -= start;
        }
    }

    private async ValueTask<bool> ReceiveAsync(CancellationToken cancellationToken)
    {
        if (_rawStart == _rawEnd)
        {
            _rawStart = _rawEnd = 0;
        }
        else if (_rawStart > 0)
        {
            Buffer.BlockCopy(_raw, _rawStart, _raw, 0, _rawEnd - _rawStart);
            _rawEnd -= _rawStart;
            _rawStart = 0;
        }

        if (_rawEnd == _raw.Length)
        {
            Array.Resize(ref _raw, _raw.Length * 2);
        }

        try
        {
            var read = await _socket.ReceiveAsync(_raw.AsMemory(_rawEnd), SocketFlags.None);
            _rawEnd += read;
            return read > 0;
        }
        catch (Exception ex) when (ex is ObjectDisposedException or SocketException && cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancellationToken);
        }
    }

    public void Dispose() => _socket.Dispose();

    private enum ChunkState
    {
        Size,
        Data,
        End,
    }
}
