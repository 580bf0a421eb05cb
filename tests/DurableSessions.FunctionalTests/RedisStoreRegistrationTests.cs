using System.Net;
using System.Text;
using DurableSessions.AspNetCore;
using DurableSessions.Storage.Redis;
using DurableSessions.Testing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace DurableSessions.FunctionalTests;

/// <summary>The Redis store as a library user plugs it in: <c>AddDurableSessions().AddRedisStore(…)</c>.</summary>
public sealed class RedisStoreRegistrationTests
{
    [Fact]
    public async Task The_redis_store_connects_asynchronously_when_the_host_starts_not_when_it_is_resolved()
    {
        await using var redis = await RedisServer.StartAsync();
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Services.AddDurableSessions().AddRedisStore(o => o.Configuration = redis.Configuration);
        await using var app = builder.Build();
        app.MapDurableStreams();

        // Resolving the store (as every service that depends on it does) connects nothing: no blocking wait in DI.
        var store = app.Services.GetRequiredService<StreamStore>();
        Assert.IsType<RedisStreamStore>(store);
        Assert.False(store.IsAvailable);

        await app.StartAsync();
        Assert.True(store.IsAvailable);
        using var client = new HttpClient { BaseAddress = new Uri(app.Urls.First()) };
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/registered", new StringContent("{\"a\":1}", Encoding.UTF8, "application/json"))).StatusCode);
        Assert.Equal("[{\"a\":1}]", await client.GetStringAsync("/v1/stream/registered?offset=-1"));
        await app.StopAsync();
    }
}
