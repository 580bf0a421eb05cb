namespace DurableSessions.AspNetCore.Streams;

/// <summary>
/// The bytes of append and create bodies this server holds at once, from the first byte read until the request ends,
/// so a few clients sending many large appends in parallel cannot starve everybody else's appends of memory and of the
/// store's write queue. Bodies up to <see cref="SmallBody"/> bytes are never held to it. Thread-safe.
/// </summary>
internal sealed class AppendBudget(long capacity)
{
    /// <summary>Bodies up to this size are always admitted: they are the appends the budget protects.</summary>
    public const long SmallBody = 64 * 1024;

    private long _used;

    /// <summary>The most bytes held at once.</summary>
    public long Capacity => capacity;

    /// <summary>The bytes in use now.</summary>
    public long InUse => Interlocked.Read(ref _used);

    /// <summary>Takes <paramref name="bytes"/> if they fit; false (and nothing taken) otherwise.</summary>
    public bool TryTake(long bytes)
    {
        while (true)
        {
            var used = Interlocked.Read(ref _used);
            if (used + bytes > capacity)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _used, used + bytes, used) == used)
            {
                return true;
            }
        }
    }

    /// <summary>
    /// Holds a whole body of <paramref name="length"/> bytes: nothing for a small one (<paramref name="held"/> 0), else
    /// its bytes if they fit. False (and nothing taken) when they do not; give <paramref name="held"/> back with
    /// <see cref="Return"/> once the body is done with.
    /// </summary>
    public bool TryHold(long length, out long held)
    {
        held = length > SmallBody ? length : 0;
        if (held > 0 && !TryTake(held))
        {
            held = 0;
            return false;
        }

        return true;
    }

    /// <summary>Gives back bytes taken with <see cref="TryTake"/>.</summary>
    public void Return(long bytes) => Interlocked.Add(ref _used, -bytes);
}
