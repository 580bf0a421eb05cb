using Microsoft.EntityFrameworkCore;

namespace StrategyExecution.Data;

/// <summary>The app's database: the organisation, its strategy and scorecards, actuals and the audit outbox.</summary>
public sealed class StrategyDb(DbContextOptions<StrategyDb> options) : DbContext(options)
{
    /// <summary>
    /// Whether something this context sent may have been committed (set by <see cref="WriteTracker"/>): a request that
    /// then fails is not one to send again as it is.
    /// </summary>
    public bool MayHaveWritten { get; internal set; }

    /// <summary>Org units.</summary>
    public DbSet<OrgUnit> Units => Set<OrgUnit>();

    /// <summary>People.</summary>
    public DbSet<Person> People => Set<Person>();

    /// <summary>Facts about the data (which demo it holds).</summary>
    public DbSet<AppSetting> Settings => Set<AppSetting>();

    /// <summary>Passwords.</summary>
    public DbSet<Credential> Credentials => Set<Credential>();

    /// <summary>Sign-ins and API tokens.</summary>
    public DbSet<AccessToken> Tokens => Set<AccessToken>();

    /// <summary>Role assignments.</summary>
    public DbSet<RoleAssignment> Roles => Set<RoleAssignment>();

    /// <summary>Periods.</summary>
    public DbSet<Period> Periods => Set<Period>();

    /// <summary>The strategy statement.</summary>
    public DbSet<StrategyStatement> Strategy => Set<StrategyStatement>();

    /// <summary>Themes.</summary>
    public DbSet<Theme> Themes => Set<Theme>();

    /// <summary>Objectives.</summary>
    public DbSet<Objective> Objectives => Set<Objective>();

    /// <summary>Cause→effect links between objectives.</summary>
    public DbSet<ObjectiveLink> Links => Set<ObjectiveLink>();

    /// <summary>Measures.</summary>
    public DbSet<Measure> Measures => Set<Measure>();

    /// <summary>Targets.</summary>
    public DbSet<MeasureTarget> Targets => Set<MeasureTarget>();

    /// <summary>Actuals (append-only).</summary>
    public DbSet<Actual> Actuals => Set<Actual>();

    /// <summary>Strategic-expenditure pools.</summary>
    public DbSet<Pool> Pools => Set<Pool>();

    /// <summary>Initiatives.</summary>
    public DbSet<Initiative> Initiatives => Set<Initiative>();

    /// <summary>Initiatives' links to objectives and measures.</summary>
    public DbSet<InitiativeLink> InitiativeLinks => Set<InitiativeLink>();

    /// <summary>Milestones.</summary>
    public DbSet<Milestone> Milestones => Set<Milestone>();

    /// <summary>Allocations from pools to initiatives.</summary>
    public DbSet<Allocation> Allocations => Set<Allocation>();

    /// <summary>Spend entries.</summary>
    public DbSet<Spend> Spend => Set<Spend>();

    /// <summary>Requests to move money out of pools.</summary>
    public DbSet<PoolRelease> Releases => Set<PoolRelease>();

    /// <summary>Incentive plans.</summary>
    public DbSet<IncentivePlan> Plans => Set<IncentivePlan>();

    /// <summary>Plan components.</summary>
    public DbSet<PlanComponent> PlanComponents => Set<PlanComponent>();

    /// <summary>Plan participants.</summary>
    public DbSet<PlanParticipant> Participants => Set<PlanParticipant>();

    /// <summary>Announcements.</summary>
    public DbSet<Announcement> Announcements => Set<Announcement>();

    /// <summary>Announcements' audiences.</summary>
    public DbSet<AnnouncementAudience> Audiences => Set<AnnouncementAudience>();

    /// <summary>Acknowledgements.</summary>
    public DbSet<Acknowledgement> Acknowledgements => Set<Acknowledgement>();

    /// <summary>Review meetings.</summary>
    public DbSet<Review> Reviews => Set<Review>();

    /// <summary>Agenda items.</summary>
    public DbSet<AgendaItem> Agenda => Set<AgendaItem>();

    /// <summary>Decisions.</summary>
    public DbSet<Decision> Decisions => Set<Decision>();

    /// <summary>Action items.</summary>
    public DbSet<ActionItem> Actions => Set<ActionItem>();

    /// <summary>The audit outbox.</summary>
    public DbSet<AuditEntry> Audit => Set<AuditEntry>();

