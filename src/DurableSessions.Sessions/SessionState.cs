using System.Buffers;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization.Metadata;

namespace DurableSessions.Sessions;

/// <summary>
/// The materialized state of a session: State Protocol change messages applied in stream order, with assistant text
/// deltas rolled up into their message.
/// </summary>
/// <remarks>
/// <para>Entities are keyed by (<c>type</c>, <c>key</c>). <c>insert</c> and <c>update</c> replace the value,
/// <c>delete</c> removes it. <c>delta</c> change messages are not kept as entities: their text is appended to the part
/// they name of the message they name, so the state (and every snapshot of it) is bounded by the conversation, not by
/// the number of tokens streamed.</para>
/// <para>The state reads two ways: as stored JSON (<see cref="Get"/>, <see cref="All"/>) and typed
/// (<see cref="Messages"/>, <see cref="Runs"/>, <see cref="Session"/>, ...). The typed view is built on first use after
/// a change; an entity whose value does not read as its type is left out of it.</para>
/// <para>Not thread-safe; callers serialize access.</para>
/// </remarks>
public sealed class SessionState
{
    private readonly Dictionary<(string Type, string Key), JsonObject> _entities = [];
    private readonly List<(string Type, string Key)> _order = [];

    // The typed lists, per entity type, built on first use and dropped by a change to an entity of that type; and each
    // entity read as its type, dropped by a change to that entity. A reader that looks at the messages after every
    // streamed delta reads again only the message the delta grew, not the whole conversation.
    private readonly Dictionary<string, object> _typed = [];
    private readonly Dictionary<(string Type, string Key), object?> _typedEntities = [];

    // Text streamed into a message's parts since the message was last read: appended here, and written into the part
    // when the message is read. Concatenating each delta onto the part's text instead copies the whole text so far per
    // delta, quadratic in a reply's length (a 100,000-character reply streamed 10 characters at a time copied 1 GB).
    private readonly Dictionary<string, Dictionary<int, StringBuilder>> _pendingText = new(StringComparer.Ordinal);

    /// <summary>The stream position up to which events have been applied.</summary>
    public long Position { get; private set; }

    /// <summary>The number of entities in the state.</summary>
    public int Count => _entities.Count;

    /// <summary>Returns a copy of an entity's value as of this call, or null.</summary>
    /// <remarks>
    /// A copy: changing it changes nothing in the state (nor in its typed views). Text streamed into a message later is
    /// in the value a later call returns.
    /// </remarks>
    public JsonObject? Get(string type, string key)
    {
        if (type == SessionEventTypes.Message)
        {
            WritePendingText(key);
        }

        return _entities.GetValueOrDefault((type, key))?.DeepClone().AsObject();
    }

    /// <summary>
    /// Returns an entity's value, or null, without writing text streamed since its last read into it: for rules that
    /// read a message's author or run but never its text, once per appended delta.
    /// </summary>
    internal JsonObject? Peek(string type, string key) => _entities.GetValueOrDefault((type, key));

    /// <summary>Copies of all entities of one type, in order of first insertion, as <see cref="Get"/> returns them.</summary>
    public IEnumerable<JsonObject> All(string type)
    {
        if (type == SessionEventTypes.Message)
        {
            WriteAllPendingText();
        }

        foreach (var id in _order)
        {
            if (id.Type == type && _entities.TryGetValue(id, out var value))
            {
                yield return value.DeepClone().AsObject();
            }
        }
    }

    /// <summary>The session's settings (title, policies), or null before it is created.</summary>
    public SessionInfo? Session => TypedEntity(SessionEventTypes.Session, "session", SessionJsonContext.Default.SessionInfo);

    /// <summary>The messages, in order of first insertion, with streamed text rolled up.</summary>
    public IReadOnlyList<SessionMessage> Messages => Typed(SessionEventTypes.Message, SessionJsonContext.Default.SessionMessage);

    /// <summary>The runs, in order of first insertion.</summary>
    public IReadOnlyList<SessionRun> Runs => Typed(SessionEventTypes.Run, SessionJsonContext.Default.SessionRun);

    /// <summary>The controls (cancels, steers, pauses), in order of first insertion.</summary>
    public IReadOnlyList<SessionControl> Controls => Typed(SessionEventTypes.Control, SessionJsonContext.Default.SessionControl);

