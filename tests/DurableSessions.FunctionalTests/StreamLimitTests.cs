using Microsoft.Extensions.DependencyInjection;
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

    [Fact]
    public async Task A_fork_past_the_chains_depth_limit_gets_403_and_the_chain_keeps_working()
    {
        await using var server = await InProcessServer.StartAsync(configure: o => o.MaxForkDepth = 2);
        var client = server.Client;
        async Task<HttpResponseMessage> Fork(string path, string source)
        {
            using var request = new HttpRequestMessage(HttpMethod.Put, $"/v1/stream/{path}") { Content = new StringContent("x", Encoding.UTF8, "text/plain") };
            request.Headers.Add("Stream-Forked-From", $"/v1/stream/{source}");
            return await client.SendAsync(request);
        }

        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/f0", new StringContent("a", Encoding.UTF8, "text/plain"))).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Fork("f1", "f0")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Fork("f2", "f1")).StatusCode);
        using var refused = await Fork("f3", "f2");
        Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        Assert.Contains("FORK_TOO_DEEP", await refused.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/v1/stream/f3?offset=-1")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Fork("f3", "f1")).StatusCode);
        Assert.Equal("axx", await client.GetStringAsync("/v1/stream/f2?offset=-1"));
    }

    [Fact]
    public async Task Creates_past_a_tokens_stream_limit_get_403_while_other_tokens_still_create()
    {
        const string Key = "stream-limit-signing-key-of-32-bytes!!";
        await using var server = await InProcessServer.StartAsync(
            configure: o => o.MaxStreamsPerToken = 2,
            services: s => s.Configure<DurableSessions.AspNetCore.Auth.AccessOptions>(o => o.SigningKey = Key));
        var tokens = new DurableSessions.AspNetCore.Auth.AccessTokens(new DurableSessions.AspNetCore.Auth.AccessOptions { SigningKey = Key });
        var everything = new Dictionary<string, DurableSessions.AspNetCore.Auth.Capability[]> { ["**"] = [DurableSessions.AspNetCore.Auth.Capability.Read, DurableSessions.AspNetCore.Auth.Capability.Write, DurableSessions.AspNetCore.Auth.Capability.Admin] };
        var mallory = tokens.Issue("user:mallory", everything, TimeSpan.FromMinutes(5));
        var alice = tokens.Issue("user:alice", everything, TimeSpan.FromMinutes(5));

        async Task<HttpResponseMessage> Put(string url, string token, string body = "{}")
        {
            using var request = new HttpRequestMessage(HttpMethod.Put, url) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            request.Headers.Authorization = new("Bearer", token);
            return await server.Client.SendAsync(request);
        }

        Assert.Equal(HttpStatusCode.Created, (await Put("/v1/stream/m/1", mallory, "[]")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Put("/v1/sessions/m2", mallory)).StatusCode);
        using var refused = await Put("/v1/stream/m/3", mallory, "[]");
        Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        Assert.Contains("STREAM_LIMIT_REACHED", await refused.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.Forbidden, (await Put("/v1/sessions/m4", mallory)).StatusCode);

        Assert.Equal(HttpStatusCode.Created, (await Put("/v1/stream/a/1", alice, "[]")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Put("/v1/stream/m/1", mallory, "[]")).StatusCode);
    }
}
