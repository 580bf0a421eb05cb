using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.Sessions;

namespace DurableSessions.Sessions.Tests;

public sealed class SessionStateTests
{
    private static JsonObject Change(string type, string key, string op, JsonObject? value) => new()
    {
        ["type"] = type,
        ["key"] = key,
        ["value"] = value,
        ["headers"] = new JsonObject { ["operation"] = op },
    };

    private static JsonObject Delta(string messageId, int part, string text) =>
        Change("delta", $"{messageId}:{text.GetHashCode(StringComparison.Ordinal)}", "insert", new JsonObject { ["messageId"] = messageId, ["part"] = part, ["text"] = text });

    [Fact]
    public void Deltas_roll_up_into_their_message_and_never_become_entities()
    {
        var state = new SessionState();
        state.Apply(Change("message", "m1", "insert", new JsonObject { ["id"] = "m1", ["role"] = "assistant", ["parts"] = new JsonArray() }));
        foreach (var token in new[] { "Hel", "lo", ", ", "world" })
        {
            state.Apply(Delta("m1", 0, token));
        }

        state.Apply(Delta("m1", 1, "thinking"));
        Assert.Equal(1, state.Count);
        var parts = state.Get("message", "m1")!["parts"]!.AsArray();
        Assert.Equal("Hello, world", parts[0]!["text"]!.GetValue<string>());
        Assert.Equal("thinking", parts[1]!["text"]!.GetValue<string>());
        Assert.DoesNotContain(state.ToSnapshot(), m => m?["type"]?.GetValue<string>() == "delta");
    }

    [Fact]
    public void Values_read_from_the_state_are_copies_that_cannot_change_it()
    {
        var state = new SessionState();
        state.Apply(Change("message", "m1", "insert", new JsonObject { ["id"] = "m1", ["role"] = "assistant", ["status"] = "streaming", ["parts"] = new JsonArray() }));
        state.Apply(Delta("m1", 0, "Hello"));

        var read = state.Get("message", "m1")!;
        read["status"] = "complete";
        read["parts"]![0]!["text"] = "forged";
        foreach (var message in state.All("message"))
        {
            message["role"] = "system";
        }

        Assert.Equal("streaming", state.Get("message", "m1")!["status"]!.GetValue<string>());
        Assert.Equal("assistant", state.All("message").Single()["role"]!.GetValue<string>());
        var typed = state.GetMessage("m1")!;
        Assert.Equal(MessageStatus.Streaming, typed.Status);
        Assert.Equal("Hello", typed.Text);
        Assert.Contains("Hello", state.ToSnapshot().ToJsonString(), StringComparison.Ordinal);
        Assert.DoesNotContain("forged", state.ToSnapshot().ToJsonString(), StringComparison.Ordinal);
    }

    [Fact]
    public void A_value_built_in_memory_that_json_text_cannot_hold_is_kept_as_it_is()
    {
        var state = new SessionState();
        state.Apply(Change("presence", "p1", "insert", new JsonObject { ["status"] = "joined", ["score"] = double.NaN }));
        Assert.Equal("joined", state.Get("presence", "p1")!["status"]!.GetValue<string>());
        Assert.True(double.IsNaN(state.Get("presence", "p1")!["score"]!.GetValue<double>()));
    }

    [Fact]
    public void A_delta_past_the_next_part_is_ignored_instead_of_padding_the_message()
    {
        var state = new SessionState();
        state.Apply(Change("message", "m1", "insert", new JsonObject { ["id"] = "m1", ["role"] = "assistant", ["parts"] = new JsonArray() }));
        state.Apply(Delta("m1", 10_000, "far"));
        state.Apply(Delta("m1", 2, "skipped"));
        Assert.Empty(state.Get("message", "m1")!["parts"]!.AsArray());

        state.Apply(Delta("m1", 0, "first"));
        state.Apply(Delta("m1", 1, "second"));
        Assert.Equal(["first", "second"], state.Get("message", "m1")!["parts"]!.AsArray().Select(p => p!["text"]!.GetValue<string>()));
    }

    [Fact]
    public void Updates_replace_deletes_remove_and_reset_clears()
    {
        var state = new SessionState();
        state.Apply(Change("presence", "alice", "insert", new JsonObject { ["status"] = "joined" }));
        state.Apply(Change("presence", "bob", "insert", new JsonObject { ["status"] = "joined" }));
        state.Apply(Change("presence", "alice", "update", new JsonObject { ["status"] = "left" }));
        state.Apply(Change("presence", "bob", "delete", null));
        Assert.Equal("left", state.Get("presence", "alice")!["status"]!.GetValue<string>());
        Assert.Null(state.Get("presence", "bob"));
        state.Apply(new JsonObject { ["headers"] = new JsonObject { ["control"] = "reset" } });
        Assert.Equal(0, state.Count);
    }

