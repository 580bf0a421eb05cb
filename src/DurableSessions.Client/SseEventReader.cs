using System.Buffers;
using System.Text;

namespace DurableSessions.Client;

/// <summary>One Server-Sent Event.</summary>
/// <param name="Type">The event's type.</param>
/// <param name="Data">Its data lines joined by LF, as UTF-8; valid until the reader is asked for the next event.</param>
internal readonly record struct SseEvent(string Type, ReadOnlyMemory<byte> Data);

/// <summary>
/// Parses an SSE response body into events, as the bytes it came in: no line or event is decoded into a string, so a
/// follower's events cost what its JSON parse of them costs. Comments (keep-alives) are skipped. An event longer than
/// its limit (a line that never ends, data lines without end) is refused with <see cref="InvalidDataException"/>
/// before it is held whole, so a server that misbehaves cannot make the client buffer without bound.
/// </summary>
internal sealed class SseEventReader(Stream body, int maxEventLength) : IDisposable
{
    private const int ReadBytes = 4096;

    // A buffer grown by one long line or event is not kept for the rest of the read.
    private const int KeptBytes = 64 * 1024;

    // Unread bytes are _buffer[_start.._end); the search for a line's end goes on from _scan.
    private byte[] _buffer = ArrayPool<byte>.Shared.Rent(ReadBytes);
    private int _start;
    private int _scan;
    private int _end;

    // The line ReadLineAsync found: _buffer[_lineStart..(_lineStart + _lineLength)], until it is called again.
    private int _lineStart;
    private int _lineLength;

    // The current event's data, joined.
    private byte[] _data = [];
    private int _dataLength;

    // Set after a line ended with '\r' at the end of what was read: a '\n' opening the next read belongs to that ending.
    private bool _skipLineFeed;

    // Until the first line is read: a UTF-8 byte order mark opening the body is not part of it (the SSE format's rule).
    private bool _atStart = true;

    /// <summary>The next complete event, or null at the end of the body.</summary>
    /// <exception cref="InvalidDataException">The event is longer than the limit.</exception>
    public async Task<SseEvent?> NextAsync(CancellationToken cancellationToken)
    {
        var type = string.Empty;
        var hasData = false;
        if (_data.Length > KeptBytes)
        {
            ArrayPool<byte>.Shared.Return(_data);
            _data = [];
        }

        _dataLength = 0;
        while (await ReadLineAsync(maxEventLength - _dataLength, cancellationToken).ConfigureAwait(false))
        {
            var line = _buffer.AsSpan(_lineStart, _lineLength);
            if (_atStart)
            {
                _atStart = false;
                if (line.StartsWith("\uFEFF"u8))
                {
                    line = line[3..];
                }
            }

            if (line.IsEmpty)
            {
                if (type.Length > 0 && hasData)
                {
                    return new SseEvent(type, _data.AsMemory(0, _dataLength));
                }

                type = string.Empty;
                _dataLength = 0;
                hasData = false;
            }
            else if (line.StartsWith("event:"u8))
            {
                type = TypeOf(line[6..]);
            }
            else if (line.StartsWith("data:"u8))
            {
                if (hasData)
                {
                    AppendData("\n"u8);
                }

                AppendData(line[(line.Length > 5 && line[5] == (byte)' ' ? 6 : 5)..]);
                hasData = true;
            }
        }

        return null;
    }

    /// <summary>An event's type: the two this protocol sends without allocating, any other as it reads.</summary>
    private static string TypeOf(ReadOnlySpan<byte> field)
    {
        var type = field[Ascii.Trim(field)];
        return type.SequenceEqual("data"u8) ? "data"
            : type.SequenceEqual("control"u8) ? "control"
            : Encoding.UTF8.GetString(type);
    }

    private void AppendData(ReadOnlySpan<byte> bytes)
    {
        var length = (long)_dataLength + bytes.Length;
        if (length > maxEventLength)
        {
            throw TooLong();
        }

        if (length > _data.Length)
        {
            var larger = ArrayPool<byte>.Shared.Rent((int)Math.Min(Math.Max(length, Math.Max(ReadBytes, _data.Length * 2L)), Array.MaxLength));
            _data.AsSpan(0, _dataLength).CopyTo(larger);
            if (_data.Length > 0)
            {
                ArrayPool<byte>.Shared.Return(_data);
            }

            _data = larger;
        }

        bytes.CopyTo(_data.AsSpan(_dataLength));
        _dataLength += bytes.Length;
    }

    /// <summary>Finds the next line without its ending (CR LF, LF or CR); false at the end of the body.</summary>
    private async ValueTask<bool> ReadLineAsync(int maxLength, CancellationToken cancellationToken)
    {
        while (true)
        {
            if (_skipLineFeed && _start < _end)
            {
                _skipLineFeed = false;
                if (_buffer[_start] == (byte)'\n')
                {
                    _start++;
                    _scan = Math.Max(_scan, _start);
                }
            }

            var ending = _buffer.AsSpan(_scan, _end - _scan).IndexOfAny((byte)'\r', (byte)'\n');
            if (ending >= 0)
            {
                var lineEnd = _scan + ending;
                if (lineEnd - _start > maxLength)
                {
                    throw TooLong();
                }

                _lineStart = _start;
                _lineLength = lineEnd - _start;
                _start = _scan = lineEnd + 1;
                if (_buffer[lineEnd] == (byte)'\r')
                {
                    if (_start < _end)
                    {
                        if (_buffer[_start] == (byte)'\n')
                        {
                            _start = ++_scan;
                        }
                    }
                    else
                    {
                        _skipLineFeed = true;
                    }
                }

                return true;
            }

            if (_end - _start > maxLength)
            {
                throw TooLong();
            }

            // No line ends in what is held: keep its start, move it to the front, and read more behind it.
            var held = _end - _start;
            if (held == _buffer.Length)
            {
                var larger = ArrayPool<byte>.Shared.Rent((int)Math.Min(_buffer.Length * 2L, Array.MaxLength));
                _buffer.AsSpan(_start, held).CopyTo(larger);
                ArrayPool<byte>.Shared.Return(_buffer);
                _buffer = larger;
            }
            else if (held == 0 && _buffer.Length > KeptBytes)
            {
                ArrayPool<byte>.Shared.Return(_buffer);
                _buffer = ArrayPool<byte>.Shared.Rent(ReadBytes);
            }
            else if (_start > 0)
            {
                _buffer.AsSpan(_start, held).CopyTo(_buffer);
            }

            _start = 0;
            _scan = _end = held;
            var read = await body.ReadAsync(_buffer.AsMemory(_end), cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                // The body ended: what is left is its last line.
                _lineStart = 0;
                _lineLength = held;
                _start = _scan = _end;
                return held > 0;
            }

            _end += read;
        }
    }

    private InvalidDataException TooLong()
        => new($"An event from the server is longer than {maxEventLength} bytes (DurableSessionsClientOptions.MaxSseEventLength).");

    public void Dispose()
    {
        body.Dispose();
        if (_buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = [];
        }

        if (_data.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(_data);
            _data = [];
        }
    }
}
