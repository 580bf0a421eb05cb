namespace DurableSessions.AspNetCore.Sessions;

/// <summary>Settings of the session services. Bound from the <c>Sessions</c> configuration section.</summary>
public sealed class SessionServiceOptions
{
    /// <summary>How long a participant stays present without a heartbeat before it is marked left. Default 30 seconds.</summary>
    public TimeSpan PresenceTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How often presence timeouts are checked. Default 1 second.</summary>
    public TimeSpan PresenceSweepInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Where to POST a notification when a run finishes while no client or human is present in its session, for
    /// sessions that do not set their own <c>notifyUrl</c>. None by default.
    /// </summary>
    public string? NotificationUrl { get; set; }

    /// <summary>The HMAC-SHA256 key that signs notifications (header <c>DurableSessions-Signature</c>).</summary>
    public string? NotificationSecret { get; set; }

    /// <summary>How many times a notification is attempted before it is dropped. Default 6.</summary>
    public int NotificationAttempts { get; set; } = 6;

    /// <summary>The delay before the first retry; doubled for each further one. Default 500 ms.</summary>
    public TimeSpan NotificationRetryDelay { get; set; } = TimeSpan.FromMilliseconds(500);
}
