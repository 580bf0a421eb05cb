using System.Text;
using System.Text.Json.Nodes;

namespace DurableSessions.Core.Tests;

public sealed class DurableJsonTests
{
    [Fact]
    public void Write_returns_exactly_what_was_written_each_time_also_when_nested_and_after_a_large_message()
    {
        var small = DurableJson.Write(1, static (w, n) => w.WriteNumberValue(n));
        Assert.Equal("1", Encoding.UTF8.GetString(small));

        // A write inside a write on the same thread gets its own buffer; the outer one is not disturbed.
        var outer = DurableJson.Write("é<&>", static (w, text) =>
        {
            w.WriteStartArray();
            w.WriteStringValue(text);
            w.WriteRawValue(DurableJson.Write(2, static (inner, n) => inner.WriteNumberValue(n)));
            w.WriteEndArray();
        });
        Assert.Equal("[\"é<&>\",2]", Encoding.UTF8.GetString(outer));

        var large = DurableJson.Write(new string('x', 300_000), static (w, text) => w.WriteStringValue(text));
        Assert.Equal(300_002, large.Length);
        Assert.Equal("[3]", Encoding.UTF8.GetString(DurableJson.Write(3, static (w, n) => { w.WriteStartArray(); w.WriteNumberValue(n); w.WriteEndArray(); })));

        // The same bytes as the node written by ToUtf8Bytes.
        var node = JsonNode.Parse("""{"a":[1,"b",{"c":null}],"d":"ü"}""");
        Assert.Equal(DurableJson.ToUtf8Bytes(node), DurableJson.Write(node, static (w, n) => n!.WriteTo(w)));
    }
}
