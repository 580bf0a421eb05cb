using System.Collections.Concurrent;
using System.Collections.Immutable;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json.Nodes;
using DurableSessions.Live;

namespace DurableSessions.AspNetCore.Subscriptions;

/// <summary>
/// The subscriptions themselves: creating, reading, changing and deleting them and their links, their persistence in
/// the store's documents, the lock their changes run under, and (on a shared store) reloading what other nodes changed.
/// Keeps an index from stream paths to the subscriptions an append there can concern.
/// </summary>
/// <remarks>
/// Mutations happen only inside <see cref="EnterAsync"/>, and are persisted before they take effect for clients.
/// <see cref="Candidates"/> and <see cref="IsEmpty"/> read an immutable snapshot and may be called from any thread.
/// </remarks>
internal sealed class SubscriptionRegistry : IDisposable
{
    private const string Collection = "subscriptions";
    private const string MetaCollection = "subscriptions-meta";
    private static readonly TimeSpan SharedLockLease = TimeSpan.FromSeconds(30);

    private readonly StreamStore _store;
    private readonly WakeScheduler _scheduler;
    private readonly Coordination.SharedSection _section;
    private readonly ConcurrentDictionary<string, Subscription> _subscriptions = new(StringComparer.Ordinal);

    // Replaced, never changed in place (writers hold the lock), so the append path reads them without it.
    private ImmutableDictionary<string, ImmutableHashSet<string>> _byPath = ImmutableDictionary.Create<string, ImmutableHashSet<string>>(StringComparer.Ordinal);
    private ImmutableDictionary<string, string> _globs = ImmutableDictionary.Create<string, string>(StringComparer.Ordinal);
    private WebhookSigningKeys? _keys;
    private string? _loadedVersion;

    // A version no stored one equals: the next entry (or staleness check) reloads every subscription.
    private const string NotLoaded = "\u0000not-loaded";

    private readonly SubscriptionOptions _options;

    public SubscriptionRegistry(StreamStore store, WakeScheduler scheduler, Microsoft.Extensions.Options.IOptions<SubscriptionOptions> options, Microsoft.Extensions.Logging.ILogger<SubscriptionRegistry> logger)
    {
        _store = store;
        _options = options.Value;
        _section = new Coordination.SharedSection(store, Collection, SharedLockLease, logger);
        _scheduler = scheduler;
    }

    /// <summary>The signing keys of webhooks and wake tokens, loaded by <see cref="StartAsync"/>.</summary>
    public WebhookSigningKeys Keys => _keys ?? throw new InvalidOperationException("Subscriptions have not started.");

    /// <summary>Whether the store is shared by several nodes, any of which may change subscriptions.</summary>
    public bool IsShared => _store.IsShared;

    /// <summary>Whether this node knows of no subscription.</summary>
    public bool IsEmpty => _subscriptions.IsEmpty;

    /// <summary>Loads the signing keys and the stored subscriptions.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        // Under the shared lock, so nodes starting together agree on one set of keys.
        var held = await _store.AcquireLockAsync(Collection, SharedLockLease, cancellationToken).ConfigureAwait(false);
        await using (held.ConfigureAwait(false))
        {
            _keys = await WebhookSigningKeys.LoadOrCreateAsync(_store, held, cancellationToken).ConfigureAwait(false);
        }

