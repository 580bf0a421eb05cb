using System.Runtime.CompilerServices;
using System.Text;

namespace DurableSessions.LoadTest;

/// <summary>Parses an SSE response body into (event, data) pairs; data lines are joined with newlines.</summary>
internal static class SseEvents
{
    public static async IAsyncEnumerable<(string Type, string Data)> ReadAsync(Stream body, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        using var reader = new StreamReader(body, Encoding.UTF8);
        var type = string.Empty;
        var data = new StringBuilder();
        while (await reader.ReadLineAsync(cancellationToken) is { } line)
        {
            if (line.Length == 0)
            {
                if (type.Length > 0)
                {
                    yield return (type, data.ToString());
                }

                type = string.Empty;
                data.Clear();
            }
            else if (line.StartsWith("event:", StringComparison.Ordinal))
            {
                type = line[6..].Trim();
            }
            else if (line.StartsWith("data:", StringComparison.Ordinal))
            {
                if (data.Length > 0)
                {
                    data.Append('\n');
                }

                data.Append(line.AsSpan(line.Length > 5 && line[5] == ' ' ? 6 : 5));
            }
        }
    }
}
