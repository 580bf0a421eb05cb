namespace DurableSessions.AspNetCore.Streams;

/// <summary>
/// Keeps a stream of wake events (an agent's, or a pull-wake subscription's) to its latest wakes. Wakes are hints: what
/// they point at stays claimable whether or not its wake is still there, so a wake stream need not grow with every wake
/// it was ever sent.
/// </summary>
/// <remarks>
/// The stream is trimmed each time an append carries its tail past a multiple of the events kept, to the multiple before.
/// It then holds between the events kept and twice that (one trim per that many wakes), plus, on a store that keeps one
/// commit's appends to a stream together (SQLite), the wakes committed together with the one the trim falls inside.
/// The decision is taken from the append's own positions, so it needs no state: exactly one append makes each crossing,
/// on whichever node made it, and after a restart too. A trim that fails, or that a fork of the stream holds back, is
/// tried at the next crossing. The bound holds for a stream only the caller writes to: a crossing made by another
/// writer's append (a client's, or a subscription that does not trim) is skipped, and the trim waits for the next
/// crossing made here.
/// </remarks>
internal static class WakeStreamRetention
{
    /// <summary>
    /// Where to trim the stream after an append of <paramref name="units"/> events that ended at
    /// <paramref name="tail"/>, or null when the append crossed no multiple of <paramref name="keep"/> from the second on.
    /// </summary>
    public static long? TrimPoint(long tail, long units, int keep)
    {
        var crossed = tail / keep;
        return crossed >= 2 && (tail - units) / keep < crossed ? (crossed - 1) * keep : null;
    }

    /// <summary>
    /// Trims <paramref name="path"/> if the append that ended at <paramref name="tail"/> calls for it. Returns what made
    /// the trim fail, for the caller to log, and never throws: the wake was written, and a trim is best effort, tried
    /// again at the next crossing.
    /// </summary>
    public static async Task<Exception?> TrimAfterAppendAsync(StreamStore store, string path, long tail, long units, int keep)
    {
        if (TrimPoint(tail, units, keep) is not { } before)
        {
            return null;
        }

        try
        {
            await store.TrimAsync(path, before, CancellationToken.None).ConfigureAwait(false);
            return null;
        }
        catch (Exception ex)
        {
            // Whatever it was, it must not undo the wake that was written (a subscription's wake would be taken back
            // and sent again).
            return ex;
        }
    }
}
