namespace DurableSessions.Client;

/// <summary>
/// A response body that cancels <c>idle</c> when one read waits longer than <c>timeout</c>: a body that keeps delivering
/// (events or keep-alive comments) is never cut, and one that goes silent is. Only time spent waiting in a read counts, so
/// a reader that is slow to ask for more is not taken for a dead link.
/// </summary>
internal sealed class IdleTimeoutStream(Stream inner, CancellationTokenSource idle, TimeSpan timeout) : Stream
{
    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        idle.CancelAfter(timeout);
        var read = await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        idle.CancelAfter(Timeout.InfiniteTimeSpan);
        return read;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count)
    {
        idle.CancelAfter(timeout);
        var read = inner.Read(buffer, offset, count);
        idle.CancelAfter(Timeout.InfiniteTimeSpan);
        return read;
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            inner.Dispose();
        }

        base.Dispose(disposing);
    }
}
