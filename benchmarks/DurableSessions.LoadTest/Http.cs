using System.Net;
using System.Text;

namespace DurableSessions.LoadTest;

/// <summary>Shared HTTP plumbing.</summary>
internal static class Http
{
    public static HttpClient Create(string url, int connections) => new(new SocketsHttpHandler
    {
        MaxConnectionsPerServer = connections,
        PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
        AutomaticDecompression = DecompressionMethods.None,
        UseProxy = false,

        // A live read the tool leaves (a follower that saw what it waited for) closes its connection. By default the
        // handler drains the rest of a disposed response, up to 2 s, to reuse the connection: a live stream never ends,
        // so each such connection would count against MaxConnectionsPerServer for those 2 s, and later requests would
        // wait for a free one.
        MaxResponseDrainSize = 0,
    })
    {
        BaseAddress = new Uri(url),
        Timeout = TimeSpan.FromSeconds(60),
    };

    /// <summary>Creates the JSON streams of a run, several at a time.</summary>
    public static async Task CreateStreamsAsync(HttpClient client, IReadOnlyList<string> paths)
    {
        await Parallel.ForEachAsync(paths, new ParallelOptions { MaxDegreeOfParallelism = 32 }, async (path, ct) =>
        {
            using var content = new StringContent(string.Empty);
            content.Headers.ContentType = new("application/json");
            using var response = await client.PutAsync(path, content, ct);
            if (response.StatusCode is not (HttpStatusCode.Created or HttpStatusCode.OK))
            {
                throw new InvalidOperationException($"PUT {path} answered {(int)response.StatusCode}");
            }
        });
    }

    /// <summary>A JSON event of about <paramref name="size"/> bytes carrying a sequence number and a timestamp.</summary>
    public static string Event(long seq, long timestamp, int size)
    {
        var head = $"{{\"seq\":{seq},\"t\":{timestamp},\"pad\":\"";
        var pad = Math.Max(0, size - head.Length - 2);
        return head + new string('x', pad) + "\"}";
    }

    public static ByteArrayContent Json(string body)
    {
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes(body));
        content.Headers.ContentType = new("application/json");
        return content;
    }
}
