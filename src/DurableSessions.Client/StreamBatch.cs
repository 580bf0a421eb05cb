namespace DurableSessions.Client;

/// <summary>Messages read from a JSON stream, and the offset to continue from.</summary>
/// <param name="Messages">The raw JSON messages, in order (may be empty for a pure progress update).</param>
/// <param name="NextOffset">The offset after these messages.</param>
/// <param name="UpToDate">Whether the reader has caught up with the stream's tail.</param>
/// <param name="Closed">Whether the stream is closed and fully read (no more data will come).</param>
public sealed record StreamBatch(IReadOnlyList<System.Text.Json.JsonElement> Messages, string NextOffset, bool UpToDate, bool Closed);
