namespace DurableSessions.AspNetCore.Streams;

/// <summary>
/// Rules that some streams are held to beyond the protocol's, on create, append and close. The stream endpoints know
/// no such rules themselves: they ask each registered policy whether it governs a path, and the first that does decides.
/// Sessions are the built-in one (<see cref="Sessions.SessionAppendPolicy"/>).
/// </summary>
internal interface IStreamAppendPolicy
{
    /// <summary>Whether this policy governs <paramref name="path"/>.</summary>
    bool Governs(string path);

    /// <summary>
    /// Whether judging <paramref name="data"/> (an append's or a create's body) may ask whether its writer holds
    /// <c>control</c>: only then is it decided (<see cref="PolicyWriter.MayControl"/>), since asking runs the application's
    /// authorization handlers. False answers <see cref="PolicyWriter.MayControl"/> false unasked.
    /// </summary>
    bool AsksControl(ReadOnlySpan<byte> data);

    /// <summary>
    /// Checks a create (or fork) with its content type (null: a fork that takes its source's), initial data and whether it
    /// is created closed; null when allowed. Nothing is created when refused.
    /// </summary>
    AppendRefusal? CheckCreate(string path, string? contentType, string? forkedFrom, StreamPayload initialData, bool closed, PolicyWriter writer);

    /// <summary>
    /// Called once a create it governs has stored initial data or made a fork, with that data: what its rules do after an
    /// append, they do after it too. Called as well (<paramref name="created"/> false) for the same create repeated,
    /// which found the stream there: the first one's answer, and what was to follow it, may have been lost.
    /// </summary>
    /// <param name="stream">The stream.</param>
    /// <param name="initialData">The create's initial data (none for a fork).</param>
    /// <param name="created">Whether this request created the stream.</param>
    /// <param name="forked">Whether the create is a fork.</param>
    Task CreatedAsync(StreamInfo stream, StreamPayload initialData, bool created, bool forked);

    /// <summary>Checks a close of an existing stream; null when allowed.</summary>
    AppendRefusal? CheckClose(StreamInfo stream, PolicyWriter writer);

    /// <summary>
    /// Appends to an existing stream it governs under its rules, atomically with its checks; a refusal writes nothing.
    /// Returns null (and the caller appends as usual) for a stream the policy leaves alone, such as one closed already.
    /// </summary>
    Task<(AppendResult Result, AppendRefusal? Refusal)>? AppendAsync(StreamInfo stream, AppendRequest request, PolicyWriter writer, CancellationToken cancellationToken);

    /// <summary>
    /// Appends with no lookup of the stream first, when the policy can decide without it: it holds what its rules need in
    /// memory, and the store refuses the write if the stream changed since. Null when it cannot; the caller then looks
    /// the stream up and calls <see cref="AppendAsync"/>.
    /// </summary>
    Task<(AppendResult Result, AppendRefusal? Refusal)?> TryAppendWithoutLookupAsync(AppendRequest request, PolicyWriter writer, CancellationToken cancellationToken);

    /// <summary>
    /// Decides an append now, without waiting, for a transport that hands several appends to the store at once
    /// (<see cref="StreamStore.TryAppendInOrder"/>): when the policy holds what its rules need in memory, nothing else is
    /// being decided on it, and the rules take the append, it returns the store request that writes it, and holds what it
    /// was decided on until <see cref="HeldAppend.Complete"/>. Null when it cannot (a refusal included: that is decided
    /// the usual way); the caller then appends through <see cref="TryAppendWithoutLookupAsync"/> or <see cref="AppendAsync"/>.
    /// </summary>
    HeldAppend? TryHold(AppendRequest request, PolicyWriter writer);
}

/// <summary>
/// An append a policy decided at once (<see cref="IStreamAppendPolicy.TryHold"/>): its store request, and what it was
/// decided on, held until the store answers. <see cref="Complete"/> must be called once the store answered or failed,
/// or the append was never handed over; later calls do nothing.
/// </summary>
internal abstract class HeldAppend(AppendRequest request)
{
    private int _completed;

    /// <summary>The request to hand to the store: the append, written only onto what it was decided on.</summary>
    public AppendRequest Request { get; } = request;

    /// <summary>
    /// Takes the store's answer (null: the store did not take the request, or failed) and lets go of what was held.
    /// Returns the answer to give, or null when the append has to be made again the usual way: nothing was written
    /// (the state it was decided on had moved, or the store did not take it).
    /// </summary>
    public AppendResult? Complete(AppendResult? stored) => Interlocked.Exchange(ref _completed, 1) == 0 ? CompleteCore(stored) : null;

    /// <summary><see cref="Complete"/>, called once.</summary>
    protected abstract AppendResult? CompleteCore(AppendResult? stored);
}

/// <summary>
/// Who writes through an operation a policy judges, and the capabilities beyond write that its rules may ask for, as the
/// authorization handlers decide them for the path: the token's grants and any handler the application registered
/// (docs/security.md), the same decision the sessions API's endpoints get.
/// </summary>
/// <param name="Access">The caller's access: its subject, and whether the server runs open.</param>
/// <param name="MayControl">Whether the caller may control the stream's runs (cancel, steer, fence); only decided when the policy asks (<see cref="IStreamAppendPolicy.AsksControl"/>).</param>
/// <param name="MayAdmin">Whether the caller may administer the stream (close it); only decided for a close.</param>
internal sealed record PolicyWriter(Auth.Access Access, bool MayControl, bool MayAdmin)
{
    /// <summary>
    /// Decides the capabilities of <paramref name="caller"/> on <paramref name="path"/> that an operation asks: control when
    /// <paramref name="policy"/> asks it of <paramref name="data"/>, admin when <paramref name="closing"/>. Each is one run
    /// of the authorization handlers; with access control off, neither is asked and the data is not looked at.
    /// </summary>
    public static async ValueTask<PolicyWriter> ForAsync(Microsoft.AspNetCore.Http.HttpContext caller, string path, IStreamAppendPolicy policy, ReadOnlyMemory<byte> data, bool closing)
    {
        var access = Auth.AccessControl.Current(caller);
        if (access.IsAnonymous)
        {
            return new PolicyWriter(access, MayControl: true, MayAdmin: true);
        }

        var resource = new Auth.StreamResource(path);
        var mayControl = policy.AsksControl(data.Span) && await Auth.AccessControl.AllowsAsync(caller, resource, Auth.Capability.Control).ConfigureAwait(false);
        var mayAdmin = closing && await Auth.AccessControl.AllowsAsync(caller, resource, Auth.Capability.Admin).ConfigureAwait(false);
        return new PolicyWriter(access, mayControl, mayAdmin);
    }
}

/// <summary>Why a policy refused a create, append or close: the HTTP status, a code and a message.</summary>
internal sealed record AppendRefusal(int Status, string Code, string Message);
