using System.Text;
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
public sealed partial class SessionState
{
    private readonly Dictionary<(string Type, string Key), Entity> _entities = [];

    // The entities in order of first insertion. A delete leaves its slot behind (an entity counts only at its own slot,
    // Entity.Order), and the list is compacted once most slots are left: an edit of an early message deletes every later
    // one in one append, and removing each from a list would cost the whole list per delete.
    private readonly List<(string Type, string Key)> _order = [];
    private int _orderVersion;

    // Posted messages (those no run wrote) deleted from the session (an edit of an earlier message takes later ones out),
    // so that their ids are not taken for a new message by a retry of the post that stored them. Replayed from the
    // stream's start, as the server's state is; a state built from a snapshot does not know deletions before it.
    private readonly HashSet<string> _removedMessages = new(StringComparer.Ordinal);

    // The typed lists, per entity type, built on first use and dropped by a change to an entity of that type. Each
    // entity's own typed view is cached on the entity and dropped by a change to it: a reader that looks at the
    // messages after every streamed delta reads again only the message the delta grew, not the whole conversation.
    private readonly Dictionary<string, object> _typed = [];

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
        => _entities.TryGetValue((type, key), out var entity) ? Written(entity).ToNode() : null;

    /// <summary>
    /// Whether entity (<paramref name="type"/>, <paramref name="key"/>) exists, with the string field
    /// <paramref name="field"/> of its value (null when absent or not a string). Reads no text streamed since the last
    /// read: for rules that read a message's author or run, never its text, once per appended delta.
    /// </summary>
    internal bool TryPeekText(string type, string key, string field, out string? value)
    {
        if (!_entities.TryGetValue((type, key), out var entity))
        {
            value = null;
            return false;
        }

        value = entity.Text(field);
        return true;
    }

