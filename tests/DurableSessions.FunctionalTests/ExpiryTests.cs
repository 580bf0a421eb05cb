using System.Net;
using System.Text;
using Microsoft.Extensions.Time.Testing;

namespace DurableSessions.FunctionalTests;

/// <summary>TTL and absolute expiry over HTTP, driven by a fake clock.</summary>
public sealed class ExpiryTests : IAsyncLifetime
{
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));
    private InProcessServer _server = null!;

    public async ValueTask InitializeAsync() => _server = await InProcessServer.StartAsync(_clock);

    public async ValueTask DisposeAsync() => await _server.DisposeAsync();

    private Task<HttpResponseMessage> Head(string path) => _server.Client.SendAsync(new HttpRequestMessage(HttpMethod.Head, path));

    [Fact]
    public async Task Sliding_ttl_is_reset_by_reads_and_writes_but_not_by_head()
    {
        var client = _server.Client;
        var create = new HttpRequestMessage(HttpMethod.Put, "/v1/stream/ttl/a") { Content = new StringContent("x", Encoding.UTF8, "text/plain") };
        create.Headers.Add("Stream-TTL", "60");
        Assert.Equal(HttpStatusCode.Created, (await client.SendAsync(create)).StatusCode);
        Assert.Equal("60", (await Head("/v1/stream/ttl/a")).Headers.GetValues("Stream-TTL").Single());

        _clock.Advance(TimeSpan.FromSeconds(50));
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/v1/stream/ttl/a?offset=now")).StatusCode);
        _clock.Advance(TimeSpan.FromSeconds(50));
        Assert.Equal(HttpStatusCode.NoContent, (await client.PostAsync("/v1/stream/ttl/a", new StringContent("y", Encoding.UTF8, "text/plain"))).StatusCode);
        _clock.Advance(TimeSpan.FromSeconds(50));
        Assert.Equal(HttpStatusCode.OK, (await Head("/v1/stream/ttl/a")).StatusCode);
        _clock.Advance(TimeSpan.FromSeconds(11));
        Assert.Equal(HttpStatusCode.NotFound, (await Head("/v1/stream/ttl/a")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/v1/stream/ttl/a")).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/ttl/a", new StringContent("[]", Encoding.UTF8, "application/json"))).StatusCode);
    }

    [Theory]
    [InlineData("300000000000")]
    [InlineData("9007199254740")]
    [InlineData("3155760001")]
    public async Task A_ttl_past_a_hundred_years_is_refused_and_creates_nothing(string ttl)
    {
        var create = new HttpRequestMessage(HttpMethod.Put, "/v1/stream/ttl/huge") { Content = new StringContent("x", Encoding.UTF8, "text/plain") };
        create.Headers.Add("Stream-TTL", ttl);
        var response = await _server.Client.SendAsync(create);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("INVALID_TTL", await response.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.NotFound, (await Head("/v1/stream/ttl/huge")).StatusCode);
    }

    [Fact]
    public async Task The_longest_ttl_is_served_and_survives_the_expiry_sweep()
    {
        var client = _server.Client;
        var create = new HttpRequestMessage(HttpMethod.Put, "/v1/stream/ttl/longest") { Content = new StringContent("x", Encoding.UTF8, "text/plain") };
        create.Headers.Add("Stream-TTL", "3155760000");
        Assert.Equal(HttpStatusCode.Created, (await client.SendAsync(create)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/v1/stream/ttl/longest?offset=-1")).StatusCode);

        // The fake clock runs the store's expiry sweep inline, a year on: the stream is neither expired nor broken by it.
        _clock.Advance(TimeSpan.FromDays(400));
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/v1/stream/ttl/longest?offset=-1")).StatusCode);
        Assert.Equal("3155760000", (await Head("/v1/stream/ttl/longest")).Headers.GetValues("Stream-TTL").Single());
    }

    [Fact]
    public async Task Expires_at_is_absolute()
    {
        var client = _server.Client;
        var create = new HttpRequestMessage(HttpMethod.Put, "/v1/stream/ttl/b") { Content = new StringContent("x", Encoding.UTF8, "text/plain") };
        create.Headers.Add("Stream-Expires-At", "2026-06-01T12:10:00.000Z");
        Assert.Equal(HttpStatusCode.Created, (await client.SendAsync(create)).StatusCode);
        Assert.Equal("2026-06-01T12:10:00.000Z", (await Head("/v1/stream/ttl/b")).Headers.GetValues("Stream-Expires-At").Single());
        _clock.Advance(TimeSpan.FromMinutes(9));
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/v1/stream/ttl/b")).StatusCode);
        _clock.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal(HttpStatusCode.NotFound, (await client.PostAsync("/v1/stream/ttl/b", new StringContent("y", Encoding.UTF8, "text/plain"))).StatusCode);
    }

    [Fact]
    public async Task A_live_reader_keeps_its_stream_alive_and_sees_it_expire_after()
    {
        var client = _server.Client;
        var create = new HttpRequestMessage(HttpMethod.Put, "/v1/stream/ttl/c") { Content = new StringContent(string.Empty) };
        create.Headers.Add("Stream-TTL", "30");
        create.Content.Headers.ContentType = new("text/plain");
        Assert.Equal(HttpStatusCode.Created, (await client.SendAsync(create)).StatusCode);
        for (var i = 0; i < 4; i++)
        {
            _clock.Advance(TimeSpan.FromSeconds(20));
            Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/v1/stream/ttl/c?offset=-1")).StatusCode);
        }

        _clock.Advance(TimeSpan.FromSeconds(31));
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/v1/stream/ttl/c?offset=-1&live=long-poll")).StatusCode);
    }
}