    /// <summary>The participants the session has seen, present or gone, in order of first insertion.</summary>
    public IReadOnlyList<SessionPresence> Presence => Typed(SessionEventTypes.Presence, SessionJsonContext.Default.SessionPresence);

    /// <summary>Who holds the session's control lease, or null when it was never handed off.</summary>
    public SessionHandoff? Handoff => TypedEntity(SessionEventTypes.Handoff, "lease", SessionJsonContext.Default.SessionHandoff);

    /// <summary>The human holding the session, or null while the agents do.</summary>
    public string? HumanHolder => Handoff is { } lease && lease.Kind == ParticipantKind.Human ? lease.Holder : null;

    /// <summary>The latest run still <see cref="RunStatus.Started"/>, or null.</summary>
    public SessionRun? ActiveRun => Runs.LastOrDefault(r => r.Status == RunStatus.Started && r.Id is not null);

    /// <summary>The message <paramref name="id"/>, or null.</summary>
    public SessionMessage? GetMessage(string id) => TypedEntity(SessionEventTypes.Message, id, SessionJsonContext.Default.SessionMessage);

    /// <summary>The run <paramref name="id"/>, or null.</summary>
    public SessionRun? GetRun(string id) => TypedEntity(SessionEventTypes.Run, id, SessionJsonContext.Default.SessionRun);

    /// <summary>The presence of participant <paramref name="participantId"/>, or null.</summary>
    public SessionPresence? GetPresence(string participantId) => TypedEntity(SessionEventTypes.Presence, participantId, SessionJsonContext.Default.SessionPresence);

    private T? TypedEntity<T>(string type, string key, JsonTypeInfo<T> info)
        where T : class
    {
        var id = (type, key);
        if (_typedEntities.TryGetValue(id, out var cached))
        {
            return (T?)cached;
        }

        if (type == SessionEventTypes.Message)
        {
            WritePendingText(key);
        }

        if (!_entities.TryGetValue(id, out var value))
        {
            return null;
        }

        var entity = SessionEvent.Read(value, info);
        _typedEntities[id] = entity;
        return entity;
    }

    private IReadOnlyList<T> Typed<T>(string type, JsonTypeInfo<T> info)
        where T : class
    {
        if (_typed.TryGetValue(type, out var cached))
        {
            return (IReadOnlyList<T>)cached;
        }

        var list = new List<T>();
        foreach (var id in _order)
        {
            if (id.Type == type && TypedEntity(type, id.Key, info) is { } entity)
            {
                list.Add(entity);
            }
        }

        var view = list.AsReadOnly();
        _typed[type] = view;
        return view;
    }

    /// <summary>Applies framed JSON stream data (messages separated by commas) ending at <paramref name="endPosition"/>.</summary>
    /// <remarks>Never throws on what is stored: a message that cannot be read or materialized is skipped.</remarks>
    public void ApplyChunk(ReadOnlySpan<byte> framedMessages, long endPosition)
        => ApplyReadableMessages(ParseEvents(framedMessages), endPosition);

    /// <summary>
    /// Parses framed JSON stream data into one entry per stored message: the event, or null for a message that is not
    /// a readable session event (<see cref="SessionEventRules.IsReadable"/>). Never throws; data that cannot be split
    /// into messages ends the list early.
    /// </summary>
    public static IReadOnlyList<JsonObject?> ParseEvents(ReadOnlySpan<byte> framedMessages)
    {
        var events = new List<JsonObject?>();
        if (framedMessages.IsEmpty)
        {
            return events;
        }

        var wrapped = new byte[framedMessages.Length + 2];
        wrapped[0] = (byte)'[';
        framedMessages.CopyTo(wrapped.AsSpan(1));
        wrapped[^1] = (byte)']';
        try
        {
            var reader = new Utf8JsonReader(wrapped, new JsonReaderOptions { MaxDepth = MaxDepth });
            reader.Read();
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                var start = (int)reader.TokenStartIndex;
                reader.Skip();
                var end = (int)reader.BytesConsumed;
                events.Add(ParseEvent(wrapped.AsMemory(start, end - start)));
            }
        }
        catch (JsonException)
        {
        }

