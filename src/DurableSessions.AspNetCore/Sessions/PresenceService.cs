using System.Collections.Concurrent;
using System.Text.Json.Nodes;
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
/// <remarks>Heartbeats update memory only; the stream records changes of status, not every beat.</remarks>
internal sealed partial class PresenceService : IHostedService, IAsyncDisposable
{
    private readonly SessionService _sessions;
    private readonly SessionServiceOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    // Present participants per session, so per-session questions (who is watching?) never scan other sessions.
    private readonly ConcurrentDictionary<string, ConcurrentDictionary<string, Participant>> _present = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _sweeping = new(1, 1);
    private ITimer? _timer;

    public PresenceService(SessionService sessions, StreamStore store, IOptions<SessionServiceOptions> options, ILogger<PresenceService> logger)
    {
        _sessions = sessions;
        _options = options.Value;
        _time = store.TimeProvider;
        _logger = logger;
    }

    public TimeSpan Timeout => _options.PresenceTimeout;

    /// <summary>Whether any client or human is present in the session (agents do not count).</summary>
    public bool HasWatchers(string sessionId)
    {
        var now = _time.GetUtcNow();
        if (!_present.TryGetValue(sessionId, out var participants))
        {
            return false;
        }

        foreach (var participant in participants.Values)
        {
            if (participant.Kind is "client" or "human" && now - participant.LastSeen < _options.PresenceTimeout)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Records a heartbeat; appends <c>joined</c> the first time (or after the participant left).</summary>
    public async Task<SessionOperationResult> HeartbeatAsync(string sessionId, string participantId, string kind, string? name, CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        var participants = _present.GetOrAdd(sessionId, static _ => new(StringComparer.Ordinal));
        if (participants.TryGetValue(participantId, out var existing))
        {
            existing.LastSeen = now;
            return SessionOperationResult.Ok(participantId, 0);
        }

        var result = await _sessions.AppendEventsAsync(sessionId, [Presence(participantId, kind, name, "joined", now)], cancellationToken).ConfigureAwait(false);
        if (result.Status == 200)
        {
            participants[participantId] = new Participant(kind, name) { LastSeen = now };
        }

        return result;
    }

    /// <summary>Marks a participant left at once.</summary>
    public async Task<SessionOperationResult> LeaveAsync(string sessionId, string participantId, CancellationToken cancellationToken)
    {
        if (!_present.TryGetValue(sessionId, out var participants) || !participants.TryRemove(participantId, out var participant))
        {
            return SessionOperationResult.Rejected("NOT_PRESENT", "That participant is not present in the session.");
        }

        return await _sessions.AppendEventsAsync(sessionId, [Presence(participantId, participant.Kind, participant.Name, "left", _time.GetUtcNow())], cancellationToken).ConfigureAwait(false);
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
    internal async Task SweepAsync()
    {
        if (!await _sweeping.WaitAsync(0).ConfigureAwait(false))
        {
            return;
        }

        try
        {
            var now = _time.GetUtcNow();
            foreach (var (sessionId, participants) in _present)
            {
                foreach (var (participantId, participant) in participants)
                {
                    if (now - participant.LastSeen < _options.PresenceTimeout || !participants.TryRemove(new KeyValuePair<string, Participant>(participantId, participant)))
                    {
                        continue;
                    }

                    Log.TimedOut(_logger, sessionId, participantId);
                    await _sessions.AppendEventsAsync(sessionId, [Presence(participantId, participant.Kind, participant.Name, "left", now)], CancellationToken.None).ConfigureAwait(false);
                }
            }
        }
        catch (Exception ex) when (ex is StreamStoreUnavailableException or ObjectDisposedException)
        {
            Log.SweepFailed(_logger, ex);
        }
        finally
        {
            _sweeping.Release();
        }
    }

    private static JsonObject Presence(string participantId, string kind, string? name, string status, DateTimeOffset at) => SessionService.Change(SessionEventTypes.Presence, participantId, status == "joined" ? "insert" : "update", new JsonObject
    {
        ["id"] = participantId,
        ["kind"] = kind,
        ["name"] = name,
        ["status"] = status,
        ["lastSeen"] = at.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", System.Globalization.CultureInfo.InvariantCulture),
    });

    private sealed class Participant(string kind, string? name)
    {
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
