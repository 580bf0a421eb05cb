using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace DurableSessions.AspNetCore;

/// <summary>Writes error responses: a status code and a small JSON body <c>{"error":{"code","message"}}</c>.</summary>
internal static class Problem
{
    public static Task Write(HttpContext context, int status, string code, string message)
    {
        var response = context.Response;
        if (response.HasStarted)
        {
            return Task.CompletedTask;
        }

        response.StatusCode = status;
        response.ContentType = "application/json";
        response.Headers.CacheControl = "no-store";
        // Written with the relaxed encoder: a message quoting a header reads "Stream-Seq", not \u0022Stream-Seq\u0022.
        var body = DurableJson.ToUtf8Bytes(new System.Text.Json.Nodes.JsonObject { ["error"] = new System.Text.Json.Nodes.JsonObject { ["code"] = code, ["message"] = message } });
        response.ContentLength = body.Length;
        return response.Body.WriteAsync(body, context.RequestAborted).AsTask();
    }

    /// <summary>
    /// The answer to a create past <see cref="DurableStreamsOptions.MaxStreams"/> or
    /// <see cref="DurableStreamsOptions.MaxStreamsPerToken"/>; null for any other outcome.
    /// </summary>
    public static Task? StreamLimitReached(HttpContext context, CreateStreamStatus status, DurableStreamsOptions options) => status switch
    {
        CreateStreamStatus.LimitReached => Write(context, 403, "STREAM_LIMIT_REACHED", $"This server holds its limit of {options.MaxStreams} streams; delete some first."),
        CreateStreamStatus.OwnerLimitReached => Write(context, 403, "STREAM_LIMIT_REACHED", $"This token's subject has created its limit of {options.MaxStreamsPerToken} streams; delete some first."),
        _ => null,
    };

    /// <summary>The stream limits of a create on behalf of the current request's token.</summary>
    public static (long? MaxStreams, string? Owner, long? MaxStreamsPerOwner) StreamLimits(HttpContext context, DurableStreamsOptions options)
    {
        var subject = Auth.AccessControl.Current(context) is { IsAnonymous: false } access ? access.Subject : null;
        return (options.MaxStreams > 0 ? options.MaxStreams : null, subject, subject is not null && options.MaxStreamsPerToken > 0 ? options.MaxStreamsPerToken : null);
    }
}

/// <summary>Writes JSON responses that are not cacheable.</summary>
internal static class JsonResponse
{
    public static Task Write(HttpContext context, int status, System.Text.Json.Nodes.JsonNode body)
    {
        var bytes = DurableJson.ToUtf8Bytes(body);
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        context.Response.Headers.CacheControl = "no-store";
        context.Response.ContentLength = bytes.Length;
        return context.Response.Body.WriteAsync(bytes, context.RequestAborted).AsTask();
    }
}
