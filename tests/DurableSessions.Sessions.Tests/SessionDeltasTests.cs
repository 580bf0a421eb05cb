using System.Text;
using System.Text.Json.Nodes;

namespace DurableSessions.Sessions.Tests;

/// <summary>
/// Appends of plain delta inserts are read without JSON nodes (<see cref="SessionDeltas"/>): for every batch that reader
/// takes, its checks and state update must reach exactly what the general path reaches, and it must leave every other
/// batch to the general path.
/// </summary>
public sealed class SessionDeltasTests
{
    private static readonly string[] Setup =
    [
        """{"type":"message","key":"mu","value":{"id":"mu","role":"user","author":"user:alice","parts":[{"type":"text","text":"hi"}]},"headers":{"operation":"insert"}}""",
        """{"type":"run","key":"r1","value":{"id":"r1","agent":"agent:helper","messageId":"ma1","status":"started"},"headers":{"operation":"insert"}}""",
        """{"type":"message","key":"ma1","value":{"id":"ma1","role":"assistant","author":"agent:helper","runId":"r1","status":"streaming","parts":[]},"headers":{"operation":"insert"}}""",
        """{"type":"run","key":"r2","value":{"id":"r2","agent":"agent:helper","messageId":"ma2","status":"cancelled"},"headers":{"operation":"insert"}}""",
        """{"type":"message","key":"ma2","value":{"id":"ma2","role":"assistant","author":"agent:helper","runId":"r2","status":"cancelled"},"headers":{"operation":"insert"}}""",
        """{"type":"run","key":"r3","value":{"id":"r3","agent":"agent:other","messageId":"ma3","status":"started"},"headers":{"operation":"insert"}}""",
        """{"type":"message","key":"ma3","value":{"id":"ma3","role":"assistant","author":"agent:other","runId":"r3","status":"streaming"},"headers":{"operation":"insert"}}""",
    ];

    private static readonly SessionWriter[] Writers = [SessionWriter.Open, new("agent:helper", MayControl: false), new("user:alice", MayControl: true)];

    public static TheoryData<string> TakenBatches => new()
    {
        Delta("ma1", "\"Hi\""),
        Delta("ma1", "\"one\"", "\"part\":0,\"runId\":\"r1\",\"at\":\"2026-01-01T00:00:00Z\"", "\"timestamp\":\"t\"") + "," + Delta("ma1", "\"two\"", "\"part\":1,\"partType\":\"reasoning\""),
        Delta("ma1", "\"a\"") + "," + Delta("ma1", "\"b\"") + "," + Delta("ma1", "\"c\"", "\"part\":1"),
        Delta("ma2", "\"late\""),
        Delta("ma3", "\"not mine\"", "\"runId\":\"r1\""),
        Delta("ma3", "\"mine\"", "\"runId\":\"r3\""),
        Delta("nope", "\"nowhere\""),
        Delta("mu", "\" more\""),
        Delta("ma1", "\"far\"", "\"part\":2"),
        Delta("ma1", "\"q\\\"\\u00e9\\n\\ud83d\\ude00\""),
        Delta("ma1", "\"\"", "\"runId\":\"r2\""),
    };

    public static TheoryData<string> LeftBatches => new()
    {
        Delta("ma1", "\"x\"", "\"part\":10001"),
        Delta("ma1", "\"x\"", "\"part\":-1"),
        Delta("ma1", "\"x\"", "\"part\":1.0"),
        Delta("ma1", "\"x\"", "\"part\":\"1\""),
        Delta("ma1", "\"x\"", "\"extra\":1"),
        Delta("ma1", "\"x\"", "\"runId\":5"),
        Delta("ma1", "7"),
        Delta("ma1", "\"x\"", "\"text\":\"y\""),
        Delta("ma1", "\"x\"", headers: "\"control\":\"reset\""),
        """{"type":"delta","key":"d","value":{"messageId":"ma1","text":"x"},"headers":{"operation":"update"}}""",
        """{"type":"delta","key":"d","value":{"messageId":"ma1","te\u0078t":"x"},"headers":{"operation":"insert"}}""",
        """{"type":"delta","key":"d","value":{"text":"x"},"headers":{"operation":"insert"}}""",
        """{"type":"delta","key":"d","value":{"messageId":"ma1","text":"x"}}""",
        """{"type":"delta","key":"","value":{"messageId":"ma1","text":"x"},"headers":{"operation":"insert"}}""",
        "{\"type\":\"delta\",\"key\":\"" + new string('k', SessionEventRules.MaxKeyLength + 1) + "\",\"value\":{\"messageId\":\"ma1\",\"text\":\"x\"},\"headers\":{\"operation\":\"insert\"}}",
        """{"type":"delta","key":"d","value":{"messageId":"ma1","text":"x"},"headers":{"operation":"insert"},"old_value":{}}""",
        """{"type":"delta","type":"delta","key":"d","value":{"messageId":"ma1","text":"x"},"headers":{"operation":"insert"}}""",
        Delta("ma1", "\"x\"") + "," + Setup[0],
        "[" + Delta("ma1", "\"x\"") + "]",
        "\"delta\"",
    };