        return events;
    }

    private static JsonObject? ParseEvent(ReadOnlyMemory<byte> json)
    {
        try
        {
            var node = JsonNode.Parse(json.Span, documentOptions: new JsonDocumentOptions { MaxDepth = MaxDepth });
            return SessionEventRules.IsReadable(node) ? (JsonObject)node! : null;
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or ArgumentException)
        {
            return null;
        }
    }

    /// <summary>Applies already-parsed messages ending at <paramref name="endPosition"/>.</summary>
    public void ApplyMessages(IEnumerable<JsonNode?> messages, long endPosition)
    {
        foreach (var message in messages)
        {
            if (message is JsonObject change)
            {
                Apply(change);
            }
        }

        Position = endPosition;
    }

    /// <summary>
    /// Applies messages that already passed <see cref="SessionEventRules.Validate(JsonNode, bool)"/> (from <see cref="ParseEvents"/>, or
    /// checked on append): each event is walked once, not once more here.
    /// </summary>
    internal void ApplyReadableMessages(IEnumerable<JsonNode?> messages, long endPosition)
    {
        foreach (var message in messages)
        {
            if (message is JsonObject change)
            {
                Apply(change, readable: true);
            }
        }

        Position = endPosition;
    }

    /// <summary>
    /// Applies one change or control message. Anything that is neither, and any change that is not a readable session
    /// event (<see cref="SessionEventRules.IsReadable"/>), is ignored, so readers of the state never meet a field of an
    /// unexpected kind.
    /// </summary>
    public void Apply(JsonObject message) => Apply(message, readable: false);

    private void Apply(JsonObject message, bool readable)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (message["headers"] is not JsonObject headers)
        {
            return;
        }

        if (SessionJson.Text(headers, "control") == "reset")
        {
            _entities.Clear();
            _order.Clear();
            _typed.Clear();
            _typedEntities.Clear();
            _pendingText.Clear();
            return;
        }

        if (!TryGetString(message, "type", out var type) || !TryGetString(message, "key", out var key)
            || !TryGetString(headers, "operation", out var operation) || (!readable && !SessionEventRules.IsReadable(message)))
        {
            return;
        }

        if (type == SessionEventTypes.Delta)
        {
            if (operation == "insert" && message["value"] is JsonObject delta)
            {
                ApplyDelta(delta);
            }

            return;
        }

        var id = (type, key);
        Changed(id);
        if (type == SessionEventTypes.Message)
        {
            _pendingText.Remove(key); // the new value states the message's text in full
        }

        switch (operation)
        {
            case "insert":
            case "update":
                if (message["value"] is JsonObject value)
                {
                    var copy = Compact(value);
                    if (_entities.TryAdd(id, copy))
                    {
                        _order.Add(id);
                    }
                    else
                    {
                        _entities[id] = copy;
                    }
                }

                break;
            case "delete":
                _entities.Remove(id);
                _order.Remove(id);
                break;
        }
    }

    /// <summary>
    /// The state as State Protocol messages: <c>snapshot-start</c>, one <c>insert</c> per entity, <c>snapshot-end</c>
    /// carrying the offset from which the live tail continues.
    /// </summary>
    public JsonArray ToSnapshot()
    {
        WriteAllPendingText();
        var offset = StreamOffset.Format(Position);
        var snapshot = new JsonArray { Control("snapshot-start", offset) };
        foreach (var id in _order)
        {
            snapshot.Add(new JsonObject
            {
                ["type"] = id.Type,
                ["key"] = id.Key,
                ["value"] = _entities[id].DeepClone(),
                ["headers"] = new JsonObject { ["operation"] = "insert" },
            });
        }

        snapshot.Add(Control("snapshot-end", offset));
        return snapshot;
    }

    /// <summary>
    /// Applies a batch of plain delta inserts (<see cref="SessionDeltas"/>) that ends at <paramref name="endPosition"/>:
    /// what <see cref="ApplyReadableMessages"/> does with the same events.
    /// </summary>
    internal void ApplyDeltas(IReadOnlyList<DeltaChange> deltas, long endPosition)
    {
        for (var i = 0; i < deltas.Count; i++)
        {
            var delta = deltas[i];
            ApplyDelta(delta.MessageId, delta.Part, delta.PartType, delta.Text);
        }

        Position = endPosition;
    }

    private void ApplyDelta(JsonObject delta)
    {
        if (TryGetString(delta, "messageId", out var messageId))
        {
            ApplyDelta(messageId, SessionJson.Number(delta, "part") ?? 0, TryGetString(delta, "partType", out var partType) ? partType : null, TryGetString(delta, "text", out var text) ? text : null);
        }
    }

    private void ApplyDelta(string messageId, int index, string? partType, string? text)
    {
        if (!_entities.TryGetValue((SessionEventTypes.Message, messageId), out var message))
        {
            return;
        }

        Changed((SessionEventTypes.Message, messageId));

        if (message["parts"] is not JsonArray parts)
        {
            parts = [];
            message["parts"] = parts;
        }

        // A delta names an existing part or the next one: a far index must not make one small event grow the message
        // (and every snapshot of it) by thousands of empty parts.
        if (index < 0 || index > parts.Count)
        {
            return;
        }

        while (parts.Count <= index)
        {
            parts.Add(new JsonObject { ["type"] = partType ?? "text", ["text"] = string.Empty });
        }

        if (parts[index] is JsonObject target && text is not null)
        {
            if (!_pendingText.TryGetValue(messageId, out var pending))
            {
                pending = [];
                _pendingText[messageId] = pending;
            }

            if (!pending.TryGetValue(index, out var builder))
            {
                builder = new StringBuilder(SessionJson.Text(target, "text"));
                pending[index] = builder;
            }

            builder.Append(text);
        }
    }

    /// <summary>Writes the text streamed into message <paramref name="messageId"/> since its last read into its parts.</summary>
    private void WritePendingText(string messageId)
    {
        if (!_pendingText.Remove(messageId, out var pending)
            || !_entities.TryGetValue((SessionEventTypes.Message, messageId), out var message)
            || message["parts"] is not JsonArray parts)
        {
            return;
        }

        foreach (var (index, builder) in pending)
        {
            if (index < parts.Count && parts[index] is JsonObject part)
            {
                part["text"] = builder.ToString();
            }
        }
    }

    private void WriteAllPendingText()
    {
        if (_pendingText.Count == 0)
        {
            return;
        }

        foreach (var messageId in _pendingText.Keys.ToList())
        {
            WritePendingText(messageId);
        }
    }

    /// <summary>
    /// A copy of <paramref name="value"/> that holds its JSON text and nothing else until it is read: a parsed event's
    /// values point into the event's whole document, and a materialized copy is a tree of nodes per property. Kept for
    /// the life of the session, either would make each stored entity several times its size for the collector to trace.
    /// </summary>
    private static JsonObject Compact(JsonObject value)
    {
        // The parse copies what it keeps, so the text is written to a buffer reused per thread.
        var buffer = t_compactBuffer ??= new ArrayBufferWriter<byte>(1024);
        buffer.ResetWrittenCount();
        try
        {
            // Escaped only where JSON requires it: the default encoder would keep non-ASCII text as \u escapes, two to
            // three times its size. What is written out of the state is escaped by its own writer.
            using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { MaxDepth = MaxDepth, SkipValidation = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
            {
                value.WriteTo(writer);
            }

            return (JsonObject)JsonNode.Parse(buffer.WrittenSpan, documentOptions: new JsonDocumentOptions { MaxDepth = MaxDepth })!;
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or JsonException)
        {
            // A node built in memory can hold what JSON text cannot (a NaN): kept as a copy of the nodes instead.
            return (JsonObject)value.DeepClone();
        }
        finally
        {
            if (buffer.Capacity > MaxReusedBuffer)
            {
                t_compactBuffer = null; // one large entity does not keep its buffer alive on the thread
            }
        }
    }

    [ThreadStatic]
    private static ArrayBufferWriter<byte>? t_compactBuffer;

    private const int MaxReusedBuffer = 64 * 1024;

    // Deep enough for anything a store may hold: depth is judged per event (on append, and as events are read), not by
    // the parser.
    private const int MaxDepth = 1024;

    private void Changed((string Type, string Key) id)
    {
        _typedEntities.Remove(id);
        _typed.Remove(id.Type);
    }

    private static JsonObject Control(string signal, string offset)
        => new() { ["headers"] = new JsonObject { ["control"] = signal, ["offset"] = offset } };

    private static bool TryGetString(JsonObject obj, string name, out string value)
    {
        var text = SessionJson.Text(obj, name);
        value = text ?? string.Empty;
        return text is not null;
    }
}
