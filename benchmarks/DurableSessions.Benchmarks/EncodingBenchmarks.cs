using System.Buffers;
using System.Text;
using BenchmarkDotNet.Attributes;
using DurableSessions.AspNetCore.Streams;

namespace DurableSessions.Benchmarks;

/// <summary>Request-side JSON framing and response-side SSE encoding, per event and per 100-event batch.</summary>
public class EncodingBenchmarks
{
    private byte[] _single = null!;
    private byte[] _batch = null!;
    private ReadOnlyMemory<byte>[] _framedBatch = null!;
    private ReadOnlyMemory<byte>[] _framedSingle = null!;
    private readonly ArrayBufferWriter<byte> _output = new(64 * 1024);
    private byte[] _socketPrefix = null!;
    private DurableSessions.Live.LiveAppend _change = null!;

    [GlobalSetup]
    public void Setup()
    {
        var item = "{\"type\":\"message\",\"key\":\"m1\",\"value\":{\"text\":\"" + new string('x', 200) + "\"}}";
        _single = Encoding.UTF8.GetBytes(item);
        _batch = Encoding.UTF8.GetBytes("[" + string.Join(',', Enumerable.Repeat(item, 100)) + "]");
        JsonFraming.TryFrame(_batch, false, out var framed, out _);
        _framedBatch = [framed.Data];
        _framedSingle = [_single];
        _socketPrefix = DurableSessions.AspNetCore.WebSockets.StreamSocketConnection.DataPrefix("s1");
        _change = new DurableSessions.Live.LiveAppend(1, "p", new DurableSessions.StreamChunk(4199, 4200, _single), closed: false);
    }

    [Benchmark]
    public long FrameOneJsonEvent() => JsonFraming.TryFrame(_single, false, out var payload, out _) ? payload.Units : -1;

    [Benchmark]
    public long Frame100JsonEvents() => JsonFraming.TryFrame(_batch, false, out var payload, out _) ? payload.Units : -1;

    /// <summary>The peer: a full System.Text.Json parse of the same event, what any JSON endpoint pays to accept it.</summary>
    [Benchmark]
    public int ParseOneJsonEventWithJsonDocument()
    {
        using var document = System.Text.Json.JsonDocument.Parse(_single);
        return document.RootElement.ValueKind == System.Text.Json.JsonValueKind.Object ? 1 : 0;
    }

    /// <summary>The peer for the batch.</summary>
    [Benchmark]
    public int Parse100JsonEventsWithJsonDocument()
    {
        using var document = System.Text.Json.JsonDocument.Parse(_batch);
        return document.RootElement.GetArrayLength();
    }

    [Benchmark]
    public int SseEncodeOneJsonEvent()
    {
        _output.ResetWrittenCount();
        SseEncoder.WriteDataEvent(_output, "application/json", _framedSingle);
        SseEncoder.WriteControlEvent(_output, 42, "123456", upToDate: true, closed: false);
        return _output.WrittenCount;
    }

    /// <summary>What each live reader writes for itself per change: the data frame is encoded once and shared.</summary>
    [Benchmark]
    public int SseEncodeControlEvent()
    {
        _output.ResetWrittenCount();
        SseEncoder.WriteControlEvent(_output, 4200, "123456", upToDate: true, closed: false);
        return _output.WrittenCount;
    }

    /// <summary>A WebSocket subscriber's data message for a live change, written with a JSON writer.</summary>
    [Benchmark]
    public int WebSocketDataMessageWritten()
        => DurableSessions.AspNetCore.WebSockets.StreamSocketConnection.DataMessage("s1", "application/json", _framedSingle, 4200, upToDate: true).Length;

    /// <summary>The same message assembled from the subscription's prefix and the change's shared array (the live path).</summary>
    [Benchmark]
    public int WebSocketDataMessageShared()
        => DurableSessions.AspNetCore.WebSockets.StreamSocketConnection.LiveJsonMessage(_socketPrefix, _change, 4200, upToDate: true).Length;

    [Benchmark]
    public int SseEncode100JsonEvents()
    {
        _output.ResetWrittenCount();
        SseEncoder.WriteDataEvent(_output, "application/json", _framedBatch);
        SseEncoder.WriteControlEvent(_output, 4200, "123456", upToDate: true, closed: false);
        return _output.WrittenCount;
    }

    [Benchmark]
    public int SseEncodeBinaryAsBase64()
    {
        _output.ResetWrittenCount();
        SseEncoder.WriteDataEvent(_output, "application/octet-stream", _framedSingle);
        return _output.WrittenCount;
    }
}
