using System.Collections.Concurrent;
using Microsoft.EntityFrameworkCore;
using StrategyExecution.Data;

namespace StrategyExecution.Api;

/// <summary>The body of <c>POST /api/sign-in</c>.</summary>
/// <param name="Email">The person's e-mail address.</param>
/// <param name="Password">The password.</param>
public sealed record SignInRequest(string? Email, string? Password);

/// <summary>A signed-in person and the token that carries the sign-in.</summary>
/// <param name="Token">The bearer token; the page gets it in the <c>strategy_token</c> cookie too.</param>
/// <param name="ExpiresAt">When it stops working.</param>
/// <param name="Person">Who signed in.</param>
public sealed record SignedIn(string Token, DateTimeOffset ExpiresAt, Person Person);

/// <summary>The body of <c>POST /api/tokens</c>.</summary>
/// <param name="Name">What the token is for, e.g. "nightly import".</param>
/// <param name="ExpiresInDays">Its lifetime, 1–365 days (90 by default).</param>
/// <param name="Password">The maker's password: a token outlives a sign-in, so a stolen cookie must not be enough.</param>
public sealed record TokenRequest(string? Name, int? ExpiresInDays, string? Password);

/// <summary>An API token as listed: never the token itself, which is shown once when it is made.</summary>
public sealed record TokenView(int Id, string Name, DateTimeOffset CreatedAt, DateTimeOffset ExpiresAt);

/// <summary>The body of <c>POST /api/me/password</c>.</summary>
/// <param name="Current">The current password.</param>
/// <param name="New">The new one.</param>
public sealed record PasswordChange(string? Current, string? New);

/// <summary>A demo person to sign in as.</summary>
public sealed record DemoPerson(int Id, string Name, string Email, int UnitId, string Unit, IReadOnlyList<string> Roles);

/// <summary>
/// Sign-in, sign-out, API tokens and passwords. A sign-in lasts 14 days, and a person holds at most
/// <see cref="Limits.SignInsPerPerson"/> at once (a new one ends the one unused the longest); API tokens last what their maker chose (up
/// to a year), need the maker's password to be made, and are revoked one by one. Password checks are throttled and
/// bounded by <see cref="PasswordChecks"/>.
/// </summary>
public static class SignInEndpoints
{
    /// <summary>How long a sign-in lasts.</summary>
    public static readonly TimeSpan SignInLifetime = TimeSpan.FromDays(14);

    /// <summary>The rate limiting policy of the endpoints that check passwords.</summary>
    public const string PasswordPolicy = "passwords";

    /// <summary>Maps the endpoints.</summary>
    public static void MapSignInApi(this RouteGroupBuilder api)
    {
        api.MapPost("/sign-in", SignInAsync).AllowAnonymous().RequireRateLimiting(PasswordPolicy);
        api.MapPost("/sign-out", SignOutAsync).AllowAnonymous();
        api.MapPost("/me/password", ChangePasswordAsync).RequireRateLimiting(PasswordPolicy);
        api.MapGet("/tokens", ListTokensAsync);
        api.MapPost("/tokens", CreateTokenAsync).RequireRateLimiting(PasswordPolicy);
        api.MapDelete("/tokens/{id:int}", RevokeTokenAsync);
        api.MapGet("/demo/people", DemoPeopleAsync).AllowAnonymous();
    }

    private static async Task<IResult> SignInAsync(HttpContext context, StrategyDb db, PasswordChecks checks, SignInCache cache, Limits limits, TimeProvider time, CancellationToken ct)
    {
        var (body, error) = await JsonBody.ReadAsync<SignInRequest>(context.Request, ct);
        if (error is not null)
        {
            return error;
        }

        if (body!.Email is not { Length: > 0 and <= 320 } email || body.Password is not { Length: > 0 and <= Passwords.MaximumLength } password)
        {
            return Problems.Error(400, "INVALID_SIGN_IN", $"email (at most 320 characters) and password (at most {Passwords.MaximumLength}) are required.");
        }

        email = email.Trim().ToLowerInvariant();
        var person = await db.People.AsNoTracking().FirstOrDefaultAsync(p => p.Email == email, ct);
        var stored = person is null ? null : await db.Credentials.AsNoTracking().Where(c => c.PersonId == person.Id).Select(c => c.PasswordHash).FirstOrDefaultAsync(ct);

        // Throttled per address and client, so that someone guessing from elsewhere cannot lock the owner out.
        var failure = await checks.CheckAsync(context, $"sign-in:{email}|{context.Connection.RemoteIpAddress}", password, stored,
            () => Problems.Error(401, "SIGN_IN_FAILED", "The e-mail address or the password is wrong."));
        if (failure is not null || person is null)
        {
            return failure ?? Problems.Error(401, "SIGN_IN_FAILED", "The e-mail address or the password is wrong.");
        }

        await MakeRoomForSignInAsync(db, cache, person.Id, limits.SignInsPerPerson, time, ct);
        var (token, expires) = await IssueAsync(db, person.Id, "sign-in", SignInLifetime, time, ct);
        context.Response.Cookies.Append(Acting.Cookie, token, new CookieOptions
        {
            HttpOnly = true, SameSite = SameSiteMode.Strict, Secure = context.Request.IsHttps, Path = "/", Expires = expires, IsEssential = true,
        });
        return Results.Ok(new SignedIn(token, expires, person));
    }

