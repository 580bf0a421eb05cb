using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using DurableSessions.AspNetCore.Subscriptions;
using DurableSessions.Live;
using DurableSessions.Sessions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DurableSessions.AspNetCore.Sessions;

/// <summary>
/// Notifies a product when an answer finishes while nobody is watching: when a run of a session ends as
/// <c>finished</c> or <c>failed</c> and no client or human is present in that session, the server POSTs a signed
/// webhook to the session's <c>notifyUrl</c> (or the global <see cref="SessionServiceOptions.NotificationUrl"/>), retrying
/// with exponential backoff.
/// </summary>
/// <remarks>
/// Signature: header <c>DurableSessions-Signature: t={unix seconds},v1={hex HMAC-SHA256(secret, "{t}.{body}")}</c>;
/// each notification has a stable <c>id</c> (also in <c>DurableSessions-Notification-Id</c>) so receivers can drop
/// retries they already handled.
/// </remarks>
internal sealed partial class NotificationService : IHostedService, IDisposable
{
    private readonly StreamStore _store;
    private readonly TimeProvider _time;
    private readonly SessionService _sessions;
    private readonly PresenceService _presence;
    private readonly SessionServiceOptions _options;
    private readonly SubscriptionOptions _webhookPolicy;
    private readonly ILogger _logger;
    // Bounded: the observer runs on the commit path and must never wait, so past the bound changes are dropped (and
    // logged), not held in memory without end.
    private readonly Channel<(LiveAppend Change, bool Watched)> _changes = Channel.CreateBounded<(LiveAppend, bool)>(new BoundedChannelOptions(4096) { SingleReader = true, FullMode = BoundedChannelFullMode.DropWrite });
    private readonly SemaphoreSlim _deliveries;

    // Of the POSTs in flight, those to sessions' own notify URLs: at most three quarters of them (all, when only one may
    // be in flight), so that the operator's URL is not kept waiting behind hosts that never answer.
    private readonly SemaphoreSlim _sessionDeliveries;

    // Notifications admitted and not yet delivered or given up (in flight or waiting to retry), in all and per receiver.
    private readonly Dictionary<string, int> _admitted = new(StringComparer.Ordinal);
    private int _admittedCount;

    // Of those, the ones for sessions' own notify URLs: they hold at most three quarters of the bound, so that the
    // operator's URL keeps a quarter whatever hosts the sessions' writers name.
    private int _sessionsAdmitted;
    private int _dropping;
    private long _changesParsed;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Outbound.WebhookSender _sender;
    private Task _loop = Task.CompletedTask;

    public NotificationService(StreamStore store, SessionService sessions, PresenceService presence, IOptions<SessionServiceOptions> options, IOptions<SubscriptionOptions> webhookPolicy, Outbound.WebhookSender sender, ILogger<NotificationService> logger)
    {
        _time = store.TimeProvider;
        _store = store;
        _sessions = sessions;
        _presence = presence;
        _options = options.Value;
        _webhookPolicy = webhookPolicy.Value;
        _logger = logger;
        _sender = sender;
        _deliveries = new SemaphoreSlim(_options.MaxConcurrentNotifications);
        _sessionDeliveries = new SemaphoreSlim(SessionsShareOfPosts(_options.MaxConcurrentNotifications));
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _store.Fanout.AddObserver(change =>
        {
            // Each change is judged once, by the node that committed it.
            if (!change.IsRemote && !change.Deleted && change.Chunk.End > change.Chunk.Start && SessionService.IsSessionPath(change.Path)
                && (change.Annotation is SessionAppendAnnotation annotation ? annotation.EndedRuns.Count > 0 : MayFinishARun(change.Chunk.Data.Span)))
            {
                // Whether anybody was watching is decided when the change commits, not when it is processed: a client
                // that leaves right after seeing the answer must not turn that answer into a notification.
                if (_changes.Writer.TryWrite((change, _presence.HasWatchers(change.Path[SessionService.Prefix.Length..]))))
                {
                    Volatile.Write(ref _dropping, 0);
                }
                else if (Interlocked.Exchange(ref _dropping, 1) == 0)
                {
                    Log.ChangesDropped(_logger);
                }
            }
        });
        _loop = Task.Run(ProcessAsync, CancellationToken.None);
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        _changes.Writer.TryComplete();
        await _loop.ConfigureAwait(false);
    }

