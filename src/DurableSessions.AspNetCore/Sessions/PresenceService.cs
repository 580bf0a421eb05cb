using System.Globalization;
using System.Text;
using System.Collections.Concurrent;
using DurableSessions.Sessions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DurableSessions.AspNetCore.Sessions;

/// <summary>
/// Presence: participants announce themselves and send heartbeats; the session records <c>joined</c> and
/// <c>left</c> as <c>presence</c> events. A participant that stops beating is marked left after
/// <see cref="SessionServiceOptions.PresenceTimeout"/>, judged by the injected <see cref="TimeProvider"/>.
/// </summary>
/// <remarks>
/// <para>Heartbeats update memory only; the stream records changes of status, not every beat. A status change is
/// written only if the session does not already record it, so nodes deciding the same change write it once.</para>
/// <para>On a store shared by several nodes (<see cref="StreamStore.IsShared"/>) each heartbeat is also kept in the
/// store's documents (collection <c>presence:{session}</c>), so a participant whose beats reach different nodes is
/// not timed out by any of them, and one whose node died is still timed out by the others. Every node sweeps those
/// documents; the "watching" view used for notifications is refreshed by each sweep.</para>
/// </remarks>
internal sealed partial class PresenceService : IHostedService, IAsyncDisposable
{
    private const string SessionsCollection = "presence-sessions";
    private readonly SessionService _sessions;
    private readonly StreamStore _store;
    private readonly SessionServiceOptions _options;
    private readonly TimeProvider _time;
    private readonly SessionEvents _events;
    private readonly ILogger _logger;
    // Present participants per session, so per-session questions (who is watching?) never scan other sessions.
    // An entry is dropped once empty (by the sweep) or once its session is gone, so sessions nobody is present in hold
    // nothing here.
    private readonly ConcurrentDictionary<string, SessionPresence> _present = new(StringComparer.Ordinal);
    // On a shared store: every node's participants, as of the last sweep.
    private volatile Dictionary<string, List<Participant>> _shared = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _sweeping = new(1, 1);
    private ITimer? _timer;

    public PresenceService(SessionService sessions, StreamStore store, IOptions<SessionServiceOptions> options, ILogger<PresenceService> logger)
    {
        _sessions = sessions;
        _store = store;
        _options = options.Value;
        _time = store.TimeProvider;
        _events = new SessionEvents(_time);
        _logger = logger;
    }

    public TimeSpan Timeout => _options.PresenceTimeout;

    /// <summary>For tests: how many sessions this node holds presence for.</summary>
    internal int SessionsHeld => _present.Count;

    /// <summary>Whether any client or human is present in the session (agents do not count).</summary>
    public bool HasWatchers(string sessionId)
    {
        var now = _time.GetUtcNow();
        if (_present.TryGetValue(sessionId, out var participants) && participants.Values.Any(p => Watches(p, now)))
        {
            return true;
        }

        return _shared.TryGetValue(sessionId, out var elsewhere) && elsewhere.Any(p => Watches(p, now));
    }

    private bool Watches(Participant participant, DateTimeOffset now)
        => participant.Kind is "client" or "human" && now - participant.LastSeen < _options.PresenceTimeout;

    /// <summary>Records a heartbeat; appends <c>joined</c> the first time (or after the participant left).</summary>
    /// <remarks>
    /// The session is looked up first: a beat for a session that does not exist (or no longer does) is answered 404 and
    /// leaves nothing behind, and participants of a session deleted and created again under the same id join the new one.
    /// </remarks>
    public async Task<SessionOperationResult> HeartbeatAsync(string sessionId, string participantId, string kind, string? name, CancellationToken cancellationToken)
    {
        _present.TryGetValue(sessionId, out var before);
        var lookup = await _store.GetAsync(SessionService.StreamPath(sessionId), cancellationToken).ConfigureAwait(false);
        if (lookup.Status != StreamLookupStatus.Found)
        {
            // Only the entry there before the lookup: one made since belongs to a session created again meanwhile.
            if (before is not null && _present.TryRemove(new KeyValuePair<string, SessionPresence>(sessionId, before)))
            {
                before.Close();
            }

            return SessionOperationResult.NotFound;
        }

        var now = _time.GetUtcNow();
        var streamId = lookup.Stream!.Id;
        var participants = Present(sessionId, streamId);
        if (_store.IsShared)
        {
            await _store.PutDocumentAsync(Collection(sessionId), participantId, Encode(kind, name, now), cancellationToken).ConfigureAwait(false);
        }

        if (participants.TryGetValue(participantId, out var existing))
        {
            existing.LastSeen = now;
            return SessionOperationResult.Ok(participantId, 0);
        }

        if (_store.IsShared)
        {
            await _store.PutDocumentAsync(SessionsCollection, sessionId, ReadOnlyMemory<byte>.Empty, cancellationToken).ConfigureAwait(false);
        }

        var result = await _sessions.AppendUnlessAsync(sessionId, state => state.GetPresence(participantId)?.Status == PresenceStatus.Joined, _ => [_events.Presence(participantId, new ParticipantKind(kind), name, PresenceStatus.Joined, now)], cancellationToken).ConfigureAwait(false);
        if (result.Status == 200 || result.Code == "ALREADY")
        {
            var participant = new Participant(participantId, kind, name) { LastSeen = now };
            while (!participants.TryJoin(participant))
            {
                // The sweep dropped the entry as empty meanwhile: the participant goes into the session's current one,
                // where the sweep will judge it.
                participants = Present(sessionId, streamId);
            }

            return SessionOperationResult.Ok(participantId, result.Offset);
        }

        return result;
    }

