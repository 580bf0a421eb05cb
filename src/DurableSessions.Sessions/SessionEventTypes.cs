namespace DurableSessions.Sessions;

/// <summary>The entity types of session events (see <c>docs/sessions.md</c>).</summary>
public static class SessionEventTypes
{
    /// <summary>The session itself: title and policies. Key <c>session</c>.</summary>
    public const string Session = "session";

    /// <summary>A message (user, assistant, tool, system) made of parts.</summary>
    public const string Message = "message";

    /// <summary>Text appended to one part of a streaming message; rolled up, never kept as an entity.</summary>
    public const string Delta = "delta";

    /// <summary>An agent run: started, finished, cancelled, failed or interrupted.</summary>
    public const string Run = "run";

    /// <summary>A control request (cancel or steer) and its acknowledgement.</summary>
    public const string Control = "control";

    /// <summary>A participant's presence.</summary>
    public const string Presence = "presence";

    /// <summary>Who holds the session's control lease (agent or human). Key <c>lease</c>.</summary>
    public const string Handoff = "handoff";
}
