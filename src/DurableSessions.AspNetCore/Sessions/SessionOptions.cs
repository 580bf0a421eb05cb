namespace DurableSessions.AspNetCore.Sessions;

/// <summary>Settings of the session services. Bound from the <c>Sessions</c> configuration section.</summary>
public sealed class SessionOptions
{
    /// <summary>How long a participant stays present without a heartbeat before it is marked left. Default 30 seconds.</summary>
    public TimeSpan PresenceTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How often presence timeouts are checked. Default 1 second.</summary>
    public TimeSpan PresenceSweepInterval { get; set; } = TimeSpan.FromSeconds(1);
}
