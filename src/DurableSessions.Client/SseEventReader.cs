using System.Text;

namespace DurableSessions.Client;

/// <summary>One Server-Sent Event.</summary>
internal readonly record struct SseEvent(string Type, string Data);

/// <summary>Parses an SSE response body into events. Comments (keep-alives) are skipped.</summary>
internal sealed class SseEventReader(Stream body) : IDisposable
{
    private readonly StreamReader _reader = new(body, Encoding.UTF8);

    /// <summary>The next complete event, or null at the end of the body.</summary>
    public async Task<SseEvent?> NextAsync(CancellationToken cancellationToken)
    {
        var type = string.Empty;
        var data = new StringBuilder();
        var hasData = false;
        while (await _reader.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } line)
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

    public void Dispose() => _reader.Dispose();
}
