using DurableSessions.Client;
using DurableSessions.Sessions;

namespace DurableSessions.FunctionalTests;

/// <summary>Waits on a session's live state, read through the .NET client.</summary>
internal static class SessionWaits
{
    /// <summary>The session's state once it is up to date and <paramref name="condition"/> holds; fails after <paramref name="timeout"/> (30 s).</summary>
    public static async Task<SessionState> StateAsync(DurableSessionsClient client, string sessionId, Func<SessionState, bool> condition, TimeSpan? timeout = null)
    {
        using var cancel = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(30));
        await foreach (var update in client.Session(sessionId).JoinAsync(cancel.Token))
        {
            if (update.UpToDate && condition(update.State))
            {
                return update.State;
            }
        }

        throw new InvalidOperationException($"Session {sessionId} ended before the condition held.");
    }
}
