using Microsoft.EntityFrameworkCore;

namespace StrategyExecution.Data;

/// <summary>
/// The way into an app started without the demo organisation: <c>Admin:Email</c> and <c>Admin:Password</c> make that
/// person (and a root unit, when there is none) an admin of the root unit. An existing person keeps their password
/// unless they have none; the setting never changes a password that is set.
/// </summary>
public static class FirstAdmin
{
    /// <summary>Applies the <c>Admin</c> settings, if any.</summary>
    public static void Ensure(StrategyDb db, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(db);
        ArgumentNullException.ThrowIfNull(configuration);
        var email = configuration["Admin:Email"]?.Trim().ToLowerInvariant();
        var password = configuration["Admin:Password"];
        if (string.IsNullOrEmpty(email) && string.IsNullOrEmpty(password))
        {
            return;
        }

        if (string.IsNullOrEmpty(email) || password is not { Length: >= Api.Passwords.MinimumLength and <= Api.Passwords.MaximumLength })
        {
            throw new InvalidOperationException($"Admin:Email and Admin:Password go together, and the password must be {Api.Passwords.MinimumLength}–{Api.Passwords.MaximumLength} characters.");
        }

        if (db.Settings.Any(s => s.Key == DemoOrganisation.DemoKey))
        {
            throw new InvalidOperationException("Admin:Email and Admin:Password are for a real organisation, but this database holds the demo one, whose people all sign in with the password 'demo'. Start with --Demo:Size=none and a new --Data directory (or an empty PostgreSQL database).");
        }

        var root = db.Units.Where(u => u.ParentId == null).OrderBy(u => u.Id).FirstOrDefault();
        if (root is null)
        {
            root = new OrgUnit { Name = configuration["Admin:Company"] ?? "Company" };
            db.Units.Add(root);
            db.SaveChanges();
        }

        var person = db.People.FirstOrDefault(p => p.Email == email);
        if (person is null)
        {
            person = new Person { Name = configuration["Admin:Name"] ?? email, Email = email, UnitId = root.Id };
            db.People.Add(person);
            db.SaveChanges();
        }

        if (!db.Roles.Any(r => r.PersonId == person.Id && r.UnitId == root.Id && r.Role == Role.Admin))
        {
            db.Roles.Add(new RoleAssignment { PersonId = person.Id, UnitId = root.Id, Role = Role.Admin });
        }

        if (!db.Credentials.Any(c => c.PersonId == person.Id))
        {
            db.Credentials.Add(new Credential { PersonId = person.Id, PasswordHash = Api.Passwords.Hash(password) });
        }

        db.SaveChanges();
    }
}