    private static async Task<IResult> SignOutAsync(HttpContext context, StrategyDb db, SignInCache cache, CancellationToken ct)
    {
        if (Acting.TokenOf(context.Request) is { } token)
        {
            var hash = Passwords.TokenHash(token);
            await db.Tokens.Where(t => t.Hash == hash).ExecuteDeleteAsync(ct);
            cache.Forget(hash);
        }

        context.Response.Cookies.Delete(Acting.Cookie, new CookieOptions { Path = "/", HttpOnly = true, SameSite = SameSiteMode.Strict });
        return Results.NoContent();
    }

    private static async Task<IResult> ChangePasswordAsync(HttpContext context, Acting acting, StrategyDb db, SignInCache cache, PasswordChecks checks, CancellationToken ct)
    {
        var person = await acting.SignedInAsync(context, ct);
        var (body, error) = await JsonBody.ReadAsync<PasswordChange>(context.Request, ct);
        if (error is not null)
        {
            return error;
        }

        if (body!.Current is not { Length: <= Passwords.MaximumLength } current || body.New is not { Length: >= Passwords.MinimumLength and <= Passwords.MaximumLength } next)
        {
            return Problems.Error(400, "INVALID_PASSWORD", $"current is required, and new must be {Passwords.MinimumLength}–{Passwords.MaximumLength} characters.");
        }

        var credential = await db.Credentials.FirstOrDefaultAsync(c => c.PersonId == person.Id, ct);
        if (await checks.CheckAsync(context, $"person:{person.Id}", current, credential?.PasswordHash, WrongPassword) is { } failure)
        {
            return failure;
        }

        // A new password ends every other sign-in (someone who knew the old one is out); API tokens stay.
        credential!.PasswordHash = Passwords.Hash(next);
        await db.SaveChangesAsync(ct);
        var thisSignIn = Passwords.TokenHash(Acting.TokenOf(context.Request)!);
        await db.Tokens.Where(t => t.PersonId == person.Id && t.Name == "sign-in" && t.Hash != thisSignIn).ExecuteDeleteAsync(ct);
        cache.ForgetPerson(person.Id);
        return Results.NoContent();
    }

    private static async Task<IResult> ListTokensAsync(HttpContext context, Acting acting, StrategyDb db, CancellationToken ct)
    {
        var person = await acting.SignedInAsync(context, ct);
        var tokens = await db.Tokens.AsNoTracking().Where(t => t.PersonId == person.Id && t.Name != "sign-in").OrderBy(t => t.Id)
            .Select(t => new TokenView(t.Id, t.Name, t.CreatedAt, t.ExpiresAt)).ToListAsync(ct);
        return Results.Ok(tokens);
    }

