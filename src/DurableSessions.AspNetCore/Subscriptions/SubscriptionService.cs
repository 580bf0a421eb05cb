using System.Collections.Concurrent;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using DurableSessions.AspNetCore.Streams;
using DurableSessions.Live;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DurableSessions.AspNetCore.Subscriptions;

/// <summary>
/// Subscriptions (protocol §6–7): durable cursors over sets of streams that wake workers by webhook or by a wake
/// event on a pull-wake stream, with generation fencing and leases.
/// </summary>
/// <remarks>
/// All state changes happen under one lock and are persisted to the store before they take effect for clients.
/// Appends are observed through the store's fan-out, never by polling streams.
/// </remarks>
internal sealed partial class SubscriptionService : IHostedService, IAsyncDisposable
{
    private const string Collection = "subscriptions";
    private const string MetaCollection = "subscriptions-meta";
    private static readonly TimeSpan SharedLockLease = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan TickInterval = TimeSpan.FromMilliseconds(200);

    private readonly StreamStore _store;
    private readonly SubscriptionOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly SemaphoreSlim _lock = new(1, 1);
    private readonly ConcurrentDictionary<string, Subscription> _subscriptions = new(StringComparer.Ordinal);
    private readonly Channel<LiveAppend> _appends = Channel.CreateUnbounded<LiveAppend>(new UnboundedChannelOptions { SingleReader = true });
    private readonly HttpClient _http;
    private readonly CancellationTokenSource _stopping = new();
    private WebhookSigningKeys? _keys;
    private string? _loadedVersion;
    private Task? _loop;
    private ITimer? _timer;

    public SubscriptionService(StreamStore store, IOptions<SubscriptionOptions> options, ILogger<SubscriptionService> logger)
    {
        _store = store;
        _options = options.Value;
        _logger = logger;
        _time = store.TimeProvider;
        _http = Outbound.OutboundHttpClientFactory.Create(_options.AllowLocalhostWebhooks, _options.WebhookTimeout);
    }

    public WebhookSigningKeys Keys => _keys ?? throw new InvalidOperationException("Subscriptions have not started.");

    public SubscriptionOptions Options => _options;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        // Under the shared lock, so nodes starting together agree on one set of keys.
        await using (await _store.AcquireLockAsync(Collection, SharedLockLease, cancellationToken).ConfigureAwait(false))
        {
            _keys = await WebhookSigningKeys.LoadOrCreateAsync(_store, cancellationToken).ConfigureAwait(false);
            await ReloadAsync(cancellationToken).ConfigureAwait(false);
            _loadedVersion = await ReadVersionAsync(cancellationToken).ConfigureAwait(false);
        }

        _store.Fanout.AddObserver(change =>
        {
            // Each change is delivered once, by the node that committed it. On a shared store another node may have
            // created a subscription this node has not loaded yet, so every local change is looked at.
            if (!change.IsRemote && (_store.IsShared || !_subscriptions.IsEmpty))
            {
                _appends.Writer.TryWrite(change);
            }
        });
        _loop = Task.Run(ProcessAppendsAsync, CancellationToken.None);
        _timer = _time.CreateTimer(_ => _appends.Writer.TryWrite(TickMarker), null, TickInterval, TickInterval);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        _appends.Writer.TryComplete();
        if (_timer is not null)
        {
            await _timer.DisposeAsync().ConfigureAwait(false);
        }

        if (_loop is not null)
        {
            // The loop ends promptly once stopping is signalled; if the host's shutdown timeout passes first, stop
            // without it rather than fail the shutdown (deliveries resume from their stored offsets on the next start).
            await _loop.WaitAsync(cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_stopping.IsCancellationRequested)
        {
            await StopAsync(CancellationToken.None).ConfigureAwait(false);
        }

        _http.Dispose();
        _lock.Dispose();
        _stopping.Dispose();
    }

    private static readonly LiveAppend TickMarker = new(-1, string.Empty, default, closed: false);

    // ---- API operations (called by SubscriptionEndpoints) ----