    private async Task ProcessAsync()
    {
        try
        {
            await foreach (var (change, watched) in _changes.Reader.ReadAllAsync(_stopping.Token).ConfigureAwait(false))
            {
                if (watched)
                {
                    continue;
                }

                try
                {
                    await NotifyAsync(change).ConfigureAwait(false);
                }
                catch (Exception ex) when (!_stopping.IsCancellationRequested)
                {
                    // One change that cannot be judged must not end notifications for every later one.
                    Log.ChangeFailed(_logger, ex, change.Path);
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task NotifyAsync(LiveAppend change)
    {
        var notified = new HashSet<string>(StringComparer.Ordinal);
        foreach (var run in EndedRuns(change))
        {
            var runId = run.Id;
            // One notification per run, however many times one change names it.
            if (!notified.Add(runId))
            {
                continue;
            }

            var sessionId = change.Path[SessionService.Prefix.Length..];
            var session = await _sessions.SessionSettingsAsync(sessionId, _stopping.Token).ConfigureAwait(false);
            var own = OwnNotifyUrl(session, sessionId);
            var url = own ?? _options.NotificationUrl;
            if (url is null || WebhookUrlPolicy.Check(url, _webhookPolicy.AllowLocalhostWebhooks) is not null)
            {
                continue;
            }

            var notification = new JsonObject
            {
                ["id"] = "n_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8)),
                ["type"] = "run." + run.Status,
                ["sessionId"] = sessionId,
                ["runId"] = runId,
                ["agent"] = run.Agent(),
                ["messageId"] = run.MessageId(),
                ["offset"] = StreamOffset.Format(change.Chunk.End),
                ["timestamp"] = _time.GetUtcNow().ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture),

                // Signed with the body: one secret signs for every receiver, so a receiver checks that a notification
                // was sent to it, not replayed to it by the receiver of another session's URL.
                ["destination"] = url,
            };
            // The operator's own notification URL is not bounded per receiver: every notification may go there.
            var destination = own is null ? null : HostOf(url);
            if (!TryAdmit(destination))
            {
                Log.Dropped(_logger, SessionJson.Text(notification, "id") ?? string.Empty);
                continue;
            }

            _ = Task.Run(async () =>
            {
                try
                {
                    await DeliverAsync(url, notification, sessionsOwn: destination is not null).ConfigureAwait(false);
                }
                catch (Exception ex)
                {
                    // A fire-and-forget delivery must never fault unobserved (shutdown cancels and disposes its token).
                    Log.AttemptFailed(_logger, SessionJson.Text(notification, "id") ?? string.Empty, 0, 0, ex);
                }
                finally
                {
                    Finish(destination);
                }
            }, CancellationToken.None);
        }
    }

    /// <summary>
    /// The <c>notifyUrl</c> a session was created with, or null. A fork starts as a copy of its source's events, its
    /// <c>session</c> entity included, so that entity names the source: its URL is the source's writer's choice, and the
    /// fork's writer (who needed only read on the source) must not have the fork's runs posted there.
    /// </summary>
    internal static string? OwnNotifyUrl(JsonObject? session, string sessionId)
        => SessionJson.Text(session, "id") == sessionId ? SessionJson.Text(session, "notifyUrl") : null;

    /// <summary>
    /// Whether a change (or one message of it) may hold the end of a run: whether strings in it read <c>run</c> and
    /// <c>finished</c> or <c>failed</c> once unescaped (<see cref="JsonStringScan.MayHoldString"/>). A streamed delta
    /// (most changes), a run's start and the reply beside a run's end have none of one or the other, so they are not
    /// parsed, even when their text has escapes.
    /// </summary>
    internal static bool MayFinishARun(ReadOnlySpan<byte> data)
        => JsonStringScan.MayHoldString(data, "\"run\""u8, "run"u8)
           && (JsonStringScan.MayHoldString(data, "\"finished\""u8, "finished"u8) || JsonStringScan.MayHoldString(data, "\"failed\""u8, "failed"u8));

    /// <summary>
    /// The runs a change finishes or fails: as the append that made it found them (<see cref="SessionAppendAnnotation"/>),
    /// or, for a change without that (a session created or forked with its events, an append the session service did not
    /// check, a change a shared store published from its own notification), read from its data.
    /// </summary>
    private IReadOnlyList<EndedRun> EndedRuns(LiveAppend change)
    {
        if (change.Annotation is SessionAppendAnnotation annotation)
        {
            return annotation.EndedRuns;
        }

        // Each message is judged on its own text first: a reply's final text stored beside its run's end is not parsed.
        Interlocked.Increment(ref _changesParsed);
        return EndedRun.In(SessionState.ParseEvents(change.Chunk.Data.Span, MayFinishARun));
    }

    /// <summary>How many changes the notifier has parsed itself, for want of their append's annotation. For tests.</summary>
    internal long ChangesParsed => Interlocked.Read(ref _changesParsed);

    /// <summary>The receiver a session's notify URL names, for the per-receiver bound: its host (not its port or user info, which cost nothing to vary).</summary>
    private static string HostOf(string url)
        => Uri.TryCreate(url, UriKind.Absolute, out var uri) ? uri.IdnHost.ToLowerInvariant() : url;

    /// <summary>
    /// Admits a notification if the server holds fewer than four times <see cref="SessionServiceOptions.MaxConcurrentNotifications"/>
    /// (in flight or waiting to retry) and, for a session's own notify URL, its host fewer than a quarter of
    /// <see cref="SessionServiceOptions.MaxConcurrentNotifications"/>: a host that is slow or down holds at most that share.
    /// </summary>
    private bool TryAdmit(string? destination)
    {
        lock (_admitted)
        {
            var held = 0;
            var limit = _options.MaxConcurrentNotifications;
            if (_admittedCount >= limit * 4
                || (destination is not null && (_sessionsAdmitted >= limit * 3
                    || (_admitted.TryGetValue(destination, out held) && held >= Math.Max(1, limit / 4)))))
            {
                return false;
            }

            if (destination is not null)
            {
                _admitted[destination] = held + 1;
                _sessionsAdmitted++;
            }

            _admittedCount++;
            return true;
        }
    }

    private void Finish(string? destination)
    {
        lock (_admitted)
        {
            _admittedCount--;
            if (destination is null)
            {
                return;
            }

            _sessionsAdmitted--;

            if (_admitted[destination] == 1)
            {
                _admitted.Remove(destination);
            }
            else
            {
                _admitted[destination]--;
            }
        }
    }

    /// <summary>How many POSTs sessions' own notify URLs may have in flight: all but a quarter (at least one) of them.</summary>
    internal static int SessionsShareOfPosts(int maxConcurrent) => Math.Max(1, maxConcurrent - Math.Max(1, maxConcurrent / 4));

    private async Task DeliverAsync(string url, JsonObject notification, bool sessionsOwn)
    {
        var body = DurableJson.ToUtf8Bytes(notification);
        var id = notification["id"]!.GetValue<string>();
        var delay = _options.NotificationRetryDelay;
        for (var attempt = 1; attempt <= _options.NotificationAttempts && !_stopping.IsCancellationRequested; attempt++)
        {
            var headers = new List<KeyValuePair<string, string>>(2) { new("DurableSessions-Notification-Id", id) };
            if (_options.NotificationSecret is { Length: > 0 } secret)
            {
                headers.Add(new("DurableSessions-Signature", Sign(secret, _time.GetUtcNow().ToUnixTimeSeconds(), body)));
            }

            // A slot is held for each POST, not while waiting to retry: a receiver that is down does not keep slots idle.
            Outbound.WebhookOutcome outcome;
            try
            {
                if (sessionsOwn)
                {
                    await _sessionDeliveries.WaitAsync(_stopping.Token).ConfigureAwait(false);
                }

                try
                {
                    await _deliveries.WaitAsync(_stopping.Token).ConfigureAwait(false);
                    try
                    {
                        outcome = await _sender.SendAsync(url, body, headers, _webhookPolicy.WebhookTimeout, _stopping.Token).ConfigureAwait(false);
                    }
                    finally
                    {
                        _deliveries.Release();
                    }
                }
                finally
                {
                    if (sessionsOwn)
                    {
                        _sessionDeliveries.Release();
                    }
                }
            }
            catch (OperationCanceledException)
            {
                return;
            }

            if (outcome.IsSuccess)
            {
                Telemetry.NotificationsSent.Add(1);
                Log.Delivered(_logger, id, attempt);
                return;
            }

            Log.AttemptFailed(_logger, id, attempt, outcome.Status, outcome.Failure);
            if (attempt == _options.NotificationAttempts)
            {
                // The last attempt: nothing to wait for, and the notification's place among those held is freed now.
                break;
            }

            try
            {
                await Task.Delay(delay, _time, _stopping.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            delay = delay * 2 < SessionServiceOptions.MaxNotificationRetryDelay ? delay * 2 : SessionServiceOptions.MaxNotificationRetryDelay;
        }

        Telemetry.NotificationsFailed.Add(1);
        Log.Dropped(_logger, id);
    }

    /// <summary>The signature header value: <c>t={t},v1={hex HMAC-SHA256(secret, "{t}.{body}")}</c>.</summary>
    public static string Sign(string secret, long unixSeconds, ReadOnlySpan<byte> body)
    {
        var prefix = Encoding.UTF8.GetBytes(unixSeconds.ToString(CultureInfo.InvariantCulture) + ".");
        var payload = new byte[prefix.Length + body.Length];
        prefix.CopyTo(payload, 0);
        body.CopyTo(payload.AsSpan(prefix.Length));
        var mac = HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), payload);
        return string.Create(CultureInfo.InvariantCulture, $"t={unixSeconds},v1={Convert.ToHexStringLower(mac)}");
    }

    public void Dispose()
    {
        _stopping.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(320, LogLevel.Information, "Notification {Id} delivered (attempt {Attempt})")]
        public static partial void Delivered(ILogger logger, string id, int attempt);

        [LoggerMessage(321, LogLevel.Warning, "Notification {Id} attempt {Attempt} failed (status {Status})")]
        public static partial void AttemptFailed(ILogger logger, string id, int attempt, int status, Exception? exception);

        [LoggerMessage(323, LogLevel.Error, "A change of {Path} could not be judged for notifications; it was skipped")]
        public static partial void ChangeFailed(ILogger logger, Exception exception, string path);

        [LoggerMessage(324, LogLevel.Warning, "Session changes arrive faster than notifications are judged; some are dropped until the backlog clears")]
        public static partial void ChangesDropped(ILogger logger);

        [LoggerMessage(322, LogLevel.Error, "Notification {Id} dropped: all attempts failed, or too many notifications are being delivered at once")]
        public static partial void Dropped(ILogger logger, string id);
    }
}
