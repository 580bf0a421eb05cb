using System.Diagnostics;
using DurableSessions.Testing;

namespace StrategyExecution.Tests;

/// <summary>
/// A real PostgreSQL server for the tests: a scratch cluster (<c>initdb</c>) in a temporary directory, on a free loopback
/// port, started once per test run and shared; each app gets a database of its own. Root cannot run PostgreSQL, so as
/// root the cluster runs as the <c>postgres</c> account the Debian package creates.
/// </summary>
public sealed class PostgresServer
{
    private static readonly Lazy<Task<PostgresServer>> Shared = new(StartAsync);

    private readonly string _bin;
    private readonly string _directory;
    private readonly Process _postmaster;

    private PostgresServer(string bin, string directory, int port, Process postmaster)
    {
        _bin = bin;
        _directory = directory;
        Port = port;
        _postmaster = postmaster;
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Stop();
    }

    /// <summary>The port it listens on, at 127.0.0.1.</summary>
    public int Port { get; }

    /// <summary>Whether the tests run on PostgreSQL: <c>STRATEGY_TEST_DATABASE=postgres</c>.</summary>
    public static bool Selected => string.Equals(Environment.GetEnvironmentVariable("STRATEGY_TEST_DATABASE"), "postgres", StringComparison.OrdinalIgnoreCase);

    /// <summary>The server shared by every test of the run, started on first use.</summary>
    public static Task<PostgresServer> GetAsync() => Shared.Value;

    /// <summary>A connection string for a database of its own, which the app creates on start.</summary>
    public string NewDatabase() => $"Host=127.0.0.1;Port={Port};Username=strategy;Database=strategy_{Guid.NewGuid():N}";

    private static async Task<PostgresServer> StartAsync()
    {
        var bin = FindBinaries();
        var directory = Path.Combine(Path.GetTempPath(), "strategy-pg-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(directory);
        var asRoot = Environment.UserName == "root";
        if (asRoot)
        {
            await RunAsync("chown", ["postgres:postgres", directory]);
        }

        var data = Path.Combine(directory, "data");
        await RunAsync(Path.Combine(bin, "initdb"), ["-D", data, "-U", "strategy", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"], asRoot);

        var port = LoopbackPorts.Free();

        var postmaster = Process.Start(Info(Path.Combine(bin, "postgres"),
            ["-D", data, "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-k", directory, "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"], asRoot))!;
        postmaster.OutputDataReceived += (_, _) => { };
        postmaster.ErrorDataReceived += (_, _) => { };
        postmaster.BeginOutputReadLine();
        postmaster.BeginErrorReadLine();
        var server = new PostgresServer(bin, directory, port, postmaster);
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            if (postmaster.HasExited)
            {
                throw new InvalidOperationException($"PostgreSQL exited with code {postmaster.ExitCode} during start-up.");
            }

            if (await AcceptsAsync(bin, port, asRoot))
            {
                return server;
            }

            await Task.Delay(100);
        }

        server.Stop();
        throw new TimeoutException("PostgreSQL did not accept connections within 60 seconds.");
    }

    /// <summary>An immediate shutdown, then the cluster's files are removed.</summary>
    private void Stop()
    {
        if (!_postmaster.HasExited)
        {
            // SIGQUIT is PostgreSQL's immediate shutdown: the postmaster ends its backends too, unlike SIGKILL.
            using var quit = Process.Start(new ProcessStartInfo("kill", ["-QUIT", _postmaster.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]) { UseShellExecute = false });
            quit?.WaitForExit();
            if (!_postmaster.WaitForExit(TimeSpan.FromSeconds(20)))
            {
                _postmaster.Kill(entireProcessTree: true);
            }
        }

        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private static async Task<bool> AcceptsAsync(string bin, int port, bool asRoot)
    {
        using var ready = Process.Start(Info(Path.Combine(bin, "pg_isready"), ["-h", "127.0.0.1", "-p", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-U", "strategy", "-q"], asRoot))!;
        await ready.WaitForExitAsync();
        return ready.ExitCode == 0;
    }

    private static string FindBinaries()
    {
        if (Environment.GetEnvironmentVariable("PG_BIN") is { Length: > 0 } configured)
        {
            return configured;
        }

        // Debian keeps the server's programs out of PATH, under /usr/lib/postgresql/<version>/bin; take the newest.
        var root = "/usr/lib/postgresql";
        var found = Directory.Exists(root)
            ? Directory.GetDirectories(root).Select(d => Path.Combine(d, "bin")).Where(d => File.Exists(Path.Combine(d, "postgres")))
                .OrderByDescending(d => int.TryParse(Path.GetFileName(Path.GetDirectoryName(d)), out var v) ? v : 0).FirstOrDefault()
            : null;
        return found ?? throw new InvalidOperationException("PostgreSQL is not installed (Debian package postgresql; ./test.sh installs it), or set PG_BIN to its bin directory.");
    }

    private static ProcessStartInfo Info(string program, IEnumerable<string> args, bool asRoot)
    {
        // setpriv runs the program in this process's place (no extra parent), so the Process is PostgreSQL itself.
        var info = asRoot ? new ProcessStartInfo("setpriv", ["--reuid=postgres", "--regid=postgres", "--init-groups", "--", program, .. args]) : new ProcessStartInfo(program, args);
        info.UseShellExecute = false;
        info.RedirectStandardOutput = true;
        info.RedirectStandardError = true;
        return info;
    }

    private static async Task RunAsync(string program, IEnumerable<string> args, bool asRoot = false)
    {
        using var process = Process.Start(Info(program, args, asRoot))!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{Path.GetFileName(program)} exited with code {process.ExitCode}: {await output}{await error}");
        }
    }
}
