using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;

namespace DurableSessions.FunctionalTests;

/// <summary>SSE helpers for tests: (event, data) pairs as the server sends them, and control-event parsing.</summary>
public static class SseClient
{
    public static async IAsyncEnumerable<(string Event, string Data)> ReadEventsAsync(Stream body, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var reader = new DurableSessions.Client.SseEventReader(body, int.MaxValue);
        while (await reader.NextAsync(cancellationToken) is { } next)
        {
            yield return (next.Type, Encoding.UTF8.GetString(next.Data.Span));
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
