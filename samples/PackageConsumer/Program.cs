// A console app built from the NuGet packages: it asks the server's agent a question and prints the reply once it is
// complete. Exit code 0 when the reply arrived.
using DurableSessions.Client;
using DurableSessions.Sessions;

var server = new Uri(args.Length > 0 ? args[0] : "http://127.0.0.1:4437");
using var client = new DurableSessionsClient(DurableSessionsClientOptions.Default with { BaseAddress = server, ParticipantId = "client:package-consumer" });
var session = client.Session($"package-consumer-{Guid.NewGuid():N}");
await session.CreateAsync();
await session.SendMessageAsync("Do the packages work?");

using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
await foreach (var update in session.JoinAsync(timeout.Token))
{
    var messages = update.State.Messages;
    if (update.UpToDate && messages.Count == 2 && messages[1] is { } reply && reply.Role == MessageRole.Assistant && reply.Status == MessageStatus.Complete)
    {
        Console.WriteLine($"reply: {reply.Text}");
        return 0;
    }
}

return 1;
