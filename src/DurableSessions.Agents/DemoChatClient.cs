using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.Extensions.AI;

namespace DurableSessions.Agents;

/// <summary>
/// A built-in chat model that needs no network: it streams a plausible reply at a fixed token rate, and the same
/// conversation always gets the same reply, so demos and tests are reproducible.
/// </summary>
/// <remarks>Thread-safe.</remarks>
public sealed class DemoChatClient : IChatClient
{
    private static readonly string[] Sentences =
    [
        "A durable session keeps every token in an append-only log, so nothing is lost when a connection drops.",
        "Any tab or device can join halfway through and catch up from a compact snapshot.",
        "You can stop the answer from any surface, and the fence guarantees nothing more is written after it.",
        "Offsets make resuming exact: the client asks for what comes after the last thing it saw.",
        "Several agents can write to the same session, each as its own idempotent producer.",
        "When nobody is watching, a webhook can tell your product that the answer is ready.",
        "The model does not care about the network; the transport is what needed fixing.",
        "Group commit lets many appends share one flush to disk without giving up durability.",
        "A late joiner reads the conversation, not the thousands of deltas that produced it.",
        "Steering lets you change course while the answer is still being written.",
    ];

    /// <summary>Creates the model.</summary>
    /// <param name="tokensPerSecond">How fast tokens are streamed; 0 streams as fast as possible.</param>
    public DemoChatClient(double tokensPerSecond = 25)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokensPerSecond);
        TokensPerSecond = tokensPerSecond;
    }

    /// <summary>The streaming rate.</summary>
    public double TokensPerSecond { get; }

    /// <summary>The full reply the model gives to a conversation (what streaming produces, token by token).</summary>
    public static string ReplyTo(IEnumerable<ChatMessage> messages)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var list = messages as IReadOnlyList<ChatMessage> ?? messages.ToList();
        var hash = 2166136261u;
        foreach (var message in list)
        {
            // FNV-1a over "role:text\n" of each message, without building that string: the whole conversation is hashed
            // for every reply, so a long one would otherwise allocate its length again on every turn.
            hash = Fnv(hash, message.Role.Value);
            hash = Fnv(hash, ":");
            hash = Fnv(hash, message.Text);
            hash = Fnv(hash, "\n");
        }

        var question = list.LastOrDefault(m => m.Role == ChatRole.User)?.Text.Trim() ?? string.Empty;
        var topic = question.Length > 60 ? question[..60] + "…" : question;
        var random = new Random((int)hash);
        var reply = new StringBuilder(topic.Length == 0 ? "Hello! " : $"You asked: \"{topic}\". ");
        var count = 3 + random.Next(3);
        foreach (var index in Enumerable.Range(0, Sentences.Length).OrderBy(_ => random.Next()).Take(count))
        {
            reply.Append(Sentences[index]).Append(' ');
        }

        return reply.ToString().TrimEnd();
    }

    private static uint Fnv(uint hash, string text)
    {
        foreach (var c in text)
        {
            hash = (hash ^ c) * 16777619u;
        }

        return hash;
    }

    /// <inheritdoc />
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var text = new StringBuilder();
        await foreach (var update in GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false))
        {
            text.Append(update.Text);
        }

        return new ChatResponse(new ChatMessage(ChatRole.Assistant, text.ToString())) { FinishReason = ChatFinishReason.Stop };
    }

    /// <inheritdoc />
    public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var reply = ReplyTo(messages);
        return StreamAsync(reply, cancellationToken);
    }

    private async IAsyncEnumerable<ChatResponseUpdate> StreamAsync(string reply, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var interval = TokensPerSecond > 0 ? TimeSpan.FromSeconds(1 / TokensPerSecond) : TimeSpan.Zero;
        var started = DateTimeOffset.UtcNow;

        // Each token (a word, with the space before it) is cut from the reply when it is said: split up front, a reply's
        // words would all outlive the collections run while it streams, for thousands of replies at once.
        var start = 0;
        for (var i = 0; start <= reply.Length; i++)
        {
            if (interval > TimeSpan.Zero)
            {
                // Paced against the start time so the rate holds even when a delay overshoots.
                var due = started + (interval * i);
                var wait = due - DateTimeOffset.UtcNow;
                if (wait > TimeSpan.Zero)
                {
                    await Task.Delay(wait, cancellationToken).ConfigureAwait(false);
                }
            }

            cancellationToken.ThrowIfCancellationRequested();
            var end = reply.IndexOf(' ', start + (i == 0 ? 0 : 1));
            end = end < 0 ? reply.Length : end;
            yield return new ChatResponseUpdate(ChatRole.Assistant, reply[start..end]);
            start = end == reply.Length ? reply.Length + 1 : end;
        }

        yield return new ChatResponseUpdate { Role = ChatRole.Assistant, FinishReason = ChatFinishReason.Stop };
    }

    /// <inheritdoc />
    public object? GetService(Type serviceType, object? serviceKey = null)
        => serviceKey is null && serviceType?.IsInstanceOfType(this) == true ? this : null;

    /// <inheritdoc />
    public void Dispose()
    {
    }
}
