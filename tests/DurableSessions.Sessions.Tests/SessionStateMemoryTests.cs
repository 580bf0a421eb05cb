using System.Text;
using DurableSessions.Sessions;

namespace DurableSessions.Sessions.Tests;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MemoryMeasurements
{
    public const string Name = "Memory measurements";
}

/// <summary>
/// What a session's state keeps alive. A server holds the state of every active session for as long as it is active,
/// and the collector traces all of it again and again, so it must be about the size of the conversation's JSON.
/// </summary>
[Collection(MemoryMeasurements.Name)]
public sealed class SessionStateMemoryTests
{
    [Fact]
    public void A_state_keeps_about_the_size_of_its_entities_json_not_the_events_it_was_read_from()
    {
        const int Messages = 2_000;
        const int EventsPerChunk = 10;
        var text = new string('x', 1_000);

        // Stored chunks of ten events each, the way a session is read back from its stream; each is dropped once read.
        long entityBytes = 0;
        byte[] Chunk(int first)
        {
            var chunk = new StringBuilder();
            for (var j = first; j < first + EventsPerChunk; j++)
            {
                var value = $$"""{"id":"m{{j}}","role":"user","parts":[{"type":"text","text":"{{text}}"}],"createdAt":"2026-01-02T03:04:05.678Z","author":"user-{{j % 7}}"}""";
                entityBytes += value.Length;
                chunk.Append(chunk.Length > 0 ? "," : string.Empty)
                    .Append($$"""{"type":"message","key":"m{{j}}","value":{{value}},"headers":{"operation":"insert","timestamp":"2026-01-02T03:04:05.678Z","txid":"t{{j}}"},"padding":"{{new string('p', 2_000)}}"}""");
            }

            return Encoding.UTF8.GetBytes(chunk.ToString());
        }

        var state = new SessionState();
        var before = GC.GetTotalMemory(forceFullCollection: true);
        for (var i = 0; i < Messages; i += EventsPerChunk)
        {
            state.ApplyChunk(Chunk(i), i + EventsPerChunk);
        }

        var held = GC.GetTotalMemory(forceFullCollection: true) - before;
        TestContext.Current.TestOutputHelper?.WriteLine($"{held / 1024} KiB held for {entityBytes / 1024} KiB of entity JSON");

        // The events carry twice their entities' size besides them, and none of it may stay: an entity that pointed
        // into its parsed event would keep the event's whole document (4.7 times the entities' JSON here).
        Assert.InRange(held, entityBytes, 5 * entityBytes / 2);
        Assert.Equal(Messages, state.Count);
        Assert.Equal(text, state.Messages[^1].Text);
    }
}
