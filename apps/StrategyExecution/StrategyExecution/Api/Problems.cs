namespace StrategyExecution.Api;

/// <summary>The app's error answers: a status, a stable code and a message a person can act on.</summary>
public static class Problems
{
    /// <summary>An error body: <c>{"error":{"code":…,"message":…}}</c>.</summary>
    public sealed record ErrorBody(ErrorDetail Error);

    /// <summary>The error.</summary>
    public sealed record ErrorDetail(string Code, string Message, IReadOnlyList<string>? Details = null);

    /// <summary>An answer with <paramref name="status"/> and an error body.</summary>
    public static IResult Error(int status, string code, string message, IReadOnlyList<string>? details = null)
        => Results.Json(new ErrorBody(new ErrorDetail(code, message, details)), statusCode: status);

    /// <summary>401: no acting person.</summary>
    public static IResult Unauthenticated()
        => Error(401, "UNAUTHENTICATED", "Sign in first: POST /api/sign-in with an email and password, then send the token as 'Authorization: Bearer <token>' (the page keeps it in a cookie).");

    /// <summary>403: the acting person lacks the role.</summary>
    public static IResult Forbidden(string what) => Error(403, "FORBIDDEN", what);

    /// <summary>404.</summary>
    public static IResult NotFound(string what) => Error(404, "NOT_FOUND", what);
}
