using Microsoft.EntityFrameworkCore;
using StrategyExecution.Data;

namespace StrategyExecution.Api;

/// <summary>
/// Who is acting, and what they may do where. A request is made by the person whose token it carries: the
/// <c>Authorization: Bearer</c> header (API tokens) or the <c>strategy_token</c> cookie (the page's sign-in). The person
/// is looked up once per request.
/// </summary>
public sealed class Acting(StrategyDb db, TimeProvider time, SignInCache cache)
{
    /// <summary>The cookie that carries a browser's sign-in token.</summary>
    public const string Cookie = "strategy_token";

    private Task<Person?>? _person;

    /// <summary>The acting person, or <see langword="null"/> when the request carries no token that is valid now.</summary>
    public Task<Person?> PersonAsync(HttpContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(context);
        return _person ??= LookUpAsync(TokenOf(context.Request), cancellationToken);
    }

    /// <summary>
    /// The signed-in person of a request under <c>/api</c>, where the group's filter has already answered 401 to
    /// anyone else: endpoints take the person from here rather than checking again.
    /// </summary>
    public async Task<Person> SignedInAsync(HttpContext context, CancellationToken cancellationToken)
        => await PersonAsync(context, cancellationToken) ?? throw new InvalidOperationException("No signed-in person: the endpoint is not behind the /api sign-in filter.");

    /// <summary>The token a request carries, if any: the bearer token first, else the cookie.</summary>
    public static string? TokenOf(HttpRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var authorization = request.Headers.Authorization.FirstOrDefault();
        if (authorization is not null)
        {
            return authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? authorization["Bearer ".Length..].Trim() : null;
        }

        return request.Cookies[Cookie];
    }