    [Fact]
    public void Entities_keep_their_order_of_first_insertion_through_deletes_updates_and_inserts_again()
    {
        // Enough deletes that the order is compacted on the way (a message inserted again has a slot before and after
        // it), with updates and inserts between them.
        var state = new SessionState();
        var expected = new List<string>();
        for (var i = 0; i < 300; i++)
        {
            state.Apply(Change("message", $"m{i}", "insert", new JsonObject { ["id"] = $"m{i}", ["n"] = i }));
            expected.Add($"m{i}");
        }

        for (var i = 0; i < 300; i++)
        {
            if (i % 4 != 0)
            {
                state.Apply(Change("message", $"m{i}", "delete", null));
                expected.Remove($"m{i}");
            }

            if (i % 50 == 49)
            {
                // One deleted message is written again (last now), and one that stays is updated (in place).
                state.Apply(Change("message", $"m{i - 2}", "insert", new JsonObject { ["id"] = $"m{i - 2}", ["again"] = true }));
                expected.Add($"m{i - 2}");
                var kept = i - 49 - ((i - 49) % 4);
                state.Apply(Change("message", $"m{kept}", "update", new JsonObject { ["id"] = $"m{kept}", ["updated"] = true }));
            }
        }

        // A delete of what is not there, and a second delete of the same message, change nothing.
        state.Apply(Change("message", "m-none", "delete", null));
        state.Apply(Change("message", "m1", "delete", null));

        Assert.Equal(expected, state.Messages.Select(m => m.Id));
        Assert.Equal(expected, state.All("message").Select(m => m["id"]!.GetValue<string>()));
        Assert.Equal(expected.Count, state.Count);
        Assert.Equal(expected, state.ToSnapshot().Skip(1).SkipLast(1).Select(e => e!["key"]!.GetValue<string>()));
        Assert.True(state.Get("message", "m47")!["again"]!.GetValue<bool>());
        Assert.True(state.Get("message", "m0")!["updated"]!.GetValue<bool>());

        // Inserted after a reset, entities start a new order.
        state.Apply(new JsonObject { ["headers"] = new JsonObject { ["control"] = "reset" } });
        state.Apply(Change("message", "m5", "insert", new JsonObject { ["id"] = "m5" }));
        state.Apply(Change("message", "m4", "insert", new JsonObject { ["id"] = "m4" }));
        Assert.Equal(["m5", "m4"], state.Messages.Select(m => m.Id));

        // The state is not for changing while its entities are enumerated: that is refused, as a collection's is.
        Assert.Throws<InvalidOperationException>(() =>
        {
            foreach (var message in state.All("message"))
            {
                state.Apply(Change("message", "m-during", "insert", new JsonObject { ["id"] = "m-during" }));
            }
        });
    }

    [Fact]
    public void Stored_events_no_reader_can_decode_are_skipped_and_the_rest_materialize()
    {
        static string Event(string key, string value) => "{\"type\":\"message\",\"key\":\"" + key + "\",\"value\":" + value + ",\"headers\":{\"operation\":\"insert\"}}";
        var deep = new string('[', JsonMessageLimits.MaxDepth) + new string(']', JsonMessageLimits.MaxDepth);
        string[] unreadable =
        [
            Event("surrogate", """{"id":"x","text":"\ud800"}"""),
            Event("deep", $$"""{"id":"x","nested":{{deep}}}"""),
            Event("twice", """{"id":"x","parts":[{"type":"text","text":"a","text":"b"}]}"""),
            """{"headers":{"control":"snapshot-start","offset":"0"}}""",
            """{"type":"message","key":"no-value","headers":{"operation":"insert"}}""",
            "[1,2]",
        ];
        var readable = new[] { Event("m1", """{"id":"m1","role":"user"}"""), Event("m2", """{"id":"m2","role":"assistant"}""") };

        // In one stored chunk, and one event at a time as a client applies them.
        var chunk = new SessionState();
        chunk.ApplyChunk(Encoding.UTF8.GetBytes(string.Join(",", [readable[0], .. unreadable, readable[1]])), endPosition: 8);
        var single = new SessionState();
        foreach (var text in (string[])[readable[0], .. unreadable, readable[1]])
        {
            single.ApplyEvent(Encoding.UTF8.GetBytes(text));
        }

        // Text that is not UTF-8 at all, which a chunk could not be split around.
        var notUtf8 = Encoding.UTF8.GetBytes(Event("bad-utf8", """{"id":"x?"}"""));
        notUtf8[Array.IndexOf(notUtf8, (byte)'?')] = 0xC3;
        single.ApplyEvent(notUtf8);
        foreach (var state in new[] { chunk, single })
        {
            Assert.Equal(2, state.Count);
            Assert.Equal(["m1", "m2"], state.Messages.Select(m => m.Id));
            Assert.Equal("assistant", state.Get("message", "m2")!["role"]!.GetValue<string>());
        }
    }