    [Theory]
    [MemberData(nameof(TakenBatches))]
    public void A_batch_of_plain_deltas_is_read_and_judged_as_the_general_path_judges_it(string framed)
    {
        Assert.True(SessionDeltas.TryRead(Encoding.UTF8.GetBytes(framed), out var deltas), framed);
        Assert.Equal(JsonNode.Parse("[" + framed + "]")!.AsArray().Count, deltas.Count);
        foreach (var writer in Writers)
        {
            var general = State();
            var nodes = JsonNode.Parse("[" + framed + "]")!.AsArray();
            var generalRejection = SessionEventRules.CheckAppend(general, nodes, writer, framed: true) ?? SessionRules.CheckFence(general, nodes);
            if (generalRejection is null)
            {
                general.ApplyReadableMessages(nodes, 100);
            }

            var typed = State();
            var typedRejection = SessionEventRules.CheckDeltas(typed, deltas, writer) ?? SessionRules.CheckDeltasFence(typed, deltas);
            if (typedRejection is null)
            {
                typed.ApplyDeltas(deltas, 100);
            }

            Assert.Equal(generalRejection, typedRejection);
            Assert.Equal(general.ToSnapshot().ToJsonString(), typed.ToSnapshot().ToJsonString());
        }
    }

    [Fact]
    public void The_cases_cover_acceptance_and_each_refusal()
    {
        // The batches above must exercise what they claim: accepted text, a fenced run, a taken-over message and a
        // message of someone else, or the comparison could pass on batches that are all refused the same way.
        var outcomes = new HashSet<string>();
        foreach (var framed in TakenBatches.Select(row => row.Data))
        {
            SessionDeltas.TryRead(Encoding.UTF8.GetBytes(framed), out var deltas);
            foreach (var writer in Writers)
            {
                var state = State();
                outcomes.Add((SessionEventRules.CheckDeltas(state, deltas, writer) ?? SessionRules.CheckDeltasFence(state, deltas))?.Code ?? "accepted");
            }
        }

        Assert.Equal(["NOT_OWNER", SessionRejection.RunCancelled, "accepted"], outcomes.Order());
        var streamed = State();
        SessionDeltas.TryRead(Encoding.UTF8.GetBytes(Delta("ma1", "\"Hel\"") + "," + Delta("ma1", "\"lo\"")), out var hello);
        streamed.ApplyDeltas(hello, 7);
        Assert.Equal("Hello", streamed.GetMessage("ma1")!.Text);
        Assert.Equal(7, streamed.Position);
    }

    [Theory]
    [MemberData(nameof(LeftBatches))]
    public void Anything_but_plain_delta_inserts_is_left_to_the_general_path(string framed)
        => Assert.False(SessionDeltas.TryRead(Encoding.UTF8.GetBytes(framed), out _), framed);

    private static SessionState State()
    {
        var state = new SessionState();
        state.ApplyMessages(Setup.Select(e => JsonNode.Parse(e)), 10);
        return state;
    }

    private static string Delta(string messageId, string text, string? more = null, string? headers = null)
        => $"{{\"type\":\"delta\",\"key\":\"d_{messageId}\",\"value\":{{\"messageId\":\"{messageId}\",\"text\":{text}{(more is null ? "" : "," + more)}}},\"headers\":{{\"operation\":\"insert\"{(headers is null ? "" : "," + headers)}}}}}";
}