    public async Task<(int Status, Subscription? Subscription)> PutAsync(string id, SubscriptionConfig config, string baseUrl, CancellationToken cancellationToken)
    {
        await using var held = await EnterAsync(cancellationToken).ConfigureAwait(false);
        var hash = config.Hash();
        if (_subscriptions.TryGetValue(id, out var existing))
        {
            return existing.ConfigHash == hash ? (200, existing) : (409, existing);
        }

        var subscription = new Subscription
        {
            Id = id,
            Config = config,
            ConfigHash = hash,
            BaseUrl = baseUrl,
            CreatedAt = _time.GetUtcNow(),
        };

        // Existing matching streams are linked at their tail: creation does not replay history.
        if (config.Pattern is { } pattern)
        {
            await foreach (var path in _store.ListPathsAsync(cancellationToken).ConfigureAwait(false))
            {
                if (path != config.WakeStream && PathGlob.IsMatch(pattern, path))
                {
                    subscription.Links[path] = new SubscriptionLink { Glob = true, AckedPosition = await TailOf(path, cancellationToken).ConfigureAwait(false) };
                }
            }
        }

        foreach (var path in config.Streams)
        {
            await LinkExplicit(subscription, path, cancellationToken).ConfigureAwait(false);
        }

        await SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
        _subscriptions[id] = subscription;
        Log.Created(_logger, id, config.Type);
        return (201, subscription);
    }

    public async Task<Subscription?> GetAsync(string id, CancellationToken cancellationToken)
    {
        if (_store.IsShared)
        {
            // Another node may have changed it.
            await using (await EnterAsync(cancellationToken).ConfigureAwait(false))
            {
            }
        }

        return _subscriptions.GetValueOrDefault(id);
    }

    public async Task<bool> DeleteAsync(string id, CancellationToken cancellationToken)
    {
        await using var held = await EnterAsync(cancellationToken).ConfigureAwait(false);
        if (!_subscriptions.TryRemove(id, out var subscription))
        {
            return false;
        }

        subscription.Deleted = true;
        await _store.DeleteDocumentAsync(Collection, id, cancellationToken).ConfigureAwait(false);
        await BumpVersionAsync(cancellationToken).ConfigureAwait(false);
        return true;
    }

    public async Task<bool> AddStreamsAsync(string id, IReadOnlyList<string> paths, CancellationToken cancellationToken)
    {
        await using var held = await EnterAsync(cancellationToken).ConfigureAwait(false);
        if (!_subscriptions.TryGetValue(id, out var subscription))
        {
            return false;
        }

        foreach (var path in paths)
        {
            await LinkExplicit(subscription, path, cancellationToken).ConfigureAwait(false);
        }

        await SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
        return true;
    }

    public async Task<bool> RemoveStreamAsync(string id, string path, CancellationToken cancellationToken)
    {
        await using var held = await EnterAsync(cancellationToken).ConfigureAwait(false);
        if (!_subscriptions.TryGetValue(id, out var subscription))
        {
            return false;
        }

        if (subscription.Links.TryGetValue(path, out var link) && link.Explicit)
        {
            link.Explicit = false;
            var stillGlob = subscription.Config.Pattern is { } pattern && PathGlob.IsMatch(pattern, path);
            if (!stillGlob)
            {
                subscription.Links.Remove(path);
            }
            else
            {
                link.Glob = true;
            }

            await SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
        }

        return true;
    }

    /// <summary>Applies a webhook callback or a pull-wake ack. Returns null when fenced.</summary>
    public async Task<AckOutcome> AckAsync(string id, string? token, string? wakeId, long? generation, IReadOnlyList<(string Stream, string Offset)> acks, bool done, CancellationToken cancellationToken)
    {
        await using var held = await EnterAsync(cancellationToken).ConfigureAwait(false);
        if (!_subscriptions.TryGetValue(id, out var subscription))
        {
            return AckOutcome.NotFound;
        }

        if (!IsCurrent(subscription, token, wakeId, generation))
        {
            return AckOutcome.Fenced;
        }

        foreach (var (stream, offset) in acks)
        {
            if (subscription.Links.TryGetValue(stream, out var link) && StreamOffset.TryParse(offset, out var position) && position > link.AckedPosition)
            {
                link.AckedPosition = position;
            }
        }

        var now = _time.GetUtcNow();
        if (!done)
        {
            subscription.LeaseExpiresAt = now.AddMilliseconds(subscription.Config.LeaseTtlMs);
            await SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
            return AckOutcome.Ok(nextWake: false);
        }

        ClearWake(subscription);
        var pending = await HasPendingAsync(subscription, cancellationToken).ConfigureAwait(false);
        await SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
        if (pending)
        {
            await WakeAsync(subscription, cancellationToken).ConfigureAwait(false);
        }

        return AckOutcome.Ok(pending);
    }

