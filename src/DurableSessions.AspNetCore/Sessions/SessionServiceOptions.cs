namespace DurableSessions.AspNetCore.Sessions;

/// <summary>Settings of the session services. Bound from the <c>Sessions</c> configuration section.</summary>
public sealed class SessionServiceOptions
{
    /// <summary>The longest wait between two attempts of a notification, however many came before.</summary>
    internal static readonly TimeSpan MaxNotificationRetryDelay = TimeSpan.FromMinutes(1);

    /// <summary>
    /// How long a participant stays present without a heartbeat before it is marked left. Default 30 seconds; from 1
    /// second to 1 day.
    /// </summary>
    public TimeSpan PresenceTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How often presence timeouts are checked. Default 1 second; from 10 ms to 1 day.</summary>
    public TimeSpan PresenceSweepInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Where to POST a notification when a run finishes while no client or human is present in its session, for
    /// sessions that do not set their own <c>notifyUrl</c>. None by default.
    /// </summary>
    public string? NotificationUrl { get; set; }

    /// <summary>The HMAC-SHA256 key that signs notifications (header <c>DurableSessions-Signature</c>).</summary>
    public string? NotificationSecret { get; set; }

    /// <summary>How many times a notification is attempted before it is dropped. Default 6; from 1 to 20.</summary>
    public int NotificationAttempts { get; set; } = 6;

    /// <summary>
    /// The delay before the first retry; doubled for each further one, up to a minute. Default 500 ms; from 1 ms to 1
    /// minute.
    /// </summary>
    public TimeSpan NotificationRetryDelay { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// The most notification POSTs in flight at once. Default 64 (1 to 10,000). Sessions' own notify URLs may have all
    /// but a quarter of them in flight (all, when it is 1), so POSTs to the operator's URL never wait behind theirs. At
    /// most four times as many notifications are held (in flight or waiting to retry), and, for sessions' own notify
    /// URLs, three times as many in all and a quarter of this many for one host;
    /// past either bound a new notification is dropped and logged. It bounds the descriptors and memory that runs
    /// finishing in bulk can take, and how much of them one slow or failing notify URL can hold up.
    /// </summary>
    public int MaxConcurrentNotifications { get; set; } = 64;

    /// <summary>
    /// How long a session's materialized state stays in memory after its last use; it is rebuilt from the stream when
    /// used again. Default 5 minutes; from 1 ms to 1 day.
    /// </summary>
    public TimeSpan MemoryIdleTimeout { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// How many sessions' materialized states are kept in memory at most; the least recently used ones are evicted
    /// first. Default 1,000; from 1 to 1,000,000.
    /// </summary>
    public int MaxInMemory { get; set; } = 1_000;

    /// <summary>The settings' problems, if any.</summary>
    public IEnumerable<string> Validate()
    {
        if (PresenceTimeout < TimeSpan.FromSeconds(1) || PresenceTimeout > TimeSpan.FromDays(1))
        {
            yield return "PresenceTimeout must be from 1 second to 1 day.";
        }

        if (PresenceSweepInterval < TimeSpan.FromMilliseconds(10) || PresenceSweepInterval > TimeSpan.FromDays(1))
        {
            yield return "PresenceSweepInterval must be from 10 ms to 1 day.";
        }

        if (NotificationAttempts is < 1 or > 20)
        {
            yield return "NotificationAttempts must be from 1 to 20.";
        }

        if (NotificationRetryDelay < TimeSpan.FromMilliseconds(1) || NotificationRetryDelay > MaxNotificationRetryDelay)
        {
            yield return "NotificationRetryDelay must be from 1 ms to 1 minute.";
        }

        if (MemoryIdleTimeout < TimeSpan.FromMilliseconds(1) || MemoryIdleTimeout > TimeSpan.FromDays(1))
        {
            yield return "MemoryIdleTimeout must be from 1 ms to 1 day.";
        }

        if (MaxInMemory is < 1 or > 1_000_000)
        {
            yield return "MaxInMemory must be from 1 to 1000000.";
        }

        if (MaxConcurrentNotifications is < 1 or > 10_000)
        {
            yield return "MaxConcurrentNotifications must be from 1 to 10000.";
        }
    }
}
