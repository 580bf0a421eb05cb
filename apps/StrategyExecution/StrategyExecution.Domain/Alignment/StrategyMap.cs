namespace StrategyExecution.Alignment;

/// <summary>A cause→effect link of the strategy map: achieving <paramref name="Cause"/> drives <paramref name="Effect"/>.</summary>
/// <param name="Cause">The objective that drives.</param>
/// <param name="Effect">The objective it drives.</param>
public sealed record CauseEffectLink(string Cause, string Effect);

/// <summary>The rule of the strategy map: cause→effect links form no cycle.</summary>
/// <remarks>Pure and thread-safe.</remarks>
public static class StrategyMap
{
    /// <summary>
    /// The objectives a new link would close into a cycle, in order from its effect back to its cause; empty when the
    /// link is allowed. A link from an objective to itself is a cycle of one.
    /// </summary>
    public static IReadOnlyList<string> CycleThrough(IEnumerable<CauseEffectLink> links, CauseEffectLink proposed)
    {
        ArgumentNullException.ThrowIfNull(links);
        ArgumentNullException.ThrowIfNull(proposed);
        if (proposed.Cause == proposed.Effect)
        {
            return [proposed.Cause];
        }

        // A cycle exists if the cause is already reachable from the effect: search forward from the effect.
        var next = links.GroupBy(l => l.Cause, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Select(l => l.Effect).ToList(), StringComparer.Ordinal);
        var cameFrom = new Dictionary<string, string?>(StringComparer.Ordinal) { [proposed.Effect] = null };
        var queue = new Queue<string>([proposed.Effect]);
        while (queue.TryDequeue(out var current))
        {
            if (current == proposed.Cause)
            {
                var path = new List<string>();
                for (string? at = current; at is not null; at = cameFrom[at])
                {
                    path.Add(at);
                }

                path.Reverse();
                return path;
            }

            foreach (var effect in next.GetValueOrDefault(current) ?? [])
            {
                if (cameFrom.TryAdd(effect, current))
                {
                    queue.Enqueue(effect);
                }
            }
        }

        return [];
    }
}
