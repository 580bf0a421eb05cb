namespace DurableSessions;

/// <summary>
/// The validation rules of an append (closure, content type, idempotent producer, <c>Stream-Seq</c>), shared by every store
/// so that all backends decide identically.
/// </summary>
/// <remarks>
/// Stores call <see cref="Decide"/> inside their per-stream serialization (a single writer, or a server-side script),
/// with the producer state read in the same atomic step, and persist <see cref="AppendDecision.NewProducerState"/>
/// together with the data.
/// </remarks>
public static class AppendRules
{
    /// <summary>Decides the outcome of <paramref name="request"/> against the stream's current state.</summary>
    /// <param name="stream">The stream as it is now (must exist and not be soft-deleted).</param>
    /// <param name="producer">The stored state of the request's producer, if it has one.</param>
    /// <param name="request">The append request.</param>
    public static AppendDecision Decide(StreamInfo stream, ProducerState? producer, AppendRequest request)
    {
        var tail = stream.TailPosition;

        // Before anything else: every other answer would be about a stream the caller did not decide on.
        if (request.ExpectedStreamId is { } id && id != stream.Id)
        {
            return Reject(AppendStatus.TailMoved, tail);
        }

        if (stream.Closed)
        {
            // A retry of the very request that closed the stream is a duplicate, not a conflict.
            if (request.Producer is { } closer && stream.ClosedBy == closer)
            {
                return Reject(AppendStatus.Duplicate, tail, closed: true, closer.Epoch, producer?.LastSeq ?? closer.Seq);
            }

            if (request.Close && request.Data.IsEmpty)
            {
                return Reject(AppendStatus.AlreadyClosed, tail, closed: true);
            }

            return Reject(AppendStatus.StreamClosed, tail, closed: true);
        }

        if (!request.Data.IsEmpty && request.ContentType is { } contentType && !StreamContentType.Matches(contentType, stream.ContentType))
        {
            return Reject(AppendStatus.ContentTypeMismatch, tail);
        }

        ProducerState? newProducerState = null;
        if (request.Producer is { } stamp)
        {
            if (producer is { } state)
            {
                if (stamp.Epoch < state.Epoch)
                {
                    return Reject(AppendStatus.StaleEpoch, tail, producerEpoch: state.Epoch);
                }

                if (stamp.Epoch > state.Epoch)
                {
                    if (stamp.Seq != 0)
                    {
                        return Reject(AppendStatus.InvalidEpochSeq, tail, producerEpoch: state.Epoch);
                    }
                }
                else if (stamp.Seq <= state.LastSeq)
                {
                    return Reject(AppendStatus.Duplicate, tail, closed: false, state.Epoch, state.LastSeq);
                }
                else if (stamp.Seq != state.LastSeq + 1)
                {
                    return Reject(AppendStatus.ProducerSeqGap, tail, producerEpoch: state.Epoch, producerSeq: state.LastSeq + 1);
                }
            }
            else if (stamp.Seq != 0)
            {
                return Reject(AppendStatus.ProducerSeqGap, tail, producerEpoch: stamp.Epoch, producerSeq: 0);
            }

            newProducerState = new ProducerState(stamp.Epoch, stamp.Seq);
        }

        if (request.StreamSeq is { } seq && stream.LastStreamSeq is { } last && CompareBytewise(seq, last) <= 0)
        {
            return Reject(AppendStatus.SequenceConflict, tail);
        }

        if (request.ExpectedTail is { } expected && expected != tail)
        {
            return Reject(AppendStatus.TailMoved, tail);
        }

        var result = new AppendResult
        {
            Status = AppendStatus.Appended,
            TailPosition = tail + request.Data.Units,
            Closed = request.Close,
            ProducerEpoch = request.Producer?.Epoch ?? 0,
            ProducerSeq = request.Producer?.Seq ?? 0,
        };
        return new AppendDecision(result, Apply: true, newProducerState);
    }

    /// <summary>Applies an accepted decision to the stream's metadata.</summary>
    public static StreamInfo Apply(StreamInfo stream, AppendRequest request, DateTimeOffset now) => stream with
    {
        TailPosition = stream.TailPosition + request.Data.Units,
        Closed = stream.Closed || request.Close,
        ClosedBy = request.Close ? request.Producer : stream.ClosedBy,
        LastStreamSeq = request.StreamSeq ?? stream.LastStreamSeq,
        LastAccessAt = now,
    };

    private static AppendDecision Reject(AppendStatus status, long tail, bool closed = false, long producerEpoch = 0, long producerSeq = 0)
        => new(new AppendResult { Status = status, TailPosition = tail, Closed = closed, ProducerEpoch = producerEpoch, ProducerSeq = producerSeq }, Apply: false, null);

    /// <summary>
    /// Orders two <c>Stream-Seq</c> values as their UTF-8 bytes order (code point order), as the protocol compares them
    /// and a store that compares bytes does. UTF-16 ordinal order differs for characters past U+FFFF, whose surrogates
    /// sort before U+E000–U+FFFF.
    /// </summary>
    internal static int CompareBytewise(string left, string right)
    {
        ArgumentNullException.ThrowIfNull(left);
        ArgumentNullException.ThrowIfNull(right);
        int i = 0, j = 0;
        while (i < left.Length && j < right.Length)
        {
            System.Text.Rune.DecodeFromUtf16(left.AsSpan(i), out var a, out var aLength);
            System.Text.Rune.DecodeFromUtf16(right.AsSpan(j), out var b, out var bLength);
            if (a.Value != b.Value)
            {
                return a.Value.CompareTo(b.Value);
            }

            i += aLength;
            j += bLength;
        }

        return (left.Length - i).CompareTo(right.Length - j);
    }
}

/// <summary>The outcome of <see cref="AppendRules.Decide"/>.</summary>
/// <param name="Result">The result to report to the client.</param>
/// <param name="Apply">Whether the request changes the stream.</param>
/// <param name="NewProducerState">The producer state to persist with the change, if the request carried one.</param>
public readonly record struct AppendDecision(AppendResult Result, bool Apply, ProducerState? NewProducerState);