        await using (await _section.EnterAsync(_ => Task.CompletedTask, cancellationToken).ConfigureAwait(false))
        {
            await ReloadAsync(cancellationToken).ConfigureAwait(false);
            _loadedVersion = await ReadVersionAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>The subscription <paramref name="id"/>, as last loaded.</summary>
    public Subscription? Get(string id) => _subscriptions.GetValueOrDefault(id);

    /// <summary>Every subscription this node knows.</summary>
    public IEnumerable<Subscription> All => _subscriptions.Values;

    /// <summary>
    /// Whether another node has changed the stored subscriptions since this node loaded them. One document read, no
    /// lock; always false on a store of one node.
    /// </summary>
    public async ValueTask<bool> IsStaleAsync(CancellationToken cancellationToken)
        => _store.IsShared && await ReadVersionAsync(cancellationToken).ConfigureAwait(false) != Volatile.Read(ref _loadedVersion);

    /// <summary>
    /// The subscriptions an append to (or deletion of) <paramref name="change"/>'s stream can concern: those linked to
    /// the path, and those whose pattern matches it. Costs one lookup plus one match per pattern subscription.
    /// </summary>
    public List<Subscription> Candidates(LiveAppend change)
    {
        var found = new List<Subscription>();
        var linked = _byPath.GetValueOrDefault(change.Path);
        foreach (var id in linked ?? [])
        {
            if (_subscriptions.TryGetValue(id, out var subscription) && subscription.Config.WakeStream != change.Path)
            {
                found.Add(subscription);
            }
        }

        if (!change.Deleted)
        {
            foreach (var (id, pattern) in _globs)
            {
                if (linked?.Contains(id) != true && PathGlob.IsMatch(pattern, change.Path)
                    && _subscriptions.TryGetValue(id, out var subscription) && subscription.Config.WakeStream != change.Path)
                {
                    found.Add(subscription);
                }
            }
        }

        return found;
    }

    /// <summary>
    /// Creates a subscription, or confirms an identical one. Refused, changing nothing, for a different configuration
    /// under the id, or past <see cref="SubscriptionOptions.MaxSubscriptions"/> or
    /// <see cref="SubscriptionOptions.MaxStreamsPerSubscription"/>.
    /// </summary>
    public async Task<(SubscriptionPutStatus Status, Subscription? Subscription)> CreateAsync(string id, SubscriptionConfig config, string baseUrl, CancellationToken cancellationToken)
    {
        var hash = config.Hash();
        if (_subscriptions.TryGetValue(id, out var existing))
        {
            return existing.ConfigHash == hash ? (SubscriptionPutStatus.Confirmed, existing) : (SubscriptionPutStatus.Conflict, existing);
        }

        // Limits of this server's: subscriptions stored before a limit was lowered stay.
        if (_subscriptions.Count >= _options.MaxSubscriptions)
        {
            return (SubscriptionPutStatus.SubscriptionLimit, null);
        }

        var maxStreams = _options.MaxStreamsPerSubscription;
        if (config.Streams.Count > maxStreams)
        {
            return (SubscriptionPutStatus.StreamLimit, null);
        }

        var subscription = new Subscription
        {
            Id = id,
            Config = config,
            ConfigHash = hash,
            BaseUrl = baseUrl,
            CreatedAt = _store.TimeProvider.GetUtcNow(),
        };

        // Existing matching streams are linked at their tail: creation does not replay history.
        if (config.Pattern is { } pattern)
        {
            // Filtered by path before the store reads anything of a stream: only matching streams are looked up.
            await foreach (var path in _store.ListPathsAsync(path => path != config.WakeStream && PathGlob.IsMatch(pattern, path), cancellationToken).ConfigureAwait(false))
            {
                if (subscription.Links.Count >= maxStreams)
                {
                    return (SubscriptionPutStatus.StreamLimit, null);
                }

                var (tail, streamId) = await StreamAtAsync(path, cancellationToken).ConfigureAwait(false);
                subscription.Links[path] = new SubscriptionLink { Glob = true, AckedPosition = tail, StreamId = streamId };
            }
        }

        if (subscription.Links.Count + config.Streams.Count(path => !subscription.Links.ContainsKey(path)) > maxStreams)
        {
            return (SubscriptionPutStatus.StreamLimit, null);
        }

        // Indexed only once it is kept: a refused create leaves no path pointing at it.
        foreach (var path in config.Streams)
        {
            await LinkExplicitAsync(subscription, path, cancellationToken, index: false).ConfigureAwait(false);
        }

        await SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
        _subscriptions[id] = subscription;
        Index(subscription);
        return (SubscriptionPutStatus.Created, subscription);
    }

    /// <summary>Deletes a subscription; false when there is none.</summary>
    public async Task<bool> DeleteAsync(string id, CancellationToken cancellationToken)
    {
        if (!_subscriptions.TryRemove(id, out var subscription))
        {
            return false;
        }

        subscription.Deleted = true;
        Unindex(subscription);
        _scheduler.Forget(id);
        await WriteChangeAsync(ct => _section.DeleteDocumentAsync(Collection, id, ct), cancellationToken).ConfigureAwait(false);
        return true;
    }

    /// <summary>
    /// Links <paramref name="paths"/> explicitly (new links start at the stream's tail). Refused, changing nothing, when
    /// there is no such subscription or the links would pass <see cref="SubscriptionOptions.MaxStreamsPerSubscription"/>.
    /// </summary>
    public async Task<SubscriptionAddStatus> AddStreamsAsync(string id, IReadOnlyList<string> paths, CancellationToken cancellationToken)
    {
        if (!_subscriptions.TryGetValue(id, out var subscription))
        {
            return SubscriptionAddStatus.NotFound;
        }

        if (subscription.Links.Count + paths.Distinct(StringComparer.Ordinal).Count(path => !subscription.Links.ContainsKey(path)) > _options.MaxStreamsPerSubscription)
        {
            return SubscriptionAddStatus.StreamLimit;
        }

        foreach (var path in paths)
        {
            await LinkExplicitAsync(subscription, path, cancellationToken).ConfigureAwait(false);
        }

        await SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
        return SubscriptionAddStatus.Added;
    }

    /// <summary>Removes the explicit link to <paramref name="path"/> (a pattern may keep it linked); false when there is no such subscription.</summary>
    public async Task<bool> RemoveStreamAsync(string id, string path, CancellationToken cancellationToken)
    {
        if (!_subscriptions.TryGetValue(id, out var subscription))
        {
            return false;
        }

        if (subscription.Links.TryGetValue(path, out var link) && link.Explicit)
        {
            link.Explicit = false;
            if (subscription.Config.Pattern is { } pattern && PathGlob.IsMatch(pattern, path))
            {
                link.Glob = true;
            }
            else
            {
                subscription.Links.Remove(path);
                SetIndexed(subscription.Id, path, indexed: false);
            }

            await SaveAsync(subscription, cancellationToken).ConfigureAwait(false);
        }

        return true;
    }

    /// <summary>
    /// Drops the link of a deleted stream that only the pattern linked: a stream created again at the path is linked
    /// anew by its first append, and a link kept for every stream that ever matched would be read on every wake.
    /// </summary>
    /// <returns>Whether the link was dropped (an explicit link stays, starting the recreated stream from its beginning).</returns>
    public bool UnlinkDeleted(Subscription subscription, string path)
    {
        if (!subscription.Links.TryGetValue(path, out var link) || link.Explicit)
        {
            return false;
        }

        subscription.Links.Remove(path);
        SetIndexed(subscription.Id, path, indexed: false);
        return true;
    }

    /// <summary>
    /// Links a stream the subscription's pattern newly matches; false, linking nothing, when the subscription already
    /// links <see cref="SubscriptionOptions.MaxStreamsPerSubscription"/> streams.
    /// </summary>
    public bool TryLinkGlob(Subscription subscription, string path, long ackedPosition, long streamId)
    {
        if (subscription.Links.Count >= _options.MaxStreamsPerSubscription)
        {
            return false;
        }

        subscription.Links[path] = new SubscriptionLink { Glob = true, AckedPosition = ackedPosition, StreamId = streamId };
        SetIndexed(subscription.Id, path, indexed: true);
        return true;
    }

    /// <summary>Describes every linked stream: path, link type, acked and tail offsets, whether data is pending.</summary>
    /// <param name="subscription">The subscription.</param>
    /// <param name="cancellationToken">Cancels the reads.</param>
    /// <param name="streamIds">When given, receives the id of each linked stream that exists, by path.</param>
    public async Task<List<JsonObject>> DescribeStreamsAsync(Subscription subscription, CancellationToken cancellationToken, Dictionary<string, long>? streamIds = null)
    {
        var list = new List<JsonObject>(subscription.Links.Count);
        foreach (var (path, link) in subscription.Links.OrderBy(l => l.Key, StringComparer.Ordinal))
        {
            var (tail, id) = await ReadLinkAsync(path, link, cancellationToken).ConfigureAwait(false);
            if (streamIds is not null && id is { } streamId)
            {
                streamIds[path] = streamId;
            }

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

    /// <summary>Whether any linked stream has data past its acknowledged position.</summary>
    public async Task<bool> HasPendingAsync(Subscription subscription, CancellationToken cancellationToken)
    {
        foreach (var (path, link) in subscription.Links)
        {
            if ((await ReadLinkAsync(path, link, cancellationToken).ConfigureAwait(false)).Tail > link.AckedPosition)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// The stream at a link's path, as <see cref="StreamAtAsync"/>. A link whose stream was deleted and created again
    /// since it was last read, by a delete this node never saw (lost with a crash before its pass, or past the bound of
    /// changes waiting), starts the new stream from its beginning, as a delete seen would have made it.
    /// </summary>
    private async Task<(long Tail, long? Id)> ReadLinkAsync(string path, SubscriptionLink link, CancellationToken cancellationToken)
    {
        var (tail, id) = await StreamAtAsync(path, cancellationToken).ConfigureAwait(false);
        if (id is { } current)
        {
            if (link.StreamId is { } known && known != current)
            {
                link.AckedPosition = 0;
            }

            link.StreamId = current;
        }

        return (tail, id);
    }

    /// <summary>Persists <paramref name="subscription"/> (unless deleted) and tells the other nodes.</summary>
    public async Task SaveAsync(Subscription subscription, CancellationToken cancellationToken)
    {
        if (!subscription.Deleted)
        {
            var data = subscription.Serialize();
            await WriteChangeAsync(ct => _section.PutDocumentAsync(Collection, subscription.Id, data, ct), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Stores a change made in memory: first the new version, so that whatever of it the store takes, the other nodes
    /// reload; then the change. When either write fails (the store away, or the shared lock no longer this node's), this
    /// node's copy may hold a change the store never took, so it is read again at the next entry, and a retried call acts
    /// on what the store holds.
    /// </summary>
    private async Task WriteChangeAsync(Func<CancellationToken, ValueTask> write, CancellationToken cancellationToken)
    {
        try
        {
            await BumpVersionAsync(cancellationToken).ConfigureAwait(false);
            await write(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            Volatile.Write(ref _loadedVersion, NotLoaded);
            throw;
        }
    }

    /// <summary>
    /// Enters the subscriptions' critical section: this process's lock and, on a shared store, the lock of every node,
    /// with the subscriptions reloaded if another node changed them.
    /// </summary>
    public Task<ConfiguredAsyncDisposable> EnterAsync(CancellationToken cancellationToken)
        => _section.EnterAsync(ReloadIfChangedAsync, cancellationToken);

    private async Task ReloadIfChangedAsync(CancellationToken cancellationToken)
    {
        var version = await ReadVersionAsync(cancellationToken).ConfigureAwait(false);
        if (version != _loadedVersion)
        {
            await ReloadAsync(cancellationToken).ConfigureAwait(false);
            Volatile.Write(ref _loadedVersion, version);
        }
    }

    public void Dispose() => _section.Dispose();

    private async Task LinkExplicitAsync(Subscription subscription, string path, CancellationToken cancellationToken, bool index = true)
    {
        if (subscription.Links.TryGetValue(path, out var link))
        {
            link.Explicit = true;
            return;
        }

        var (tail, id) = await StreamAtAsync(path, cancellationToken).ConfigureAwait(false);
        subscription.Links[path] = new SubscriptionLink { Explicit = true, AckedPosition = tail, StreamId = id };
        if (index)
        {
            SetIndexed(subscription.Id, path, indexed: true);
        }
    }

    /// <summary>
    /// The tail position and id of the stream at <paramref name="path"/>: 0 and null when there is none, or when it was
    /// deleted and only its forks still read it (it has nothing a subscriber could read, and nothing pending).
    /// </summary>
    public async Task<(long Tail, long? Id)> StreamAtAsync(string path, CancellationToken cancellationToken)
    {
        var lookup = await _store.GetAsync(path, cancellationToken).ConfigureAwait(false);
        return lookup.Status == StreamLookupStatus.Found && lookup.Stream is { } stream ? (stream.TailPosition, stream.Id) : (0, null);
    }

    /// <summary>Marks the stored subscriptions changed, so the other nodes reload them before their next operation.</summary>
    private async Task BumpVersionAsync(CancellationToken cancellationToken)
    {
        if (_store.IsShared)
        {
            var version = Guid.NewGuid().ToString("N");
            await _section.PutDocumentAsync(MetaCollection, "version", Encoding.ASCII.GetBytes(version), cancellationToken).ConfigureAwait(false);
            Volatile.Write(ref _loadedVersion, version);
        }
    }

    private async Task<string?> ReadVersionAsync(CancellationToken cancellationToken)
        => await _store.GetDocumentAsync(MetaCollection, "version", cancellationToken).ConfigureAwait(false) is { } stored ? Encoding.ASCII.GetString(stored) : null;

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

        var byPath = ImmutableDictionary.CreateBuilder<string, ImmutableHashSet<string>>(StringComparer.Ordinal);
        var globs = ImmutableDictionary.CreateBuilder<string, string>(StringComparer.Ordinal);
        foreach (var (id, subscription) in loaded)
        {
            _subscriptions[id] = subscription;
            foreach (var path in subscription.Links.Keys)
            {
                byPath[path] = byPath.GetValueOrDefault(path, ImmutableHashSet.Create<string>(StringComparer.Ordinal)).Add(id);
            }

            if (subscription.Config.Pattern is { } pattern)
            {
                globs[id] = pattern;
            }
        }

        _byPath = byPath.ToImmutable();
        _globs = globs.ToImmutable();
        _scheduler.Reset(loaded.Values);
    }

    private void Index(Subscription subscription)
    {
        foreach (var path in subscription.Links.Keys)
        {
            SetIndexed(subscription.Id, path, indexed: true);
        }

        if (subscription.Config.Pattern is { } pattern)
        {
            _globs = _globs.SetItem(subscription.Id, pattern);
        }
    }

    private void Unindex(Subscription subscription)
    {
        foreach (var path in subscription.Links.Keys)
        {
            SetIndexed(subscription.Id, path, indexed: false);
        }

        _globs = _globs.Remove(subscription.Id);
    }

    private void SetIndexed(string id, string path, bool indexed)
    {
        var ids = _byPath.GetValueOrDefault(path) ?? ImmutableHashSet.Create<string>(StringComparer.Ordinal);
        ids = indexed ? ids.Add(id) : ids.Remove(id);
        _byPath = ids.IsEmpty ? _byPath.Remove(path) : _byPath.SetItem(path, ids);
    }
}

/// <summary>What came of a subscription's create or re-confirmation.</summary>
internal enum SubscriptionPutStatus
{
    Created,
    Confirmed,
    Conflict,
    SubscriptionLimit,
    StreamLimit,
}

/// <summary>What came of linking streams to a subscription explicitly.</summary>
internal enum SubscriptionAddStatus
{
    Added,
    NotFound,
    StreamLimit,
}
