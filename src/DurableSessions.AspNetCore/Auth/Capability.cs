namespace DurableSessions.AspNetCore.Auth;

/// <summary>What a token may do on the streams and sessions its grant names.</summary>
public enum Capability
{
    /// <summary>Read streams and session snapshots, tail live.</summary>
    Read,

    /// <summary>Create streams and sessions, append, post messages, announce presence.</summary>
    Write,

    /// <summary>Cancel and steer runs, take and return the session's control lease.</summary>
    Control,

    /// <summary>Delete streams and manage subscriptions.</summary>
    Admin,
}
