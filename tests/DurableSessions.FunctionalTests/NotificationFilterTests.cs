using System.Text;
using DurableSessions.AspNetCore.Sessions;

namespace DurableSessions.FunctionalTests;

/// <summary>Which stored changes (and messages) the notifier reads for finished runs: those that may end a run, and no others.</summary>
public sealed class NotificationFilterTests
{
    [Theory]
    [InlineData("""{"type":"delta","value":{"text":"it\u0027s done"}}""", false)]
    [InlineData("""{"type":"delta","value":{"text":"plain"}},{"type":"message","value":{"text":"a \"quote\""}}""", false)]
    [InlineData("""{"type":"delta","value":{"text":"running"}}""", false)]
    [InlineData("""{"type":"delta","value":{"run":1,"text":"x\u0027"}}""", false)]
    [InlineData("""{"type":"delta"},{"type":"\u0072un","value":{"status":"finished"}}""", true)]
    [InlineData("""{"type":"run","value":{"status":"finished"}}""", true)]
    [InlineData("""{"type":"run","value":{"status":"started"}}""", false)]
    [InlineData("""{"type":"run","value":{"status":"st\u0061rted"}}""", false)]
    [InlineData("""{"type":"run","value":{"status":"failed"}}""", true)]
    [InlineData("""{"type":"run","value":{"status":"f\u0061iled"}}""", true)]
    [InlineData("""{"type":"message","value":{"text":"finished"}}""", false)]
    [InlineData("""{"type":"message","value":{"text":"run"}},{"type":"message","value":{"text":"failed"}}""", true)]
    [InlineData("""{"type":"delta","value":{"text":"\u0027"}},""", true)]
    [InlineData("""{"type":"delta","value":{"text":"\u0027"}} {"type":"delta"}""", true)]
    [InlineData("""{"type":"delta","value":{"text":"\u0027"}},42""", true)]
    [InlineData("""{"type":"delta","value":{"text":"\udc00"}}""", true)]
    [InlineData("""{"type":"delta","value":{"text":"\u0027""", true)]
    public void A_change_may_end_a_run_only_if_strings_in_it_read_run_and_finished_or_failed_or_it_cannot_be_read(string data, bool maybe)
        => Assert.Equal(maybe, NotificationService.MayFinishARun(Encoding.UTF8.GetBytes(data)));
}
