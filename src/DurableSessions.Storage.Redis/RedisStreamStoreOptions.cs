namespace DurableSessions.Storage.Redis;

/// <summary>Settings of the Redis store (configuration section <c>Storage:Redis</c>).</summary>
public sealed class RedisStreamStoreOptions
{
    /// <summary>A StackExchange.Redis configuration string, e.g. <c>127.0.0.1:6379</c> or <c>host1,host2,password=…</c>.</summary>
    public string Configuration { get; set; } = "127.0.0.1:6379";

    /// <summary>The prefix of every key and channel, so several deployments can share one Redis. Default <c>ds</c>.</summary>
    public string KeyPrefix { get; set; } = "ds";

    /// <summary>
    /// How long an idle producer's state (<c>Producer-Id</c> epoch and sequence) is kept: after this long without an
    /// accepted append the producer is treated as new (protocol §5.2.1, producer state cleanup). Default 7 days.
    /// </summary>
    public TimeSpan ProducerStateTtl { get; set; } = TimeSpan.FromDays(7);

    /// <summary>
    /// How many replicas must confirm each write before it is acknowledged (Redis <c>WAIT</c>). 0 (the default)
    /// acknowledges once the primary has applied it; what that survives then depends on the primary's
    /// <c>appendonly</c>/<c>appendfsync</c> settings (see docs/scale-out.md).
    /// </summary>
    public int WaitForReplicas { get; set; }

    /// <summary>How long to wait for <see cref="WaitForReplicas"/> confirmations before the write is reported as failed (503; a producer retry is deduplicated).</summary>
    public TimeSpan WaitTimeout { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How often each node removes streams whose TTL or <c>Stream-Expires-At</c> has passed and that nobody has touched
    /// since (an expired stream is also removed when it is next accessed, and before a create is refused at the stream
    /// limit). Default 30 seconds.
    /// </summary>
    public TimeSpan ExpirySweepInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Appends up to this size travel inside the change notification; larger ones are read from Redis by each node with a live reader of the stream.</summary>
    public int InlineNotificationBytes { get; set; } = 16 * 1024;

    /// <summary>
    /// The most change notifications a node holds unhandled (each up to <see cref="InlineNotificationBytes"/> of data).
    /// A node that falls further behind (its fan-out slower than every node's appends together) drops them, and cuts its
    /// live readers, who read what they missed from Redis: its memory stays bounded. Default 20,000.
    /// </summary>
    public int MaxNotificationBacklog { get; set; } = 20_000;
}