    [Fact]
    public void Every_reader_draws_the_depth_limit_where_appends_do()
    {
        // The event is the first level and its value the second; arrays fill the levels below, the last holding a number.
        static string Nested(int levels) => new string('[', levels - 2) + "1" + new string(']', levels - 2);
        static string Event(string key, int levels)
            => "{\"type\":\"note\",\"key\":\"" + key + "\",\"value\":{\"v\":" + Nested(levels) + "},\"headers\":{\"operation\":\"insert\"}}";

        var deepest = Event("deepest", JsonMessageLimits.MaxDepth);
        var tooDeep = Event("too-deep", JsonMessageLimits.MaxDepth + 1);
        Assert.True(JsonMessageLimits.TryValidate(Encoding.UTF8.GetBytes(deepest), out _));
        Assert.False(JsonMessageLimits.TryValidate(Encoding.UTF8.GetBytes(tooDeep), out _));

        var chunk = new SessionState();
        chunk.ApplyChunk(Encoding.UTF8.GetBytes(deepest + "," + tooDeep), endPosition: 2);
        var single = new SessionState();
        var nodes = new SessionState();
        foreach (var text in new[] { deepest, tooDeep })
        {
            single.ApplyEvent(Encoding.UTF8.GetBytes(text));
            nodes.Apply((JsonObject)JsonNode.Parse(text, documentOptions: new System.Text.Json.JsonDocumentOptions { MaxDepth = 64 })!);
        }

        foreach (var state in new[] { chunk, single, nodes })
        {
            Assert.NotNull(state.Get("note", "deepest"));
            Assert.Null(state.Get("note", "too-deep"));
        }
    }

    [Fact]
    public void A_reset_read_as_text_clears_the_state_as_the_same_message_applied_as_nodes_does()
    {
        var state = new SessionState();
        state.ApplyEvent(Encoding.UTF8.GetBytes("""{"type":"message","key":"m1","value":{"id":"m1"},"headers":{"operation":"insert"}}"""));
        state.ApplyEvent(Encoding.UTF8.GetBytes("""{"headers":{"control":"snapshot-end","offset":"0"}}"""));
        Assert.Equal(1, state.Count);
        state.ApplyEvent(Encoding.UTF8.GetBytes("""{"headers":{"control":"reset"}}"""));
        Assert.Equal(0, state.Count);
    }

    [Fact]
    public void A_snapshot_replayed_into_a_new_state_materializes_identically()
    {
        var state = new SessionState();
        var events = new JsonArray
        {
            Change("session", "session", "insert", new JsonObject { ["id"] = "s" }),
            Change("message", "m1", "insert", new JsonObject { ["id"] = "m1", ["parts"] = new JsonArray() }),
            Delta("m1", 0, "abc"),
            Change("run", "r1", "insert", new JsonObject { ["id"] = "r1", ["status"] = "started" }),
        };
        var bytes = Encoding.UTF8.GetBytes(events.ToJsonString());
        state.ApplyChunk(bytes.AsSpan(1, bytes.Length - 2), endPosition: 4);

        var snapshot = state.ToSnapshot();
        Assert.Equal("snapshot-start", snapshot[0]!["headers"]!["control"]!.GetValue<string>());
        Assert.Equal(StreamOffset.Format(4), snapshot[^1]!["headers"]!["offset"]!.GetValue<string>());

        var replayed = new SessionState();
        foreach (var message in snapshot)
        {
            replayed.Apply((JsonObject)message!);
        }

        Assert.Equal(state.ToSnapshot().ToJsonString(), replayed.ToSnapshot().ToJsonString().Replace(StreamOffset.Format(0), StreamOffset.Format(4), StringComparison.Ordinal));
    }
}
