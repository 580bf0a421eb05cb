using System.Buffers;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization.Metadata;

namespace DurableSessions.Sessions;

public sealed partial class SessionState
{
    /// <summary>
    /// One entity: its value as compact JSON text, the text streamed into its parts since it was last read, and its
    /// typed view once read.
    /// </summary>
    /// <remarks>
    /// A server holds the state of every active session, and an agent a copy of each it answers, for as long as they
    /// are active. Kept as one array per value, an entity is about its JSON's size and one object for the collector to
    /// trace; a parsed document with a node per property would be several objects per field, and each new version of a
    /// streamed reply's message would move all of them into the older generations.
    /// </remarks>
    private sealed class Entity
    {
        // The value as JSON text, or (for what JSON text cannot hold: a NaN in a value built in memory) as nodes.
        private byte[]? _json;
        private JsonObject? _node;
        private StreamedText? _streamed;

        public Entity(JsonObject value) => Store(value);

        /// <summary>Where the entity stands in the state's order of first insertion (its index there).</summary>
        public int Order { get; set; }

        /// <summary>The typed view, once read and until the entity changes.</summary>
        public object? Typed { get; private set; }

        /// <summary>Whether <see cref="Typed"/> has been read since the last change (it may be null: a value that does not read as its type).</summary>
        public bool HasTyped { get; private set; }

        /// <summary>Replaces the value, and the text streamed into it: a full value states a message's text in full.</summary>
        public void Replace(JsonObject value)
        {
            _streamed = null;
            Store(value);
        }

        public void SetTyped(object? typed)
        {
            Typed = typed;
            HasTyped = true;
        }

        /// <summary>A copy of the value (without text streamed since the last <see cref="WriteStreamedText"/>).</summary>
        public JsonObject ToNode()
            => _json is { } json
                ? (JsonObject)JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { MaxDepth = MaxDepth })!
                : (JsonObject)_node!.DeepClone();

        /// <summary>The value read as <typeparamref name="T"/>, or null when it does not read as one.</summary>
        public T? Read<T>(JsonTypeInfo<T> info)
            where T : class
            => _json is { } json ? SessionEvent.Read(json, info) : SessionEvent.Read(_node, info);

        /// <summary>The value's string field <paramref name="field"/>, or null when absent or not a string.</summary>
        public string? Text(string field)
        {
            if (_json is null)
            {
                return SessionJson.Text(_node, field);
            }

            var reader = Reader(_json);
            try
            {
                return MoveToField(ref reader, field) && reader.TokenType == JsonTokenType.String ? reader.GetString() : null;
            }
            catch (Exception ex) when (ex is JsonException or InvalidOperationException)
            {
                return null;
            }
        }

        /// <summary>
        /// Streams <paramref name="text"/> into part <paramref name="index"/> of this message: an existing part, or the
        /// next one (a new part of type <paramref name="partType"/>, text by default).
        /// </summary>
        public void Stream(int index, string? partType, string? text)
        {
            var streamed = _streamed ??= new StreamedText(StoredParts());
            Changed();

            // A delta names an existing part or the next one: a far index must not make one small event grow the message
            // (and every snapshot of it) by thousands of empty parts.
            if (index < 0 || index > streamed.Count)
            {
                return;
            }

            if (index == streamed.Count)
            {
                (streamed.Added ??= []).Add(partType ?? "text");
            }

            if (text is null)
            {
                return;
            }

            var builder = streamed.Builder(index);
            if (builder is null)
            {
                // Only a part that is an object takes text; the text so far is the part's, or none for a new one.
                string? partText = null;
                if (index < streamed.Stored && !TryStoredPartText(index, out partText))
                {
                    return;
                }

                builder = new StringBuilder(partText);
                (streamed.Text ??= []).Add((index, builder));
            }

            builder.Append(text);
        }

        /// <summary>Writes the text streamed since the last read into the value's parts.</summary>
        public void WriteStreamedText()
        {
            if (_streamed is not { } streamed)
            {
                return;
            }

            _streamed = null;
            var value = ToNode();
            if (streamed.Stored < 0)
            {
                value["parts"] = new JsonArray();
            }

            var parts = (JsonArray)value["parts"]!;
            foreach (var type in streamed.Added ?? [])
            {
                parts.Add(new JsonObject { ["type"] = type, ["text"] = string.Empty });
            }

            foreach (var (index, builder) in streamed.Text ?? [])
            {
                if (parts[index] is JsonObject part)
                {
                    part["text"] = builder.ToString();
                }
            }

            Store(value);
        }

        private void Changed()
        {
            Typed = null;
            HasTyped = false;
        }

