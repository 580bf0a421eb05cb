using System.Text.Json;
using System.Text.Json.Serialization;

namespace StrategyExecution;

/// <summary>A string-valued enumeration: a value type that is its wire string, with a fixed set of known values.</summary>
/// <typeparam name="T">The enumeration.</typeparam>
public interface IStringValue<T>
    where T : struct, IStringValue<T>
{
    /// <summary>The value as written on the wire.</summary>
    string Value { get; }

    /// <summary>The known values.</summary>
    static abstract IReadOnlyList<T> Known { get; }

    /// <summary>Wraps a wire value.</summary>
    static abstract T Create(string value);
}

/// <summary>Reads and writes a string-valued enumeration as its string; an unknown value is refused when read.</summary>
/// <typeparam name="T">The enumeration.</typeparam>
public sealed class StringValueConverter<T> : JsonConverter<T>
    where T : struct, IStringValue<T>
{
    /// <inheritdoc/>
    public override T Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        var text = reader.TokenType == JsonTokenType.String ? reader.GetString() : null;
        foreach (var known in T.Known)
        {
            if (string.Equals(known.Value, text, StringComparison.Ordinal))
            {
                return known;
            }
        }

        throw new JsonException($"Expected one of: {string.Join(", ", T.Known.Select(k => k.Value))}.");
    }

    /// <inheritdoc/>
    public override void Write(Utf8JsonWriter writer, T value, JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.WriteStringValue(value.Value);
    }
}