    /// <summary>
    /// Whether <paramref name="request"/> is a change sent by another site's page with this browser's sign-in cookie.
    /// <c>SameSite=Strict</c> keeps the cookie from other sites, but another port or subdomain of the same site still
    /// sends it, and a plain HTML form needs no JSON. A browser says where a request comes from (<c>Sec-Fetch-Site</c>,
    /// else <c>Origin</c>); a change that carries the cookie must come from this origin. Bearer tokens are not sent by
    /// browsers on their own, so they are not asked.
    /// </summary>
    public static bool IsCrossSiteCookieWrite(HttpRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method) || HttpMethods.IsOptions(request.Method)
            || request.Headers.Authorization.Count > 0 || !request.Cookies.ContainsKey(Cookie))
        {
            return false;
        }

        if (request.Headers["Sec-Fetch-Site"].FirstOrDefault() is { } site)
        {
            return !string.Equals(site, "same-origin", StringComparison.OrdinalIgnoreCase);
        }

        return request.Headers.Origin.FirstOrDefault() is { } origin
            && !string.Equals(origin, $"{request.Scheme}://{request.Host}", StringComparison.OrdinalIgnoreCase);
    }

    private async Task<Person?> LookUpAsync(string? token, CancellationToken cancellationToken)
    {
        // A token is ours only in its own shape; anything else is not worth a query.
        if (token is not { Length: > 3 and <= 100 } || !token.StartsWith("st_", StringComparison.Ordinal))
        {
            return null;
        }

        var hash = Passwords.TokenHash(token);
        if (cache.Find(hash) is { } known)
        {
            return known;
        }

        var evictions = cache.Evictions;
        var found = await (from t in db.Tokens.AsNoTracking()
                           join p in db.People.AsNoTracking() on t.PersonId equals p.Id
                           where t.Hash == hash
                           select new { Person = p, t.Id, t.ExpiresAt, t.LastUsedAt }).FirstOrDefaultAsync(cancellationToken);
        var now = time.GetUtcNow();
        if (found is null || found.ExpiresAt <= now)
        {
            return null;
        }

        if (found.LastUsedAt is not { } last || now - last >= LastUseResolution)
        {
            await NoteUseAsync(found.Id, now, cancellationToken);
        }

        cache.Remember(hash, found.Person, found.ExpiresAt, evictions);
        return found.Person;
    }

    // A token remembered by a process is not looked up again for a minute: its last use is kept to that.
    private static readonly TimeSpan LastUseResolution = TimeSpan.FromMinutes(1);

    /// <summary>
    /// Keeps when a token last let a request in (what a sign-in past the limit goes by). A write in a read: it must neither
    /// fail nor hold up the request, so it waits at most a second for SQLite's write lock and not at all for a PostgreSQL
    /// row another transaction holds; a database that is busy or fails it leaves the earlier time, which a later lookup
    /// updates. It is no save and no transaction, so the score cache stays (no score reads a token).
    /// </summary>
    private async Task NoteUseAsync(int tokenId, DateTimeOffset now, CancellationToken cancellationToken)
    {
        if (db.Database.CurrentTransaction is not null)
        {
            // Inside the request's own transaction it would wait on, and roll back with, the request's writes.
            return;
        }

        // The note changes nothing a request could repeat wrongly: a request that fails after it may still be sent again
        // (StrategyDb.MayHaveWritten, which decides whether a busy database is answered 503 with Retry-After).
        var mayHaveWritten = db.MayHaveWritten;
        var timeout = db.Database.GetCommandTimeout();
        try
        {
            if (db.Database.IsNpgsql())
            {
                // One statement that skips the row if another transaction holds it: no wait, and no transaction of its own,
                // whose commit would empty the score cache (a command timeout instead would cut the connection the rest of
                // the request still uses).
                await db.Database.ExecuteSqlAsync(
                    $"UPDATE \"Tokens\" SET \"LastUsedAt\" = {now} WHERE \"Id\" = (SELECT \"Id\" FROM \"Tokens\" WHERE \"Id\" = {tokenId} FOR UPDATE SKIP LOCKED)",
                    cancellationToken);
            }
            else
            {
                // SQLite's wait for its write lock is the command timeout.
                db.Database.SetCommandTimeout(1);
                await db.Tokens.Where(t => t.Id == tokenId).ExecuteUpdateAsync(s => s.SetProperty(t => t.LastUsedAt, now), cancellationToken);
            }
        }
        catch (Exception ex) when (ex is System.Data.Common.DbException || Data.StrategyDatabase.IsBusy(ex))
        {
            // Left as it was: the token works whether or not its use is kept. (A busy PostgreSQL comes wrapped by the
            // provider's execution strategy.)
        }
        finally
        {
            db.Database.SetCommandTimeout(timeout);
            db.MayHaveWritten = mayHaveWritten;
        }
    }

    /// <summary>Whether <paramref name="person"/> holds <paramref name="role"/> (or a stronger one) on any unit at all.</summary>
    public Task<bool> HoldsRoleAnywhereAsync(Person person, Role role, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(person);
        return db.Roles.AsNoTracking().AnyAsync(r => r.PersonId == person.Id && r.Role <= role, cancellationToken);
    }

    /// <summary>Whether <paramref name="person"/> holds <paramref name="role"/> (or a stronger one) on the company, the unit at the top, and so on every unit.</summary>
    public async Task<bool> HasCompanyRoleAsync(Person person, Role role, CancellationToken cancellationToken)
    {
        var company = await db.Units.AsNoTracking().Where(u => u.ParentId == null).Select(u => u.Id).FirstAsync(cancellationToken);
        return await HasRoleAsync(person, company, role, cancellationToken);
    }

    /// <summary>
    /// Whether <paramref name="person"/> holds <paramref name="role"/> (or a stronger one) on <paramref name="unitId"/> or
    /// any unit above it: a role on a unit covers the units below it.
    /// </summary>
    public Task<bool> HasRoleAsync(Person person, int unitId, Role role, CancellationToken cancellationToken)
        => HasRoleOnAllAsync(person, [unitId], role, cancellationToken);

    /// <summary>Whether <paramref name="person"/> holds <paramref name="role"/> on every one of <paramref name="unitIds"/>, reading roles and units once.</summary>
    public async Task<bool> HasRoleOnAllAsync(Person person, IReadOnlyCollection<int> unitIds, Role role, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(person);
        ArgumentNullException.ThrowIfNull(unitIds);
        var roles = (await db.Roles.AsNoTracking().Where(r => r.PersonId == person.Id && r.Role <= role).Select(r => r.UnitId).ToListAsync(cancellationToken)).ToHashSet();
        if (roles.Count == 0)
        {
            return false;
        }

        var parents = await db.Units.AsNoTracking().ToDictionaryAsync(u => u.Id, u => u.ParentId, cancellationToken);
        return unitIds.All(unitId =>
        {
            for (int? at = unitId; at is { } current; at = parents.GetValueOrDefault(current))
            {
                if (roles.Contains(current))
                {
                    return true;
                }
            }

            return false;
        });
    }
}
