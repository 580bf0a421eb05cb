using System.Text.Json.Nodes;

namespace DurableSessions.Sessions.Tests;

public sealed class SessionStateTypedViewTests
{
    [Fact]
    public void Messages_roll_up_streamed_text_in_order()
    {
        var session = new SessionFixture();
        var run = session.StartedRun("What is a durable session?");
        session.Append(
            session.Events.Delta(run.MessageId!, 0, 0, "text", "A session "),
            session.Events.Delta(run.MessageId!, 1, 1, "reasoning", "thinking"),
            session.Events.Delta(run.MessageId!, 2, 0, "text", "that survives."));

        var messages = session.State.Messages;

        Assert.Equal(2, messages.Count);
        Assert.Equal("What is a durable session?", messages[0].Text);
        Assert.Equal(MessageRole.User, messages[0].Role);
        Assert.Equal("A session that survives.", messages[^1].Text);
        Assert.Equal(MessageStatus.Streaming, messages[^1].Status);
        Assert.Equal("thinking", Assert.IsType<ReasoningPart>(messages[^1].Parts![1]).Text);
    }

    [Fact]
    public void The_typed_view_follows_every_change()
    {
        var session = new SessionFixture(NewMessagePolicy.Reject, HandoffPolicy.Pause);
        Assert.Equal("s1", session.State.Session!.Id);
        Assert.Equal("Title", session.State.Session.Title);
        Assert.Equal(NewMessagePolicy.Reject, session.State.Session.NewMessagePolicy);
        Assert.Equal(HandoffPolicy.Pause, session.State.Session.HandoffPolicy);
        Assert.Empty(session.State.Runs);
        Assert.Null(session.State.Handoff);

        var run = session.StartedRun();
        Assert.Equal([run.Id], session.State.Runs.Select(r => r.Id));
        session.Append(session.Events.Presence("user:alice", ParticipantKind.Client, "Alice", PresenceStatus.Joined, session.Clock.GetUtcNow()));
        Assert.Equal(PresenceStatus.Joined, session.State.GetPresence("user:alice")!.Status);
        Assert.Equal("Alice", session.State.Presence.Single().Name);

        session.Apply(SessionRules.TakeControl(session.State, "human:bob", session.Events));
        Assert.Equal(RunStatus.Paused, session.State.Runs.Single().Status);
        Assert.Equal("human:bob", session.State.Handoff!.Holder);

        session.State.Apply(new JsonObject { ["headers"] = new JsonObject { ["control"] = "reset" } });
        Assert.Empty(session.State.Messages);
        Assert.Null(session.State.Session);
    }

    [Fact]
    public void A_field_of_another_kind_where_the_rules_allow_it_never_fails_the_view()
    {
        var state = new SessionState();
        state.Apply(JsonNode.Parse("""{"type":"session","key":"session","value":{"id":"s","title":5},"headers":{"operation":"insert"}}""")!.AsObject());
        state.Apply(JsonNode.Parse("""{"type":"message","key":"m","value":{"id":"m","role":"user","parts":[{"type":"file","url":7}]},"headers":{"operation":"insert"}}""")!.AsObject());

        Assert.Equal("s", state.Session!.Id);
        Assert.Null(state.Session.Title);
        // A part its record would alter is kept exactly as stored.
        var part = Assert.IsType<OtherPart>(state.Messages.Single().Parts!.Single());
        Assert.Equal("file", part.Type);
        Assert.Equal(7, part.Json.GetProperty("url").GetInt32());
    }

    [Fact]
    public void A_delta_reads_again_only_the_message_it_grew()
    {
        var session = new SessionFixture();
        var run = session.StartedRun("First question");
        var before = session.State.Messages;
        var runBefore = session.State.GetRun(run.Id!);

        session.Append(session.Events.Delta(run.MessageId!, 0, 0, "text", "An answer"));
        var after = session.State.Messages;

        // The user's message is the same object; the assistant's is read again with the new text; runs are untouched.
        Assert.Same(before[0], after[0]);
        Assert.NotSame(before[^1], after[^1]);
        Assert.Equal("An answer", after[^1].Text);
        Assert.Same(runBefore, session.State.GetRun(run.Id!));
        Assert.Same(after, session.State.Messages);
    }
}
