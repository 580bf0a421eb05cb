using System.Text.Json;

namespace DurableSessions.Sessions.Tests;

public sealed class SessionValuesTests
{
    [Fact]
    public void Values_are_equal_by_their_wire_string_ordinally()
    {
        Assert.Equal(MessageStatus.Complete, new MessageStatus("complete"));
        Assert.True(RunStatus.Started == new RunStatus("started"));
        Assert.True(RunStatus.Started != RunStatus.Finished);
        Assert.NotEqual(MessageRole.User, new MessageRole("User"));
        Assert.Equal(new MessageRole("user").GetHashCode(), MessageRole.User.GetHashCode());
        Assert.Equal("interrupt", NewMessagePolicy.Interrupt.ToString());
        Assert.Equal(string.Empty, default(HandoffPolicy).ToString());
    }

    [Fact]
    public void Values_are_json_strings_and_unknown_ones_are_kept()
    {
        Assert.Equal("\"paused\"", JsonSerializer.Serialize(MessageStatus.Paused, SessionJsonContext.Default.MessageStatus));
        Assert.Equal(ControlAction.Steer, JsonSerializer.Deserialize("\"steer\"", SessionJsonContext.Default.ControlAction));
        Assert.Equal("later", JsonSerializer.Deserialize("\"later\"", SessionJsonContext.Default.RunStatus).Value);
        Assert.Throws<JsonException>(() => JsonSerializer.Deserialize("5", SessionJsonContext.Default.ParticipantKind));
    }

    [Fact]
    public void Every_well_known_value_is_one_the_event_rules_accept()
    {
        foreach (var status in new[] { MessageStatus.Streaming, MessageStatus.Complete, MessageStatus.Cancelled, MessageStatus.Failed, MessageStatus.Interrupted, MessageStatus.Paused })
        {
            var message = new SessionEvent(SessionEventTypes.Message, "m", ChangeOperation.Insert, new SessionMessage { Id = "m", Role = MessageRole.Assistant, Status = status }, null);
            Assert.Null(SessionEventRules.Validate(message.ToJson(), strict: true));
        }

        foreach (var status in new[] { RunStatus.Started, RunStatus.Finished, RunStatus.Cancelled, RunStatus.Failed, RunStatus.Interrupted, RunStatus.Paused })
        {
            var run = new SessionEvent(SessionEventTypes.Run, "r", ChangeOperation.Insert, new SessionRun { Id = "r", Status = status }, null);
            Assert.Null(SessionEventRules.Validate(run.ToJson(), strict: true));
        }
    }
}
