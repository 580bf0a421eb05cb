using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using DurableSessions.AspNetCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;

namespace DurableSessions.FunctionalTests;

/// <summary>The thread-pool delay probe: what it records, on a stand-in pool and on a running server's own.</summary>
public sealed class ThreadPoolDelayProbeTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private static MeterListener Listen(ConcurrentQueue<double> measured)
    {
        var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == DurableSessionsTelemetry.AspNetCore && instrument.Name == "durable_sessions.thread_pool.queue_delay")
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<double>((_, value, _, _) => measured.Enqueue(value));
        listener.Start();
        return listener;
    }

    [Fact]
    public async Task A_probe_records_how_long_its_work_item_waited_to_run()
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 6, 1, 12, 0, 0, TimeSpan.Zero));
        var waited = TimeSpan.FromTicks(421_337);

        // A stand-in pool that runs each work item once the clock has moved on by a known wait.
        using var probe = new ThreadPoolDelayProbe(clock, (work, queuedAt) =>
        {
            clock.Advance(waited);
            work(queuedAt);
        });
        var measured = new ConcurrentQueue<double>();
        using var listener = Listen(measured);
        await probe.StartAsync(CancellationToken.None);

        // Other servers in this process record real probes too: this one's is told apart by its exact wait.
        bool Recorded() => measured.Any(v => Math.Abs(v - waited.TotalSeconds) < 1e-9);
        using var cancel = new CancellationTokenSource(Timeout);
        while (!Recorded())
        {
            clock.Advance(ThreadPoolDelayProbe.Interval);
            await Task.Delay(10, cancel.Token);
        }

        await probe.StopAsync(CancellationToken.None);
    }

    [Fact]
    public async Task A_running_server_probes_its_thread_pool()
    {
        var measured = new ConcurrentQueue<double>();
        using var listener = Listen(measured);
        await using var server = await InProcessServer.StartAsync();

        // Other servers in this process probe their pool too: this one's is found among its own services.
        var probe = Assert.Single(server.Services.GetServices<IHostedService>().OfType<ThreadPoolDelayProbe>());
        using var cancel = new CancellationTokenSource(Timeout);
        while (measured.IsEmpty)
        {
            await Task.Delay(10, cancel.Token);
        }

        Assert.All(measured, v => Assert.InRange(v, 0, Timeout.TotalSeconds));

        // This server's probe keeps running (another server's probes could have filled the queue above).
        Assert.NotNull(probe.ExecuteTask);
        Assert.False(probe.ExecuteTask.IsCompleted);
    }
}
