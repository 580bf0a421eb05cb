using System.Text.Json.Nodes;

namespace DurableSessions.AspNetCore.Sessions;

/// <summary>
/// The session appends this node committed, with their events as the session service parsed them once: services that
/// react to session events (notifications) take them from here instead of parsing the stream's bytes again.
/// </summary>
/// <remarks>
/// Observers run on the committing call, in commit order per session; they must be quick and must not keep or change
/// the events (copy what they need): the same nodes go on to the materializer. Thread-safe.
/// </remarks>
internal sealed class SessionCommitFeed
{
    private volatile Action<SessionCommit>[] _observers = [];
    private readonly Lock _gate = new();

    /// <summary>Adds an observer of every later commit.</summary>
    public void Subscribe(Action<SessionCommit> observer)
    {
        lock (_gate)
        {
            _observers = [.. _observers, observer];
        }
    }

    /// <summary>Hands a commit to every observer.</summary>
    public void Publish(SessionCommit commit)
    {
        foreach (var observer in _observers)
        {
            observer(commit);
        }
    }
}

/// <summary>A committed session append: its stream, its events (parsed once) and the stream's tail after it.</summary>
internal sealed record SessionCommit(string Path, IEnumerable<JsonNode?> Events, long TailPosition)
{
    /// <summary>The session's id.</summary>
    public string SessionId => Path[SessionService.Prefix.Length..];
}
