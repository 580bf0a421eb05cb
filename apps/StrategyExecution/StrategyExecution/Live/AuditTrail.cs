using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.EntityFrameworkCore;
using DurableSessions;
using StrategyExecution.Data;

namespace StrategyExecution.Live;

/// <summary>
/// Appends audit entries to the durable stream <see cref="StreamPath"/>, the app's immutable audit trail and its live
/// feed: dashboards follow it and refresh when something they show changes. Entries are written to the database in the
/// transaction of the change (an outbox) and appended here after it commits, in id order, each batch stamped with its
/// last id as <c>Stream-Seq</c>. After a crash between the two, the stream's last <c>Stream-Seq</c> says which entries
/// it already holds, so none is lost and none is appended twice.
/// </summary>
public sealed partial class AuditTrail(IServiceScopeFactory scopes, StreamStore store, ILogger<AuditTrail> logger) : BackgroundService
{
    /// <summary>The audit stream's path (read it at <c>/v1/stream/strategy/audit</c>).</summary>
    public const string StreamPath = "strategy/audit";

    private const int BatchSize = 256;

    private readonly SemaphoreSlim _wake = new(0);

    /// <summary>Asks for the entries committed since the last call to be appended now.</summary>
    public void Notify()
    {
        if (_wake.CurrentCount == 0)
        {
            _wake.Release();
        }
    }

    /// <inheritdoc/>
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await store.CreateAsync(new CreateStreamRequest { Path = StreamPath, ContentType = "application/json" }, stoppingToken);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await PublishPendingAsync(stoppingToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                Log.PublishFailed(logger, ex);
            }

            // Woken by each change; the timeout retries after a failure. Stopping ends the wait, and the loop with it.
            try
            {
                await _wake.WaitAsync(TimeSpan.FromSeconds(5), stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
        }
    }

    /// <summary>Appends every entry not yet in the stream. Returns how many were appended.</summary>
    internal async Task<int> PublishPendingAsync(CancellationToken cancellationToken)
    {
        await using var scope = scopes.CreateAsyncScope();
        var db = scope.ServiceProvider.GetRequiredService<StrategyDb>();
        var appended = 0;
        await MarkStoredAsync(db, cancellationToken);
        while (true)
        {
            var batch = await db.Audit.AsNoTracking().Where(a => !a.Published).OrderBy(a => a.Id).Take(BatchSize).ToListAsync(cancellationToken);
            if (batch.Count == 0)
            {
                return appended;
            }

            // A review's entries also go to the review's own stream, first: its meeting page follows only that one.
            await PublishToReviewsAsync(batch, cancellationToken);
            var result = await store.AppendAsync(new AppendRequest
            {
                Path = StreamPath,
                ContentType = "application/json",
                Data = Frame(batch),
                StreamSeq = Seq(batch[^1].Id),
            }, cancellationToken);
            if (result.Status == AppendStatus.Appended)
            {
                appended += batch.Count;
                var last = batch[^1].Id;
                await db.Audit.Where(a => !a.Published && a.Id <= last).ExecuteUpdateAsync(s => s.SetProperty(a => a.Published, true), cancellationToken);
            }
            else if (result.Status == AppendStatus.SequenceConflict)
            {
                await MarkStoredAsync(db, cancellationToken);
            }
            else
            {
                throw new InvalidOperationException($"The audit stream refused an append: {result.Status}.");
            }
        }
    }

    /// <summary>The stream of a review's meeting: every change to the review, its agenda, decisions and actions.</summary>
    public static string ReviewStream(int reviewId) => $"strategy/reviews/{reviewId.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>Creates a review's stream, so its meeting page can follow it before anything happens.</summary>
    public async Task CreateReviewStreamAsync(int reviewId, CancellationToken cancellationToken)
        => await store.CreateAsync(new CreateStreamRequest { Path = ReviewStream(reviewId), ContentType = "application/json" }, cancellationToken);

    /// <summary>
    /// Appends each review's entries of <paramref name="batch"/> to the review's stream, skipping those it already holds
    /// (by its last <c>Stream-Seq</c>): a retry after a crash appends each entry once.
    /// </summary>
    private async Task PublishToReviewsAsync(List<AuditEntry> batch, CancellationToken cancellationToken)
    {
        foreach (var group in batch.Select(e => (Entry: e, Review: ReviewOf(e))).Where(x => x.Review is not null).GroupBy(x => x.Review!.Value))
        {
            await CreateReviewStreamAsync(group.Key, cancellationToken);
            var lookup = await store.GetAsync(ReviewStream(group.Key), cancellationToken);
            var last = lookup.Stream?.LastStreamSeq is { } seq && long.TryParse(seq, NumberStyles.None, CultureInfo.InvariantCulture, out var parsed) ? parsed : 0;
            var pending = group.Select(x => x.Entry).Where(e => e.Id > last).ToList();
            if (pending.Count == 0)
            {
                continue;
            }

            var result = await store.AppendAsync(new AppendRequest
            {
                Path = ReviewStream(group.Key),
                ContentType = "application/json",
                Data = Frame(pending),
                StreamSeq = Seq(pending[^1].Id),
            }, cancellationToken);
            if (result.Status is not (AppendStatus.Appended or AppendStatus.SequenceConflict))
            {
                throw new InvalidOperationException($"A review stream refused an append: {result.Status}.");
            }
        }
    }

    private static int? ReviewOf(AuditEntry entry)
        => entry.Subject.StartsWith("review/", StringComparison.Ordinal)
            && int.TryParse(entry.Subject.AsSpan("review/".Length), NumberStyles.None, CultureInfo.InvariantCulture, out var id) ? id : null;

    /// <summary>Marks the entries the stream already holds (up to its last <c>Stream-Seq</c>) as published.</summary>
    private async Task MarkStoredAsync(StrategyDb db, CancellationToken cancellationToken)
    {
        var lookup = await store.GetAsync(StreamPath, cancellationToken);
        if (lookup.Stream?.LastStreamSeq is { } seq && long.TryParse(seq, NumberStyles.None, CultureInfo.InvariantCulture, out var last))
        {
            await db.Audit.Where(a => !a.Published && a.Id <= last).ExecuteUpdateAsync(s => s.SetProperty(a => a.Published, true), cancellationToken);
        }
    }

    /// <summary>Zero-padded, so that the store's ordinal comparison of <c>Stream-Seq</c> orders ids numerically.</summary>
    private static string Seq(long id) => id.ToString("D19", CultureInfo.InvariantCulture);

    private static StreamPayload Frame(List<AuditEntry> batch)
    {
        using var buffer = new MemoryStream();
        for (var i = 0; i < batch.Count; i++)
        {
            if (i > 0)
            {
                buffer.WriteByte((byte)',');
            }

            var entry = batch[i];
            using var writer = new Utf8JsonWriter(buffer);
            writer.WriteStartObject();
            writer.WriteNumber("id", entry.Id);
            writer.WriteString("at", entry.At);
            writer.WriteNumber("actorId", entry.ActorId);
            writer.WriteString("action", entry.Action);
            writer.WriteString("subject", entry.Subject);
            writer.WritePropertyName("details");
            writer.WriteRawValue(Encoding.UTF8.GetBytes(entry.Details));
            writer.WriteEndObject();
        }

        return new StreamPayload(buffer.ToArray(), batch.Count);
    }

    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Warning, "Appending audit entries to the audit stream failed; retrying.")]
        public static partial void PublishFailed(ILogger logger, Exception exception);
    }
}
