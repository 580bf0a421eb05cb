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
    /// Checks a create (or fork) with its content type (null: a fork that takes its source's) and initial data; null when
    /// allowed. Nothing is created when refused.
    /// </summary>
    AppendRefusal? CheckCreate(string path, string? contentType, string? forkedFrom, StreamPayload initialData, Auth.Access writer);

    /// <summary>
    /// Called once a create it governs has stored initial data (not for a fork, nor for a create that found the stream
    /// already there), with that data: what its rules do after an append, they do after it too.
    /// </summary>
    Task CreatedAsync(StreamInfo stream, StreamPayload initialData);

    /// <summary>Checks a close of an existing stream; null when allowed.</summary>
    AppendRefusal? CheckClose(StreamInfo stream, Auth.Access writer);

    /// <summary>
    /// Appends to an existing stream it governs under its rules, atomically with its checks; a refusal writes nothing.
    /// Returns null (and the caller appends as usual) for a stream the policy leaves alone, such as one closed already.
    /// </summary>
    Task<(AppendResult Result, AppendRefusal? Refusal)>? AppendAsync(StreamInfo stream, AppendRequest request, Auth.Access writer, CancellationToken cancellationToken);

    /// <summary>
    /// Appends with no lookup of the stream first, when the policy can decide without it: it holds what its rules need in
    /// memory, and the store refuses the write if the stream changed since. Null when it cannot; the caller then looks
    /// the stream up and calls <see cref="AppendAsync"/>.
    /// </summary>
    Task<(AppendResult Result, AppendRefusal? Refusal)?> TryAppendWithoutLookupAsync(AppendRequest request, Auth.Access writer, CancellationToken cancellationToken);
}

/// <summary>Why a policy refused a create, append or close: the HTTP status, a code and a message.</summary>
internal sealed record AppendRefusal(int Status, string Code, string Message);
