using System.Text;
using BenchmarkDotNet.Attributes;
using DurableSessions.Sessions;

namespace DurableSessions.Benchmarks;

/// <summary>
/// A session's materializer applying an edit of its first message, which deletes every later message in one append:
/// what the server, every agent and every client following the session pay for it.
/// </summary>
public class SessionStateBenchmarks
{
    private byte[] _history = null!;
    private byte[] _edit = null!;
    private SessionState _state = null!;

    /// <summary>The messages in the session before the edit.</summary>
    [Params(2_000, 20_000)]
    public int Messages { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var history = Enumerable.Range(0, Messages).Select(i =>
            $$$"""{"type":"message","key":"m{{{i}}}","value":{"id":"m{{{i}}}","role":"user","author":"user:alice","parts":[{"type":"text","text":"Question {{{i}}}"}],"status":"complete","createdAt":"2026-01-01T00:00:00.000Z"},"headers":{"operation":"insert"}}""");
        _history = Encoding.UTF8.GetBytes(string.Join(',', history));
        var deletes = Enumerable.Range(1, Messages - 1).Select(i => $$$"""{"type":"message","key":"m{{{i}}}","headers":{"operation":"delete"}}""");
        _edit = Encoding.UTF8.GetBytes(string.Join(',', deletes));
    }

    [IterationSetup]
    public void Load()
    {
        _state = new SessionState();
        _state.ApplyChunk(_history, 1);
    }

    [Benchmark]
    public int ApplyAnEditOfTheFirstMessage()
    {
        _state.ApplyChunk(_edit, 2);
        return _state.Count;
    }
}
