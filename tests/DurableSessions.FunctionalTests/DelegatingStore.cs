using DurableSessions.Live;
using Microsoft.Extensions.DependencyInjection;

namespace DurableSessions.FunctionalTests;

/// <summary>A store that passes every call to another, for tests that derive it to fail or hold the calls they choose.</summary>
internal class DelegatingStore(StreamStore inner) : StreamStore(inner.TimeProvider, inner.Fanout)
{
    protected StreamStore Inner => inner;

    public override bool IsAvailable => inner.IsAvailable;

    public override bool IsShared => inner.IsShared;

    public override ValueTask<CreateStreamResult> CreateAsync(CreateStreamRequest request, CancellationToken cancellationToken = default) => inner.CreateAsync(request, cancellationToken);

    public override ValueTask<AppendResult> AppendAsync(AppendRequest request, CancellationToken cancellationToken = default) => inner.AppendAsync(request, cancellationToken);

    public override ValueTask<StreamLookup> GetAsync(string path, CancellationToken cancellationToken = default) => inner.GetAsync(path, cancellationToken);

    public override ValueTask<DeleteStreamStatus> DeleteAsync(string path, CancellationToken cancellationToken = default) => inner.DeleteAsync(path, cancellationToken);
    public override ValueTask<TrimResult> TrimAsync(string path, long beforePosition, CancellationToken cancellationToken = default) => inner.TrimAsync(path, beforePosition, cancellationToken);

    public override ValueTask<ReadResult> ReadAsync(StreamInfo stream, long fromPosition, int maxBytes, CancellationToken cancellationToken = default) => inner.ReadAsync(stream, fromPosition, maxBytes, cancellationToken);

    public override ValueTask TouchAsync(StreamInfo stream, CancellationToken cancellationToken = default) => inner.TouchAsync(stream, cancellationToken);

    public override IAsyncEnumerable<string> ListPathsAsync(Func<string, bool>? include = null, CancellationToken cancellationToken = default) => inner.ListPathsAsync(include, cancellationToken);

    // An inner store used by one process has no lock of its own: the base lock writes through this store, so what a
    // derived store fails or holds reaches the documents written under a lock too.
    public override ValueTask<StoreLock> AcquireLockAsync(string name, TimeSpan lease, CancellationToken cancellationToken = default)
        => inner.IsShared ? inner.AcquireLockAsync(name, lease, cancellationToken) : base.AcquireLockAsync(name, lease, cancellationToken);

    public override ValueTask<byte[]?> GetDocumentAsync(string collection, string key, CancellationToken cancellationToken = default) => inner.GetDocumentAsync(collection, key, cancellationToken);

    public override ValueTask PutDocumentAsync(string collection, string key, ReadOnlyMemory<byte> value, CancellationToken cancellationToken = default) => inner.PutDocumentAsync(collection, key, value, cancellationToken);

    public override ValueTask DeleteDocumentAsync(string collection, string key, CancellationToken cancellationToken = default) => inner.DeleteDocumentAsync(collection, key, cancellationToken);

    public override IAsyncEnumerable<KeyValuePair<string, byte[]>> ListDocumentsAsync(string collection, CancellationToken cancellationToken = default) => inner.ListDocumentsAsync(collection, cancellationToken);

    public override ValueTask DisposeAsync() => inner.DisposeAsync();
}

/// <summary>Registers a test's store in place of the server's own, wrapping it.</summary>
internal static class StoreWrapping
{
    /// <summary>Replaces the registered <see cref="StreamStore"/> with <paramref name="wrap"/> of it, made when the server first asks for it.</summary>
    public static void WrapStore(this IServiceCollection services, Func<StreamStore, StreamStore> wrap)
    {
        var original = services.Single(d => d.ServiceType == typeof(StreamStore));
        services.Remove(original);
        services.AddSingleton(sp => wrap((StreamStore)original.ImplementationFactory!(sp)));
    }
}
