using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;

namespace DurableSessions.FunctionalTests;

/// <summary>One data directory, one server process: a second process is refused at start and nothing acknowledged is lost.</summary>
public sealed class DataDirectoryLockTests
{
    private const int Messages = 201;

    [Fact]
    public async Task A_second_process_on_the_same_data_directory_stops_at_start_and_the_first_keeps_every_acknowledged_append()
    {
        await using var first = await ServerProcess.StartAsync();
        using var client = new HttpClient { BaseAddress = first.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/locked/batch", Json("[]"))).StatusCode);
        var batch = "[" + string.Join(',', Enumerable.Range(0, Messages).Select(i => $"{{\"n\":{i}}}")) + "]";
        using (var appended = await client.PostAsync("/v1/stream/locked/batch", Json(batch)))
        {
            Assert.Equal(HttpStatusCode.NoContent, appended.StatusCode);
        }

        var started = Stopwatch.GetTimestamp();
        var refused = await Assert.ThrowsAsync<InvalidOperationException>(async () =>
        {
            await using var second = await ServerProcess.StartAsync(first.DataDirectory);
        });
        var elapsed = Stopwatch.GetElapsedTime(started);
        Assert.Contains("exited with code 1", refused.Message, StringComparison.Ordinal);
        Assert.Contains($"The data directory {Path.GetFullPath(first.DataDirectory)} is in use by another DurableSessions process", refused.Message, StringComparison.Ordinal);
        Assert.True(elapsed < TimeSpan.FromSeconds(15), $"the second process took {elapsed} to give up");

        // The first process never noticed: it still reads and writes.
        Assert.Equal(Messages, (await ReadAll(client)).Count);
        using (var appended = await client.PostAsync("/v1/stream/locked/batch", Json("{\"n\":201}")))
        {
            Assert.Equal(HttpStatusCode.NoContent, appended.StatusCode);
        }

        // kill -9 runs no shutdown code: the operating system alone releases the lock.
        await first.KillAsync();
        await using var third = await ServerProcess.StartAsync(first.DataDirectory);
        using var after = new HttpClient { BaseAddress = third.BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
        var messages = await ReadAll(after);
        Assert.Equal(Enumerable.Range(0, Messages + 1), messages);
    }

    private static async Task<List<int>> ReadAll(HttpClient client)
    {
        using var response = await client.GetAsync("/v1/stream/locked/batch?offset=-1");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("true", response.Headers.GetValues("Stream-Up-To-Date").Single());
        using var document = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return document.RootElement.EnumerateArray().Select(e => e.GetProperty("n").GetInt32()).ToList();
    }

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");
}