    public async Task<AckOutcome> ReleaseAsync(string id, string? token, string? wakeId, long? generation, CancellationToken cancellationToken)
    {
        await using var held = await EnterAsync(cancellationToken).ConfigureAwait(false);
        if (!_subscriptions.TryGetValue(id, out var subscription))
        {
            return AckOutcome.NotFound;
        }

        if (!IsCurrent(subscription, token, wakeId, generation))
        {
            return AckOutcome.Fenced;
        }

        ClearWake(subscription);
        await SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
        if (await HasPendingAsync(subscription, cancellationToken).ConfigureAwait(false))
        {
            await WakeAsync(subscription, cancellationToken).ConfigureAwait(false);
        }

        return AckOutcome.Ok(nextWake: false);
    }

    public async Task<ClaimOutcome> ClaimAsync(string id, string worker, CancellationToken cancellationToken)
    {
        await using var held = await EnterAsync(cancellationToken).ConfigureAwait(false);
        if (!_subscriptions.TryGetValue(id, out var subscription))
        {
            return new ClaimOutcome(ClaimStatus.NotFound, null, null);
        }

        if (subscription.Config.IsWebhook)
        {
            return new ClaimOutcome(ClaimStatus.WrongType, subscription, null);
        }

        var now = _time.GetUtcNow();
        if (subscription.Holder is not null && subscription.LeaseExpiresAt > now)
        {
            return new ClaimOutcome(ClaimStatus.AlreadyClaimed, subscription, null);
        }

        if (subscription.WakeId is null)
        {
            if (!await HasPendingAsync(subscription, cancellationToken).ConfigureAwait(false))
            {
                return new ClaimOutcome(ClaimStatus.NothingPending, subscription, null);
            }

            await WakeAsync(subscription, cancellationToken).ConfigureAwait(false);
        }

        subscription.Holder = worker;
        subscription.LeaseExpiresAt = now.AddMilliseconds(subscription.Config.LeaseTtlMs);
        await SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
        var streams = await DescribeStreamsAsync(subscription, cancellationToken).ConfigureAwait(false);
        return new ClaimOutcome(ClaimStatus.Claimed, subscription, streams);
    }

    public async Task<List<JsonObject>> DescribeStreamsAsync(Subscription subscription, CancellationToken cancellationToken)
    {
        var list = new List<JsonObject>(subscription.Links.Count);
        foreach (var (path, link) in subscription.Links.OrderBy(l => l.Key, StringComparer.Ordinal))
        {
            var tail = await TailOf(path, cancellationToken).ConfigureAwait(false);
            list.Add(new JsonObject
            {
                ["path"] = path,
                ["link_type"] = link.Explicit ? "explicit" : "glob",
                ["acked_offset"] = StreamOffset.Format(link.AckedPosition),
                ["tail_offset"] = StreamOffset.Format(Math.Max(tail, link.AckedPosition)),
                ["has_pending"] = tail > link.AckedPosition,
            });
        }

        return list;
    }

    // ---- wake machinery ----