    /// <summary>Copies of all entities of one type, in order of first insertion, as <see cref="Get"/> returns them.</summary>
    public IEnumerable<JsonObject> All(string type)
    {
        foreach (var (id, entity) in Ordered())
        {
            if (id.Type == type)
            {
                yield return Written(entity).ToNode();
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

    /// <summary>
    /// Every run still <see cref="RunStatus.Started"/>, oldest first: several agents may be answering at once, and a
    /// stop that concerns the session (an interrupt, a handoff, a chat's stop) stops them all.
    /// </summary>
    public IEnumerable<SessionRun> StartedRuns => Runs.Where(r => r.Status == RunStatus.Started && r.Id is not null);

    /// <summary>The message <paramref name="id"/>, or null.</summary>
    public SessionMessage? GetMessage(string id) => TypedEntity(SessionEventTypes.Message, id, SessionJsonContext.Default.SessionMessage);

    /// <summary>
    /// Whether the session held a posted message <paramref name="id"/> (one no run wrote) that was deleted since, and not
    /// written again. Known to a state replayed from the stream's start (the server's), not to one built from a snapshot.
    /// </summary>
    internal bool IsMessageRemoved(string id) => _removedMessages.Contains(id);

    /// <summary>The run <paramref name="id"/>, or null.</summary>
    public SessionRun? GetRun(string id) => TypedEntity(SessionEventTypes.Run, id, SessionJsonContext.Default.SessionRun);

    /// <summary>The presence of participant <paramref name="participantId"/>, or null.</summary>
    public SessionPresence? GetPresence(string participantId) => TypedEntity(SessionEventTypes.Presence, participantId, SessionJsonContext.Default.SessionPresence);

    private T? TypedEntity<T>(string type, string key, JsonTypeInfo<T> info)
        where T : class
    {
        if (!_entities.TryGetValue((type, key), out var entity))
        {
            return null;
        }

        if (!entity.HasTyped)
        {
            entity.SetTyped(WithKeyAsId(Written(entity).Read(info), key));
        }

        return (T?)entity.Typed;
    }

    // An entity keyed by its id may be written without the id in its value (only a different one is refused): the typed
    // view then takes it from the key, so rules that work by id (an edit taking later messages out) see every entity.
    private static object? WithKeyAsId(object? typed, string key) => typed switch
    {
        SessionMessage { Id: null } message => message with { Id = key },
        SessionRun { Id: null } run => run with { Id = key },
        SessionControl { Id: null } control => control with { Id = key },
        SessionPresence { Id: null } presence => presence with { Id = key },
        _ => typed,
    };

    private IReadOnlyList<T> Typed<T>(string type, JsonTypeInfo<T> info)
        where T : class
    {
        if (_typed.TryGetValue(type, out var cached))
        {
            return (IReadOnlyList<T>)cached;
        }

        var list = new List<T>();
        foreach (var (id, _) in Ordered())
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
        => ParseEvents(framedMessages, worthParsing: null);

    /// <summary>
    /// As <see cref="ParseEvents(ReadOnlySpan{byte})"/>, but a message whose text <paramref name="worthParsing"/> turns
    /// down is not parsed at all (its entry is null): a reader that looks for a few events among long ones (a run's end
    /// beside the reply it finishes) parses only those.
    /// </summary>
    internal static IReadOnlyList<JsonObject?> ParseEvents(ReadOnlySpan<byte> framedMessages, SpanPredicate? worthParsing)
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
                var message = wrapped.AsSpan(start, end - start);
                events.Add(worthParsing is null || worthParsing(message) ? ParseEvent(message) : null);
            }
        }
        catch (JsonException)
        {
        }

        return events;
    }

    /// <summary>Applies one stored event given as its JSON text, as <see cref="ApplyChunk"/> applies each of its messages.</summary>
    internal void ApplyEvent(ReadOnlySpan<byte> json)
    {
        if (Parse(json) is { } message)
        {
            // A control message is no event, but a reset still clears the state, as Apply does with it.
            Apply(message, readable: SessionEventRules.IsReadableParsed(message));
        }
    }

    /// <summary>
    /// The event <paramref name="json"/> holds, when it is a readable session event (<see cref="SessionEventRules.IsReadable"/>).
    /// One pass over the text checks what every reader relies on (UTF-8, escapes that decode, depth) and the parse
    /// refuses names given twice, so only the event's shape is checked on the nodes: walking every node to check them
    /// again would build each object's properties and decode each string, for every event every reader reads.
    /// </summary>
    private static JsonObject? ParseEvent(ReadOnlySpan<byte> json)
        => Parse(json) is { } message && SessionEventRules.IsReadableParsed(message) ? message : null;

    /// <summary>The JSON object <paramref name="json"/> holds, when its text passes <see cref="JsonMessageLimits.TryValidate"/> and names nothing twice.</summary>
    private static JsonObject? Parse(ReadOnlySpan<byte> json)
    {
        if (!JsonMessageLimits.TryValidate(json, out _))
        {
            return null;
        }

        try
        {
            return JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { MaxDepth = MaxDepth, AllowDuplicateProperties = false }) as JsonObject;
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
    /// Applies messages already known to be readable session events (from <see cref="ParseEvents(ReadOnlySpan{byte})"/>, or checked on
    /// append): their checks are not run once more here.
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
            _orderVersion++;
            _typed.Clear();
            _removedMessages.Clear();
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
        _typed.Remove(type);
        switch (operation)
        {
            case "insert":
            case "update":
                if (message["value"] is JsonObject value)
                {
                    if (_entities.TryGetValue(id, out var entity))
                    {
                        entity.Replace(value); // the new value states a message's text in full
                    }
                    else
                    {
                        _entities.Add(id, new Entity(value) { Order = _order.Count });
                        _order.Add(id);
                        _orderVersion++;
                        if (type == SessionEventTypes.Message)
                        {
                            _removedMessages.Remove(key);
                        }
                    }
                }

                break;
            case "delete":
                var posted = type == SessionEventTypes.Message && TryPeekText(type, key, "runId", out var replyRun) && replyRun is null;
                if (_entities.Remove(id))
                {
                    LeaveSlot();
                    if (posted)
                    {
                        _removedMessages.Add(key);
                    }
                }

                break;
        }
    }

    /// <summary>
    /// The state as State Protocol messages: <c>snapshot-start</c>, one <c>insert</c> per entity, <c>snapshot-end</c>
    /// carrying the offset from which the live tail continues.
    /// </summary>
    public JsonArray ToSnapshot()
    {
        var offset = StreamOffset.Format(Position);
        var snapshot = new JsonArray { Control("snapshot-start", offset) };
        foreach (var (id, entity) in Ordered())
        {
            snapshot.Add(new JsonObject
            {
                ["type"] = id.Type,
                ["key"] = id.Key,
                ["value"] = Written(entity).ToNode(),
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

        _typed.Remove(SessionEventTypes.Message);
        message.Stream(index, partType, text);
    }

    /// <summary>The entities in order of first insertion, each at its own slot.</summary>
    /// <exception cref="InvalidOperationException">The state gained or lost entities while it was enumerated.</exception>
    private IEnumerable<((string Type, string Key) Id, Entity Entity)> Ordered()
    {
        var version = _orderVersion;
        for (var i = 0; i < _order.Count; i++)
        {
            if (version != _orderVersion)
            {
                throw new InvalidOperationException("The session's state changed while its entities were enumerated.");
            }

            var id = _order[i];
            if (_entities.TryGetValue(id, out var entity) && entity.Order == i)
            {
                yield return (id, entity);
            }
        }
    }

    /// <summary>Leaves a deleted entity's slot, and compacts the order once most of its slots are left.</summary>
    private void LeaveSlot()
    {
        // Every entity holds exactly one slot: the rest are left.
        _orderVersion++;
        var left = _order.Count - _entities.Count;
        if (left <= 32 || left <= _order.Count / 2)
        {
            return;
        }

        var kept = 0;
        for (var i = 0; i < _order.Count; i++)
        {
            var id = _order[i];
            if (_entities.TryGetValue(id, out var entity) && entity.Order == i)
            {
                entity.Order = kept;
                _order[kept++] = id;
            }
        }

        _order.RemoveRange(kept, _order.Count - kept);
    }

    /// <summary>Writes the text streamed into <paramref name="entity"/> since its last read into its value.</summary>
    private static Entity Written(Entity entity)
    {
        entity.WriteStreamedText();
        return entity;
    }

    // Deep enough for anything a store may hold: depth is judged per event (on append, and as events are read), not by
    // the parser.
    private const int MaxDepth = 1024;

    private static JsonObject Control(string signal, string offset)
        => new() { ["headers"] = new JsonObject { ["control"] = signal, ["offset"] = offset } };

    private static bool TryGetString(JsonObject obj, string name, out string value)
    {
        var text = SessionJson.Text(obj, name);
        value = text ?? string.Empty;
        return text is not null;
    }
}

/// <summary>A test of a message's text, before it is parsed.</summary>
internal delegate bool SpanPredicate(ReadOnlySpan<byte> text);