    /// <summary>
    /// The session's entry for its newest incarnation known: <paramref name="streamId"/>'s, replacing an entry of an
    /// earlier one, or the one there already if the session was created again since (stream ids only grow, and the
    /// heartbeat's append goes to the session at its path now).
    /// </summary>
    private SessionPresence Present(string sessionId, long streamId)
    {
        while (true)
        {
            var present = _present.GetOrAdd(sessionId, static (_, id) => new SessionPresence(id), streamId);
            if (present.StreamId >= streamId)
            {
                return present;
            }

            if (_present.TryUpdate(sessionId, new SessionPresence(streamId), present))
            {
                present.Close();
            }
        }
    }

    /// <summary>Marks a participant left at once.</summary>
    public async Task<SessionOperationResult> LeaveAsync(string sessionId, string participantId, CancellationToken cancellationToken)
    {
        _present.TryGetValue(sessionId, out var participants);
        participants?.TryRemove(participantId, out _);
        if (_store.IsShared)
        {
            await _store.DeleteDocumentAsync(Collection(sessionId), participantId, cancellationToken).ConfigureAwait(false);
        }

        var result = await MarkLeftAsync(sessionId, participantId, cancellationToken).ConfigureAwait(false);
        return result.Code == "ALREADY" ? SessionOperationResult.Rejected("NOT_PRESENT", "That participant is not present in the session.") : result;
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _timer = _time.CreateTimer(_ => _ = SweepAsync(), null, _options.PresenceSweepInterval, _options.PresenceSweepInterval);
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_timer is not null)
        {
            await _timer.DisposeAsync().ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None).ConfigureAwait(false);
        _sweeping.Dispose();
    }

    /// <summary>Marks every participant whose last heartbeat is older than the timeout as left.</summary>
    /// <remarks>
    /// A participant is forgotten only once its <c>left</c> event is written: on one node it stays in memory, on a shared
    /// store its document stays, until then, so when the store fails meanwhile the next sweep marks it left. On a shared
    /// store a node also drops a participant of its own whose document another node's sweep deleted: the participant's
    /// next heartbeat then announces it joined again, even if it beat on this node between that sweep's <c>left</c>
    /// and its delete.
    /// </remarks>
    internal async Task SweepAsync()
    {
        if (!await _sweeping.WaitAsync(0).ConfigureAwait(false))
        {
            return;
        }

        try
        {
            var now = _time.GetUtcNow();
            var shared = _store.IsShared ? await LoadSharedAsync().ConfigureAwait(false) : null;
            if (shared is null)
            {
                foreach (var (sessionId, participants) in _present)
                {
                    foreach (var (participantId, participant) in participants)
                    {
                        if (now - participant.LastSeen < _options.PresenceTimeout)
                        {
                            continue;
                        }

                        Log.TimedOut(_logger, sessionId, participantId);
                        await MarkLeftAsync(sessionId, participantId, CancellationToken.None).ConfigureAwait(false);

                        // The entry judged, even if a heartbeat refreshed it meanwhile: that participant's next beat
                        // then finds no entry and announces it joined again after the left event.
                        participants.TryRemove(new KeyValuePair<string, Participant>(participantId, participant));
                    }

                    DropIfEmpty(sessionId, participants);
                }

                return;
            }

            foreach (var (sessionId, participants) in _present)
            {
                foreach (var (participantId, participant) in participants)
                {
                    // A beat that reached another node counts too.
                    var seen = shared.GetValueOrDefault(sessionId)?.Find(p => p.Id == participantId);
                    if (seen is not null && seen.LastSeen > participant.LastSeen)
                    {
                        participant.LastSeen = seen.LastSeen;
                    }

                    // No document: a sweep marked the participant left and deleted it (a heartbeat writes its document
                    // before it records the participant here). Forgotten here too, so its next beat joins it again.
                    if (seen is null || now - participant.LastSeen >= _options.PresenceTimeout)
                    {
                        participants.TryRemove(new KeyValuePair<string, Participant>(participantId, participant));
                    }
                }

                DropIfEmpty(sessionId, participants);
            }

            // Every node's participants are in the shared documents, this node's included: judge those.
            foreach (var (sessionId, participants) in shared)
            {
                foreach (var participant in participants.Where(p => now - p.LastSeen >= _options.PresenceTimeout))
                {
                    Log.TimedOut(_logger, sessionId, participant.Id);
                    await MarkLeftAsync(sessionId, participant.Id, CancellationToken.None).ConfigureAwait(false);
                    await _store.DeleteDocumentAsync(Collection(sessionId), participant.Id).ConfigureAwait(false);
                }

                if (participants.TrueForAll(p => now - p.LastSeen >= _options.PresenceTimeout))
                {
                    await _store.DeleteDocumentAsync(SessionsCollection, sessionId).ConfigureAwait(false);
                }
            }

            _shared = shared;
        }
        catch (Exception ex)
        {
            // The timer's callback does not observe this task: every failure is logged here, and the next sweep
            // starts over from what is still recorded.
            Log.SweepFailed(_logger, ex);
        }
        finally
        {
            _sweeping.Release();
        }
    }

    /// <summary>Removes a session's entry that holds nobody; a heartbeat adding to it meanwhile adds to the next one.</summary>
    private void DropIfEmpty(string sessionId, SessionPresence participants)
    {
        if (participants.CloseIfEmpty())
        {
            _present.TryRemove(new KeyValuePair<string, SessionPresence>(sessionId, participants));
        }
    }

    /// <summary>Appends <c>left</c> unless the session already records the participant as not joined.</summary>
    private Task<SessionOperationResult> MarkLeftAsync(string sessionId, string participantId, CancellationToken cancellationToken)
        => _sessions.AppendUnlessAsync(
            sessionId,
            state => state.GetPresence(participantId)?.Status != PresenceStatus.Joined,
            state => [_events.Presence(participantId, state.GetPresence(participantId)?.Kind ?? ParticipantKind.Client, state.GetPresence(participantId)?.Name, PresenceStatus.Left, _time.GetUtcNow())],
            cancellationToken);

    private static string Collection(string sessionId) => "presence:" + sessionId;

    private static byte[] Encode(string kind, string? name, DateTimeOffset lastSeen)
        => Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"{lastSeen.ToUnixTimeMilliseconds()}|{kind}|{name}"));

    /// <summary>Every node's participants, from the shared documents.</summary>
    private async Task<Dictionary<string, List<Participant>>> LoadSharedAsync()
    {
        var result = new Dictionary<string, List<Participant>>(StringComparer.Ordinal);
        await foreach (var (sessionId, _) in _store.ListDocumentsAsync(SessionsCollection).ConfigureAwait(false))
        {
            var participants = new List<Participant>();
            await foreach (var (participantId, value) in _store.ListDocumentsAsync(Collection(sessionId)).ConfigureAwait(false))
            {
                var parts = Encoding.UTF8.GetString(value).Split('|', 3);
                if (parts.Length == 3 && long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var ms))
                {
                    participants.Add(new Participant(participantId, parts[1], parts[2].Length == 0 ? null : parts[2]) { LastSeen = DateTimeOffset.FromUnixTimeMilliseconds(ms) });
                }
            }

            result[sessionId] = participants;
        }

        return result;
    }

    /// <summary>
    /// The participants present in one incarnation of a session. Closed once dropped from the map: nobody is added to it
    /// after that, so no participant is left where the sweep no longer looks.
    /// </summary>
    private sealed class SessionPresence(long streamId) : ConcurrentDictionary<string, Participant>(StringComparer.Ordinal)
    {
        private readonly Lock _gate = new();
        private bool _closed;

        public long StreamId { get; } = streamId;

        /// <summary>Adds a participant unless the entry is closed.</summary>
        public bool TryJoin(Participant participant)
        {
            lock (_gate)
            {
                if (_closed)
                {
                    return false;
                }

                this[participant.Id] = participant;
                return true;
            }
        }

        public bool CloseIfEmpty()
        {
            lock (_gate)
            {
                _closed = IsEmpty;
                return _closed;
            }
        }

        public void Close()
        {
            lock (_gate)
            {
                _closed = true;
            }
        }
    }

    private sealed class Participant(string id, string kind, string? name)
    {
        public string Id { get; } = id;

        public string Kind { get; } = kind;

        public string? Name { get; } = name;

        public DateTimeOffset LastSeen { get; set; }
    }

    private static partial class Log
    {
        [LoggerMessage(310, LogLevel.Debug, "Session {SessionId}: {ParticipantId} stopped sending heartbeats and was marked left")]
        public static partial void TimedOut(ILogger logger, string sessionId, string participantId);

        [LoggerMessage(311, LogLevel.Warning, "Presence sweep failed")]
        public static partial void SweepFailed(ILogger logger, Exception exception);
    }
}
