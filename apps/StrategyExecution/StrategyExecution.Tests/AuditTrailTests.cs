namespace StrategyExecution.Tests;

/// <summary>The audit trail is a durable stream fed from an outbox: every change lands in it exactly once, in order.</summary>
public sealed class AuditTrailTests
{
    [Fact]
    public async Task After_kill_9_the_audit_stream_holds_every_recorded_change_once_and_in_order()
    {
        await using var app = await AppProcess.StartNewAsync();
        using (var admin = ApiClient.For(app, 1))
        {
            for (var i = 0; i < 30; i++)
            {
                using var response = await admin.RecordActual(1 + (i % 5), ApiClient.LastMonth(), i);
                Assert.Equal(System.Net.HttpStatusCode.Created, response.StatusCode);
            }
        }

        // Killed right after the last acknowledgement: entries may be committed in the database but not yet in the stream.
        await app.KillAsync();
        await app.StartAsync();

        using var client = ApiClient.For(app, 1);
        var recorded = (await client.GetJson("/api/audit?take=1000")).AsArray().Select(a => a!["id"]!.GetValue<long>()).ToList();
        Assert.Equal(30, recorded.Count);
        await ApiClient.Until(async () => (await client.AuditStream()).Count >= recorded.Count, "the audit stream to catch up");
        var streamed = (await client.AuditStream()).Select(e => e["id"]!.GetValue<long>()).ToList();
        Assert.Equal(recorded, streamed);
    }
}
