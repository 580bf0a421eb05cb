using System.Text.Json;

namespace StrategyExecution.Api;

/// <summary>A request body with the person who sent it.</summary>
/// <typeparam name="T">The body's type.</typeparam>
/// <param name="Person">The acting person.</param>
/// <param name="Body">The body.</param>
public sealed record Authored<T>(Data.Person Person, T Body);

/// <summary>Reads a request's JSON body with a size limit and a clear error for anything else.</summary>
public static class JsonBody
{
    /// <summary>The largest JSON body an endpoint reads.</summary>
    public const int MaxBytes = 64 * 1024;

    /// <summary>The body as <typeparamref name="T"/>, or the error to answer with.</summary>
    public static async Task<(T? Value, IResult? Error)> ReadAsync<T>(HttpRequest request, CancellationToken cancellationToken)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(request);
        if (!request.HasJsonContentType())
        {
            return (null, Problems.Error(415, "UNSUPPORTED_MEDIA_TYPE", "Send the body as application/json."));
        }

        var (body, error) = await ReadBoundedAsync(request, MaxBytes, $"A JSON body may be at most {MaxBytes} bytes.", cancellationToken);
        if (error is not null)
        {
            return (null, error);
        }

        try
        {
            var value = JsonSerializer.Deserialize<T>(body.Span, Options);
            return value is null ? (null, Problems.Error(400, "INVALID_BODY", "The body must be a JSON object.")) : (value, null);
        }
        catch (JsonException ex)
        {
            return (null, Problems.Error(400, "INVALID_JSON", $"The body is not valid: {ex.Message}"));
        }
    }

    /// <summary>
    /// The whole body, at most <paramref name="maxBytes"/> (a declared length past it is refused before anything is
    /// read), or the error to answer with: <c>413</c> with <paramref name="tooLarge"/>, or <c>400</c> for a body the server
    /// could not read (<see cref="UnreadableBody"/>).
    /// </summary>
    public static async Task<(ReadOnlyMemory<byte> Body, IResult? Error)> ReadBoundedAsync(HttpRequest request, int maxBytes, string tooLarge, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.ContentLength > maxBytes)
        {
            return (default, Problems.Error(413, "BODY_TOO_LARGE", tooLarge));
        }

        // Not disposed: a memory stream holds nothing but its buffer, which the caller reads without a copy.
        var buffer = new MemoryStream();
        var chunk = new byte[64 * 1024];
        int read;
        try
        {
            while ((read = await request.Body.ReadAsync(chunk, cancellationToken)) > 0)
            {
                if (buffer.Length + read > maxBytes)
                {
                    return (default, Problems.Error(413, "BODY_TOO_LARGE", tooLarge));
                }

                buffer.Write(chunk, 0, read);
            }
        }
        catch (Exception ex) when (UnreadableBody(ex, request.HttpContext) is { } error)
        {
            return (default, error);
        }

        return (buffer.GetBuffer().AsMemory(0, (int)buffer.Length), null);
    }

    /// <summary>
    /// The answer to a body the server could not read as HTTP (bad chunk framing, cut short, too slow): the client's
    /// fault, answered as such instead of left to the unhandled-exception path, which logs every one as an error. Null for
    /// anything else, and for a client that has gone.
    /// </summary>
    public static IResult? UnreadableBody(Exception exception, HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(exception);
        ArgumentNullException.ThrowIfNull(context);
        return exception switch
        {
            BadHttpRequestException bad => Problems.Error(bad.StatusCode, "BAD_REQUEST_BODY", $"The request body could not be read: {bad.Message}"),
            IOException io when !context.RequestAborted.IsCancellationRequested => Problems.Error(400, "BAD_REQUEST_BODY", $"The request body could not be read: {io.Message}"),
            _ => null,
        };
    }

    /// <summary>
    /// The acting person and the body of a request that changes something, or the error to answer with: 401 without a
    /// person, before the body is read.
    /// </summary>
    public static async Task<(Authored<T>? Request, IResult? Error)> ReadAuthoredAsync<T>(HttpContext context, Acting acting, CancellationToken cancellationToken)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(acting);
        var person = await acting.SignedInAsync(context, cancellationToken);

        var (body, error) = await ReadAsync<T>(context.Request, cancellationToken);
        return error is null ? (new Authored<T>(person, body!), null) : (null, error);
    }

    private static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        Converters = { new System.Text.Json.Serialization.JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower, allowIntegerValues: false) },
    };
}
