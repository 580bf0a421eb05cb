using Microsoft.EntityFrameworkCore;
using StrategyExecution.Data;

namespace StrategyExecution.Api;

/// <summary>
/// Who is acting, and what they may do where. The demo identifies a person by the <c>X-Person-Id</c> header or the
/// <c>person</c> cookie (the page's "acting as" choice); a deployment puts its sign-in in front and sets the same.
/// </summary>
public sealed class Acting(StrategyDb db)
{
    /// <summary>The header that names the acting person.</summary>
    public const string Header = "X-Person-Id";

    /// <summary>The cookie that names the acting person.</summary>
    public const string Cookie = "person";

    /// <summary>The acting person, or <see langword="null"/> when the request names none that exists.</summary>
    public async Task<Person?> PersonAsync(HttpContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(context);
        var raw = context.Request.Headers[Header].FirstOrDefault() ?? context.Request.Cookies[Cookie];
        return int.TryParse(raw, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var id)
            ? await db.People.AsNoTracking().FirstOrDefaultAsync(p => p.Id == id, cancellationToken)
            : null;
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
