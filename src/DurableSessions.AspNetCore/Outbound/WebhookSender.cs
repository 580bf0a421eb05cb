using System.Net.Http.Headers;
using DurableSessions.AspNetCore.Subscriptions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace DurableSessions.AspNetCore.Outbound;

/// <summary>
/// The one sender of the server's outbound webhooks (subscription wakes and run notifications): a JSON POST over the
/// SSRF-checked handler of <see cref="OutboundHandler"/>, with a timeout and a bounded answer.
/// </summary>
/// <remarks>
/// The sender does not know what it sends: callers pass the body and their own headers (signatures included). It never
/// throws for a failed delivery; the outcome says what happened. Thread-safe.
/// </remarks>
internal sealed class WebhookSender(IHttpClientFactory clients)
{
    /// <summary>The name of the outbound client registered with <see cref="IHttpClientFactory"/>.</summary>
    public const string ClientName = "DurableSessions.Outbound";

    /// <summary>The largest answer body read from a receiver; a larger one fails the delivery.</summary>
    public const int MaxResponseBytes = 64 * 1024;

    /// <summary>Registers the outbound client and the sender.</summary>
    public static void Register(IServiceCollection services)
    {
        services.AddHttpClient(ClientName, client =>
            {
                // Each send sets its own deadline; only the status of an answer matters (and a small JSON reply to a
                // webhook), so a receiver cannot make the server buffer a large body.
                client.Timeout = Timeout.InfiniteTimeSpan;
                client.MaxResponseContentBufferSize = MaxResponseBytes;
            })
            .ConfigurePrimaryHttpMessageHandler(sp => OutboundHandler.Create(sp.GetRequiredService<IOptions<SubscriptionOptions>>().Value.AllowLocalhostWebhooks))

            // One handler for the process's life, so the per-receiver connection cap holds exactly (a rotated handler
            // would keep its old connections open beside the new one's); PooledConnectionLifetime still re-resolves DNS.
            .SetHandlerLifetime(Timeout.InfiniteTimeSpan)

            // The default request logs would write every receiver's URL (which may carry a secret) at Information.
            .RemoveAllLoggers();
        services.TryAddSingleton<WebhookSender>();
    }

    /// <summary>POSTs <paramref name="body"/> as JSON to <paramref name="url"/>.</summary>
    /// <param name="url">An absolute http(s) URL, already checked by <see cref="WebhookUrlPolicy"/>.</param>
    /// <param name="body">The JSON body.</param>
    /// <param name="headers">Extra request headers, e.g. a signature computed over <paramref name="body"/>.</param>
    /// <param name="timeout">How long the whole exchange may take, answer included.</param>
    /// <param name="cancellationToken">Cancels the send (shutdown); then <see cref="OperationCanceledException"/> is thrown.</param>
    public async Task<WebhookOutcome> SendAsync(string url, ReadOnlyMemory<byte> body, IEnumerable<KeyValuePair<string, string>> headers, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, url) { Content = new ReadOnlyMemoryContent(body) };
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            foreach (var (name, value) in headers)
            {
                request.Headers.TryAddWithoutValidation(name, value);
            }

            var http = clients.CreateClient(ClientName);
            using var response = await http.SendAsync(request, deadline.Token).ConfigureAwait(false);
            var answer = await response.Content.ReadAsByteArrayAsync(deadline.Token).ConfigureAwait(false);
            return new WebhookOutcome((int)response.StatusCode, answer, null);
        }
        catch (Exception ex) when (ex is HttpRequestException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            // Refused connects, resets, timeouts and answers past the bound are all failed deliveries.
            return new WebhookOutcome(0, [], ex);
        }
    }
}

/// <summary>What came of one webhook send.</summary>
/// <param name="Status">The HTTP status of the answer, or 0 when there was none.</param>
/// <param name="Body">The answer body (at most <see cref="WebhookSender.MaxResponseBytes"/>), empty when there was none.</param>
/// <param name="Failure">Why no answer came (refused, unreachable, timed out, too large), or null.</param>
internal readonly record struct WebhookOutcome(int Status, byte[] Body, Exception? Failure)
{
    /// <summary>Whether the receiver answered with a 2xx status.</summary>
    public bool IsSuccess => Failure is null && Status is >= 200 and < 300;
}