    private static async Task<IResult> CreateTokenAsync(HttpContext context, Acting acting, StrategyDb db, PasswordChecks checks, TimeProvider time, CancellationToken ct)
    {
        var person = await acting.SignedInAsync(context, ct);
        var (body, error) = await JsonBody.ReadAsync<TokenRequest>(context.Request, ct);
        if (error is not null)
        {
            return error;
        }

        var problems = new List<string>();
        var name = Checks.Name(body!.Name, problems);
        if (name == "sign-in")
        {
            problems.Add("name 'sign-in' is kept for the page's sign-ins.");
        }

        if (body.ExpiresInDays is < 1 or > 365)
        {
            problems.Add("expiresInDays must be 1–365.");
        }

        if (await db.Tokens.CountAsync(t => t.PersonId == person.Id && t.Name != "sign-in", ct) >= 50)
        {
            problems.Add("a person holds at most 50 API tokens: revoke one first.");
        }

        if (body.Password is not { Length: > 0 and <= Passwords.MaximumLength })
        {
            problems.Add("password (yours) is required: a token outlives a sign-in, so making one needs the password, not only the cookie.");
        }

        if (problems.Count > 0)
        {
            return Problems.Error(400, "INVALID_TOKEN", "The token cannot be made.", problems);
        }

        var stored = await db.Credentials.AsNoTracking().Where(c => c.PersonId == person.Id).Select(c => c.PasswordHash).FirstOrDefaultAsync(ct);
        if (await checks.CheckAsync(context, $"person:{person.Id}", body.Password!, stored, WrongPassword) is { } failure)
        {
            return failure;
        }

        var (token, expires) = await IssueAsync(db, person.Id, name, TimeSpan.FromDays(body.ExpiresInDays ?? 90), time, ct);
        var id = await db.Tokens.AsNoTracking().Where(t => t.Hash == Passwords.TokenHash(token)).Select(t => t.Id).FirstAsync(ct);
        return Results.Created($"/api/tokens/{id}", new { Id = id, Name = name, Token = token, ExpiresAt = expires });
    }

    private static async Task<IResult> RevokeTokenAsync(int id, HttpContext context, Acting acting, StrategyDb db, SignInCache cache, CancellationToken ct)
    {
        var person = await acting.SignedInAsync(context, ct);
        // Sign-ins are not API tokens: the list does not show them, and they end by signing out (or changing the password).
        var hash = await db.Tokens.AsNoTracking().Where(t => t.Id == id && t.PersonId == person.Id && t.Name != "sign-in").Select(t => t.Hash).FirstOrDefaultAsync(ct);
        if (hash is null)
        {
            return Problems.NotFound("No such API token of yours.");
        }

        await db.Tokens.Where(t => t.Id == id).ExecuteDeleteAsync(ct);
        cache.Forget(hash);
        return Results.NoContent();
    }

    private static async Task<IResult> DemoPeopleAsync(StrategyDb db, CancellationToken ct)
    {
        // Decided by the data, not by how the app was started: real people are never listed to anyone signed out.
        if (!await db.Settings.AnyAsync(s => s.Key == DemoOrganisation.DemoKey, ct))
        {
            return Problems.NotFound("This app holds no demo organisation.");
        }

        var units = await db.Units.AsNoTracking().ToDictionaryAsync(u => u.Id, u => u.Name, ct);
        var roles = (await db.Roles.AsNoTracking().ToListAsync(ct)).ToLookup(r => r.PersonId);
        var people = await db.People.AsNoTracking().OrderBy(p => p.Id).Take(1000).ToListAsync(ct);
        return Results.Ok(people.Select(p => new DemoPerson(p.Id, p.Name, p.Email, p.UnitId, units.GetValueOrDefault(p.UnitId) ?? "",
            roles[p.Id].OrderBy(r => r.Role).Select(r => $"{r.Role.ToString().ToLowerInvariant()} of {units.GetValueOrDefault(r.UnitId)}").ToList())));
    }

    /// <summary>
    /// Removes <paramref name="personId"/>'s expired sign-ins and, when the person holds <paramref name="limit"/> live ones,
    /// ends the one unused the longest (by its last use, or its making if never used), leaving room for one more: signing
    /// in again and again cannot grow the tokens without bound, a new sign-in is never refused for it, and the browser in
    /// use is not the one signed out. Sign-ins that lose their place stop working at once.
    /// </summary>
    private static async Task MakeRoomForSignInAsync(StrategyDb db, SignInCache cache, int personId, int limit, TimeProvider time, CancellationToken ct)
    {
        // Read whole (at most the limit and those signing in at the same moment) and judged here: SQLite cannot compare
        // dates with offsets in a query.
        var now = time.GetUtcNow();
        var signIns = await db.Tokens.AsNoTracking().Where(t => t.PersonId == personId && t.Name == "sign-in")
            .Select(t => new { t.Id, t.Hash, t.ExpiresAt, Used = t.LastUsedAt ?? t.CreatedAt }).ToListAsync(ct);
        var ending = signIns.OrderByDescending(t => t.Used).ThenByDescending(t => t.Id)
            .Where((t, place) => place >= limit - 1 || t.ExpiresAt <= now).ToList();
        if (ending.Count == 0)
        {
            return;
        }

        var ids = ending.Select(t => t.Id).ToList();
        await db.Tokens.Where(t => ids.Contains(t.Id)).ExecuteDeleteAsync(ct);
        foreach (var signIn in ending)
        {
            cache.Forget(signIn.Hash);
        }
    }

