using System.Collections.Concurrent;
using System.Diagnostics;

namespace DurableSessions.Testing;

/// <summary>
/// A built program of this repository (<c>dotnet some.dll</c>) run as a real child process: its output kept for failure
/// messages, waiting until it answers on HTTP, and SIGKILL. The server, the agent worker sample and the strategy app
/// are all run through it.
/// </summary>
public sealed class ChildProcess : IDisposable
{
    private readonly ConcurrentQueue<string> _output = new();
    private readonly int _keepLines;

    private ChildProcess(Process process, int keepLines)
    {
        Process = process;
        _keepLines = keepLines;
        process.OutputDataReceived += (_, e) => Keep(e.Data);
        process.ErrorDataReceived += (_, e) => Keep(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    /// <summary>The process.</summary>
    public Process Process { get; }

    /// <summary>Whether the process has ended.</summary>
    public bool HasExited => Process.HasExited;

    /// <summary>The last lines the process printed, for failure messages.</summary>
    public string RecentOutput => string.Join('\n', _output);

    /// <summary>Starts <paramref name="info"/> (which must redirect standard output and error).</summary>
    public static ChildProcess Start(ProcessStartInfo info, int keepLines = 400)
        => new(Process.Start(info) ?? throw new InvalidOperationException($"Could not start {info.FileName}."), keepLines);

    /// <summary>A start for <c>dotnet <paramref name="dll"/> <paramref name="args"/></c> with its output redirected.</summary>
    public static ProcessStartInfo Dotnet(string dll, IEnumerable<string> args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(dll);
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        return info;
    }

    /// <summary>
    /// Waits until <paramref name="health"/> answers with success. Fails with the process's last words when it exits
    /// first, and kills it (nothing is left running after a test) when it does not answer within <paramref name="timeout"/>.
    /// </summary>
    public async Task WaitUntilHealthyAsync(Uri health, TimeSpan timeout, string what)
    {
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (Process.HasExited)
            {
                // The error stream is drained asynchronously; wait for its end so the message has the last words.
                await Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
                throw new InvalidOperationException($"{what} exited with code {Process.ExitCode} during start-up: {RecentOutput}");
            }

            try
            {
                if ((await client.GetAsync(health)).IsSuccessStatusCode)
                {
                    return;
                }
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or System.Net.Sockets.SocketException or IOException)
            {
            }

            await Task.Delay(50);
        }

        Process.Kill(entireProcessTree: true);
        throw new TimeoutException($"{what} did not become healthy within {timeout.TotalSeconds:0} seconds: {RecentOutput}");
    }

    /// <summary>Kills the process with SIGKILL (no shutdown code runs) and waits for it to end.</summary>
    public async Task KillAsync()
    {
        if (!Process.HasExited)
        {
            Process.Kill(entireProcessTree: true);
            await Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    /// <summary>The path of a program built from this repository, e.g. <c>Locate("samples/X", "X.dll", "Build it first")</c>.</summary>
    public static string Locate(string projectDirectory, string dll, string hint)
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
        var path = Path.Combine(directory?.FullName ?? throw new InvalidOperationException("Could not find the repository root (DurableSessions.slnx)."),
            projectDirectory, "bin", Configuration, "net10.0", dll);
        return File.Exists(path) ? path : throw new FileNotFoundException(hint, path);
    }

    /// <inheritdoc/>
    public void Dispose() => Process.Dispose();

    private void Keep(string? line)
    {
        if (line is null)
        {
            return;
        }

        _output.Enqueue(line);
        while (_output.Count > _keepLines && _output.TryDequeue(out _))
        {
        }
    }
}
