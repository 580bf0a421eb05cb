using DurableSessions.Testing;

namespace StrategyExecution.Tests;

/// <summary>
/// The strategy execution app as a child process on a free loopback port, with its own data directory, and its own
/// database: SQLite in that directory, or on a real PostgreSQL server when the run selects it
/// (<c>STRATEGY_TEST_DATABASE=postgres</c>).
/// </summary>
public sealed class AppProcess : IAsyncDisposable
{
    private readonly string[] _databaseArgs;
    private ChildProcess? _process;

    private AppProcess(string dataDirectory, int port, string[] databaseArgs)
    {
        DataDirectory = dataDirectory;
        BaseAddress = new Uri($"http://127.0.0.1:{port}");
        _databaseArgs = databaseArgs;
    }

    /// <summary>More command-line settings, e.g. <c>--Demo:Size none</c>.</summary>
    public IReadOnlyList<string> Settings { get; set; } = [];

    public string DataDirectory { get; }

    public Uri BaseAddress { get; }

    /// <summary>Starts the app with the demo organisation loaded into a fresh data directory.</summary>
    public static async Task<AppProcess> StartNewAsync(params string[] settings)
    {
        var port = LoopbackPorts.Free();
        string[] databaseArgs = PostgresServer.Selected
            ? ["--Database:Provider", "postgres", "--ConnectionStrings:Strategy", (await PostgresServer.GetAsync()).NewDatabase()]
            : [];
        var app = new AppProcess(Path.Combine(Path.GetTempPath(), "strategy-test-" + Guid.NewGuid().ToString("N")), port, databaseArgs) { Settings = settings };
        await app.StartAsync();
        return app;
    }

    /// <summary>
    /// Starts the app as <see cref="StartNewAsync"/> does, with <paramref name="connectionOptions"/> added to its
    /// database's connection string (e.g. a short command timeout), which <see cref="ConnectionString"/> then holds.
    /// </summary>
    public static async Task<AppProcess> StartNewWithConnectionOptionsAsync(string connectionOptions)
    {
        var directory = Path.Combine(Path.GetTempPath(), "strategy-test-" + Guid.NewGuid().ToString("N"));
        string[] databaseArgs = PostgresServer.Selected
            ? ["--Database:Provider", "postgres", "--ConnectionStrings:Strategy", (await PostgresServer.GetAsync()).NewDatabase() + ";" + connectionOptions]
            : ["--ConnectionStrings:Strategy", $"Data Source={Path.Combine(directory, "strategy.db")};{connectionOptions}"];
        var app = new AppProcess(directory, LoopbackPorts.Free(), databaseArgs);
        await app.StartAsync();
        return app;
    }

    /// <summary>The connection string of the app's database when it was started with one (<see cref="StartNewWithConnectionOptionsAsync"/>).</summary>
    public string? ConnectionString => _databaseArgs.SkipWhile(a => a != "--ConnectionStrings:Strategy").Skip(1).FirstOrDefault();

    /// <summary>
    /// Starts a second app process beside <paramref name="first"/>, on a port and data directory (durable streams) of
    /// its own but the same database, as two processes behind one load balancer would run.
    /// </summary>
    public static async Task<AppProcess> StartBesideAsync(AppProcess first)
    {
        ArgumentNullException.ThrowIfNull(first);
        string[] databaseArgs = first._databaseArgs.Length > 0
            ? first._databaseArgs
            : ["--ConnectionStrings:Strategy", $"Data Source={Path.Combine(first.DataDirectory, "strategy.db")}"];
        var app = new AppProcess(Path.Combine(Path.GetTempPath(), "strategy-test-" + Guid.NewGuid().ToString("N")), LoopbackPorts.Free(), databaseArgs) { Settings = first.Settings };
        await app.StartAsync();
        return app;
    }

    /// <summary>Starts (or restarts) the process on the same port and data directory, and waits until it answers.</summary>
    public async Task StartAsync()
    {
        var dll = ChildProcess.Locate("apps/StrategyExecution/StrategyExecution", "StrategyExecution.dll", "Build the app first (dotnet build).");
        _process?.Dispose();
        _process = ChildProcess.Start(ChildProcess.Dotnet(dll, ["--urls", BaseAddress.ToString().TrimEnd('/'), "--Data", DataDirectory, "--Logging:LogLevel:Default=Warning", .. _databaseArgs, .. Settings]));
        await _process.WaitUntilHealthyAsync(new Uri(BaseAddress, "/health"), TimeSpan.FromSeconds(60), "The strategy app");
    }

    /// <summary>What the process printed lately.</summary>
    public string Output => _process?.RecentOutput ?? string.Empty;

    /// <summary>The app's process id, while it runs.</summary>
    public int? ProcessId => _process?.Process.Id;

    /// <summary>Kills the process with SIGKILL: no shutdown code runs.</summary>
    public Task KillAsync() => _process?.KillAsync() ?? Task.CompletedTask;

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _process?.Dispose();
        try
        {
            Directory.Delete(DataDirectory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