    private static async Task<(string Token, DateTimeOffset Expires)> IssueAsync(StrategyDb db, int personId, string name, TimeSpan lifetime, TimeProvider time, CancellationToken ct)
    {
        var token = Passwords.NewToken();
        var now = time.GetUtcNow();
        db.Tokens.Add(new AccessToken { Hash = Passwords.TokenHash(token), PersonId = personId, Name = name, CreatedAt = now, ExpiresAt = now + lifetime });
        await db.SaveChangesAsync(ct);
        return (token, now + lifetime);
    }

    private static IResult WrongPassword() => Problems.Error(403, "WRONG_PASSWORD", "The current password is wrong.");
}

/// <summary>
/// Every password check goes through here. Failures are counted per key (an address and a client for sign-ins, a
/// person for password changes and new tokens): after 5 within 15 minutes the key waits out the rest of the window.
/// Checks run a few at a time across the app (half the cores), because each is a PBKDF2 run of a few hundred
/// milliseconds; a check that cannot start within 10 seconds is answered 429. Bounded: at most 10,000 keys are
/// remembered, the oldest forgotten first.
/// </summary>
public sealed class PasswordChecks(TimeProvider time) : IDisposable
{
    private const int MaxFailures = 5;
    private const int MaxKeys = 10_000;
    private static readonly TimeSpan Window = TimeSpan.FromMinutes(15);

    /// <summary>A hash no password matches, checked when there is no stored one, so that both paths cost the same.</summary>
    private static readonly Lazy<string> Unknown = new(() => Passwords.Hash(Passwords.NewToken()));

    private readonly ConcurrentDictionary<string, (int Failures, DateTimeOffset Since)> _failures = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _running = new(Math.Max(1, Environment.ProcessorCount / 2));

    /// <summary>
    /// Checks <paramref name="password"/> against <paramref name="stored"/> (none: it fails, at the same cost).
    /// Answers <see langword="null"/> when it matches, else the answer to send: 429 while <paramref name="key"/> waits or
    /// the app is busy checking, else <paramref name="wrong"/>.
    /// </summary>
    public async Task<IResult?> CheckAsync(HttpContext context, string key, string password, string? stored, Func<IResult> wrong)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(wrong);
        if (RetryAfter(key) is { } wait)
        {
            context.Response.Headers.RetryAfter = ((int)Math.Ceiling(wait.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
            return Problems.Error(429, "TOO_MANY_ATTEMPTS", $"Too many wrong passwords: try again in {Math.Ceiling(wait.TotalMinutes)} minutes.");
        }

        if (!await _running.WaitAsync(TimeSpan.FromSeconds(10), context.RequestAborted))
        {
            context.Response.Headers.RetryAfter = "5";
            return Problems.Error(429, "TOO_MANY_REQUESTS", "Too many password checks at once: try again shortly.");
        }

        bool matches;
        try
        {
            matches = Passwords.Verify(password, stored ?? Unknown.Value) && stored is not null;
        }
        finally
        {
            _running.Release();
        }

        if (!matches)
        {
            Failed(key);
            return wrong();
        }

        _failures.TryRemove(key, out _);
        return null;
    }

    /// <inheritdoc/>
    public void Dispose() => _running.Dispose();

    private TimeSpan? RetryAfter(string key)
        => _failures.TryGetValue(key, out var entry) && entry.Failures >= MaxFailures && time.GetUtcNow() - entry.Since is var elapsed && elapsed < Window
            ? Window - elapsed
            : null;

    private void Failed(string key)
    {
        var now = time.GetUtcNow();
        if (_failures.Count >= MaxKeys)
        {
            foreach (var old in _failures.Where(f => now - f.Value.Since >= Window).Select(f => f.Key).ToList())
            {
                _failures.TryRemove(old, out _);
            }

            if (_failures.Count >= MaxKeys && _failures.MinBy(f => f.Value.Since) is { Key: { } oldest })
            {
                _failures.TryRemove(oldest, out _);
            }
        }

        _failures.AddOrUpdate(key, (1, now), (_, entry) => now - entry.Since >= Window ? (1, now) : (entry.Failures + 1, entry.Since));
    }
}
