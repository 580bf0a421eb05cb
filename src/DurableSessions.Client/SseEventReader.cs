using System.Text;

namespace DurableSessions.Client;

/// <summary>One Server-Sent Event.</summary>
internal readonly record struct SseEvent(string Type, string Data);

/// <summary>
/// Parses an SSE response body into events. Comments (keep-alives) are skipped. An event longer than its limit (a
/// line that never ends, data lines without end) is refused with <see cref="InvalidDataException"/> before it is held
/// whole, so a server that misbehaves cannot make the client buffer without bound.
/// </summary>
internal sealed class SseEventReader(Stream body, int maxEventLength) : IDisposable
{
    private readonly StreamReader _reader = new(body, Encoding.UTF8);
    private readonly char[] _buffer = new char[4096];
    private StringBuilder _line = new();
    private int _start;
    private int _end;

    // Set after a line ended with '\r' at the end of a read: a '\n' opening the next read belongs to that ending.
    private bool _skipLineFeed;

    /// <summary>The next complete event, or null at the end of the body.</summary>
    /// <exception cref="InvalidDataException">The event is longer than the limit.</exception>
    public async Task<SseEvent?> NextAsync(CancellationToken cancellationToken)
    {
        var type = string.Empty;
        var data = new StringBuilder();
        var hasData = false;
        while (await ReadLineAsync(maxEventLength - data.Length, cancellationToken).ConfigureAwait(false) is { } line)
        {
            if (line.Length == 0)
            {
                if (type.Length > 0 && hasData)
                {
                    return new SseEvent(type, data.ToString());
                }

                type = string.Empty;
                data.Clear();
                hasData = false;
            }
            else if (line.StartsWith("event:", StringComparison.Ordinal))
            {
                type = line[6..].Trim();
            }
            else if (line.StartsWith("data:", StringComparison.Ordinal))
            {
                if (hasData)
                {
                    data.Append('\n');
                }

                data.Append(line.AsSpan(line.Length > 5 && line[5] == ' ' ? 6 : 5));
                hasData = true;
            }
        }

        return null;
    }

    // A builder grown by one long line is not kept for the rest of the read.
    private const int KeptLineCapacity = 64 * 1024;

    /// <summary>The next line without its ending (CR LF, LF or CR), or null at the end of the body.</summary>
    private async Task<string?> ReadLineAsync(int maxLength, CancellationToken cancellationToken)
    {
        if (_line.Capacity > KeptLineCapacity)
        {
            _line = new StringBuilder();
        }

        _line.Clear();
        while (true)
        {
            if (_start == _end)
            {
                _start = 0;
                _end = await _reader.ReadAsync(_buffer.AsMemory(), cancellationToken).ConfigureAwait(false);
                if (_end == 0)
                {
                    return _line.Length > 0 ? _line.ToString() : null;
                }
            }

            if (_skipLineFeed)
            {
                _skipLineFeed = false;
                if (_buffer[_start] == '\n')
                {
                    _start++;
                    continue;
                }
            }

            var span = _buffer.AsSpan(_start, _end - _start);
            var ending = span.IndexOfAny('\r', '\n');
            var taken = ending < 0 ? span.Length : ending;
            if (_line.Length + taken > maxLength)
            {
                throw new InvalidDataException($"An event from the server is longer than {maxEventLength} characters (DurableSessionsClientOptions.MaxSseEventLength).");
            }

            _line.Append(span[..taken]);
            if (ending < 0)
            {
                _start = _end;
                continue;
            }

            _start += ending + 1;
            if (span[ending] == '\r')
            {
                if (_start < _end)
                {
                    if (_buffer[_start] == '\n')
                    {
                        _start++;
                    }
                }
                else
                {
                    _skipLineFeed = true;
                }
            }

            return _line.ToString();
        }
    }

    public void Dispose() => _reader.Dispose();
}