        /// <summary>How many parts the stored value has, or -1 when its <c>parts</c> is not an array (it becomes an empty one).</summary>
        private int StoredParts()
        {
            if (_json is null)
            {
                return _node!["parts"] is JsonArray parts ? parts.Count : -1;
            }

            var reader = Reader(_json);
            try
            {
                if (!MoveToField(ref reader, "parts") || reader.TokenType != JsonTokenType.StartArray)
                {
                    return -1;
                }

                var count = 0;
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                {
                    reader.Skip();
                    count++;
                }

                return count;
            }
            catch (Exception ex) when (ex is JsonException or InvalidOperationException)
            {
                return -1;
            }
        }

        /// <summary>Whether stored part <paramref name="index"/> is an object, with its text (null when it has none).</summary>
        private bool TryStoredPartText(int index, out string? text)
        {
            text = null;
            if (_json is null)
            {
                if (_node!["parts"] is JsonArray nodes && nodes[index] is JsonObject node)
                {
                    text = SessionJson.Text(node, "text");
                    return true;
                }

                return false;
            }

            var reader = Reader(_json);
            try
            {
                if (!MoveToField(ref reader, "parts") || reader.TokenType != JsonTokenType.StartArray)
                {
                    return false;
                }

                for (var i = 0; reader.Read() && reader.TokenType != JsonTokenType.EndArray; i++)
                {
                    if (i < index)
                    {
                        reader.Skip();
                        continue;
                    }

                    if (reader.TokenType != JsonTokenType.StartObject)
                    {
                        return false;
                    }

                    text = MoveToField(ref reader, "text") && reader.TokenType == JsonTokenType.String ? reader.GetString() : null;
                    return true;
                }

                return false;
            }
            catch (Exception ex) when (ex is JsonException or InvalidOperationException)
            {
                return false;
            }
        }

        private void Store(JsonObject value)
        {
            Changed();

            // Written to a buffer reused per thread, then copied out at its length.
            var buffer = t_buffer ??= new ArrayBufferWriter<byte>(1024);
            buffer.ResetWrittenCount();
            try
            {
                // Escaped only where JSON requires it: the default encoder would keep non-ASCII text as \u escapes, two
                // to three times its size. What is written out of the state is escaped by its own writer.
                using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { MaxDepth = MaxDepth, SkipValidation = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
                {
                    value.WriteTo(writer);
                }

                _json = buffer.WrittenSpan.ToArray();
                _node = null;
            }
            catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or JsonException)
            {
                // A node built in memory can hold what JSON text cannot (a NaN): kept as a copy of the nodes instead.
                _json = null;
                _node = (JsonObject)value.DeepClone();
            }
            finally
            {
                if (buffer.Capacity > MaxReusedBuffer)
                {
                    t_buffer = null; // one large entity does not keep its buffer alive on the thread
                }
            }
        }

        private static Utf8JsonReader Reader(byte[] json) => new(json, new JsonReaderOptions { MaxDepth = MaxDepth });

        /// <summary>
        /// Moves a reader at the start of an object (or before it) to the value of its property <paramref name="name"/>.
        /// Values carry no duplicate names: they were written from nodes.
        /// </summary>
        private static bool MoveToField(ref Utf8JsonReader reader, string name)
        {
            if (reader.TokenType == JsonTokenType.None && !reader.Read())
            {
                return false;
            }

            if (reader.TokenType != JsonTokenType.StartObject)
            {
                return false;
            }

            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var match = reader.ValueTextEquals(name);
                reader.Read();
                if (match)
                {
                    return true;
                }

                reader.Skip();
            }

            return false;
        }

        [ThreadStatic]
        private static ArrayBufferWriter<byte>? t_buffer;

        private const int MaxReusedBuffer = 64 * 1024;
    }

    /// <summary>
    /// Text streamed into a message's parts since it was last read: appended here, and written into the parts when the
    /// message is read. Concatenating each delta onto the part's text instead copies the whole text so far per delta,
    /// quadratic in a reply's length (a 100,000-character reply streamed 10 characters at a time copied 1 GB).
    /// </summary>
    private sealed class StreamedText(int stored)
    {
        /// <summary>The parts the stored value has, or -1 when it has no array of parts (it gets an empty one).</summary>
        public int Stored { get; } = stored;

        /// <summary>The types of the parts streamed past the stored ones, in order.</summary>
        public List<string>? Added { get; set; }

        /// <summary>Each part's text so far, by part index (a reply streams into one or two parts).</summary>
        public List<(int Index, StringBuilder Text)>? Text { get; set; }

        public int Count => Math.Max(Stored, 0) + (Added?.Count ?? 0);

        public StringBuilder? Builder(int index)
        {
            foreach (var (i, builder) in Text ?? [])
            {
                if (i == index)
                {
                    return builder;
                }
            }

            return null;
        }
    }
}
