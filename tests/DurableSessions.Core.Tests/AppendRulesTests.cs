namespace DurableSessions.Core.Tests;

public sealed class AppendRulesTests
{
    private static readonly StreamInfo Open = new() { Id = 1, Path = "s", ContentType = "text/plain", TailPosition = 10 };

    private static AppendRequest Append(ProducerStamp? producer = null, string? seq = null, bool close = false, int units = 3) => new()
    {
        Path = "s",
        ContentType = "text/plain",
        Data = units == 0 ? StreamPayload.Empty : new StreamPayload(new byte[units], units),
        Producer = producer,
        StreamSeq = seq,
        Close = close,
    };

    [Fact]
    public void New_producer_must_start_at_seq_zero_but_may_pick_any_epoch()
    {
        Assert.Equal(AppendStatus.Appended, AppendRules.Decide(Open, null, Append(new("p", 5, 0))).Result.Status);
        var gap = AppendRules.Decide(Open, null, Append(new("p", 0, 3))).Result;
        Assert.Equal(AppendStatus.ProducerSeqGap, gap.Status);
        Assert.Equal(0, gap.ProducerSeq);
    }

    [Fact]
    public void Producer_epochs_fence_zombies_and_new_epochs_restart_at_zero()
    {
        var state = new ProducerState(2, 7);
        var stale = AppendRules.Decide(Open, state, Append(new("p", 1, 8))).Result;
        Assert.Equal(AppendStatus.StaleEpoch, stale.Status);
        Assert.Equal(2, stale.ProducerEpoch);
        Assert.Equal(AppendStatus.InvalidEpochSeq, AppendRules.Decide(Open, state, Append(new("p", 3, 1))).Result.Status);
        Assert.Equal(AppendStatus.Appended, AppendRules.Decide(Open, state, Append(new("p", 3, 0))).Result.Status);
    }

    [Fact]
    public void Duplicate_reports_the_highest_accepted_seq()
    {
        var decision = AppendRules.Decide(Open, new ProducerState(0, 4), Append(new("p", 0, 2)));
        Assert.False(decision.Apply);
        Assert.Equal(AppendStatus.Duplicate, decision.Result.Status);
        Assert.Equal(4, decision.Result.ProducerSeq);
    }

    [Fact]
    public void Producer_dedupe_runs_before_the_stream_seq_check()
    {
        var stream = Open with { LastStreamSeq = "b" };
        Assert.Equal(AppendStatus.Duplicate, AppendRules.Decide(stream, new ProducerState(0, 0), Append(new("p", 0, 0), seq: "b")).Result.Status);
        Assert.Equal(AppendStatus.SequenceConflict, AppendRules.Decide(stream, null, Append(seq: "b")).Result.Status);
        Assert.Equal(AppendStatus.SequenceConflict, AppendRules.Decide(stream, null, Append(seq: "B")).Result.Status);
        Assert.Equal(AppendStatus.Appended, AppendRules.Decide(stream, null, Append(seq: "c")).Result.Status);
    }

    [Fact]
    public void Closed_stream_accepts_only_a_retry_of_the_closing_request_or_a_close_only()
    {
        var closer = new ProducerStamp("p", 0, 3);
        var closed = Open with { Closed = true, ClosedBy = closer };
        Assert.Equal(AppendStatus.Duplicate, AppendRules.Decide(closed, new ProducerState(0, 3), Append(closer, close: true)).Result.Status);
        Assert.Equal(AppendStatus.AlreadyClosed, AppendRules.Decide(closed, null, Append(close: true, units: 0)).Result.Status);
        Assert.Equal(AppendStatus.StreamClosed, AppendRules.Decide(closed, null, Append()).Result.Status);
        Assert.Equal(AppendStatus.StreamClosed, AppendRules.Decide(closed, null, Append(new("q", 0, 0), close: true)).Result.Status);
    }

    [Fact]
    public void Apply_advances_the_tail_and_records_the_closer()
    {
        var request = Append(new("p", 0, 0), seq: "a", close: true);
        var updated = AppendRules.Apply(Open, request, DateTimeOffset.UnixEpoch);
        Assert.Equal(13, updated.TailPosition);
        Assert.True(updated.Closed);
        Assert.Equal(request.Producer, updated.ClosedBy);
        Assert.Equal("a", updated.LastStreamSeq);
    }
}
