using DurableSessions.AspNetCore.Streams;
using DurableSessions.Sessions;

namespace DurableSessions.AspNetCore.Sessions;

/// <summary>
/// Holds raw stream operations on <c>sessions/{id}</c> to the session rules: events checked by
/// <see cref="SessionEventRules"/> and the run fences, under the session's lock (<see cref="SessionService.AppendAsync"/>);
/// closing a session needs admin.
/// </summary>
internal sealed class SessionAppendPolicy(SessionService sessions) : IStreamAppendPolicy
{
    public bool Governs(string path) => SessionService.IsSessionPath(path);

    /// <summary>Only a control event asks for control: data in which no string reads <c>control</c> holds none.</summary>
    public bool AsksControl(ReadOnlySpan<byte> data) => JsonStringScan.MayHoldString(data, "\"control\""u8, "control"u8);

    public AppendRefusal? CheckCreate(string path, string? contentType, string? forkedFrom, StreamPayload initialData, bool closed, PolicyWriter writer)
    {
        // Created closed, a session is closed by whoever creates it: that needs admin, as closing it later does.
        if (closed && !writer.MayAdmin)
        {
            return new AppendRefusal(403, "FORBIDDEN", "Creating a session stream closed needs the admin capability on it.");
        }

        // A stream of another type would take any bytes past every session rule, and still hold the session's id.
        if (contentType is not null && !StreamContentType.IsJson(contentType))
        {
            return new AppendRefusal(409, "CONTENT_TYPE_MISMATCH", "A stream under sessions/ is a session, whose content type is application/json.");
        }

        return SessionService.CheckCreate(forkedFrom, initialData, Writer(writer)) is { } refused ? new AppendRefusal(refused.Status, refused.Code, refused.Message) : null;
    }

    public Task CreatedAsync(StreamInfo stream, StreamPayload initialData, bool created, bool forked) => sessions.CreatedAsync(stream, initialData, created, forked);

    public AppendRefusal? CheckClose(StreamInfo stream, PolicyWriter writer)
        => stream.IsJson && !writer.MayAdmin
            ? new AppendRefusal(403, "FORBIDDEN", "Closing a session stream needs the admin capability on it.")
            : null;

    public Task<(AppendResult Result, AppendRefusal? Refusal)>? AppendAsync(StreamInfo stream, AppendRequest request, PolicyWriter writer, CancellationToken cancellationToken)
        => stream.IsJson && !stream.Closed ? AppendCoreAsync(request, writer, cancellationToken) : null;

    public async Task<(AppendResult Result, AppendRefusal? Refusal)?> TryAppendWithoutLookupAsync(AppendRequest request, PolicyWriter writer, CancellationToken cancellationToken)
        => await sessions.TryAppendHeldAsync(request, Writer(writer), cancellationToken).ConfigureAwait(false) is not { } outcome ? null
            : outcome.Rejection is { } rejection ? (default, new AppendRefusal(rejection.Status, rejection.Code, rejection.Message))
            : (outcome.Result!.Value, null);

    public HeldAppend? TryHold(AppendRequest request, PolicyWriter writer) => sessions.TryHoldDeltas(request, Writer(writer));

    private async Task<(AppendResult Result, AppendRefusal? Refusal)> AppendCoreAsync(AppendRequest request, PolicyWriter writer, CancellationToken cancellationToken)
    {
        var (result, rejection) = await sessions.AppendAsync(request, Writer(writer), cancellationToken).ConfigureAwait(false);
        return rejection is not null ? (default, new AppendRefusal(rejection.Status, rejection.Code, rejection.Message)) : (result!.Value, null);
    }

    /// <summary>The writer as the session rules see it: its identity and whether it may control runs (open when access control is off).</summary>
    private static SessionWriter Writer(PolicyWriter writer)
        => writer.Access.IsAnonymous ? SessionWriter.Open : new SessionWriter(writer.Access.Subject, writer.MayControl);
}
