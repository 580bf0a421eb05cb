using System.Text.Json;
using System.Text.Json.Nodes;

namespace DurableSessions.Sessions.Tests;

/// <summary>The factory writes what the server wrote before the events were typed, field for field.</summary>
public sealed class SessionEventsWireTests
{
    private const string T = SessionFixture.Time;
    private readonly SessionFixture _session = new();

    private static void AssertJson(string expected, SessionEvent actual)
    {
        var json = actual.ToJson();
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(expected), json), $"Expected {expected}\nActual   {json.ToJsonString()}");

        // Written straight to a writer, it is the same JSON.
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            actual.WriteTo(writer);
        }

        Assert.True(JsonNode.DeepEquals(json, JsonNode.Parse(buffer.WrittenSpan)), $"Written {System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan)}");

        // And back: the typed event read from its JSON writes the same JSON.
        var read = SessionEvent.FromJson(json);
        Assert.NotNull(read);
        Assert.Equal(json.ToJsonString(), read.ToJson().ToJsonString());
    }

    [Fact]
    public void SessionCreated_writes_title_and_notifyUrl_even_when_absent()
        => AssertJson(
            $$$"""{"type":"session","key":"session","value":{"id":"s2","title":null,"newMessagePolicy":"queue","handoffPolicy":"cancel","notifyUrl":null,"createdAt":"{{{T}}}"},"headers":{"operation":"insert","timestamp":"{{{T}}}"}}""",
            _session.Events.SessionCreated("s2"));

    [Fact]
    public void PostedMessage_is_a_complete_user_message()
        => AssertJson(
            $$$"""{"type":"message","key":"m_1","value":{"id":"m_1","role":"user","author":"user:alice","parts":[{"type":"text","text":"hi"}],"status":"complete","createdAt":"{{{T}}}","routedTo":"human:bob"},"headers":{"operation":"insert","timestamp":"{{{T}}}"}}""",
            _session.Events.PostedMessage("user:alice", [new TextPart("hi")], routedTo: "human:bob"));

    [Fact]
    public void Reply_is_an_assistant_message_of_its_run()
        => AssertJson(
            $$$"""{"type":"message","key":"m_9","value":{"id":"m_9","role":"assistant","author":"agent:a","runId":"r_9","parts":[{"type":"text","text":""}],"status":"streaming","createdAt":"{{{T}}}"},"headers":{"operation":"insert","timestamp":"{{{T}}}"}}""",
            _session.Events.Reply(ChangeOperation.Insert, "m_9", "agent:a", "r_9", [new TextPart()], MessageStatus.Streaming, T));

    [Fact]
    public void Delta_names_message_part_and_time()
        => AssertJson(
            $$$"""{"type":"delta","key":"m_9:3","value":{"messageId":"m_9","part":1,"partType":"reasoning","text":"hmm","at":"{{{T}}}"},"headers":{"operation":"insert","timestamp":"{{{T}}}"}}""",
            _session.Events.Delta("m_9", 3, 1, "reasoning", "hmm", _session.Clock.GetUtcNow()));

    [Fact]
    public void RunDelta_names_its_run()
        => AssertJson(
            $$$"""{"type":"delta","key":"m_9:3","value":{"messageId":"m_9","runId":"r_9","part":0,"partType":"text","text":"hi","at":"{{{T}}}"},"headers":{"operation":"insert","timestamp":"{{{T}}}"}}""",
            _session.Events.RunDelta("m_9", "r_9", takenOver: false, 3, 0, "text", "hi", _session.Clock.GetUtcNow()));

    [Fact]
    public void RunDelta_of_a_run_that_took_a_message_over_is_keyed_by_its_run()
        => AssertJson(
            $$$"""{"type":"delta","key":"m_9:r_10:0","value":{"messageId":"m_9","runId":"r_10","part":0,"partType":"text","text":"again","at":"{{{T}}}"},"headers":{"operation":"insert","timestamp":"{{{T}}}"}}""",
            _session.Events.RunDelta("m_9", "r_10", takenOver: true, 0, 0, "text", "again", _session.Clock.GetUtcNow()));

    [Fact]
    public void RunSuperseded_is_interrupted_now_and_names_its_successor()
    {
        var cut = (SessionRun)_session.Events.RunStarted("r_9", "agent:a", "m_9", "m_1").Value!;
        AssertJson(
            $$$"""{"type":"run","key":"r_9","value":{"id":"r_9","agent":"agent:a","messageId":"m_9","trigger":"m_1","status":"interrupted","startedAt":"{{{T}}}","endedAt":"{{{T}}}","supersededBy":"r_10"},"headers":{"operation":"update","timestamp":"{{{T}}}"}}""",
            _session.Events.RunSuperseded(cut, "r_10"));
    }

    [Fact]
    public void RunStatusChanged_keeps_everything_but_the_status()
    {
        var cut = (SessionRun)_session.Events.RunStarted("r_9", "agent:a", "m_9", "m_1").Value!;
        AssertJson(
            $$$"""{"type":"run","key":"r_9","value":{"id":"r_9","agent":"agent:a","messageId":"m_9","trigger":"m_1","status":"interrupted","startedAt":"{{{T}}}"},"headers":{"operation":"update","timestamp":"{{{T}}}"}}""",
            _session.Events.RunStatusChanged(cut, RunStatus.Interrupted));
    }

    [Fact]
    public void A_delta_naming_another_run_than_its_message_is_fenced()
    {
        var state = new SessionState();
        var cut = _session.Events.RunStarted("r_9", "agent:a", "m_9", "m_1");
        var reply = _session.Events.Reply(ChangeOperation.Insert, "m_9", "agent:a", "r_9", [new TextPart()], MessageStatus.Streaming, T);
        var takeover = _session.Events.Reply(ChangeOperation.Update, "m_9", "agent:a", "r_10", [new TextPart()], MessageStatus.Streaming, T);
        state.ApplyMessages([cut.ToJson(), reply.ToJson(), _session.Events.RunSuperseded((SessionRun)cut.Value!, "r_10").ToJson(), takeover.ToJson()], 4);

        var late = _session.Events.RunDelta("m_9", "r_9", takenOver: false, 5, 0, "text", "late").ToJson();
        Assert.Equal(SessionRejection.RunCancelled, SessionRules.CheckFence(state, [late])?.Code);
        var current = _session.Events.RunDelta("m_9", "r_10", takenOver: true, 0, 0, "text", "new").ToJson();
        Assert.Null(SessionRules.CheckFence(state, [current]));
    }

    [Fact]
    public void RunStarted_and_RunEnded()
    {
        var started = _session.Events.RunStarted("r_9", "agent:a", "m_9", "m_1");
        AssertJson(
            $$$"""{"type":"run","key":"r_9","value":{"id":"r_9","agent":"agent:a","messageId":"m_9","trigger":"m_1","status":"started","startedAt":"{{{T}}}"},"headers":{"operation":"insert","timestamp":"{{{T}}}"}}""",
            started);
        AssertJson(
            $$$"""{"type":"run","key":"r_9","value":{"id":"r_9","agent":"agent:a","messageId":"m_9","trigger":"m_1","status":"cancelled","startedAt":"{{{T}}}","endedAt":"{{{T}}}","cancelledBy":"user:alice"},"headers":{"operation":"update","timestamp":"{{{T}}}"}}""",
            _session.Events.RunEnded((SessionRun)started.Value!, RunStatus.Cancelled, cancelledBy: "user:alice"));
    }

    [Fact]
    public void A_run_superseded_by_another_keeps_its_id()
    {
        var run = new SessionRun { Id = "r_1", Status = RunStatus.Paused, SupersededBy = "r_2" };
        var json = new SessionEvent(SessionEventTypes.Run, "r_1", ChangeOperation.Update, run, T).ToJson();
        Assert.Equal("r_2", json["value"]!["supersededBy"]!.GetValue<string>());
        Assert.Equal("r_2", ((SessionRun)SessionEvent.FromJson(json)!.Value!).SupersededBy);
    }

    [Fact]
    public void Controls_stop_and_steer()
    {
        AssertJson(
            $$$"""{"type":"control","key":"c_1","value":{"id":"c_1","action":"cancel","runId":"r_9","by":"user:alice","status":"fenced","createdAt":"{{{T}}}"},"headers":{"operation":"insert","timestamp":"{{{T}}}"}}""",
            _session.Events.StopControl("r_9", "user:alice"));
        AssertJson(
            $$$"""{"type":"control","key":"c_2","value":{"id":"c_2","action":"steer","runId":"r_9","by":"user:alice","text":"shorter","status":"requested","createdAt":"{{{T}}}"},"headers":{"operation":"insert","timestamp":"{{{T}}}"}}""",
            _session.Events.Steer("r_9", "user:alice", "shorter"));
    }

    [Fact]
    public void Presence_joined_is_an_insert_and_left_an_update()
    {
        AssertJson(
            $$$"""{"type":"presence","key":"user:alice","value":{"id":"user:alice","kind":"client","name":null,"status":"joined","lastSeen":"{{{T}}}"},"headers":{"operation":"insert","timestamp":"{{{T}}}"}}""",
            _session.Events.Presence("user:alice", ParticipantKind.Client, null, PresenceStatus.Joined, _session.Clock.GetUtcNow()));
        AssertJson(
            $$$"""{"type":"presence","key":"user:alice","value":{"id":"user:alice","kind":"human","name":"Alice","status":"left","lastSeen":"{{{T}}}"},"headers":{"operation":"update","timestamp":"{{{T}}}"}}""",
            _session.Events.Presence("user:alice", ParticipantKind.Human, "Alice", PresenceStatus.Left, _session.Clock.GetUtcNow()));
    }

    [Fact]
    public void Handoff_to_a_human_and_back_to_the_agents()
    {
        AssertJson(
            $$$"""{"type":"handoff","key":"lease","value":{"holder":"human:bob","kind":"human","since":"{{{T}}}"},"headers":{"operation":"update","timestamp":"{{{T}}}"}}""",
            _session.Events.Handoff("human:bob"));
        AssertJson(
            $$$"""{"type":"handoff","key":"lease","value":{"holder":null,"kind":"agent","since":"{{{T}}}"},"headers":{"operation":"update","timestamp":"{{{T}}}"}}""",
            _session.Events.Handoff(null));
    }

    [Fact]
    public void Every_part_kind_reads_as_its_record_and_writes_back_unchanged()
    {
        var parts = JsonNode.Parse("""
            [{"type":"text","text":"a"},{"type":"reasoning","text":"b"},
             {"type":"tool-call","toolCallId":"t1","name":"search","input":{"q":"x"}},
             {"type":"tool-result","toolCallId":"t1","output":[1,2]},
             {"type":"data","data":{"k":true}},{"type":"file","url":"https://x/y.png","mediaType":"image/png"},
             {"type":"x-custom","anything":{"goes":1}},{"type":"text","text":"c","extra":"kept"}]
            """)!.AsArray();

        var typed = parts.Select(p => MessagePart.FromJson((JsonObject)p!)).ToList();

        Assert.Equal([typeof(TextPart), typeof(ReasoningPart), typeof(ToolCallPart), typeof(ToolResultPart), typeof(DataPart), typeof(FilePart), typeof(OtherPart), typeof(TextPart)], typed.Select(p => p.GetType()));
        Assert.Equal("search", ((ToolCallPart)typed[2]).Name);
        Assert.Equal("x-custom", typed[6].Type);
        var message = new SessionMessage { Id = "m", Role = MessageRole.User, Parts = typed };
        var written = JsonSerializer.SerializeToNode(message, SessionJsonContext.Default.SessionMessage)!;
        Assert.True(JsonNode.DeepEquals(parts, written["parts"]), written["parts"]!.ToJsonString());
        Assert.Equal("ac", message.Text);
    }

    [Fact]
    public void FromJson_skips_control_messages_unknown_types_and_unreadable_events()
    {
        Assert.Null(SessionEvent.FromJson(JsonNode.Parse("""{"headers":{"control":"reset"}}""")));
        Assert.Null(SessionEvent.FromJson(JsonNode.Parse("""{"type":"custom","key":"k","value":{},"headers":{"operation":"insert"}}""")));
        Assert.Null(SessionEvent.FromJson(JsonNode.Parse("""{"type":"run","key":"r","value":{"status":5},"headers":{"operation":"insert"}}""")));
    }
}
