using System.Text.Json;
using System.Text.Json.Serialization;

namespace DurableSessions.AspNetCore.Agents;

/// <summary>A registered agent: the pool of workers that answer turns under one agent id.</summary>
internal sealed record AgentRegistration
{
    public required string Agent { get; init; }

    public required long LeaseTtlMs { get; init; }

    public required string WakeStream { get; init; }

    public string? Description { get; init; }

    public DateTimeOffset CreatedAt { get; init; }
}

/// <summary>
/// A session that waits for one agent's answer: durable while it waits, deleted once a worker acks it with nothing new
/// since its claim. Mutated only under <see cref="AgentTurnService"/>'s lock.
/// </summary>
internal sealed class TurnRecord
{
    public required string Agent { get; init; }

    public required string Stream { get; init; }

    /// <summary>Bumped by every change that may need an answer; an ack clears the turn only if none came since the claim.</summary>
    public long Version { get; set; }

    /// <summary>The session's tail after the latest change that needs an answer: an ack up to it answers everything.</summary>
    public long PendingPosition { get; set; }

    /// <summary>
    /// The store's id of the stream <see cref="PendingPosition"/> is a position in: a session deleted and created again at
    /// its path is another stream, whose positions start over. Zero in turns stored before it was kept.
    /// </summary>
    public long StreamId { get; set; }

    /// <summary>When the turn first waited, for oldest-first claims (Unix ms).</summary>
    public long WaitingSince { get; set; }

    /// <summary>The fencing counter of the turn's wakes (protocol §7.3); bumped by every wake.</summary>
    public long Generation { get; set; }

    public string? WakeId { get; set; }

    public string? Holder { get; set; }

    /// <summary>The SHA-256 of the current claim token (hex); the token itself is only ever in the claimer's hands.</summary>
    public string? TokenHash { get; set; }

    /// <summary>The SHA-256 of the current claim's <c>claim_id</c> (hex), when it sent one: a retry of it gets this claim back.</summary>
    public string? ClaimIdHash { get; set; }

    /// <summary>When the current lease ends (Unix ms).</summary>
    public long? LeaseExpiresAt { get; set; }

    /// <summary>
    /// The lease the current claim was granted (ms), which its heartbeats renew: a claim keeps it when its agent is
    /// registered again with another one, or unregistered. Zero in turns stored before it was kept.
    /// </summary>
    public long LeaseTtlMs { get; set; }

    /// <summary>The <see cref="Version"/> the current claim answers.</summary>
    public long ClaimedVersion { get; set; }

    [JsonIgnore]
    public string Key => KeyOf(Agent, Stream);

    public static string KeyOf(string agent, string stream) => agent + "\n" + stream;

    /// <summary>The stream part of a key made by <see cref="KeyOf"/> (agent ids hold no line break).</summary>
    public static ReadOnlySpan<char> StreamOfKey(string key) => key.AsSpan(key.IndexOf('\n') + 1);

    public byte[] Serialize() => JsonSerializer.SerializeToUtf8Bytes(this, AgentTurnJsonContext.Default.TurnRecord);

    public static TurnRecord? Deserialize(byte[] data)
    {
        try
        {
            return JsonSerializer.Deserialize(data, AgentTurnJsonContext.Default.TurnRecord);
        }
        catch (JsonException)
        {
            return null;
        }
    }
}

[JsonSerializable(typeof(TurnRecord))]
[JsonSerializable(typeof(AgentRegistration))]
internal sealed partial class AgentTurnJsonContext : JsonSerializerContext;
