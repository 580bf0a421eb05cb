using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;

namespace DurableSessions.FunctionalTests;

/// <summary>A minimal SSE reader for stream reads: yields (event, data) pairs as the server sends them.</summary>
public static class SseClient
{
    public static async IAsyncEnumerable<(string Event, string Data)> ReadEventsAsync(Stream body, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var reader = new StreamReader(body, Encoding.UTF8);
        var type = string.Empty;
        var data = new StringBuilder();
        var hasData = false;
        while (await reader.ReadLineAsync(cancellationToken) is { } line)
        {
            if (line.Length == 0)
            {
                if (type.Length > 0 && hasData)
                {
                    yield return (type, data.ToString());
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

                data.Append(line.AsSpan(5));
                hasData = true;
            }
        }
    }

    public static (string NextOffset, bool UpToDate, bool Closed) ParseControl(string data)
    {
        using var json = JsonDocument.Parse(data);
        var root = json.RootElement;
        return (
            root.GetProperty("streamNextOffset").GetString()!,
            root.TryGetProperty("upToDate", out var upToDate) && upToDate.GetBoolean(),
            root.TryGetProperty("streamClosed", out var closed) && closed.GetBoolean());
    }
}
