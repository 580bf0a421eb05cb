namespace DurableSessions.AspNetCore.Agents;

/// <summary>Settings of the turns waiting for agents (section <c>Agents</c>).</summary>
public sealed class AgentTurnOptions
{
    /// <summary>
    /// The lease of a claimed turn when its agent registered none: a worker that neither heartbeats nor acks within it
    /// loses the turn, and another worker takes it over. Default 10 seconds.
    /// </summary>
    public TimeSpan DefaultLeaseTtl { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>The longest a claim may wait for a turn (<c>wait_ms</c>). Default 30 seconds.</summary>
    public TimeSpan MaxClaimWait { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How many agents may register. Default 64.</summary>
    public int MaxAgents { get; set; } = 64;

    /// <summary>
    /// How many of the latest wake events an agent's wake stream keeps. Each waiting turn adds one; once the stream holds
    /// twice this many, the older ones are removed (retention: reads from before them answer <c>410 OFFSET_GONE</c>), so
    /// the stream stays between this and twice this long however many turns an agent serves. Wakes are only hints: the
    /// turns themselves stay claimable. Default 10,000.
    /// </summary>
    public int WakeStreamRetention { get; set; } = 10_000;

    /// <summary>The problems with these settings, if any.</summary>
    public IEnumerable<string> Validate()
    {
        if (DefaultLeaseTtl < TimeSpan.FromSeconds(1) || DefaultLeaseTtl > TimeSpan.FromMinutes(10))
        {
            yield return "Agents:DefaultLeaseTtl must be from 1 second to 10 minutes.";
        }

        if (MaxClaimWait < TimeSpan.Zero || MaxClaimWait > TimeSpan.FromMinutes(5))
        {
            yield return "Agents:MaxClaimWait must be from 0 to 5 minutes.";
        }

        if (MaxAgents is < 1 or > 10_000)
        {
            yield return "Agents:MaxAgents must be from 1 to 10000.";
        }

        if (WakeStreamRetention is < 10 or > 10_000_000)
        {
            yield return "Agents:WakeStreamRetention must be from 10 to 10000000.";
        }
    }
}
