using System.Diagnostics;
using DurableSessions.Testing;

namespace DurableSessions.FunctionalTests;

/// <summary>The real server executable running as a child process on a free loopback port.</summary>
public sealed class ServerProcess : IAsyncDisposable
{
    private ChildProcess? _child;

    private ServerProcess(string dataDirectory, int port, string[] extraArgs)
    {
        DataDirectory = dataDirectory;
        Port = port;
        ExtraArgs = extraArgs;
    }

    public string DataDirectory { get; }

    public int Port { get; }

    public string[] ExtraArgs { get; }

    /// <summary>The soft open-file limit (<c>ulimit -n</c>) the process is started with; null keeps the test's own.</summary>
    public int? DescriptorLimit { get; private init; }

    /// <summary>The hard limit of the process's managed heap (<c>DOTNET_GCHeapHardLimit</c>), in bytes; null sets none.</summary>
    public long? HeapLimit { get; private init; }

    /// <summary>The process id.</summary>
    public int Pid => _child?.Process.Id ?? throw new InvalidOperationException("The server is not running.");

    /// <summary>The descriptors the process has open now (<c>/proc/{pid}/fd</c>).</summary>
    public int OpenDescriptors => Directory.GetFiles($"/proc/{Pid}/fd").Length;

    /// <summary>The resident set size now, in bytes (<c>VmRSS</c>).</summary>
    public long ResidentBytes => ReadStatus("VmRSS");

    /// <summary>The peak resident set size so far, in bytes (<c>VmHWM</c>).</summary>
    public long PeakResidentBytes => ReadStatus("VmHWM");

    private long ReadStatus(string field)
    {
        foreach (var line in File.ReadLines($"/proc/{Pid}/status"))
        {
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
            {
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) * 1024;
            }
        }

        throw new InvalidOperationException($"No {field} in /proc/{Pid}/status.");
    }

    /// <summary>
    /// Starts the server with its managed heap capped at <paramref name="heapLimit"/> bytes: what it holds on to beyond
    /// that fails with out-of-memory, where a resident-size reading would also count garbage not yet collected.
    /// </summary>
    public static async Task<ServerProcess> StartWithHeapLimitAsync(long heapLimit, params string[] extraArgs)
    {
        var server = new ServerProcess(TempDirectory(), FreePort(), extraArgs) { HeapLimit = heapLimit };
        await server.StartAsync();
        return server;
    }

    /// <summary>Starts the server with a soft open-file limit of <paramref name="descriptorLimit"/>.</summary>
    public static async Task<ServerProcess> StartWithDescriptorLimitAsync(int descriptorLimit, params string[] extraArgs)
    {
        var server = new ServerProcess(TempDirectory(), FreePort(), extraArgs) { DescriptorLimit = descriptorLimit };
        await server.StartAsync();
        return server;
    }

    public Uri BaseAddress => new($"http://127.0.0.1:{Port}");

    /// <summary>The last lines the server printed (warnings and errors: it runs at log level Warning), for failure messages.</summary>
    public string RecentOutput => _child?.RecentOutput ?? string.Empty;

    /// <summary>Whether the process has ended (or was never started).</summary>
    public bool HasExited => _child?.HasExited ?? true;

    public static async Task<ServerProcess> StartAsync(string? dataDirectory = null, params string[] extraArgs)
    {
        var server = new ServerProcess(dataDirectory ?? TempDirectory(), FreePort(), extraArgs);
        await server.StartAsync();
        return server;
    }

    /// <summary>
    /// Starts the server with its health checked at <paramref name="port"/> on 127.0.0.1 over HTTP/1.1: for servers whose
    /// endpoints come from arguments (<c>Kestrel:Endpoints</c>), one of which must be that address.
    /// </summary>
    public static async Task<ServerProcess> StartOnAsync(string dataDirectory, int port, params string[] extraArgs)
    {
        var server = new ServerProcess(dataDirectory, port, extraArgs);
        await server.StartAsync();
        return server;
    }

    public static string TempDirectory() => Path.Combine(Path.GetTempPath(), "ds-func-" + Guid.NewGuid().ToString("N"));

    /// <summary>Distinct free ports (<see cref="LoopbackPorts"/>).</summary>
    public static int[] FreePorts(int count) => LoopbackPorts.Free(count);

    /// <summary>A free port (<see cref="LoopbackPorts"/>).</summary>
    public static int FreePort() => LoopbackPorts.Free();

    public async Task StartAsync()
    {
        var dll = LocateServer();
        var info = new ProcessStartInfo(DescriptorLimit is null ? "dotnet" : "/bin/sh")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (DescriptorLimit is { } limit)
        {
            // exec keeps the server's pid the child's, so /proc/{pid} is the server's.
            info.ArgumentList.Add("-c");
            info.ArgumentList.Add($"ulimit -n {limit} && exec dotnet \"$@\"");
            info.ArgumentList.Add("sh");
        }

        if (HeapLimit is { } heapLimit)
        {
            info.Environment["DOTNET_GCHeapHardLimit"] = "0x" + heapLimit.ToString("X", System.Globalization.CultureInfo.InvariantCulture);
        }

        info.ArgumentList.Add(dll);
        foreach (var arg in new[] { "--urls", BaseAddress.ToString().TrimEnd('/'), "--data", DataDirectory, "--Logging:LogLevel:Default=Warning", "--Agent:Enabled=false", "--Subscriptions:AllowLocalhostWebhooks=true" }.Concat(ExtraArgs))
        {
            info.ArgumentList.Add(arg);
        }

        _child?.Dispose();
        _child = ChildProcess.Start(info);
        await _child.WaitUntilHealthyAsync(new Uri(BaseAddress, "/health"), TimeSpan.FromSeconds(30), "The server");
    }

    /// <summary>Kills the process with SIGKILL: no shutdown code runs.</summary>
    public Task KillAsync() => _child?.KillAsync() ?? Task.CompletedTask;

    /// <summary>Asks the process to stop (SIGTERM, as Ctrl+C or a container stop would) and waits for it to exit.</summary>
    /// <returns>The exit code and how long the stop took.</returns>
    public async Task<(int ExitCode, TimeSpan Elapsed)> StopAsync(TimeSpan timeout)
    {
        var process = _child?.Process ?? throw new InvalidOperationException("The server is not running.");
        var started = Stopwatch.GetTimestamp();
        if (SendSignal(process.Id, 15) != 0)
        {
            throw new InvalidOperationException("Could not signal the server process.");
        }

        await process.WaitForExitAsync().WaitAsync(timeout);
        return (process.ExitCode, Stopwatch.GetElapsedTime(started));
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int SendSignal(int pid, int signal);

    public async Task RestartAsync()
    {
        await KillAsync();
        await StartAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _child?.Dispose();
        try
        {
            Directory.Delete(DataDirectory, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    internal static string LocateServer()
        // DS_SERVER_DLL runs the tests against another build of the server (such as the one before a fix).
        => Environment.GetEnvironmentVariable("DS_SERVER_DLL") is { Length: > 0 } other
            ? other
            : ChildProcess.Locate("src/DurableSessions.Server", "DurableSessions.Server.dll", "Build the server first (dotnet build).");
}