    /// <summary>Adds an audit entry for a change, to be saved in the same transaction as the change.</summary>
    public void AddAudit(int actorId, string action, string subject, object details, DateTimeOffset at)
        => Audit.Add(new AuditEntry { At = at, ActorId = actorId, Action = action, Subject = subject, Details = System.Text.Json.JsonSerializer.Serialize(details, System.Text.Json.JsonSerializerOptions.Web) });

    /// <summary>
    /// Adds <paramref name="entity"/> and its audit entry in one transaction: the entry names the entity's id, which
    /// exists only once the entity is saved.
    /// </summary>
    /// <param name="entity">The row to add.</param>
    /// <param name="actorId">Who adds it.</param>
    /// <param name="action">The audit entry's action.</param>
    /// <param name="subject">The audit entry's subject, once the row has its id.</param>
    /// <param name="details">The audit entry's details, once the row has its id.</param>
    /// <param name="at">When.</param>
    /// <param name="stillAllowed">
    /// Run inside the transaction before the row is added: what would refuse the row now (a state or a count that another
    /// request changed since the endpoint's own checks), or null to add it. It can lock the rows it reads (an update that
    /// changes nothing), so that what it found holds until the commit.
    /// </param>
    /// <param name="cancellationToken">Cancels it.</param>
    /// <returns>The refusal <paramref name="stillAllowed"/> gave (nothing was written), or null once the row is added.</returns>
    public async Task<TRefusal?> AddAuditedAsync<T, TRefusal>(T entity, int actorId, string action, Func<string> subject, Func<object> details, DateTimeOffset at, Func<CancellationToken, Task<TRefusal?>> stillAllowed, CancellationToken cancellationToken)
        where T : class
        where TRefusal : class
    {
        ArgumentNullException.ThrowIfNull(stillAllowed);
        await using var transaction = await Database.BeginTransactionAsync(cancellationToken);
        if (await stillAllowed(cancellationToken) is { } refusal)
        {
            return refusal;
        }

        await AddAuditedInTransactionAsync(entity, actorId, action, subject, details, at, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        return null;
    }

    /// <summary>Adds <paramref name="entity"/> and its audit entry in one transaction, with no check inside it.</summary>
    public async Task AddAuditedAsync<T>(T entity, int actorId, string action, Func<string> subject, Func<object> details, DateTimeOffset at, CancellationToken cancellationToken)
        where T : class
    {
        await using var transaction = await Database.BeginTransactionAsync(cancellationToken);
        await AddAuditedInTransactionAsync(entity, actorId, action, subject, details, at, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
    }

    private async Task AddAuditedInTransactionAsync<T>(T entity, int actorId, string action, Func<string> subject, Func<object> details, DateTimeOffset at, CancellationToken cancellationToken)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(subject);
        ArgumentNullException.ThrowIfNull(details);
        Add(entity);
        await SaveChangesAsync(cancellationToken);
        AddAudit(actorId, action, subject(), details(), at);
        await SaveChangesAsync(cancellationToken);
    }

    /// <summary>The advisory lock a PostgreSQL transaction holds from writing audit entries until it commits.</summary>
    private const long AuditOrderLock = 5102;

    /// <summary>
    /// The advisory lock (with the period's id as its second key) that a PostgreSQL transaction writing into a period
    /// holds shared, and the period's lock holds exclusive.
    /// </summary>
    private const int PeriodWriteLock = 5104;

    private readonly HashSet<int> _periodsWritten = [];

    /// <summary>
    /// Makes the next save refuse, with <see cref="PeriodLockedException"/>, if period <paramref name="periodId"/> is
    /// locked by then. Judged inside the save's transaction, so a write checked just before the period's lock commits
    /// cannot land after it: on SQLite the transaction holds the database's write lock; on PostgreSQL it holds
    /// <see cref="PeriodWriteLock"/> shared, which the lock takes exclusive (<see cref="LockPeriodForWritesAsync"/>).
    /// </summary>
    public void WritesInto(int periodId) => _periodsWritten.Add(periodId);

    /// <summary>
    /// Waits for every write into period <paramref name="periodId"/> in flight to commit, and holds new ones off until
    /// this transaction ends (PostgreSQL; on SQLite the transaction's write lock does both). Call inside a transaction.
    /// </summary>
    public async Task LockPeriodForWritesAsync(int periodId, CancellationToken cancellationToken)
    {
        if (Database.IsNpgsql())
        {
            await Database.ExecuteSqlAsync($"SELECT pg_advisory_xact_lock({PeriodWriteLock}, {periodId})", cancellationToken);
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// <para>On PostgreSQL the audit entries' ids come from a sequence, handed out in the order transactions write them,
    /// while the transactions commit in whatever order they finish; the publisher appends what has committed to the audit
    /// stream in id order, so an entry that committed after a higher one was appended would never reach it. Audit entries
    /// are therefore written last, under an advisory lock held until the commit: they commit in id order. (SQLite writes
    /// one transaction at a time.)</para>
    /// <para>The periods named by <see cref="WritesInto"/> are checked first, in the same transaction.</para>
    /// </remarks>
    public override async Task<int> SaveChangesAsync(bool acceptAllChangesOnSuccess, CancellationToken cancellationToken = default)
    {
        var audits = AddedAuditsOnPostgres();
        if (audits.Count == 0 && _periodsWritten.Count == 0)
        {
            return await base.SaveChangesAsync(acceptAllChangesOnSuccess, cancellationToken);
        }

        var own = Database.CurrentTransaction is null ? await Database.BeginTransactionAsync(cancellationToken) : null;
        try
        {
            await CheckPeriodsWrittenAsync(cancellationToken);
            if (audits.Count == 0)
            {
                var changed = await base.SaveChangesAsync(acceptAllChangesOnSuccess, cancellationToken);
                if (own is not null)
                {
                    await own.CommitAsync(cancellationToken);
                }

                return changed;
            }

            SetAside(audits);

            // The other changes are accepted once saved, so that the audits' save does not write them again.
            int saved;
            try
            {
                saved = await base.SaveChangesAsync(acceptAllChangesOnSuccess: true, cancellationToken);
            }
            catch
            {
                Audit.AddRange(audits);
                throw;
            }

            Audit.AddRange(audits);
            await Database.ExecuteSqlAsync($"SELECT pg_advisory_xact_lock({AuditOrderLock})", cancellationToken);
            saved += await base.SaveChangesAsync(acceptAllChangesOnSuccess, cancellationToken);
            if (own is not null)
            {
                await own.CommitAsync(cancellationToken);
            }

            return saved;
        }
        finally
        {
            if (own is not null)
            {
                await own.DisposeAsync();
            }
        }
    }

    /// <inheritdoc/>
    /// <remarks>The audit ordering of <see cref="SaveChangesAsync(bool, CancellationToken)"/>; used only at start-up, when nothing writes into periods.</remarks>
    public override int SaveChanges(bool acceptAllChangesOnSuccess)
    {
        var audits = AddedAuditsOnPostgres();
        if (audits.Count == 0)
        {
            return base.SaveChanges(acceptAllChangesOnSuccess);
        }

        using var own = Database.CurrentTransaction is null ? Database.BeginTransaction() : null;
        SetAside(audits);
        int saved;
        try
        {
            saved = base.SaveChanges(acceptAllChangesOnSuccess: true);
        }
        catch
        {
            Audit.AddRange(audits);
            throw;
        }

        Audit.AddRange(audits);
        Database.ExecuteSql($"SELECT pg_advisory_xact_lock({AuditOrderLock})");
        saved += base.SaveChanges(acceptAllChangesOnSuccess);
        own?.Commit();
        return saved;
    }

    /// <summary>Refuses the save if a period it writes into is locked (inside the save's transaction).</summary>
    private async Task CheckPeriodsWrittenAsync(CancellationToken cancellationToken)
    {
        foreach (var periodId in _periodsWritten.Order())
        {
            if (Database.IsNpgsql())
            {
                await Database.ExecuteSqlAsync($"SELECT pg_advisory_xact_lock_shared({PeriodWriteLock}, {periodId})", cancellationToken);
            }

            if (await Periods.AsNoTracking().Where(p => p.Id == periodId).Select(p => new { p.Name, p.Status }).FirstOrDefaultAsync(cancellationToken) is { Status: PeriodStatus.Locked } period)
            {
                throw new PeriodLockedException($"{period.Name} is locked: nothing in it changes any more.");
            }
        }
    }

    /// <summary>Takes the audit entries out of the pending changes; a failed save puts them back, to be saved again.</summary>
    private void SetAside(List<AuditEntry> audits)
    {
        foreach (var audit in audits)
        {
            Entry(audit).State = EntityState.Detached;
        }
    }

    private List<AuditEntry> AddedAuditsOnPostgres()
        => Database.IsNpgsql()
            ? [.. ChangeTracker.Entries<AuditEntry>().Where(e => e.State == EntityState.Added).Select(e => e.Entity)]
            : [];

    /// <inheritdoc/>
    protected override void OnModelCreating(ModelBuilder modelBuilder)
    {
        ArgumentNullException.ThrowIfNull(modelBuilder);
        modelBuilder.Entity<OrgUnit>().HasIndex(u => u.ParentId);
        modelBuilder.Entity<OrgUnit>().Property(u => u.Name).HasMaxLength(200);
        modelBuilder.Entity<Person>().HasIndex(p => p.Email).IsUnique();
        modelBuilder.Entity<AppSetting>().HasKey(s => s.Key);
        modelBuilder.Entity<AppSetting>().Property(s => s.Key).HasMaxLength(100);
        modelBuilder.Entity<Credential>().HasKey(c => c.PersonId);
        modelBuilder.Entity<Credential>().Property(c => c.PersonId).ValueGeneratedNever();
        modelBuilder.Entity<AccessToken>().HasIndex(t => t.Hash).IsUnique();
        modelBuilder.Entity<AccessToken>().HasIndex(t => t.PersonId);
        modelBuilder.Entity<RoleAssignment>().HasIndex(r => new { r.PersonId, r.UnitId, r.Role }).IsUnique();
        modelBuilder.Entity<Objective>().HasIndex(o => new { o.PeriodId, o.UnitId });
        modelBuilder.Entity<Objective>().HasIndex(o => o.ParentObjectiveId);
        modelBuilder.Entity<Measure>().HasIndex(m => m.ObjectiveId);
        modelBuilder.Entity<ObjectiveLink>().HasIndex(l => new { l.CauseId, l.EffectId }).IsUnique();
        modelBuilder.Entity<MeasureTarget>().HasIndex(t => new { t.MeasureId, t.PeriodId }).IsUnique();
        modelBuilder.Entity<Actual>().HasIndex(a => new { a.MeasureId, a.Month });
        modelBuilder.Entity<Pool>().HasIndex(p => p.PeriodId);
        modelBuilder.Entity<Initiative>().HasIndex(i => new { i.PeriodId, i.UnitId });
        modelBuilder.Entity<InitiativeLink>().HasIndex(l => l.InitiativeId);
        modelBuilder.Entity<Milestone>().HasIndex(m => m.InitiativeId);
        modelBuilder.Entity<Allocation>().HasIndex(a => a.PoolId);
        modelBuilder.Entity<PoolRelease>().HasIndex(r => r.PoolId);
        modelBuilder.Entity<Allocation>().HasIndex(a => a.InitiativeId);
        modelBuilder.Entity<Spend>().HasIndex(s => new { s.PeriodId, s.InitiativeId });
        modelBuilder.Entity<IncentivePlan>().Ignore(p => p.Curve);
        modelBuilder.Entity<PlanComponent>().HasIndex(c => c.PlanId);
        modelBuilder.Entity<PlanParticipant>().HasIndex(p => new { p.PlanId, p.PersonId }).IsUnique();
        modelBuilder.Entity<AnnouncementAudience>().HasIndex(a => a.AnnouncementId);
        modelBuilder.Entity<Acknowledgement>().HasIndex(a => new { a.AnnouncementId, a.PersonId }).IsUnique();
        modelBuilder.Entity<Review>().HasIndex(r => new { r.UnitId, r.ScheduledFor });
        modelBuilder.Entity<AgendaItem>().HasIndex(a => a.ReviewId);
        modelBuilder.Entity<Decision>().HasIndex(d => d.ReviewId);
        modelBuilder.Entity<ActionItem>().HasIndex(a => a.ReviewId);
        modelBuilder.Entity<AuditEntry>().HasIndex(a => a.Published);
        modelBuilder.Entity<AuditEntry>().HasIndex(a => a.Subject);
    }
}

/// <summary>A save into a period that was locked meanwhile: answered <c>409 PERIOD_LOCKED</c>, nothing written.</summary>
public sealed class PeriodLockedException(string message) : InvalidOperationException(message);