    private async Task ProcessAppendsAsync()
    {
        var token = _stopping.Token;
        try
        {
            while (await _appends.Reader.WaitToReadAsync(token).ConfigureAwait(false))
            {
                var held = await EnterAsync(token).ConfigureAwait(false);
                try
                {
                    var tick = false;
                    var touched = new HashSet<Subscription>();
                    var changed = new HashSet<Subscription>();
                    while (_appends.Reader.TryRead(out var change))
                    {
                        if (ReferenceEquals(change, TickMarker))
                        {
                            tick = true;
                            continue;
                        }

                        foreach (var subscription in _subscriptions.Values)
                        {
                            var observed = Observe(subscription, change);
                            if (observed != Observation.Unrelated)
                            {
                                touched.Add(subscription);
                            }

                            if (observed == Observation.Linked)
                            {
                                changed.Add(subscription);
                            }
                        }
                    }

                    if (tick)
                    {
                        ExpireLeases(touched, changed);
                    }

                    foreach (var subscription in touched)
                    {
                        if (subscription.Deleted)
                        {
                            continue;
                        }

                        if (changed.Contains(subscription))
                        {
                            await SaveAsync(subscription, token).ConfigureAwait(false);
                        }

                        if (IsIdle(subscription) && await HasPendingAsync(subscription, token).ConfigureAwait(false))
                        {
                            await WakeAsync(subscription, token).ConfigureAwait(false);
                        }
                    }
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    Log.ProcessingFailed(_logger, ex);
                }
                finally
                {
                    await held.DisposeAsync();
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Links a newly seen matching stream; returns whether the subscription may need a wake.</summary>
    private static Observation Observe(Subscription subscription, LiveAppend change)
    {
        if (change.Path == subscription.Config.WakeStream)
        {
            return Observation.Unrelated;
        }

        if (subscription.Links.TryGetValue(change.Path, out var link))
        {
            if (change.Deleted)
            {
                // A recreated stream starts again from its beginning.
                link.AckedPosition = 0;
                return Observation.Linked;
            }

            return Observation.Existing;
        }

        if (change.Deleted || subscription.Config.Pattern is not { } pattern || !PathGlob.IsMatch(pattern, change.Path))
        {
            return Observation.Unrelated;
        }

        // Linked "before" this append so the append itself is pending.
        subscription.Links[change.Path] = new SubscriptionLink { Glob = true, AckedPosition = change.Chunk.Start };
        return Observation.Linked;
    }

    private enum Observation
    {
        Unrelated,
        Existing,
        Linked,
    }

    private void ExpireLeases(HashSet<Subscription> touched, HashSet<Subscription> changed)
    {
        var now = _time.GetUtcNow();
        foreach (var subscription in _subscriptions.Values)
        {
            if (subscription.LeaseExpiresAt is { } expires && expires <= now)
            {
                Log.LeaseExpired(_logger, subscription.Id, subscription.Generation);
                ClearWake(subscription);
                touched.Add(subscription);
                changed.Add(subscription);
            }
            else if (subscription.Status == "failed" && subscription.WakeId is null && subscription.NextAttemptAt <= now)
            {
                touched.Add(subscription);
            }
        }
    }

    private bool IsIdle(Subscription subscription)
        => subscription.WakeId is null && subscription.Holder is null
           && (subscription.NextAttemptAt is not { } next || next <= _time.GetUtcNow());

    private bool IsCurrent(Subscription subscription, string? token, string? wakeId, long? generation)
    {
        if (!Keys.TryValidateToken(token, out var tokenSubscription, out var tokenGeneration, out var tokenWake))
        {
            return false;
        }

        return tokenSubscription == subscription.Id
            && tokenGeneration == subscription.Generation
            && tokenWake == subscription.WakeId
            && generation == subscription.Generation
            && wakeId == subscription.WakeId;
    }

    private static void ClearWake(Subscription subscription)
    {
        subscription.WakeId = null;
        subscription.WakeSnapshot = null;
        subscription.Holder = null;
        subscription.LeaseExpiresAt = null;
    }

    private async Task<bool> HasPendingAsync(Subscription subscription, CancellationToken cancellationToken)
    {
        foreach (var (path, link) in subscription.Links)
        {
            if (await TailOf(path, cancellationToken).ConfigureAwait(false) > link.AckedPosition)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Starts a new wake generation: a webhook delivery, or a wake event on the pull-wake stream.</summary>
    private async Task WakeAsync(Subscription subscription, CancellationToken cancellationToken)
    {
        subscription.Generation++;
        subscription.WakeId = "w_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12));
        var streams = await DescribeStreamsAsync(subscription, cancellationToken).ConfigureAwait(false);
        subscription.WakeSnapshot = streams.ToDictionary(s => (string)s["path"]!, s => StreamOffset.TryParse((string)s["tail_offset"]!, out var p) ? p : 0, StringComparer.Ordinal);
        Log.Waking(_logger, subscription.Id, subscription.Generation);

        if (subscription.Config.IsWebhook)
        {
            subscription.LeaseExpiresAt = _time.GetUtcNow().AddMilliseconds(subscription.Config.LeaseTtlMs);
            await SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
            var callbackUrl = $"{subscription.BaseUrl}{StreamPaths.Root}/{StreamPaths.Reserved}/subscriptions/{Uri.EscapeDataString(subscription.Id)}/callback";
            var body = new JsonObject
            {
                ["subscription_id"] = subscription.Id,
                ["wake_id"] = subscription.WakeId,
                ["generation"] = subscription.Generation,
                ["streams"] = new JsonArray([.. streams]),
                ["callback_url"] = callbackUrl,
                ["callback_token"] = Keys.IssueToken(subscription.Id, subscription.Generation, subscription.WakeId),
            };
            var bytes = JsonSerializer.SerializeToUtf8Bytes(body);
            _ = Task.Run(async () =>
            {
                try
                {
                    await DeliverAsync(subscription, subscription.Generation, subscription.WakeId, bytes).ConfigureAwait(false);
                }
                catch (Exception ex)
                {
                    // A fire-and-forget delivery must never fault unobserved.
                    Log.WebhookFailed(_logger, subscription.Id, 0, ex);
                }
            }, CancellationToken.None);
            return;
        }

        await SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var events = new JsonArray();
        foreach (var stream in streams.Where(s => (bool)s["has_pending"]!))
        {
            events.Add(new JsonObject
            {
                ["type"] = "wake",
                ["subscription_id"] = subscription.Id,
                ["stream"] = (string)stream["path"]!,
                ["generation"] = subscription.Generation,
                ["ts"] = now,
            });
        }

        var payload = JsonSerializer.SerializeToUtf8Bytes(events);
        if (!JsonFraming.TryFrame(payload, allowEmptyArray: false, out var framed, out _))
        {
            return;
        }

        var result = await _store.AppendAsync(new AppendRequest { Path = subscription.Config.WakeStream!, ContentType = StreamContentType.Json, Data = framed }, cancellationToken).ConfigureAwait(false);
        if (result.Status != AppendStatus.Appended)
        {
            Log.WakeStreamRejected(_logger, subscription.Id, subscription.Config.WakeStream!, result.Status);
        }
    }

    private async Task DeliverAsync(Subscription subscription, long generation, string wakeId, byte[] body)
    {
        bool? done = null;
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, subscription.Config.WebhookUrl);
            request.Content = new ByteArrayContent(body);
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            request.Headers.TryAddWithoutValidation("Webhook-Signature", Keys.SignatureHeader(_time.GetUtcNow().ToUnixTimeSeconds(), body));
            using var response = await _http.SendAsync(request, _stopping.Token).ConfigureAwait(false);
            if (response.IsSuccessStatusCode)
            {
                done = false;
                var text = await response.Content.ReadAsByteArrayAsync(_stopping.Token).ConfigureAwait(false);
                if (text.Length > 0)
                {
                    try
                    {
                        done = JsonNode.Parse(text) is JsonObject reply && reply["done"] is JsonValue value && value.TryGetValue<bool>(out var d) && d;
                    }
                    catch (Exception ex) when (ex is JsonException or ArgumentException or InvalidOperationException)
                    {
                        // Any reply that is not a well-formed {"done": true} means not done.
                    }
                }
            }
            else
            {
                Log.WebhookFailed(_logger, subscription.Id, (int)response.StatusCode, null);
            }
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or OperationCanceledException)
        {
            if (_stopping.IsCancellationRequested)
            {
                return;
            }

            Log.WebhookFailed(_logger, subscription.Id, 0, ex);
        }

        await using var held = await EnterAsync(CancellationToken.None).ConfigureAwait(false);
        // The current instance: on a shared store it may have been reloaded while the webhook was out.
        if (_subscriptions.GetValueOrDefault(subscription.Id) is not { } current)
        {
            return;
        }

        subscription = current;
        if (subscription.Deleted || subscription.Generation != generation || subscription.WakeId != wakeId)
        {
            return;
        }

        if (done is null)
        {
            // Exponential backoff from 1 s to 60 s with 20% jitter; persisted so a restart honours it.
            subscription.FailedAttempts++;
            var delay = Math.Min(60, Math.Pow(2, subscription.FailedAttempts - 1));
            delay *= 1 + ((Random.Shared.NextDouble() * 0.4) - 0.2);
            subscription.Status = "failed";
            subscription.NextAttemptAt = _time.GetUtcNow().AddSeconds(delay);
            ClearWake(subscription);
            await SaveAsync(subscription, CancellationToken.None).ConfigureAwait(false);
            return;
        }

        subscription.Status = "active";
        subscription.FailedAttempts = 0;
        subscription.NextAttemptAt = null;
        if (done == true)
        {
            foreach (var (path, tail) in subscription.WakeSnapshot ?? [])
            {
                if (subscription.Links.TryGetValue(path, out var link) && tail > link.AckedPosition)
                {
                    link.AckedPosition = tail;
                }
            }

            ClearWake(subscription);
            await SaveAsync(subscription, CancellationToken.None).ConfigureAwait(false);
            if (await HasPendingAsync(subscription, CancellationToken.None).ConfigureAwait(false))
            {
                await WakeAsync(subscription, CancellationToken.None).ConfigureAwait(false);
            }

            return;
        }

        await SaveAsync(subscription, CancellationToken.None).ConfigureAwait(false);
    }

    private async Task LinkExplicit(Subscription subscription, string path, CancellationToken cancellationToken)
    {
        if (subscription.Links.TryGetValue(path, out var link))
        {
            link.Explicit = true;
            return;
        }

        subscription.Links[path] = new SubscriptionLink { Explicit = true, AckedPosition = await TailOf(path, cancellationToken).ConfigureAwait(false) };
    }

    private async Task<long> TailOf(string path, CancellationToken cancellationToken)
    {
        var lookup = await _store.GetAsync(path, cancellationToken).ConfigureAwait(false);
        return lookup.Stream?.TailPosition ?? 0;
    }

    private async Task SaveAsync(Subscription subscription, CancellationToken cancellationToken)
    {
        if (!subscription.Deleted)
        {
            await _store.PutDocumentAsync(Collection, subscription.Id, subscription.Serialize(), cancellationToken).ConfigureAwait(false);
            await BumpVersionAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Marks the stored subscriptions changed, so the other nodes reload them before their next operation.</summary>
    private async Task BumpVersionAsync(CancellationToken cancellationToken)
    {
        if (_store.IsShared)
        {
            var version = Guid.NewGuid().ToString("N");
            await _store.PutDocumentAsync(MetaCollection, "version", System.Text.Encoding.ASCII.GetBytes(version), cancellationToken).ConfigureAwait(false);
            _loadedVersion = version;
        }
    }

    /// <summary>
    /// Enters the subscriptions' critical section: this process's lock and, on a shared store, the lock of every node,
    /// with the subscriptions reloaded if another node changed them.
    /// </summary>
    private async Task<System.Runtime.CompilerServices.ConfiguredAsyncDisposable> EnterAsync(CancellationToken cancellationToken)
    {
        await _lock.WaitAsync(cancellationToken).ConfigureAwait(false);
        if (!_store.IsShared)
        {
            return new Held(this, null).ConfigureAwait(false);
        }

        IAsyncDisposable? shared = null;
        try
        {
            shared = await _store.AcquireLockAsync(Collection, SharedLockLease, cancellationToken).ConfigureAwait(false);
            await RefreshAsync(cancellationToken).ConfigureAwait(false);
            return new Held(this, shared).ConfigureAwait(false);
        }
        catch
        {
            if (shared is not null)
            {
                await shared.DisposeAsync().ConfigureAwait(false);
            }

            _lock.Release();
            throw;
        }
    }

    private sealed class Held(SubscriptionService owner, IAsyncDisposable? shared) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            try
            {
                if (shared is not null)
                {
                    await shared.DisposeAsync().ConfigureAwait(false);
                }
            }
            finally
            {
                owner._lock.Release();
            }
        }
    }

    private async Task<string?> ReadVersionAsync(CancellationToken cancellationToken)
        => await _store.GetDocumentAsync(MetaCollection, "version", cancellationToken).ConfigureAwait(false) is { } stored ? System.Text.Encoding.ASCII.GetString(stored) : null;

    private async Task RefreshAsync(CancellationToken cancellationToken)
    {
        var version = await ReadVersionAsync(cancellationToken).ConfigureAwait(false);
        if (version != _loadedVersion)
        {
            await ReloadAsync(cancellationToken).ConfigureAwait(false);
            _loadedVersion = version;
        }
    }

    private async Task ReloadAsync(CancellationToken cancellationToken)
    {
        var loaded = new Dictionary<string, Subscription>(StringComparer.Ordinal);
        await foreach (var (id, data) in _store.ListDocumentsAsync(Collection, cancellationToken).ConfigureAwait(false))
        {
            if (Subscription.Deserialize(data) is { } subscription)
            {
                loaded[id] = subscription;
            }
        }

        // Instances still referenced by work in flight see themselves replaced, as if deleted, and stop.
        foreach (var (id, old) in _subscriptions)
        {
            old.Deleted = true;
            _subscriptions.TryRemove(id, out _);
        }

        foreach (var (id, subscription) in loaded)
        {
            _subscriptions[id] = subscription;
        }
    }

    private static partial class Log
    {
        [LoggerMessage(200, LogLevel.Information, "Subscription {Id} created ({Type})")]
        public static partial void Created(ILogger logger, string id, string type);

        [LoggerMessage(201, LogLevel.Debug, "Subscription {Id} wake generation {Generation}")]
        public static partial void Waking(ILogger logger, string id, long generation);

        [LoggerMessage(202, LogLevel.Warning, "Webhook delivery for subscription {Id} failed (status {Status}); retrying with backoff")]
        public static partial void WebhookFailed(ILogger logger, string id, int status, Exception? exception);

        [LoggerMessage(203, LogLevel.Debug, "Subscription {Id} lease of generation {Generation} expired")]
        public static partial void LeaseExpired(ILogger logger, string id, long generation);

        [LoggerMessage(204, LogLevel.Warning, "Subscription {Id} could not write to its wake stream {WakeStream}: {Status}")]
        public static partial void WakeStreamRejected(ILogger logger, string id, string wakeStream, AppendStatus status);

        [LoggerMessage(205, LogLevel.Error, "Subscription processing failed")]
        public static partial void ProcessingFailed(ILogger logger, Exception exception);
    }
}

/// <summary>Settings of subscriptions. Bound from the <c>Subscriptions</c> configuration section.</summary>
public sealed class SubscriptionOptions
{
    /// <summary>
    /// Whether webhooks and session notifications may target <c>http://localhost</c> and <c>http://127.0.0.x</c>
    /// (development), and so connect to loopback addresses. Private and special-purpose addresses are refused either way.
    /// Default true; set it to false in production.
    /// </summary>
    public bool AllowLocalhostWebhooks { get; set; } = true;

    /// <summary>How long one webhook delivery may take. Default 10 seconds.</summary>
    public TimeSpan WebhookTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>The longest subscription pattern accepted, in characters; longer gets 400 <c>PATTERN_TOO_LARGE</c>. Default 1024.</summary>
    public int MaxPatternLength { get; set; } = 1024;

    /// <summary>The most segments in a subscription pattern; more gets 400 <c>PATTERN_TOO_LARGE</c>. Default 32.</summary>
    public int MaxPatternSegments { get; set; } = 32;

    /// <summary>Validates the settings; called at start-up.</summary>
    public IEnumerable<string> Validate()
    {
        if (MaxPatternLength is < 1 or > 8192)
        {
            yield return "MaxPatternLength must be between 1 and 8192.";
        }

        if (MaxPatternSegments is < 1 or > 256)
        {
            yield return "MaxPatternSegments must be between 1 and 256.";
        }
    }
}

internal readonly record struct AckOutcome(int Status, bool NextWake)
{
    public static AckOutcome NotFound => new(404, false);

    public static AckOutcome Fenced => new(409, false);

    public static AckOutcome Ok(bool nextWake) => new(200, nextWake);
}

internal enum ClaimStatus
{
    Claimed,
    NotFound,
    AlreadyClaimed,
    NothingPending,
    WrongType,
}

internal sealed record ClaimOutcome(ClaimStatus Status, Subscription? Subscription, List<JsonObject>? Streams);
