namespace DurableSessions.AspNetCore;

/// <summary>The rule for client-chosen ids (sessions, subscriptions, chats, runs): 1-128 letters, digits, '-', '_' or '.'.</summary>
internal static class Identifiers
{
    public static bool IsValid(string id)
        => id.Length is > 0 and <= 128 && id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');

    /// <summary>The rule for participant ids (authors, holders, presence), which may also hold ':' (<c>user:alice</c>).</summary>
    public static bool IsParticipant(string id) => IsValid(id.Replace(':', '-'));
}
