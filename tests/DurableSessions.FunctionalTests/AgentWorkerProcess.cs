using DurableSessions.Testing;

namespace DurableSessions.FunctionalTests;

/// <summary>The sample agent worker (samples/DurableSessions.AgentWorker) as a real child process, to kill with SIGKILL.</summary>
public sealed class AgentWorkerProcess : IAsyncDisposable
{
    private readonly ChildProcess _process;

    private AgentWorkerProcess(ChildProcess process) => _process = process;

    /// <summary>The worker's process id, part of its worker id in claims.</summary>
    public int Pid => _process.Process.Id;

    /// <summary>The worker's last lines of output.</summary>
    public string RecentOutput => _process.RecentOutput;

    /// <summary>Starts a worker serving <paramref name="agent"/>'s turns on <paramref name="server"/>.</summary>
    public static AgentWorkerProcess Start(Uri server, string agent, params string[] extraArgs)
    {
        var dll = ChildProcess.Locate("samples/DurableSessions.AgentWorker", "DurableSessions.AgentWorker.dll", "Build the agent worker sample first (dotnet build).");
        var args = new[] { "--Server=" + server.ToString().TrimEnd('/'), "--Agent=" + agent, "--Logging:LogLevel:Default=Warning" }.Concat(extraArgs);
        return new AgentWorkerProcess(ChildProcess.Start(ChildProcess.Dotnet(dll, args), keepLines: 200));
    }

    /// <summary>Kills the worker with SIGKILL: no shutdown code runs, its leases are left to run out.</summary>
    public Task KillAsync() => _process.KillAsync();

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _process.Dispose();
    }
}
