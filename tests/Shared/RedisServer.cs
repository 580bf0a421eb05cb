using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace DurableSessions.Testing;

/// <summary>
/// A real <c>redis-server</c> on a free loopback port with its own data directory, persisting every write
/// (<c>appendonly yes</c>, <c>appendfsync always</c>), which tests can kill and restart.
/// </summary>
public sealed class RedisServer : IAsyncDisposable
{
    private Process? _process;

    private readonly string[] _extraArgs;

    private RedisServer(int port, string directory, string[] extraArgs)
    {
        Port = port;
        Directory = directory;
        _extraArgs = extraArgs;
    }

    public int Port { get; }

    public string Directory { get; }

    /// <summary>The StackExchange.Redis configuration string for this server.</summary>
    public string Configuration => $"127.0.0.1:{Port}";

    /// <summary>Starts a server; <paramref name="extraArgs"/> are more redis-server options (e.g. <c>--replicaof host port</c>).</summary>
    public static async Task<RedisServer> StartAsync(params string[] extraArgs)
    {
        var server = new RedisServer(LoopbackPorts.Free(), Path.Combine(Path.GetTempPath(), "ds-redis-" + Guid.NewGuid().ToString("N")), extraArgs);
        System.IO.Directory.CreateDirectory(server.Directory);
        await server.LaunchAsync();
        return server;
    }

    /// <summary>
    /// Starts a server in cluster mode (a cluster of one node, no slots assigned). Its cluster bus gets a free port of its
    /// own: by default it is the server's port + 10,000, which something else may hold.
    /// </summary>
    public static async Task<RedisServer> StartClusterNodeAsync()
    {
        var ports = LoopbackPorts.Free(2);
        var server = new RedisServer(
            ports[0],
            Path.Combine(Path.GetTempPath(), "ds-redis-" + Guid.NewGuid().ToString("N")),
            ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", ports[1].ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        System.IO.Directory.CreateDirectory(server.Directory);
        await server.LaunchAsync();
        return server;
    }

    private async Task LaunchAsync()
    {
        var executable = Environment.GetEnvironmentVariable("REDIS_SERVER") ?? "redis-server";
        var info = new ProcessStartInfo(executable) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[]
        {
            "--port", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--dir", Directory,
            "--save", string.Empty, "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no", "--loglevel", "warning",
        }.Concat(_extraArgs))
        {
            info.ArgumentList.Add(arg);
        }

        try
        {
            _process = Process.Start(info)!;
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InvalidOperationException("redis-server is not installed (Debian package redis-server; ./test.sh installs it).", ex);
        }

        // Its last words, for the message when it does not start (a port it cannot bind, an option it refuses).
        var output = new System.Collections.Concurrent.ConcurrentQueue<string>();
        void Keep(string? line)
        {
            if (line is not null)
            {
                output.Enqueue(line);
                while (output.Count > 20 && output.TryDequeue(out _))
                {
                }
            }
        }

        _process.OutputDataReceived += (_, e) => Keep(e.Data);
        _process.ErrorDataReceived += (_, e) => Keep(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited)
            {
                await _process.WaitForExitAsync();
                throw new InvalidOperationException($"redis-server exited with code {_process.ExitCode}: {string.Join(" | ", output)}");
            }

            if (await PingAsync())
            {
                return;
            }

            await Task.Delay(50);
        }

        throw new TimeoutException("redis-server did not answer PING within 30 seconds.");
    }

    /// <summary>SIGKILL: only what reached the append-only file survives.</summary>
    public async Task KillAsync()
    {
        if (_process is { HasExited: false } process)
        {
            process.Kill();
            await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    /// <summary>Starts the server again after <see cref="KillAsync"/>, on the same port and append-only file.</summary>
    public Task StartAgainAsync() => LaunchAsync();

    public async Task RestartAsync()
    {
        await KillAsync();
        await LaunchAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _process?.Dispose();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private async Task<bool> PingAsync()
    {
        try
        {
            using var client = new TcpClient();
            await client.ConnectAsync(IPAddress.Loopback, Port);
            var stream = client.GetStream();
            await stream.WriteAsync("PING\r\n"u8.ToArray());
            var buffer = new byte[16];
            var read = await stream.ReadAsync(buffer);
            return Encoding.ASCII.GetString(buffer, 0, read).StartsWith("+PONG", StringComparison.Ordinal);
        }
        catch (SocketException)
        {
            return false;
        }
        catch (IOException)
        {
            return false;
        }
    }
}
