using System.Net;
using System.Net.Sockets;
using DurableSessions.Testing;

namespace StrategyExecution.Tests;

/// <summary>The strategy execution app as a child process on a free loopback port, with its own data directory.</summary>
public sealed class AppProcess : IAsyncDisposable
{
    private ChildProcess? _process;

    private AppProcess(string dataDirectory, int port)
    {
        DataDirectory = dataDirectory;
        BaseAddress = new Uri($"http://127.0.0.1:{port}");
    }

    public string DataDirectory { get; }

    public Uri BaseAddress { get; }

    /// <summary>Starts the app with the demo organisation loaded into a fresh data directory.</summary>
    public static async Task<AppProcess> StartNewAsync()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var app = new AppProcess(Path.Combine(Path.GetTempPath(), "strategy-test-" + Guid.NewGuid().ToString("N")), port);
        await app.StartAsync();
        return app;
    }

    /// <summary>Starts (or restarts) the process on the same port and data directory, and waits until it answers.</summary>
    public async Task StartAsync()
    {
        var dll = ChildProcess.Locate("apps/StrategyExecution/StrategyExecution", "StrategyExecution.dll", "Build the app first (dotnet build).");
        _process?.Dispose();
        _process = ChildProcess.Start(ChildProcess.Dotnet(dll, ["--urls", BaseAddress.ToString().TrimEnd('/'), "--Data", DataDirectory, "--Logging:LogLevel:Default=Warning"]));
        await _process.WaitUntilHealthyAsync(new Uri(BaseAddress, "/health"), TimeSpan.FromSeconds(60), "The strategy app");
    }

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
