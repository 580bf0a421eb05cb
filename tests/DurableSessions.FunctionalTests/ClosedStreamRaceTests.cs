using System.Net;
using System.Text;
using Microsoft.Extensions.DependencyInjection;

namespace DurableSessions.FunctionalTests;

/// <summary>An append to a closed stream that is deleted and created again while the append is decided.</summary>
public sealed class ClosedStreamRaceTests
{
    [Fact]
    public async Task A_body_that_is_not_json_sent_to_a_closed_stream_never_lands_in_the_stream_created_in_its_place()
    {
        ReplacingStore store = null!;
        await using var server = await InProcessServer.StartAsync(services: services =>
        {
            services.WrapStore(inner => store = new ReplacingStore(inner));
        });
        static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");
        var created = await server.Client.PutAsync(new Uri("/v1/stream/race/x", UriKind.Relative), Json("[]"));
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var closing = new HttpRequestMessage(HttpMethod.Post, new Uri("/v1/stream/race/x", UriKind.Relative)) { Content = new ByteArrayContent([]) };
        closing.Headers.Add("Stream-Closed", "true");
        var closed = await server.Client.SendAsync(closing);
        Assert.True(closed.IsSuccessStatusCode, $"{closed.StatusCode} {await closed.Content.ReadAsStringAsync()}");

        // A body that is not JSON is looked up first: on a closed stream it is answered as the store answers a closed
        // stream. Here, before it reaches the store, the stream is deleted and an open one created at the same path.
        store.ReplaceAfterLookupOf = "race/x";
        var append = await server.Client.PostAsync(new Uri("/v1/stream/race/x", UriKind.Relative), Json("[{\"a\":1},"));
        Assert.Equal(HttpStatusCode.Conflict, append.StatusCode);
        Assert.Contains("\"CONFLICT\"", await append.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.True(store.Replaced, "the stream was not replaced");
        Assert.Equal("[]", await server.Client.GetStringAsync(new Uri("/v1/stream/race/x?offset=-1", UriKind.Relative)));
    }

    private sealed class ReplacingStore(StreamStore inner) : DelegatingStore(inner)
    {
        public string? ReplaceAfterLookupOf { get; set; }

        public bool Replaced { get; private set; }

        public override async ValueTask<StreamLookup> GetAsync(string path, CancellationToken cancellationToken = default)
        {
            var lookup = await Inner.GetAsync(path, cancellationToken);
            if (path == ReplaceAfterLookupOf && lookup.Stream is { Closed: true })
            {
                ReplaceAfterLookupOf = null;
                await Inner.DeleteAsync(path, cancellationToken);
                var again = await Inner.CreateAsync(new CreateStreamRequest { Path = path, ContentType = "application/json" }, cancellationToken);
                Replaced = again.Stream is { Closed: false };
            }

            return lookup;
        }
    }
}
