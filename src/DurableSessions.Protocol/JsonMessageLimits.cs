namespace DurableSessions;

/// <summary>Limits every message of a JSON stream is held to, by the server that stores it and the readers that parse it.</summary>
public static class JsonMessageLimits
{
    /// <summary>
    /// The deepest nesting of objects and arrays a message may have: 32. Deeper bodies are refused, so every stored
    /// message, and every read response that wraps messages in an array, parses with the default settings of
    /// <c>System.Text.Json</c> (64) and in browsers.
    /// </summary>
    public const int MaxDepth = 32;
}
