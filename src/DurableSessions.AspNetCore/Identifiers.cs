namespace DurableSessions.AspNetCore;

/// <summary>The rule for client-chosen ids (sessions, subscriptions, chats, runs): 1-128 letters, digits, '-', '_' or '.', not <c>.</c> or <c>..</c>.</summary>
internal static class Identifiers
{
    /// <remarks>
    /// <c>.</c> and <c>..</c> are not ids: as a path segment (<c>sessions/..</c>) URLs resolve them away, so a session
    /// or chat created under one could be neither read nor deleted.
    /// </remarks>
    public static bool IsValid(string id)
        => id.Length is > 0 and <= 128 && id is not ("." or "..") && id.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');

    /// <summary>The rule for participant ids (authors, holders, presence), which may also hold ':' (<c>user:alice</c>).</summary>
    public static bool IsParticipant(string id) => IsValid(id.Replace(':', '-'));

    /// <summary>
    /// The rule for a token's subject taken as a participant: any text an identity provider issues (<c>auth0|abc</c>,
    /// <c>a@b.example</c>) of 1-256 characters, without control characters or unpaired surrogates.
    /// </summary>
    public static bool IsSubject(string id)
        => id.Length is > 0 and <= 256 && !id.Any(char.IsControl) && !HasLoneSurrogate(id);

    private static bool HasLoneSurrogate(string text)
    {
        for (var i = 0; i < text.Length; i++)
        {
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                i++;
            }
            else if (char.IsSurrogate(text[i]))
            {
                return true;
            }
        }

        return false;
    }
}
