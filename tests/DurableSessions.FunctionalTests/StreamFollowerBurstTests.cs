using System.Net;
using System.Text;
using DurableSessions.Live;
using Microsoft.Extensions.DependencyInjection;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// What a follower says is queued behind a live change: readers tell their clients whether they are up to date from it,
/// so "more follows" must mean an item is coming.
/// </summary>
public sealed class StreamFollowerBurstTests
{
    [Fact]
    public async Task A_live_change_followed_only_by_a_change_the_reader_already_has_is_the_end_of_its_burst()
    {
        await using var server = await InProcessServer.StartAsync();
        var store = server.Services.GetRequiredService<StreamStore>();
        var created = await server.Client.PutAsync(new Uri("/v1/stream/burst/a", UriKind.Relative), new StringContent("[]", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var stream = (await store.GetAsync("burst/a")).Stream!;
        var follower = new StreamFollower(store, stream);
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await using var items = follower.FollowAsync(0, cancel.Token).GetAsyncEnumerator(cancel.Token);
        Assert.True(await items.MoveNextAsync());
        Assert.Equal(StreamFollowKind.CaughtUp, items.Current.Kind);

        // Queued together while the follower is not reading: a change, then the same change again (as a node that hears
        // a change twice hands it on), which the follower skips.
        var data = "{\"n\":1}"u8.ToArray();
        store.Fanout.Publish(new LiveAppend(stream.Id, stream.Path, new StreamChunk(0, 1, data), closed: false));
        store.Fanout.Publish(new LiveAppend(stream.Id, stream.Path, new StreamChunk(0, 1, data), closed: false));
        Assert.True(await items.MoveNextAsync());
        Assert.Equal(StreamFollowKind.Live, items.Current.Kind);
        Assert.False(items.Current.MoreQueued);
        Assert.True(items.Current.AtTail);

        // A change that does follow is said to.
        store.Fanout.Publish(new LiveAppend(stream.Id, stream.Path, new StreamChunk(1, 2, data), closed: false));
        store.Fanout.Publish(new LiveAppend(stream.Id, stream.Path, new StreamChunk(2, 3, data), closed: false));
        Assert.True(await items.MoveNextAsync());
        Assert.True(items.Current.MoreQueued);
        Assert.True(await items.MoveNextAsync());
        Assert.Equal(3, items.Current.Position);
        Assert.False(items.Current.MoreQueued);
    }
}
