using System.Collections.Concurrent;
using System.Diagnostics;

namespace DurableSessions.FunctionalTests;

/// <summary>The sample agent worker (samples/DurableSessions.AgentWorker) as a real child process, to kill with SIGKILL.</summary>
public sealed class AgentWorkerProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _output = new();

    private AgentWorkerProcess(Process process)
    {
        _process = process;
        _process.OutputDataReceived += (_, e) => Keep(e.Data);
        _process.ErrorDataReceived += (_, e) => Keep(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <summary>The worker's process id, part of its worker id in claims.</summary>
    public int Pid => _process.Id;

    /// <summary>The worker's last lines of output.</summary>
    public string RecentOutput => string.Join('\n', _output);

    /// <summary>Starts a worker serving <paramref name="agent"/>'s turns on <paramref name="server"/>.</summary>
    public static AgentWorkerProcess Start(Uri server, string agent, params string[] extraArgs)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(Locate());
        foreach (var arg in new[] { "--Server=" + server.ToString().TrimEnd('/'), "--Agent=" + agent, "--Logging:LogLevel:Default=Warning" }.Concat(extraArgs))
        {
            info.ArgumentList.Add(arg);
        }

        return new AgentWorkerProcess(Process.Start(info) ?? throw new InvalidOperationException("Could not start the agent worker."));
    }

    /// <summary>Kills the worker with SIGKILL: no shutdown code runs, its leases are left to run out.</summary>
    public async Task KillAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _process.Dispose();
    }

    private void Keep(string? line)
    {
        if (line is null)
        {
            return;
        }

        _output.Enqueue(line);
        while (_output.Count > 200 && _output.TryDequeue(out _))
        {
        }
    }

    private static string Locate()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "DurableSessions.slnx")))
        {
            directory = directory.Parent;
        }

#if DEBUG
        const string Configuration = "Debug";
#else
        const string Configuration = "Release";
#endif
        var dll = Path.Combine(directory?.FullName ?? throw new InvalidOperationException("Could not find the repository root."),
            "samples", "DurableSessions.AgentWorker", "bin", Configuration, "net10.0", "DurableSessions.AgentWorker.dll");
        return File.Exists(dll) ? dll : throw new FileNotFoundException("Build the agent worker sample first (dotnet build).", dll);
    }
}
