using Microsoft.Extensions.Time.Testing;

namespace DurableSessions.Sessions.Tests;

/// <summary>A session built from factory events on a fixed clock with predictable ids (<c>m_1</c>, <c>r_2</c>, ...).</summary>
internal sealed class SessionFixture
{
    public const string Time = "2026-01-02T03:04:05.678Z";

    private int _ids;

    public SessionFixture(NewMessagePolicy? policy = null, HandoffPolicy? handoff = null)
    {
        Clock = new FakeTimeProvider(DateTimeOffset.Parse(Time, System.Globalization.CultureInfo.InvariantCulture));
        Events = new SessionEvents(Clock, prefix => $"{prefix}_{++_ids}");
        Append(Events.SessionCreated("s1", "Title", policy, handoff));
    }

    public FakeTimeProvider Clock { get; }

    public SessionEvents Events { get; }

    public SessionState State { get; } = new();

    public void Append(params IEnumerable<SessionEvent> events)
    {
        foreach (var e in events)
        {
            State.Apply(e.ToJson());
        }
    }

    public void Apply(SessionDecision decision)
    {
        Assert.False(decision.IsRejected, decision.Rejection?.Message);
        Append(decision.Events);
    }

    /// <summary>A user message and an agent run that answered it, finished with <paramref name="parts"/>; returns the run as it started.</summary>
    public SessionRun AnsweredRun(string text = "hello", IReadOnlyList<MessagePart>? parts = null)
    {
        var run = StartedRun(text);
        Apply(SessionRules.EndRun(State, run.Id!, RunStatus.Finished, parts, Events));
        return run;
    }

    /// <summary>A user message and an agent run answering it, still streaming; returns the run.</summary>
    public SessionRun StartedRun(string text = "hello")
    {
        Apply(SessionRules.PostMessage(State, new PostMessageRequest("user:alice", text), Events));
        var trigger = State.Messages[^1].Id!;
        var started = SessionRules.StartRun(State, "agent:helper", trigger, Events);
        Apply(started);
        return State.GetRun(started.Id!)!;
    }
}
