namespace DurableSessions.AspNetCore.Connections;

/// <summary>
/// Limits on open client connections, so that no client (or crowd of clients) can push the process to its file
/// descriptor limit. Bound from the <c>Limits</c> configuration section.
/// </summary>
/// <remarks>
/// A connection past a limit is answered <c>503 Service Unavailable</c> with <c>Retry-After</c> and closed; connections
/// already open (such as live readers) are unaffected, and <c>GET /health</c> is still answered on a connection past the
/// limit.
/// </remarks>
public sealed class ConnectionLimitOptions
{
    /// <summary>
    /// The most connections open at once. 0 (the default) derives it from the process's open-file limit
    /// (<c>ulimit -n</c>) minus <see cref="DescriptorHeadroom"/>; a configured value is lowered to that too.
    /// </summary>
    public int MaxConnections { get; set; }

    /// <summary>The most connections one client address may have open at once; 0 turns the per-client limit off. Default 1000.</summary>
    public int MaxConnectionsPerClient { get; set; } = 1000;

    /// <summary>
    /// Descriptors kept free for everything that is not a client connection: the store's files, Redis, logs, outbound
    /// webhooks and notifications. At most half of the open-file limit. Default 1000.
    /// </summary>
    public int DescriptorHeadroom { get; set; } = 1000;

    /// <summary>
    /// Whether loopback connections (the embedded agent, a local reverse proxy) are exempt from
    /// <see cref="MaxConnectionsPerClient"/>. They always count toward <see cref="MaxConnections"/>. Default true.
    /// </summary>
    public bool ExemptLoopback { get; set; } = true;

    /// <summary>
    /// Connections of <see cref="MaxConnections"/> only loopback clients may use, so remote clients filling the server
    /// cannot starve the embedded agent. Default 100.
    /// </summary>
    public int LoopbackReserve { get; set; } = 100;

    /// <summary>The <c>Retry-After</c> of a refused connection, in seconds. Default 5.</summary>
    public int RetryAfterSeconds { get; set; } = 5;

    /// <summary>Validates the settings; called at start-up.</summary>
    public IEnumerable<string> Validate()
    {
        if (MaxConnections < 0)
        {
            yield return "Limits:MaxConnections must be 0 (derived from the open-file limit) or positive.";
        }

        if (MaxConnectionsPerClient < 0)
        {
            yield return "Limits:MaxConnectionsPerClient must be 0 (off) or positive.";
        }

        if (DescriptorHeadroom < 64)
        {
            yield return "Limits:DescriptorHeadroom must be at least 64.";
        }

        if (LoopbackReserve < 0)
        {
            yield return "Limits:LoopbackReserve must not be negative.";
        }

        if (RetryAfterSeconds is < 1 or > 3600)
        {
            yield return "Limits:RetryAfterSeconds must be between 1 and 3600.";
        }
    }

    /// <summary>
    /// The total connection limit in force for a process whose open-file limit is <paramref name="descriptorLimit"/>
    /// (null when unknown, as on Windows, where 10,000 is assumed).
    /// </summary>
    public int EffectiveMaxConnections(long? descriptorLimit)
    {
        var derived = descriptorLimit is { } fds
            ? (int)Math.Clamp(fds - Math.Min(DescriptorHeadroom, fds / 2), 1, int.MaxValue)
            : 10_000;
        return MaxConnections > 0 ? Math.Min(MaxConnections, derived) : derived;
    }

    /// <summary>Reads the process's soft open-file limit (<c>RLIMIT_NOFILE</c>); null when it cannot be read or is unlimited.</summary>
    public static long? ReadDescriptorLimit()
    {
        const string Limits = "/proc/self/limits";
        try
        {
            if (!File.Exists(Limits))
            {
                return null;
            }

            foreach (var line in File.ReadLines(Limits))
            {
                if (!line.StartsWith("Max open files", StringComparison.Ordinal))
                {
                    continue;
                }

                var fields = line["Max open files".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return fields.Length > 0 && long.TryParse(fields[0], System.Globalization.CultureInfo.InvariantCulture, out var soft) ? soft : null;
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return null;
    }
}
