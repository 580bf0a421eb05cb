using System.Globalization;
using System.Text.Json.Nodes;

namespace DurableSessions.Client;

/// <summary>
/// Appends JSON messages to a stream as an idempotent producer (<c>Producer-Id</c>/<c>Epoch</c>/<c>Seq</c>): retries
/// after a dropped connection reuse the same sequence number, so every batch lands exactly once.
/// </summary>
/// <remarks>Appends are serialized; safe to call from several threads.</remarks>
public sealed class StreamProducer : IDisposable
{
    private readonly DurableSessionsClient _client;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private long _seq;

    // Set when an append failed: it may still have been stored (cancelled after it was sent, or refused on a retry after an
    // earlier attempt was stored). The next batch must not reuse its sequence number, or the server would take it for a
    // retry of that one and drop it.
    private bool _inDoubt;

    // Set when a newer epoch of this producer has written the stream: every later append is refused as that one was.
    private DurableSessionsException? _fenced;

    private const string StaleEpoch = "STALE_PRODUCER_EPOCH";

    /// <summary>Creates a producer. Use a new <paramref name="epoch"/> (or a new id) after a restart.</summary>
    public StreamProducer(DurableSessionsClient client, string path, string producerId, long epoch = 0)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentException.ThrowIfNullOrEmpty(producerId);
        _client = client;
        Path = path;
        ProducerId = producerId;
        Epoch = epoch;
    }

    /// <summary>The stream path.</summary>
    public string Path { get; }

    /// <summary>The producer id.</summary>
    public string ProducerId { get; }

    /// <summary>
    /// The producer epoch. Raised by one after an append that failed (it was cancelled, possibly after it was sent, or
    /// it was refused, possibly after an earlier attempt of it was stored): the next batch starts the new epoch at
    /// sequence 0, which the server takes whatever became of that append, and which fences any late copy of it.
    /// </summary>
    public long Epoch { get; private set; }

    /// <summary>Appends one batch of messages; returns the stream offset after it.</summary>
    /// <exception cref="DurableSessionsException">
    /// The server refused the batch (for example <c>RUN_CANCELLED</c>). Once refused <c>STALE_PRODUCER_EPOCH</c> (a newer
    /// epoch of this producer writes the stream), the producer is fenced: every later append throws the same.
    /// </exception>
    public Task<string> AppendAsync(JsonArray messages, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        return AppendJsonAsync(DurableJson.ToUtf8Bytes(messages), cancellationToken);
    }

    /// <summary>
    /// Appends one batch of messages given as the UTF-8 text of a JSON array (for writers that serialize their messages
    /// themselves); returns the stream offset after it. The server checks the text as it checks any append.
    /// </summary>
    /// <exception cref="DurableSessionsException">The server refused the batch (for example <c>RUN_CANCELLED</c>).</exception>
    public async Task<string> AppendJsonAsync(byte[] messagesJson, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messagesJson);
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_fenced is { } fenced)
            {
                throw new DurableSessionsException(fenced.Status, fenced.Code, fenced.Message);
            }

            if (_inDoubt)
            {
                _inDoubt = false;
                Epoch++;
                _seq = 0;
            }

            // Over the client's append transport (its WebSocket) when it has one; over HTTP, with the same sequence number,
            // when not.
            if (_client.Appends is { } appends
                && await appends.AppendAsync(Path, messagesJson, ProducerId, Epoch, _seq, cancellationToken).ConfigureAwait(false) is { } appended)
            {
                _seq++;
                return appended;
            }

            var seq = _seq.ToString(CultureInfo.InvariantCulture);
            using var response = await _client.SendWithRetryAsync(() =>
            {
                var request = _client.CreateRequest(HttpMethod.Post, $"/v1/stream/{Path}", messagesJson);
                request.Headers.Add(StreamHeaders.ProducerId, ProducerId);
                request.Headers.Add(StreamHeaders.ProducerEpoch, Epoch.ToString(CultureInfo.InvariantCulture));
                request.Headers.Add(StreamHeaders.ProducerSeq, seq);
                return request;
            }, cancellationToken).ConfigureAwait(false);
            _seq++;
            return response.Headers.TryGetValues(StreamHeaders.NextOffset, out var offsets) ? offsets.First() : string.Empty;
        }
        catch (DurableSessionsException ex) when (ex.Code == StaleEpoch)
        {
            // A newer instance of this producer (a restart with a higher epoch) writes the stream now. Moving on to the
            // next epoch would take its place: seq 0 of an epoch it already wrote is answered as a duplicate, so this
            // producer's batches would be reported stored and dropped, and the newer one's then taken for duplicates.
            _fenced = ex;
            throw;
        }
        catch (Exception)
        {
            // Even a refusal does not say that nothing was stored: the request is retried after a cut connection, and
            // the attempt before the refused one may have been stored. A new epoch costs nothing.
            _inDoubt = true;
            throw;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <inheritdoc />
    public void Dispose() => _gate.Dispose();
}
