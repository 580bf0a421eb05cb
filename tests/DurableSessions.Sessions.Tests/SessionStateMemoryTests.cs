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
        // Text as people write it, not only ASCII: kept escaped (\uXXXX), it would take two to three times its size.
        var text = string.Concat(Enumerable.Repeat("Text, テキスト, 文字 <b>&'+ 😀 ", 40));

        // Stored chunks of ten events each, the way a session is read back from its stream; each is dropped once read.
        long entityBytes = 0;
        byte[] Chunk(int first)
        {
            var chunk = new StringBuilder();
            for (var j = first; j < first + EventsPerChunk; j++)
            {
                var value = $$"""{"id":"m{{j}}","role":"user","parts":[{"type":"text","text":"{{text}}"}],"createdAt":"2026-01-02T03:04:05.678Z","author":"user-{{j % 7}}"}""";
                entityBytes += Encoding.UTF8.GetByteCount(value);
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

        // The rules read an entity's author or run on every append that names it.
        for (var i = 0; i < Messages; i++)
        {
            Assert.True(state.TryPeekText("message", $"m{i}", "author", out var author));
            Assert.Equal($"user-{i % 7}", author);
        }

        var held = GC.GetTotalMemory(forceFullCollection: true) - before;
        TestContext.Current.TestOutputHelper?.WriteLine($"{held / 1024} KiB held for {entityBytes / 1024} KiB of entity JSON");

        // The events carry about their entities' size again besides them, and none of it may stay: an entity that
        // pointed into its parsed event would keep the event's whole document. Nor may reading a field leave a tree of
        // nodes behind it.
        Assert.InRange(held, entityBytes, 7 * entityBytes / 4);
        Assert.Equal(Messages, state.Count);
        Assert.Equal(text, state.Messages[^1].Text);
    }

    [Fact]
    public void Streaming_a_long_reply_costs_its_length_not_its_length_squared()
    {
        const int Deltas = 10_000;
        const string Token = "0123456789";
        var state = new SessionState();
        state.Apply(Change("m1", "insert", """{"id":"m1","role":"assistant","parts":[]}"""));
        var deltas = Enumerable.Range(0, Deltas).Select(_ => new DeltaChange("m1", Token, 0, "text", null)).ToArray();

        // Read now and then, as a late joiner's snapshot does.
        var allocated = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < Deltas; i++)
        {
            state.ApplyDeltas([deltas[i]], i + 2);
            if (i % 1_000 == 999)
            {
                Assert.Equal((i + 1) * Token.Length, state.Messages[0].Text.Length);
            }
        }

        allocated = GC.GetAllocatedBytesForCurrentThread() - allocated;

        // The reply is 100,000 characters (200 KB as a string). Copying the text so far on each delta would allocate
        // about 1 GB; appending allocates a few times the reply, and each read a copy of it.
        Assert.InRange(allocated, 0, 16 * 1024 * 1024);
        Assert.Equal(string.Concat(Enumerable.Repeat(Token, Deltas)), state.Get("message", "m1")!["parts"]![0]!["text"]!.GetValue<string>());
        Assert.Equal(string.Concat(Enumerable.Repeat(Token, Deltas)), state.ToSnapshot()[1]!["value"]!["parts"]![0]!["text"]!.GetValue<string>());
    }

    [Fact]
    public void Text_streamed_since_the_last_read_is_in_every_view_and_a_full_message_event_replaces_it()
    {
        var state = new SessionState();
        state.Apply(Change("m1", "insert", """{"id":"m1","role":"assistant","parts":[{"type":"text","text":"Hel"}]}"""));
        state.ApplyDeltas([new DeltaChange("m1", "lo", 0, "text", null), new DeltaChange("m1", "hm", 1, "reasoning", null)], 2);

        Assert.Equal("Hello", state.Messages[0].Text);
        state.ApplyDeltas([new DeltaChange("m1", ", world", 0, "text", null)], 3);
        Assert.Equal("Hello, world", state.All("message").Single()["parts"]![0]!["text"]!.GetValue<string>());
        state.ApplyDeltas([new DeltaChange("m1", "m", 1, "reasoning", null)], 4);
        Assert.Equal("hmm", state.GetMessage("m1")!.Parts![1] is ReasoningPart r ? r.Text : null);
        state.ApplyDeltas([new DeltaChange("m1", "!", 0, "text", null)], 5);
        Assert.Contains("Hello, world!", state.ToSnapshot().ToJsonString(), StringComparison.Ordinal);

        // The rules' lookup reads a field and leaves streamed text where it is; the next read writes it.
        state.ApplyDeltas([new DeltaChange("m1", "?", 0, "text", null)], 6);
        Assert.True(state.TryPeekText("message", "m1", "role", out var role));
        Assert.Equal("assistant", role);
        Assert.True(state.TryPeekText("message", "m1", "parts", out var notText));
        Assert.Null(notText);
        Assert.False(state.TryPeekText("message", "m2", "role", out _));
        Assert.Equal("Hello, world!?", state.Get("message", "m1")!["parts"]![0]!["text"]!.GetValue<string>());

        // A delta after the full message continues from the full message's text, not from what was streamed before it.
        state.ApplyDeltas([new DeltaChange("m1", " (replaced)", 0, "text", null)], 7);
        state.Apply(Change("m1", "update", """{"id":"m1","role":"assistant","parts":[{"type":"text","text":"Final"}]}"""));
        state.ApplyDeltas([new DeltaChange("m1", " words", 0, "text", null)], 8);
        Assert.Equal("Final words", state.Messages[0].Text);

        // Text streamed into a message that is then deleted, or into a state that is then reset, is gone with it.
        state.ApplyDeltas([new DeltaChange("m1", " (deleted)", 0, "text", null)], 9);
        state.Apply(Change("m1", "delete", "{}"));
        state.Apply(Change("m1", "insert", """{"id":"m1","role":"assistant","parts":[{"type":"text","text":"Again"}]}"""));
        Assert.Equal("Again", state.Messages[0].Text);
        state.ApplyDeltas([new DeltaChange("m1", " (reset)", 0, "text", null)], 10);
        state.Apply(new System.Text.Json.Nodes.JsonObject { ["headers"] = new System.Text.Json.Nodes.JsonObject { ["control"] = "reset" } });
        state.Apply(Change("m1", "insert", """{"id":"m1","role":"assistant","parts":[{"type":"text","text":"Anew"}]}"""));
        Assert.Equal("Anew", state.Messages[0].Text);
        Assert.DoesNotContain("(", state.ToSnapshot().ToJsonString(), StringComparison.Ordinal);
    }

    private static System.Text.Json.Nodes.JsonObject Change(string key, string operation, string value) => new()
    {
        ["type"] = "message",
        ["key"] = key,
        ["value"] = System.Text.Json.Nodes.JsonNode.Parse(value),
        ["headers"] = new System.Text.Json.Nodes.JsonObject { ["operation"] = operation },
    };
}
