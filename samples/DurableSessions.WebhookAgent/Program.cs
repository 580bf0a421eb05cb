using DurableSessions.WebhookAgent;

// A serverless agent: no claim loop and nothing held between wakes. The server POSTs a signed webhook here whenever
// user messages wait for the agent; each POST claims and answers every waiting turn, then answers {"done": true}.
//
//   dotnet run --project samples/DurableSessions.WebhookAgent -- --urls=http://127.0.0.1:5080 --Server=http://127.0.0.1:4437 --Agent=agent:webhook
//
// A server on the same machine must allow webhooks to loopback for that: start it with
// --Subscriptions:AllowLocalhostWebhooks=true.
//
// Behind a proxy or on a serverless platform, set --PublicUrl to the address the server reaches this app at.
var app = WebhookAgentApp.Build(args);
await app.StartAsync();
await WebhookAgentApp.RegisterAsync(app, app.Lifetime.ApplicationStopping);
await app.WaitForShutdownAsync();
