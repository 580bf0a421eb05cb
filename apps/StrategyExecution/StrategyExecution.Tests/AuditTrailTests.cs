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

    [Fact]
    public async Task Changes_committed_at_once_all_reach_the_audit_stream_even_when_they_commit_out_of_id_order()
    {
        // Many changes at once, each to a measure of its own so that none waits for another's rows: on PostgreSQL the
        // ids of their audit entries come from a sequence in the order they were asked for, and the transactions commit
        // in whatever order they finish, while the publisher appends what has committed, in id order.
        await using var app = await AppProcess.StartNewAsync();
        using var admin = ApiClient.For(app, 1);
        const int Writers = 12, Each = 25;
        await Task.WhenAll(Enumerable.Range(0, Writers).Select(async writer =>
        {
            for (var i = 0; i < Each; i++)
            {
                using var response = await admin.RecordActual(1 + writer, ApiClient.LastMonth(), i);
                Assert.Equal(System.Net.HttpStatusCode.Created, response.StatusCode);
            }
        }));

        var recorded = (await admin.GetJson("/api/audit?take=1000")).AsArray().Select(a => a!["id"]!.GetValue<long>()).ToList();
        Assert.Equal(Writers * Each, recorded.Count);
        await ApiClient.Until(async () => (await admin.AuditStream()).Count >= recorded.Count || (await admin.AuditStream()).LastOrDefault()?["id"]?.GetValue<long>() == recorded[^1], "the audit stream to catch up");
        var streamed = (await admin.AuditStream()).Select(e => e["id"]!.GetValue<long>()).ToList();
        Assert.Equal(recorded, streamed);
    }
}
