using Microsoft.Extensions.Hosting;

namespace DurableSessions.AspNetCore;

/// <summary>
/// Measures how long work queued to the thread pool waits before a thread runs it
/// (<c>durable_sessions.thread_pool.queue_delay</c>): one probe every <see cref="Interval"/> at most (the timer that
/// sends it waits for a thread too), queued as I/O completions, timers and the store's acknowledgements queue theirs.
/// </summary>
/// <remarks>
/// Every step of a request, an acknowledgement and a delivery to a live reader waits its turn there, so this wait adds
/// to each of them. It stays well under a millisecond while the server has CPU to spare; it grows when the process is
/// short of CPU or of threads (a blocked pool), before request latencies show why.
/// </remarks>
internal sealed class ThreadPoolDelayProbe : BackgroundService
{
    /// <summary>How often the pool is probed: ten work items a second, nothing next to a server's own.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(100);

    private readonly TimeProvider _time;
    private readonly Action<Action<long>, long> _queue;

    // The real clock, whatever clock the host's services run on: what is measured is the real pool's real wait.
    public ThreadPoolDelayProbe()
        : this(TimeProvider.System, static (probe, queuedAt) => ThreadPool.UnsafeQueueUserWorkItem(probe, queuedAt, preferLocal: false))
    {
    }

    /// <summary>A probe whose work items are queued by <paramref name="queue"/> (tests stand in for the pool).</summary>
    internal ThreadPoolDelayProbe(TimeProvider time, Action<Action<long>, long> queue)
    {
        _time = time;
        _queue = queue;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        Action<long> probe = queuedAt => Telemetry.ThreadPoolDelay.Record(_time.GetElapsedTime(queuedAt).TotalSeconds);
        using var timer = new PeriodicTimer(Interval, _time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                // Nothing is queued while nothing listens.
                if (Telemetry.ThreadPoolDelay.Enabled)
                {
                    _queue(probe, _time.GetTimestamp());
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }
}
