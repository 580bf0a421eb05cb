using System.Net;
using System.Text;

namespace DurableSessions.FunctionalTests;

/// <summary>DurableStreams:MaxStreams bounds how many streams and sessions a server holds.</summary>
public sealed class StreamLimitTests
{
    [Fact]
    public async Task Creates_past_the_stream_limit_get_403_and_existing_streams_keep_working()
    {
        await using var server = await InProcessServer.StartAsync(configure: o => o.MaxStreams = 2);
        var client = server.Client;
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/a", new StringContent("x", Encoding.UTF8, "text/plain"))).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/sessions/s1", new StringContent("{}", Encoding.UTF8, "application/json"))).StatusCode);

        using var stream = await client.PutAsync("/v1/stream/b", new StringContent("x", Encoding.UTF8, "text/plain"));
        Assert.Equal(HttpStatusCode.Forbidden, stream.StatusCode);
        Assert.Contains("STREAM_LIMIT_REACHED", await stream.Content.ReadAsStringAsync());
        using var session = await client.PutAsync("/v1/sessions/s2", new StringContent("{}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Forbidden, session.StatusCode);
        using var chat = await client.PostAsync("/api/chat", new StringContent("{\"id\":\"s3\",\"messages\":[{\"id\":\"u1\",\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"text\":\"hi\"}]}]}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Forbidden, chat.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/v1/stream/b?offset=-1")).StatusCode);

        Assert.Equal(HttpStatusCode.OK, (await client.PutAsync("/v1/stream/a", new StringContent("x", Encoding.UTF8, "text/plain"))).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await client.PostAsync("/v1/stream/a", new StringContent("y", Encoding.UTF8, "text/plain"))).StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync("/v1/stream/a")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/b", new StringContent("x", Encoding.UTF8, "text/plain"))).StatusCode);
    }
}
