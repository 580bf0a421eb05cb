using System.Text.Json.Nodes;

namespace DurableSessions.Sessions.Tests;

public sealed class SessionRulesTests
{
    [Fact]
    public void PostMessage_queue_policy_with_an_active_run_appends_only_the_message()
    {
        var session = new SessionFixture(NewMessagePolicy.Queue);
        var run = session.StartedRun();

        var decision = SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "more"), session.Events);

        var message = Assert.IsType<SessionMessage>(Assert.Single(decision.Events).Value);
        Assert.Equal("more", message.Text);
        Assert.Equal(message.Id, decision.Id);
        session.Apply(decision);
        Assert.Equal(RunStatus.Started, session.State.GetRun(run.Id!)!.Status);
    }

    [Fact]
    public void PostMessage_with_an_id_already_posted_by_the_same_author_is_accepted_again_with_nothing_to_append()
    {
        var session = new SessionFixture(NewMessagePolicy.Interrupt);
        var first = SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "hello") { Id = "m-client-1" }, session.Events);
        Assert.Equal("m-client-1", first.Id);
        Assert.Equal("m-client-1", Assert.IsType<SessionMessage>(Assert.Single(first.Events).Value).Id);
        session.Apply(first);
        var run = session.StartedRun("a later question");

        // A retry of the first post, while a run is active under the interrupt policy: answered as before, and the run
        // is not interrupted by it.
        var retry = SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "hello") { Id = "m-client-1" }, session.Events);
        Assert.False(retry.IsRejected);
        Assert.Equal("m-client-1", retry.Id);
        Assert.Empty(retry.Events);
        Assert.Equal(RunStatus.Started, session.State.GetRun(run.Id!)!.Status);

        // The same id from someone else, or for an agent's reply, is another message: refused.
        var other = SessionRules.PostMessage(session.State, new PostMessageRequest("user:bob", "hello") { Id = "m-client-1" }, session.Events);
        Assert.Equal(SessionRejection.MessageIdTaken, other.Rejection?.Code);
        var reply = SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "hello") { Id = run.MessageId }, session.Events);
        Assert.Equal(SessionRejection.MessageIdTaken, reply.Rejection?.Code);
    }

    [Fact]
    public void PostMessage_under_the_interrupt_policy_from_a_poster_who_may_not_stop_runs_is_refused_while_one_is_active()
    {
        var session = new SessionFixture(NewMessagePolicy.Interrupt);
        var run = session.StartedRun();

        var refused = SessionRules.PostMessage(session.State, new PostMessageRequest("user:bob", "stop that") { MayStop = false }, session.Events);
        Assert.Equal(SessionRejection.RunActive, refused.Rejection?.Code);
        Assert.Contains("control", refused.Rejection?.Message, StringComparison.Ordinal);
        Assert.Equal(RunStatus.Started, session.State.GetRun(run.Id!)!.Status);

        // Once no run is going there is nothing to stop: the same poster's message is taken.
        session.Apply(SessionRules.Cancel(session.State, run.Id!, "user:alice", session.Events));
        Assert.False(SessionRules.PostMessage(session.State, new PostMessageRequest("user:bob", "now?") { MayStop = false }, session.Events).IsRejected);
    }

    [Fact]
    public void A_user_message_appended_directly_is_routed_to_the_human_holding_the_session_and_refused_under_reject_while_a_run_is_active()
    {
        var held = new SessionFixture();
        held.Apply(SessionRules.TakeControl(held.State, "human:hana", held.Events));
        JsonNode Ask(SessionFixture session, string author, string? routedTo = null) => session.Events.PostedMessage(author, [new TextPart("hi")], MessageRole.User, routedTo).ToJson();
        Assert.Equal("NOT_ROUTED", SessionEventRules.CheckAppend(held.State, [Ask(held, "user:alice")], SessionWriter.Open)?.Code);
        Assert.Null(SessionEventRules.CheckAppend(held.State, [Ask(held, "user:alice", routedTo: "human:hana")], SessionWriter.Open));
        Assert.Null(SessionEventRules.CheckAppend(held.State, [Ask(held, "human:hana")], SessionWriter.Open));

        // An update of a key the session does not hold is a new message too; one it holds keeps whom it is routed to.
        var asUpdate = Ask(held, "user:alice");
        asUpdate["headers"]!["operation"] = "update";
        Assert.Equal("NOT_ROUTED", SessionEventRules.CheckAppend(held.State, [asUpdate], SessionWriter.Open)?.Code);
        var routed = held.Events.PostedMessage("user:alice", [new TextPart("hi")], MessageRole.User, "human:hana");
        held.Append(routed);
        var unrouted = routed.ToJson();
        unrouted["headers"]!["operation"] = "update";
        ((JsonObject)unrouted["value"]!).Remove("routedTo");
        Assert.Equal("NOT_ROUTED", SessionEventRules.CheckAppend(held.State, [unrouted], SessionWriter.Open)?.Code);

        var rejecting = new SessionFixture(NewMessagePolicy.Reject);
        var run = rejecting.StartedRun();
        var refused = SessionEventRules.CheckAppend(rejecting.State, [Ask(rejecting, "user:alice")], SessionWriter.Open);
        Assert.Equal((409, SessionRejection.RunActive), (refused?.Status, refused?.Code));
        rejecting.Apply(SessionRules.Cancel(rejecting.State, run.Id!, "user:alice", rejecting.Events));
        Assert.Null(SessionEventRules.CheckAppend(rejecting.State, [Ask(rejecting, "user:alice")], SessionWriter.Open));
    }

    [Fact]
    public void PostMessage_interrupt_policy_cancels_the_active_run_in_the_same_append()
    {
        var session = new SessionFixture(NewMessagePolicy.Interrupt);
        var run = session.StartedRun();

        var decision = SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "stop that"), session.Events);

        Assert.Equal([SessionEventTypes.Control, SessionEventTypes.Message, SessionEventTypes.Run, SessionEventTypes.Message], decision.Events.Select(e => e.Type));
        var control = Assert.IsType<SessionControl>(decision.Events[0].Value);
        Assert.Equal(ControlAction.Cancel, control.Action);
        Assert.Equal("interrupted by a new message", control.Reason);
        session.Apply(decision);
        Assert.Equal(RunStatus.Cancelled, session.State.GetRun(run.Id!)!.Status);
        Assert.Equal(MessageStatus.Cancelled, session.State.GetMessage(run.MessageId!)!.Status);
        Assert.Equal("stop that", session.State.Messages[^1].Text);
    }

    [Fact]
    public void PostMessage_reject_policy_refuses_a_user_message_while_a_run_is_active()
    {
        var session = new SessionFixture(NewMessagePolicy.Reject);
        var run = session.StartedRun();

        var decision = SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "again"), session.Events);

        Assert.True(decision.IsRejected);
        Assert.Equal(SessionRejection.RunActive, decision.Rejection.Code);
        Assert.Contains(run.Id!, decision.Rejection.Message, StringComparison.Ordinal);
        Assert.Empty(decision.Events);
    }

    [Fact]
    public void PostMessage_reject_policy_still_takes_an_assistant_message()
    {
        var session = new SessionFixture(NewMessagePolicy.Reject);
        session.StartedRun();

        var decision = SessionRules.PostMessage(session.State, new PostMessageRequest("human:bob", [new TextPart("I can help")], MessageRole.Assistant), session.Events);

        Assert.False(decision.IsRejected);
        Assert.Equal(MessageRole.Assistant, ((SessionMessage)decision.Events[0].Value!).Role);
    }

    [Fact]
    public void PostMessage_while_a_human_holds_the_session_routes_user_messages_to_them()
    {
        var session = new SessionFixture();
        session.Apply(SessionRules.TakeControl(session.State, "human:bob", session.Events));

        var fromUser = (SessionMessage)SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "hi"), session.Events).Events[0].Value!;
        var fromHolder = (SessionMessage)SessionRules.PostMessage(session.State, new PostMessageRequest("human:bob", "hi yourself"), session.Events).Events[0].Value!;

        Assert.Equal("human:bob", fromUser.RoutedTo);
        Assert.Null(fromHolder.RoutedTo);
    }

    [Fact]
    public void PostMessage_with_a_part_that_breaks_the_event_rules_is_an_invalid_message()
    {
        var session = new SessionFixture();
        var part = MessagePart.FromJson(new JsonObject { ["type"] = "text", ["text"] = 5 });

        var decision = SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", [part], MessageRole.User), session.Events);

        Assert.True(decision.IsRejected);
        Assert.Equal(SessionRejection.InvalidMessage, decision.Rejection.Code);
        Assert.StartsWith("Invalid message: ", decision.Rejection.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Cancel_fences_the_run_and_the_fence_refuses_more_content_for_it()
    {
        var session = new SessionFixture();
        var run = session.StartedRun();

        var decision = SessionRules.Cancel(session.State, run.Id!, "user:alice", session.Events);
        session.Apply(decision);

        var control = session.State.Controls.Single();
        Assert.Equal(decision.Id, control.Id);
        Assert.Equal(ControlStatus.Fenced, control.Status);
        var cancelled = session.State.GetRun(run.Id!)!;
        Assert.Equal(RunStatus.Cancelled, cancelled.Status);
        Assert.Equal("user:alice", cancelled.CancelledBy);
        Assert.NotNull(cancelled.EndedAt);

        var delta = session.Events.Delta(run.MessageId!, 0, 0, "text", "late").ToJson();
        var refused = SessionRules.CheckFence(session.State, [delta]);
        Assert.Equal(SessionRejection.RunCancelled, refused?.Code);
        Assert.Equal(409, refused?.Status);
        Assert.Null(SessionRules.CheckFence(session.State, [session.Events.Steer("r_other", "x", "y").ToJson()]));
    }

    [Fact]
    public void The_fence_holds_a_cancelled_reply_against_a_message_change_that_leaves_its_run_out_or_names_another()
    {
        var session = new SessionFixture();
        var run = session.StartedRun();
        session.Apply(SessionRules.Cancel(session.State, run.Id!, "user:alice", session.Events));
        JsonNode Rewrite(string? runId) => session.Events.Reply(ChangeOperation.Update, run.MessageId!, run.Agent!, runId!, [new TextPart("late")], MessageStatus.Complete, SessionFixture.Time).ToJson();

        // An update replaces the whole value: without its runId it would still rewrite the cancelled reply.
        var withoutRun = Rewrite(run.Id);
        ((JsonObject)withoutRun["value"]!).Remove("runId");
        Assert.Equal(SessionRejection.RunCancelled, SessionRules.CheckFence(session.State, [withoutRun])?.Code);
        Assert.Equal(SessionRejection.RunCancelled, SessionRules.CheckFence(session.State, [Rewrite("r_nobody")])?.Code);
        Assert.Equal(SessionRejection.RunCancelled, SessionRules.CheckFence(session.State, [Rewrite(run.Id)])?.Code);

        // A new run that starts in the same append, or started already, writes the reply again; a delete is not the
        // fence's to judge.
        var started = session.Events.RunStarted("r_new", run.Agent!, run.MessageId!, run.Trigger!);
        Assert.Null(SessionRules.CheckFence(session.State, [started.ToJson(), Rewrite("r_new")]));
        session.Append(started);
        Assert.Null(SessionRules.CheckFence(session.State, [Rewrite("r_new")]));
        Assert.Null(SessionRules.CheckFence(session.State, [JsonNode.Parse($$$"""{"type":"message","key":"{{{run.MessageId}}}","headers":{"operation":"delete"}}""")]));
    }

    [Fact]
    public void An_agent_starts_one_run_per_message_unless_it_takes_over_a_cut_one_or_is_asked_to_write_the_reply_again()
    {
        var session = new SessionFixture();
        var run = session.StartedRun();
        JsonNode Start(string runId, string agent = "agent:helper") => session.Events.RunStarted(runId, agent, "m_" + runId, run.Trigger!).ToJson();

        // A worker that read the session before another took its turn over starts a second answer beside the first.
        var second = SessionRules.CheckFence(session.State, [Start("r_late")]);
        Assert.Equal((409, SessionRejection.AlreadyAnswered), (second?.Status, second?.Code));
        Assert.Equal(SessionRejection.AlreadyAnswered, SessionRules.StartRun(session.State, "agent:helper", run.Trigger!, session.Events).Rejection?.Code);

        // A takeover ends the cut run in the same append; two starts in one append are one too many; another agent answers
        // in its own run.
        Assert.Null(SessionRules.CheckFence(session.State, [session.Events.RunSuperseded(run, "r_take").ToJson(), Start("r_take")]));
        Assert.Equal(SessionRejection.AlreadyAnswered, SessionRules.CheckFence(session.State, [session.Events.RunSuperseded(run, "r_a").ToJson(), Start("r_a"), Start("r_b")])?.Code);
        Assert.Null(SessionRules.CheckFence(session.State, [Start("r_other", "agent:other")]));

        // Finished: answered, until the reply is asked to be written again.
        session.Apply(SessionRules.EndRun(session.State, run.Id!, RunStatus.Finished, [new TextPart("done")], session.Events, finishReason: "stop"));
        Assert.Equal(SessionRejection.AlreadyAnswered, SessionRules.CheckFence(session.State, [Start("r_late")])?.Code);
        session.Apply(SessionRules.Regenerate(session.State, run.MessageId, "user:alice", session.Events));
        Assert.Null(SessionRules.CheckFence(session.State, [Start("r_again")]));

        // A run the session holds already is not started again by restating it.
        Assert.Null(SessionRules.CheckFence(session.State, [session.Events.RunStarted(run.Id!, "agent:helper", run.MessageId!, run.Trigger!).ToJson()]));
    }

    [Fact]
    public void A_session_read_whole_awaits_its_agents_for_a_question_unanswered_a_run_still_started_or_a_reply_asked_again()
    {
        var session = new SessionFixture();
        Assert.False(SessionRules.AwaitsAgents(session.State));
        session.Apply(SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "hello"), session.Events));
        Assert.True(SessionRules.AwaitsAgents(session.State));
        var run = SessionRules.StartRun(session.State, "agent:helper", session.State.Messages[^1].Id!, session.Events);
        session.Apply(run);
        Assert.True(SessionRules.AwaitsAgents(session.State));
        session.Apply(SessionRules.EndRun(session.State, run.Id!, RunStatus.Finished, [new TextPart("hi")], session.Events));
        Assert.False(SessionRules.AwaitsAgents(session.State));

        var reply = session.State.GetRun(run.Id!)!.MessageId;
        session.Apply(SessionRules.Regenerate(session.State, reply, "user:alice", session.Events));
        Assert.True(SessionRules.AwaitsAgents(session.State));
        session.Append(session.Events.RunStarted("r_again", "agent:helper", reply!, session.State.GetRun(run.Id!)!.Trigger!));
        session.Apply(SessionRules.EndRun(session.State, "r_again", RunStatus.Finished, [new TextPart("hi again")], session.Events));
        Assert.False(SessionRules.AwaitsAgents(session.State));

        // A question another agent of the session has not answered waits for it.
        session.Append(session.Events.RunStarted("r_other", "agent:other", "m_other", session.State.GetRun(run.Id!)!.Trigger!));
        session.Apply(SessionRules.EndRun(session.State, "r_other", RunStatus.Finished, [new TextPart("me too")], session.Events));
        Assert.False(SessionRules.AwaitsAgents(session.State));
        session.Apply(SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "and then?"), session.Events));
        var next = SessionRules.StartRun(session.State, "agent:helper", session.State.Messages[^1].Id!, session.Events);
        session.Apply(next);
        session.Apply(SessionRules.EndRun(session.State, next.Id!, RunStatus.Finished, [new TextPart("then this")], session.Events));
        Assert.True(SessionRules.AwaitsAgents(session.State));

        // While a human holds the session, its agents are not asked; the hand-back asks them.
        session.Apply(SessionRules.TakeControl(session.State, "human:bob", session.Events));
        Assert.False(SessionRules.AwaitsAgents(session.State));
    }

    [Fact]
    public void Cancel_of_a_finished_run_is_refused_as_not_active()
    {
        var session = new SessionFixture();
        var run = session.StartedRun();
        session.Apply(SessionRules.EndRun(session.State, run.Id!, RunStatus.Finished, [new TextPart("done")], session.Events, finishReason: "stop"));

        var decision = SessionRules.Cancel(session.State, run.Id!, "user:alice", session.Events);

        Assert.Equal(SessionRejection.RunNotActive, decision.Rejection?.Code);
        Assert.Equal("The run is already finished.", decision.Rejection?.Message);
        Assert.Equal(SessionRejection.RunNotFound, SessionRules.Cancel(session.State, "r_missing", "user:alice", session.Events).Rejection?.Code);
    }

    [Fact]
    public void Steer_applies_only_to_a_running_run()
    {
        var session = new SessionFixture();
        var run = session.StartedRun();

        var steer = SessionRules.Steer(session.State, run.Id!, "user:alice", "shorter", session.Events);
        var control = Assert.IsType<SessionControl>(Assert.Single(steer.Events).Value);
        Assert.Equal(ControlAction.Steer, control.Action);
        Assert.Equal("shorter", control.Text);
        Assert.Equal(ControlStatus.Requested, control.Status);

        session.Apply(SessionRules.Cancel(session.State, run.Id!, "user:alice", session.Events));
        Assert.Equal(SessionRejection.RunNotActive, SessionRules.Steer(session.State, run.Id!, "user:alice", "shorter", session.Events).Rejection?.Code);
        Assert.Equal(SessionRejection.RunNotFound, SessionRules.Steer(session.State, "r_missing", "user:alice", "x", session.Events).Rejection?.Code);
    }

    [Fact]
    public void A_cancel_or_steer_sent_again_with_its_control_id_is_accepted_with_nothing_appended()
    {
        var session = new SessionFixture();
        var run = session.StartedRun();

        var steer = SessionRules.Steer(session.State, run.Id!, "user:alice", "shorter", session.Events, controlId: "c-steer");
        Assert.Equal("c-steer", steer.Id);
        session.Apply(steer);
        var again = SessionRules.Steer(session.State, run.Id!, "user:alice", "shorter", session.Events, controlId: "c-steer");
        Assert.False(again.IsRejected);
        Assert.Equal("c-steer", again.Id);
        Assert.Empty(again.Events);

        var cancel = SessionRules.Cancel(session.State, run.Id!, "user:alice", session.Events, controlId: "c-cancel");
        Assert.Equal("c-cancel", cancel.Id);
        session.Apply(cancel);

        // The run has ended since the first cancel; its repeat is still the same cancel, not a refusal.
        var repeated = SessionRules.Cancel(session.State, run.Id!, "user:alice", session.Events, controlId: "c-cancel");
        Assert.False(repeated.IsRejected);
        Assert.Equal("c-cancel", repeated.Id);
        Assert.Empty(repeated.Events);
        Assert.Equal(["c-steer", "c-cancel"], session.State.Controls.Select(c => c.Id));

        // Without its id, a cancel of the ended run is refused as before.
        Assert.Equal(SessionRejection.RunNotActive, SessionRules.Cancel(session.State, run.Id!, "user:alice", session.Events).Rejection?.Code);
    }

    [Theory]
    [InlineData("another participant")]
    [InlineData("another action")]
    [InlineData("another run")]
    public void A_control_id_the_session_holds_for_another_control_is_refused(string differs)
    {
        var session = new SessionFixture();
        var run = session.StartedRun();
        var other = session.StartedRun();
        session.Apply(SessionRules.Steer(session.State, run.Id!, "user:alice", "shorter", session.Events, controlId: "c-1"));

        // Each differs from the stored steer in one thing only.
        var decision = differs switch
        {
            "another participant" => SessionRules.Steer(session.State, run.Id!, "user:bob", "shorter", session.Events, controlId: "c-1"),
            "another action" => SessionRules.Cancel(session.State, run.Id!, "user:alice", session.Events, controlId: "c-1"),
            _ => SessionRules.Steer(session.State, other.Id!, "user:alice", "shorter", session.Events, controlId: "c-1"),
        };

        Assert.Equal(SessionRejection.ControlIdTaken, decision.Rejection?.Code);
        Assert.Empty(decision.Events);
    }

    [Fact]
    public void TakeControl_under_the_cancel_policy_cancels_the_active_run()
    {
        var session = new SessionFixture(handoff: HandoffPolicy.Cancel);
        var run = session.StartedRun();

        session.Apply(SessionRules.TakeControl(session.State, "human:bob", session.Events));

        Assert.Equal("human:bob", session.State.HumanHolder);
        Assert.Equal(RunStatus.Cancelled, session.State.GetRun(run.Id!)!.Status);
        Assert.Equal("a human took over", session.State.Controls.Single().Reason);
    }

    [Theory]
    [InlineData("cancel")]
    [InlineData("pause")]
    public void TakeControl_stops_every_agent_answering_not_only_the_latest(string policy)
    {
        var session = new SessionFixture(handoff: new HandoffPolicy(policy));
        var first = session.StartedRun();
        session.Apply(SessionRules.StartRun(session.State, "agent:other", first.Trigger!, session.Events));
        var second = session.State.Runs[^1];

        session.Apply(SessionRules.TakeControl(session.State, "human:bob", session.Events));

        var stopped = policy == "pause" ? RunStatus.Paused : RunStatus.Cancelled;
        Assert.Equal(stopped, session.State.GetRun(first.Id!)!.Status);
        Assert.Equal(stopped, session.State.GetRun(second.Id!)!.Status);
        Assert.Equal(2, session.State.Controls.Count);
        Assert.Null(session.State.ActiveRun);
    }

    [Fact]
    public void PostMessage_interrupt_policy_cancels_every_run_still_going()
    {
        var session = new SessionFixture(NewMessagePolicy.Interrupt);
        var first = session.StartedRun();
        session.Apply(SessionRules.StartRun(session.State, "agent:other", first.Trigger!, session.Events));
        var second = session.State.Runs[^1];

        session.Apply(SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "stop, both of you"), session.Events));

        Assert.Equal(RunStatus.Cancelled, session.State.GetRun(first.Id!)!.Status);
        Assert.Equal(RunStatus.Cancelled, session.State.GetRun(second.Id!)!.Status);
        Assert.Equal(MessageStatus.Cancelled, session.State.GetMessage(second.MessageId!)!.Status);
        Assert.Empty(session.State.StartedRuns);
    }

    [Fact]
    public void TakeControl_under_the_pause_policy_pauses_the_run_and_its_reply()
    {
        var session = new SessionFixture(handoff: HandoffPolicy.Pause);
        var run = session.StartedRun();

        session.Apply(SessionRules.TakeControl(session.State, "human:bob", session.Events));

        Assert.Equal(RunStatus.Paused, session.State.GetRun(run.Id!)!.Status);
        Assert.Equal(MessageStatus.Paused, session.State.GetMessage(run.MessageId!)!.Status);
        Assert.Equal(ControlAction.Pause, session.State.Controls.Single().Action);
        Assert.Equal(ParticipantKind.Human, session.State.Handoff!.Kind);
    }

    [Fact]
    public void TakeControl_again_by_the_holder_writes_nothing_and_by_a_second_human_is_refused()
    {
        var session = new SessionFixture();
        session.Apply(SessionRules.TakeControl(session.State, "human:bob", session.Events));

        var again = SessionRules.TakeControl(session.State, "human:bob", session.Events);
        var second = SessionRules.TakeControl(session.State, "human:carol", session.Events);

        Assert.False(again.IsRejected);
        Assert.Empty(again.Events);
        Assert.Equal(SessionRejection.LeaseHeld, second.Rejection?.Code);
        Assert.Equal("human:bob already holds this session.", second.Rejection?.Message);
    }

    [Fact]
    public void ReturnControl_is_for_the_holder_only_and_gives_the_session_back_to_the_agents()
    {
        var session = new SessionFixture();
        session.Apply(SessionRules.TakeControl(session.State, "human:bob", session.Events));

        Assert.Equal(SessionRejection.NotHolder, SessionRules.ReturnControl(session.State, "human:carol", session.Events).Rejection?.Code);
        session.Apply(SessionRules.ReturnControl(session.State, "human:bob", session.Events));

        Assert.Null(session.State.HumanHolder);
        Assert.Equal(ParticipantKind.Agent, session.State.Handoff!.Kind);
        Assert.Null(session.State.Handoff.Holder);
        Assert.Equal(SessionRejection.NotHolder, SessionRules.ReturnControl(session.State, "human:bob", session.Events).Rejection?.Code);
    }

    [Fact]
    public void StartRun_writes_a_started_run_and_an_empty_streaming_reply()
    {
        var session = new SessionFixture();
        var run = session.StartedRun();

        Assert.Equal(RunStatus.Started, run.Status);
        Assert.Equal("agent:helper", run.Agent);
        Assert.Equal(run, session.State.ActiveRun);
        var reply = session.State.GetMessage(run.MessageId!)!;
        Assert.Equal(MessageStatus.Streaming, reply.Status);
        Assert.Equal(MessageRole.Assistant, reply.Role);
        Assert.Equal(run.Id, reply.RunId);
        Assert.Equal(string.Empty, reply.Text);
    }

    [Fact]
    public void StartRun_is_refused_for_a_missing_message_and_while_a_human_holds_the_session()
    {
        var session = new SessionFixture();
        Assert.Equal(SessionRejection.MessageNotFound, SessionRules.StartRun(session.State, "agent:helper", "m_missing", session.Events).Rejection?.Code);

        session.Apply(SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "hi"), session.Events));
        session.Apply(SessionRules.TakeControl(session.State, "human:bob", session.Events));
        Assert.Equal(SessionRejection.LeaseHeld, SessionRules.StartRun(session.State, "agent:helper", session.State.Messages[0].Id!, session.Events).Rejection?.Code);
    }

    [Fact]
    public void EndRun_completes_the_reply_and_finishes_the_run_once()
    {
        var session = new SessionFixture();
        var run = session.StartedRun();

        session.Apply(SessionRules.EndRun(session.State, run.Id!, RunStatus.Finished, [new TextPart("Hi there")], session.Events, finishReason: "stop"));

        var finished = session.State.GetRun(run.Id!)!;
        Assert.Equal(RunStatus.Finished, finished.Status);
        Assert.Equal("stop", finished.FinishReason);
        Assert.Null(session.State.ActiveRun);
        Assert.Equal("Hi there", session.State.GetMessage(run.MessageId!)!.Text);
        Assert.Equal(MessageStatus.Complete, session.State.GetMessage(run.MessageId!)!.Status);
        Assert.Equal(SessionRejection.RunNotActive, SessionRules.EndRun(session.State, run.Id!, RunStatus.Finished, null, session.Events).Rejection?.Code);
    }

    [Fact]
    public void EndRun_after_a_cancel_is_refused_by_the_fence()
    {
        var session = new SessionFixture();
        var run = session.StartedRun();
        session.Apply(SessionRules.Cancel(session.State, run.Id!, "user:alice", session.Events));

        var decision = SessionRules.EndRun(session.State, run.Id!, RunStatus.Failed, null, session.Events, error: "boom");

        Assert.Equal(SessionRejection.RunCancelled, decision.Rejection?.Code);
        Assert.Throws<ArgumentOutOfRangeException>(() => SessionRules.EndRun(session.State, run.Id!, RunStatus.Cancelled, null, session.Events));
    }

    [Fact]
    public void EndRun_failed_marks_the_reply_failed_with_the_error()
    {
        var session = new SessionFixture();
        var run = session.StartedRun();

        session.Apply(SessionRules.EndRun(session.State, run.Id!, RunStatus.Failed, null, session.Events, error: "boom"));

        Assert.Equal("boom", session.State.GetRun(run.Id!)!.Error);
        Assert.Equal(MessageStatus.Failed, session.State.GetMessage(run.MessageId!)!.Status);
        Assert.Equal("boom", session.State.GetMessage(run.MessageId!)!.Error);
    }

    [Fact]
    public void Regenerate_of_a_finished_reply_asks_for_it_again_and_the_reply_the_user_message_or_none_name_the_same()
    {
        var session = new SessionFixture();
        var run = session.AnsweredRun("What is a fence?", [new TextPart("First answer")]);

        var decision = SessionRules.Regenerate(session.State, run.MessageId, "user:alice", session.Events);

        var control = Assert.IsType<SessionControl>(Assert.Single(decision.Events).Value);
        Assert.Equal(ControlAction.Regenerate, control.Action);
        Assert.Equal(ControlStatus.Requested, control.Status);
        Assert.Equal(run.Id, control.RunId);
        Assert.Equal("user:alice", control.By);
        Assert.Equal(control.Id, decision.Id);
        session.Apply(decision);

        // Asked again before any run takes it up, by the reply, the question or neither: the same request, nothing new.
        foreach (var named in new[] { run.MessageId, run.Trigger, null })
        {
            var again = SessionRules.Regenerate(session.State, named, "user:bob", session.Events);
            Assert.False(again.IsRejected, again.Rejection?.Message);
            Assert.Equal(control.Id, again.Id);
            Assert.Empty(again.Events);
        }

        // The run keeps what it was: the reply is written again by a new run, not by changing this one.
        Assert.Equal(RunStatus.Finished, session.State.GetRun(run.Id!)!.Status);
        Assert.Equal("First answer", session.State.GetMessage(run.MessageId!)!.Text);
    }

    [Fact]
    public void Regenerate_of_a_reply_still_being_written_cancels_its_run_in_the_same_append_and_the_fence_lets_only_a_new_run_write_the_message()
    {
        var session = new SessionFixture();
        var run = session.StartedRun();

        var decision = SessionRules.Regenerate(session.State, run.MessageId, "user:alice", session.Events);

        Assert.Equal([SessionEventTypes.Control, SessionEventTypes.Message, SessionEventTypes.Run, SessionEventTypes.Control], decision.Events.Select(e => e.Type));
        Assert.Equal(ControlAction.Cancel, Assert.IsType<SessionControl>(decision.Events[0].Value).Action);
        Assert.Equal(ControlAction.Regenerate, Assert.IsType<SessionControl>(decision.Events[3].Value).Action);
        session.Apply(decision);
        Assert.Equal(RunStatus.Cancelled, session.State.GetRun(run.Id!)!.Status);

        // The cancelled run's late writes are fenced; a new run answering the same message again, in the same message, is
        // not (its start, as an agent writes it: the run, the reply reset under the new run, then its deltas).
        var late = session.Events.RunDelta(run.MessageId!, run.Id!, takenOver: false, 7, 0, "text", " late");
        Assert.Equal(SessionRejection.RunCancelled, SessionRules.CheckFence(session.State, [late.ToJson()])?.Code);
        var started = session.Events.RunStarted("r_again", "agent:helper", run.MessageId!, run.Trigger!);
        var reset = session.Events.Reply(ChangeOperation.Update, run.MessageId!, "agent:helper", "r_again", [new TextPart()], MessageStatus.Streaming, SessionFixture.Time);
        Assert.Null(SessionRules.CheckFence(session.State, [started.ToJson(), reset.ToJson()]));
        session.Append(started, reset);
        var delta = session.Events.RunDelta(run.MessageId!, "r_again", takenOver: true, 0, 0, "text", "New");
        Assert.Null(SessionRules.CheckFence(session.State, [delta.ToJson()]));
        Assert.Equal(SessionRejection.RunCancelled, SessionRules.CheckFence(session.State, [late.ToJson()])?.Code);

        // Once a new run writes the reply, the request is taken up: another one is a new request, for the new run.
        var next = SessionRules.Regenerate(session.State, run.MessageId, "user:alice", session.Events);
        Assert.Equal("r_again", Assert.IsType<SessionControl>(next.Events[^1].Value).RunId);
    }

    [Fact]
    public void Regenerate_sent_again_with_its_control_id_is_accepted_with_nothing_appended_and_another_controls_id_is_refused()
    {
        var session = new SessionFixture();
        var run = session.AnsweredRun();
        session.Apply(SessionRules.Regenerate(session.State, run.MessageId, "user:alice", session.Events, controlId: "c-client-1"));
        session.Append(session.Events.RunStarted("r_again", "agent:helper", run.MessageId!, run.Trigger!));

        var retry = SessionRules.Regenerate(session.State, run.MessageId, "user:alice", session.Events, controlId: "c-client-1");
        Assert.Equal("c-client-1", retry.Id);
        Assert.Empty(retry.Events);
        Assert.Equal(SessionRejection.ControlIdTaken, SessionRules.Regenerate(session.State, run.MessageId, "user:bob", session.Events, controlId: "c-client-1").Rejection?.Code);
    }

    [Fact]
    public void Regenerate_is_refused_for_a_missing_message_a_message_no_agent_wrote_an_earlier_reply_and_while_a_human_holds_the_session()
    {
        var session = new SessionFixture();
        Assert.Equal(SessionRejection.NotAReply, SessionRules.Regenerate(session.State, null, "user:alice", session.Events).Rejection?.Code);
        var first = session.AnsweredRun("first");
        session.Apply(SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "second"), session.Events));
        var unanswered = session.State.Messages[^1].Id!;

        Assert.Equal(SessionRejection.MessageNotFound, SessionRules.Regenerate(session.State, "m_missing", "user:alice", session.Events).Rejection?.Code);
        Assert.Equal(SessionRejection.NotAReply, SessionRules.Regenerate(session.State, unanswered, "user:alice", session.Events).Rejection?.Code);
        Assert.Equal(SessionRejection.NotAReply, SessionRules.Regenerate(session.State, null, "user:alice", session.Events).Rejection?.Code);
        Assert.Equal(SessionRejection.NotLatestReply, SessionRules.Regenerate(session.State, first.MessageId, "user:alice", session.Events).Rejection?.Code);
        Assert.Equal(SessionRejection.NotLatestReply, SessionRules.Regenerate(session.State, first.Trigger, "user:alice", session.Events).Rejection?.Code);

        var human = new PostMessageRequest("human:bob", [new TextPart("A person's answer")], MessageRole.Assistant);
        session.Apply(SessionRules.PostMessage(session.State, human, session.Events));
        Assert.Equal(SessionRejection.NotAReply, SessionRules.Regenerate(session.State, session.State.Messages[^1].Id, "user:alice", session.Events).Rejection?.Code);

        var second = SessionRules.StartRun(session.State, "agent:helper", unanswered, session.Events);
        session.Apply(second);
        session.Apply(SessionRules.TakeControl(session.State, "human:bob", session.Events));
        Assert.Equal(SessionRejection.LeaseHeld, SessionRules.Regenerate(session.State, unanswered, "user:alice", session.Events).Rejection?.Code);
    }

    [Fact]
    public void Regenerate_names_the_agents_latest_reply_only_and_a_caller_without_control_cannot_stop_one_being_written()
    {
        var session = new SessionFixture(handoff: HandoffPolicy.Pause);

        // Answered again after the hand-back, in a message of its own: the paused reply is not what would be written again.
        var (paused, latest) = PausedAndAnsweredAgain(session, "question");
        Assert.Equal(SessionRejection.NotLatestReply, SessionRules.Regenerate(session.State, paused.MessageId, "user:alice", session.Events).Rejection?.Code);

        // Still being written: a caller who may not stop it is refused, with nothing appended.
        var refused = SessionRules.Regenerate(session.State, latest.MessageId, "user:alice", session.Events, mayStop: false);
        Assert.Equal(SessionRejection.RunActive, refused.Rejection?.Code);
        Assert.Empty(refused.Events);
        Assert.False(SessionRules.Regenerate(session.State, latest.MessageId, "user:alice", session.Events).IsRejected);
    }

    [Fact]
    public void Regenerate_with_a_control_id_of_its_own_is_stored_under_that_id_even_while_another_request_waits()
    {
        var session = new SessionFixture();
        var run = session.AnsweredRun();
        session.Apply(SessionRules.Regenerate(session.State, run.MessageId, "user:alice", session.Events));

        var mine = SessionRules.Regenerate(session.State, run.MessageId, "user:bob", session.Events, controlId: "c-bob");

        var control = Assert.IsType<SessionControl>(Assert.Single(mine.Events).Value);
        Assert.Equal(("c-bob", run.Id), (control.Id, control.RunId));
        session.Apply(mine);

        // Once a new run writes the reply, bob's retry is known as the request it repeats, not asked a second time.
        session.Append(session.Events.RunStarted("r_again", "agent:helper", run.MessageId!, run.Trigger!));
        var retry = SessionRules.Regenerate(session.State, run.MessageId, "user:bob", session.Events, controlId: "c-bob");
        Assert.Equal("c-bob", retry.Id);
        Assert.Empty(retry.Events);
    }

    /// <summary>
    /// A question whose reply a handoff paused, then answered again after the hand-back in a message of its own (still
    /// being written); returns both runs.
    /// </summary>
    private static (SessionRun Paused, SessionRun Again) PausedAndAnsweredAgain(SessionFixture session, string text)
    {
        var paused = session.StartedRun(text);
        session.Apply(SessionRules.TakeControl(session.State, "human:bob", session.Events));
        session.Apply(SessionRules.ReturnControl(session.State, "human:bob", session.Events));
        var again = SessionRules.StartRun(session.State, "agent:helper", paused.Trigger!, session.Events);
        session.Apply(again);
        return (paused, session.State.GetRun(again.Id!)!);
    }

    /// <summary>
    /// Alice's edit of <paramref name="messageId"/> that stops a reply still being written: refused with nothing appended
    /// for a caller who may not stop a run, then decided for one who may.
    /// </summary>
    private static SessionDecision EditStoppingAReply(SessionFixture session, string messageId, string text)
    {
        var refused = SessionRules.EditMessage(session.State, messageId, "user:alice", [new TextPart(text)], session.Events, mayStop: false);
        Assert.Equal(SessionRejection.RunActive, refused.Rejection?.Code);
        Assert.Empty(refused.Events);
        return SessionRules.EditMessage(session.State, messageId, "user:alice", [new TextPart(text)], session.Events);
    }

    [Fact]
    public void EditMessage_replaces_the_latest_message_and_asks_each_agents_latest_reply_again_stopping_one_still_written()
    {
        var session = new SessionFixture();
        var first = session.AnsweredRun("Waht is a fence?");
        var other = SessionRules.StartRun(session.State, "agent:other", first.Trigger!, session.Events);
        session.Apply(other);

        // A caller who may not stop the other agent's reply, still being written, is refused, with nothing appended.
        var decision = EditStoppingAReply(session, first.Trigger!, "What is a fence?");

        Assert.Equal(first.Trigger, decision.Id);
        Assert.Equal(
            [SessionEventTypes.Message, SessionEventTypes.Control, SessionEventTypes.Control, SessionEventTypes.Message, SessionEventTypes.Run, SessionEventTypes.Control],
            decision.Events.Select(e => e.Type));
        session.Apply(decision);
        var question = session.State.GetMessage(first.Trigger!)!;
        Assert.Equal("What is a fence?", question.Text);
        Assert.Equal(SessionFixture.Time, question.EditedAt);
        Assert.Equal(RunStatus.Cancelled, session.State.GetRun(other.Id!)!.Status);
        var asked = session.State.Controls.Where(c => c.Action == ControlAction.Regenerate).Select(c => c.RunId).ToList();
        Assert.Equal([first.Id, other.Id], asked);

        // The same edit again (a retry) appends nothing, and asks for no reply a second time.
        var retry = SessionRules.EditMessage(session.State, first.Trigger!, "user:alice", [new TextPart("What is a fence?")], session.Events);
        Assert.False(retry.IsRejected);
        Assert.Empty(retry.Events);
    }

    [Fact]
    public void EditMessage_takes_out_a_reply_paused_by_a_handoff_that_its_agent_answered_again_since()
    {
        var session = new SessionFixture(handoff: HandoffPolicy.Pause);
        var (paused, latest) = PausedAndAnsweredAgain(session, "Waht is a fence?");
        session.Apply(SessionRules.EndRun(session.State, latest.Id!, RunStatus.Finished, [new TextPart("A fence stops a run.")], session.Events));

        session.Apply(SessionRules.EditMessage(session.State, paused.Trigger!, "user:alice", [new TextPart("What is a fence?")], session.Events));

        // The paused reply answered the replaced text: it goes. The newer one is written again in its own message.
        Assert.Equal([paused.Trigger, latest.MessageId], session.State.Messages.Select(m => m.Id));
        Assert.Null(session.State.GetMessage(paused.MessageId!));
        Assert.Equal([latest.Id], session.State.Controls.Where(c => c.Action == ControlAction.Regenerate).Select(c => c.RunId));
        Assert.Equal(RunStatus.Paused, session.State.GetRun(paused.Id!)!.Status);
    }

    [Fact]
    public void EditMessage_asks_for_the_newer_reply_again_even_when_its_message_is_gone_and_takes_the_paused_one_out()
    {
        var session = new SessionFixture(handoff: HandoffPolicy.Pause);
        var (paused, latest) = PausedAndAnsweredAgain(session, "Waht is a fence?");
        session.Apply(SessionRules.EndRun(session.State, latest.Id!, RunStatus.Finished, [new TextPart("A fence stops a run.")], session.Events));
        session.Append(session.Events.MessageRemoved(latest.MessageId!));

        // The newer run is asked to write its reply again (its agent writes the message anew), so the paused reply, an
        // answer to the replaced text, goes: one answer to the edited question, not two.
        session.Apply(SessionRules.EditMessage(session.State, paused.Trigger!, "user:alice", [new TextPart("What is a fence?")], session.Events));
        Assert.Equal([paused.Trigger], session.State.Messages.Select(m => m.Id));
        Assert.Equal([latest.Id], session.State.Controls.Where(c => c.Action == ControlAction.Regenerate).Select(c => c.RunId));
    }

    [Fact]
    public void EditMessage_keeps_earlier_replies_of_runs_that_name_no_agent()
    {
        var session = new SessionFixture();
        session.Apply(SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "Waht is a fence?"), session.Events));
        var trigger = session.State.Messages[^1].Id!;

        // Two runs written as raw events without an agent, each with a reply of its own: nothing says the second answers
        // again for the first, so both replies stay.
        foreach (var (runId, messageId) in new[] { ("raw-run-1", "raw-reply-1"), ("raw-run-2", "raw-reply-2") })
        {
            var run = session.Events.RunStarted(runId, "agent:helper", messageId, trigger).ToJson();
            run["value"]!.AsObject().Remove("agent");
            session.State.Apply(run);
            session.Append(session.Events.Reply(ChangeOperation.Insert, messageId, "agent:helper", runId, [new TextPart("A fence.")], MessageStatus.Complete, SessionFixture.Time));
        }

        session.Apply(SessionRules.EditMessage(session.State, trigger, "user:alice", [new TextPart("What is a fence?")], session.Events));
        Assert.Equal([trigger, "raw-reply-1", "raw-reply-2"], session.State.Messages.Select(m => m.Id));
    }

    [Fact]
    public void EditMessage_is_refused_for_a_missing_message_anothers_message_an_earlier_one_and_while_a_human_holds_the_session()
    {
        var session = new SessionFixture();
        var run = session.AnsweredRun("first");
        session.Apply(SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "second"), session.Events));
        var second = session.State.Messages[^1].Id!;
        TextPart[] text = [new TextPart("edited")];

        Assert.Equal(SessionRejection.MessageNotFound, SessionRules.EditMessage(session.State, "m_missing", "user:alice", text, session.Events).Rejection?.Code);
        Assert.Equal(SessionRejection.NotEditable, SessionRules.EditMessage(session.State, second, "user:bob", text, session.Events).Rejection?.Code);
        Assert.Equal(SessionRejection.NotEditable, SessionRules.EditMessage(session.State, run.MessageId!, "agent:helper", text, session.Events).Rejection?.Code);

        // A message not yet answered is edited alone: nothing to write again.
        var edited = SessionRules.EditMessage(session.State, second, "user:alice", text, session.Events);
        Assert.Equal([SessionEventTypes.Message], edited.Events.Select(e => e.Type));

        // Another participant's message after it is theirs: the edit, which would take it out, is refused.
        session.Apply(SessionRules.PostMessage(session.State, new PostMessageRequest("user:bob", "bob's question"), session.Events));
        var bobs = session.State.Messages[^1].Id!;
        Assert.Equal(SessionRejection.NotLatestMessage, SessionRules.EditMessage(session.State, run.Trigger!, "user:alice", text, session.Events).Rejection?.Code);
        Assert.Equal(SessionRejection.NotLatestMessage, SessionRules.EditMessage(session.State, second, "user:alice", text, session.Events).Rejection?.Code);

        session.Apply(SessionRules.TakeControl(session.State, "human:bob", session.Events));
        Assert.Equal(SessionRejection.LeaseHeld, SessionRules.EditMessage(session.State, bobs, "user:bob", text, session.Events).Rejection?.Code);
    }

    [Fact]
    public void EditMessage_is_refused_when_a_later_message_names_a_run_the_session_does_not_hold()
    {
        var session = new SessionFixture();
        var run = session.AnsweredRun("first");
        session.Apply(SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "second"), session.Events));

        // A reply no known run wrote: nothing says what it answers, so it is its author's to keep.
        session.Append(session.Events.Reply(ChangeOperation.Insert, "m-stray", "agent:other", "r-unknown", [new TextPart("stray")], MessageStatus.Complete, SessionFixture.Time));
        Assert.Equal(SessionRejection.NotLatestMessage, SessionRules.EditMessage(session.State, run.Trigger!, "user:alice", [new TextPart("edited")], session.Events).Rejection?.Code);
    }

    [Fact]
    public void EditMessage_of_an_earlier_message_takes_what_came_after_it_out_stops_a_reply_still_written_and_keeps_its_own_reply()
    {
        var session = new SessionFixture();
        var first = session.AnsweredRun("Waht is a fence?", [new TextPart("A fence is...")]);
        var later = session.StartedRun("And a lease?");
        Assert.Equal(4, session.State.Messages.Count);

        // Stopping the reply still written to the later question needs the control capability.
        var decision = EditStoppingAReply(session, first.Trigger!, "What is a fence?");

        Assert.Equal(first.Trigger, decision.Id);
        Assert.Equal(
            [(SessionEventTypes.Control, "insert"), (SessionEventTypes.Message, "update"), (SessionEventTypes.Run, "update"),
             (SessionEventTypes.Message, "delete"), (SessionEventTypes.Message, "delete"), (SessionEventTypes.Message, "update"), (SessionEventTypes.Control, "insert")],
            decision.Events.Select(e => (e.Type, e.Operation.Value)));
        Assert.Equal([later.Trigger, later.MessageId], decision.Events.Where(e => e.Operation == ChangeOperation.Delete).Select(e => e.Key));
        session.Apply(decision);

        // The conversation continues from the edited question: it and its reply, which is asked to be written again.
        Assert.Equal([first.Trigger, first.MessageId], session.State.Messages.Select(m => m.Id));
        Assert.Equal("What is a fence?", session.State.Messages[0].Text);
        Assert.Equal(RunStatus.Cancelled, session.State.GetRun(later.Id!)!.Status);
        Assert.True(SessionRules.IsAskedToWriteAgain(session.State, first.Id));

        // The stopped run is fenced: it cannot write its reply back; a late delta of its agent into the reply that is gone
        // is answered 409 RUN_CANCELLED, through both append paths, when identities are checked, and another writer's 403.
        var late = session.Events.Reply(ChangeOperation.Insert, later.MessageId!, "agent:helper", later.Id!, [new TextPart("A lease is...")], MessageStatus.Complete, later.StartedAt!);
        Assert.Equal(SessionRejection.RunCancelled, SessionRules.CheckFence(session.State, [late.ToJson()])?.Code);
        var writer = new SessionWriter("agent:helper", MayControl: false);
        var delta = session.Events.RunDelta(later.MessageId!, later.Id!, takenOver: false, 3, 0, "text", " late");
        Assert.Equal((409, SessionRejection.RunCancelled), SessionEventRules.CheckAppend(session.State, [delta.ToJson()], writer) is { } a ? (a.Status, a.Code) : default);
        Assert.True(SessionDeltas.TryRead(System.Text.Encoding.UTF8.GetBytes(delta.ToJson().ToJsonString()), out var deltas));
        Assert.Equal((409, SessionRejection.RunCancelled), SessionEventRules.CheckDeltas(session.State, deltas, writer) is { } b ? (b.Status, b.Code) : default);
        var other = new SessionWriter("agent:other", MayControl: false);
        Assert.Equal((403, "NOT_OWNER"), SessionEventRules.CheckAppend(session.State, [delta.ToJson()], other) is { } c ? (c.Status, c.Code) : default);
        Assert.Equal((403, "NOT_OWNER"), SessionEventRules.CheckDeltas(session.State, deltas, other) is { } d ? (d.Status, d.Code) : default);

        // The later question's id is not taken again by a retry of the post that stored it.
        Assert.Equal(SessionRejection.MessageIdTaken, SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "And a lease?") { Id = later.Trigger }, session.Events).Rejection?.Code);

        // The same edit again appends nothing.
        Assert.Empty(SessionRules.EditMessage(session.State, first.Trigger!, "user:alice", [new TextPart("What is a fence?")], session.Events).Events);

        // Runs that did not see the question go: one still writing a reply to it, one started with no reply written yet.
        // The next edit before it stops (and fences) both, and takes the reply out with them.
        session.Append(
            session.Events.RunStarted("r-stray", "agent:other", "m-stray", later.Trigger!),
            session.Events.Reply(ChangeOperation.Insert, "m-stray", "agent:other", "r-stray", [new TextPart("A lease is...")], MessageStatus.Streaming, SessionFixture.Time),
            session.Events.RunStarted("r-quiet", "agent:quiet", "m-quiet", later.Trigger!));
        Assert.Equal(SessionRejection.RunActive, SessionRules.EditMessage(session.State, first.Trigger!, "user:alice", [new TextPart("What is a fence, then?")], session.Events, mayStop: false).Rejection?.Code);
        var again = SessionRules.EditMessage(session.State, first.Trigger!, "user:alice", [new TextPart("What is a fence, then?")], session.Events);
        Assert.Equal(["m-stray"], again.Events.Where(e => e.Operation == ChangeOperation.Delete).Select(e => e.Key));
        session.Apply(again);
        Assert.Equal(RunStatus.Cancelled, session.State.GetRun("r-stray")!.Status);
        Assert.Equal(RunStatus.Cancelled, session.State.GetRun("r-quiet")!.Status);
        Assert.Null(session.State.ActiveRun);
        Assert.Equal([first.Trigger, first.MessageId], session.State.Messages.Select(m => m.Id));

        // Neither writes the reply back: its final update, its first message and a late delta are each refused as a
        // stopped run's.
        var back = session.Events.Reply(ChangeOperation.Update, "m-stray", "agent:other", "r-stray", [new TextPart("A lease is a grant.")], MessageStatus.Complete, SessionFixture.Time);
        Assert.Equal(SessionRejection.RunCancelled, SessionRules.CheckFence(session.State, [back.ToJson()])?.Code);
        var quiet = session.Events.Reply(ChangeOperation.Insert, "m-quiet", "agent:quiet", "r-quiet", [new TextPart("Leases...")], MessageStatus.Streaming, SessionFixture.Time);
        Assert.Equal(SessionRejection.RunCancelled, SessionRules.CheckFence(session.State, [quiet.ToJson()])?.Code);
        var strayDelta = session.Events.RunDelta("m-stray", "r-stray", takenOver: false, 1, 0, "text", " late");
        Assert.Equal((409, SessionRejection.RunCancelled), SessionEventRules.CheckAppend(session.State, [strayDelta.ToJson()], new SessionWriter("agent:other", MayControl: false)) is { } e ? (e.Status, e.Code) : default);
    }

    [Fact]
    public void The_same_edit_again_is_a_retry_until_the_author_asks_something_after_it_then_it_takes_that_out()
    {
        var session = new SessionFixture();
        var first = session.AnsweredRun("What is a fence?");
        session.AnsweredRun("And a lease?");
        session.Apply(SessionRules.EditMessage(session.State, first.Trigger!, "user:alice", [new TextPart("What is a fence, exactly?")], session.Events));
        Assert.Equal([first.Trigger, first.MessageId], session.State.Messages.Select(m => m.Id));

        // Sent again right away (its answer was lost): nothing more is appended.
        Assert.Empty(SessionRules.EditMessage(session.State, first.Trigger!, "user:alice", [new TextPart("What is a fence, exactly?")], session.Events).Events);

        // Once the author has asked something after it, the same text is an edit again: it takes that question and its
        // reply out (the edited message's reply is already asked to be written again, by the first edit).
        var next = session.AnsweredRun("And a token?");
        var again = SessionRules.EditMessage(session.State, first.Trigger!, "user:alice", [new TextPart("What is a fence, exactly?")], session.Events);
        Assert.Equal([next.Trigger, next.MessageId], again.Events.Where(e => e.Operation == ChangeOperation.Delete).Select(e => e.Key));
        Assert.True(SessionRules.IsAskedToWriteAgain(session.State, first.Id));
        session.Apply(again);
        Assert.Equal([first.Trigger, first.MessageId], session.State.Messages.Select(m => m.Id));
        Assert.Equal("What is a fence, exactly?", session.State.Messages[0].Text);
    }

    [Fact]
    public void EditMessage_takes_out_a_later_message_written_without_an_id_in_its_value()
    {
        // A message appended to the stream directly may leave its id out of its value (only a different one is refused):
        // its key is its id, in the typed view and for an edit that takes it out.
        var session = new SessionFixture();
        var first = session.AnsweredRun("What is a fence?");
        session.State.Apply((JsonObject)JsonNode.Parse("""
            {"type":"message","key":"m-raw","value":{"role":"user","author":"user:alice","parts":[{"type":"text","text":"And a lease?"}]},"headers":{"operation":"insert"}}
            """)!);
        session.State.Apply((JsonObject)JsonNode.Parse("""
            {"type":"run","key":"r-raw","value":{"agent":"agent:helper","messageId":"m-raw-reply","trigger":"m-raw","status":"finished"},"headers":{"operation":"insert"}}
            """)!);
        Assert.Equal("m-raw", session.State.Messages[^1].Id);
        Assert.Equal("m-raw", session.State.GetMessage("m-raw")!.Id);
        Assert.Equal("r-raw", session.State.GetRun("r-raw")!.Id);

        var decision = SessionRules.EditMessage(session.State, first.Trigger!, "user:alice", [new TextPart("What is a fence, exactly?")], session.Events);
        Assert.Equal(["m-raw"], decision.Events.Where(e => e.Operation == ChangeOperation.Delete).Select(e => e.Key));
        session.Apply(decision);
        Assert.Equal([first.Trigger, first.MessageId], session.State.Messages.Select(m => m.Id));
    }

    [Fact]
    public void EditMessage_keeps_a_reply_to_an_earlier_question_stored_after_the_edited_one_and_leaves_it_running()
    {
        // A question queued behind another is stored before the reply to the first: q0, q1, then q0's reply.
        var session = new SessionFixture(NewMessagePolicy.Queue);
        session.Apply(SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "first"), session.Events));
        var q0 = session.State.Messages[^1].Id!;
        session.Apply(SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "second"), session.Events));
        var q1 = session.State.Messages[^1].Id!;
        var run = SessionRules.StartRun(session.State, "agent:helper", q0, session.Events);
        session.Apply(run);
        var reply = session.State.GetRun(run.Id!)!.MessageId;
        Assert.Equal([q0, q1, reply], session.State.Messages.Select(m => m.Id));

        // The edit of q1 touches neither q0's reply nor the run writing it, so it needs no control capability.
        var decision = SessionRules.EditMessage(session.State, q1, "user:alice", [new TextPart("second, edited")], session.Events, mayStop: false);
        Assert.False(decision.IsRejected, decision.Rejection?.Message);
        Assert.Equal([(SessionEventTypes.Message, q1)], decision.Events.Select(e => (e.Type, e.Key)));
        session.Apply(decision);

        // Nor does an edit of q0 take its own reply out: it takes q1 out, and asks for the reply again.
        var earlier = SessionRules.EditMessage(session.State, q0, "user:alice", [new TextPart("first, edited")], session.Events);
        Assert.Equal([q1], earlier.Events.Where(e => e.Operation == ChangeOperation.Delete).Select(e => e.Key));
        session.Apply(earlier);
        Assert.Equal([q0, reply], session.State.Messages.Select(m => m.Id));
    }

    [Fact]
    public void A_message_id_sent_again_with_other_content_is_another_message_and_a_retried_edit_stays_accepted()
    {
        var session = new SessionFixture();
        session.Apply(SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "hello") { Id = "m-client-1" }, session.Events));
        var other = SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "something else") { Id = "m-client-1" }, session.Events);
        Assert.Equal(SessionRejection.MessageIdTaken, other.Rejection?.Code);

        session.Apply(SessionRules.EditMessage(session.State, "m-client-1", "user:alice", [new TextPart("hello there")], session.Events));

        // After an edit, the id stands for the edited message: the first post sent again is another message, the edited
        // content is the same message; and the edit sent again is accepted with nothing appended.
        Assert.Equal(SessionRejection.MessageIdTaken, SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "hello") { Id = "m-client-1" }, session.Events).Rejection?.Code);
        Assert.Empty(SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "hello there") { Id = "m-client-1" }, session.Events).Events);
        var retry = SessionRules.EditMessage(session.State, "m-client-1", "user:alice", [new TextPart("hello there")], session.Events);
        Assert.False(retry.IsRejected, retry.Rejection?.Message);
        Assert.Empty(retry.Events);

        // Edited again with other content once a later question came, it takes that question out.
        session.Apply(SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "a later question"), session.Events));
        var again = SessionRules.EditMessage(session.State, "m-client-1", "user:alice", [new TextPart("hello again")], session.Events);
        Assert.Equal([(SessionEventTypes.Message, "delete"), (SessionEventTypes.Message, "update")], again.Events.Select(e => (e.Type, e.Operation.Value)));
        session.Apply(again);
        Assert.Equal(["m-client-1"], session.State.Messages.Select(m => m.Id));
    }

    [Fact]
    public void EditMessage_of_a_message_routed_to_a_human_is_refused()
    {
        var session = new SessionFixture();
        session.Apply(SessionRules.TakeControl(session.State, "human:bob", session.Events));
        session.Apply(SessionRules.PostMessage(session.State, new PostMessageRequest("user:alice", "for bob"), session.Events));
        var routed = session.State.Messages[^1];
        Assert.Equal("human:bob", routed.RoutedTo);
        session.Apply(SessionRules.ReturnControl(session.State, "human:bob", session.Events));

        Assert.Equal(SessionRejection.NotEditable, SessionRules.EditMessage(session.State, routed.Id!, "user:alice", [new TextPart("for anyone")], session.Events).Rejection?.Code);
    }
}
