using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// The server executable as a user meets it: help, version, usage errors (exit 2) and start-up failures (exit 1), each
/// said in a line or two, never with a stack trace.
/// </summary>
public sealed class CommandLineTests : IDisposable
{
    // Data directories given to servers that fail to start: some of them open the store before they fail.
    private readonly List<string> _directories = [];

    public void Dispose()
    {
        foreach (var directory in _directories)
        {
            try
            {
                Directory.Delete(directory, recursive: true);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // Never created (the server stopped before), or still held: the outcome under test stands either way.
            }
        }
    }

    private string DataDirectory()
    {
        var directory = ServerProcess.TempDirectory();
        _directories.Add(directory);
        return directory;
    }

    [Fact]
    public async Task Help_lists_every_option_with_its_default_and_exits_0()
    {
        var (code, output, error) = await RunAsync("--help");

        Assert.Equal(0, code);
        Assert.Empty(error);
        foreach (var option in new[] { "--urls", "--store", "--redis", "--data", "--durability", "--agent", "--no-agent", "--long-poll-timeout-ms", "--max-append-bytes", "--max-path-length", "--version", "--help" })
        {
            Assert.Contains(option, output, StringComparison.Ordinal);
        }

        Assert.Contains("[default: http://127.0.0.1:4437]", output, StringComparison.Ordinal);
        Assert.Contains("[default: Fsync]", output, StringComparison.Ordinal);
        Assert.Contains("--Section:Key=value", output, StringComparison.Ordinal);
        Assert.Equal(output, (await RunAsync("-h")).Output);
    }

    [Fact]
    public async Task Version_prints_one_line_and_exits_0()
    {
        var (code, output, error) = await RunAsync("--version");

        Assert.Equal(0, code);
        Assert.Empty(error);
        Assert.Matches(@"^\d+\.\d+\.\d+\S*$", output.Trim());
    }

    [Theory]
    [InlineData(new[] { "--bogus", "--urls", "http://127.0.0.1:1" }, "Unrecognized command or argument '--bogus'")]
    [InlineData(new[] { "--durability", "Sometimes" }, "use one of: Fsync, Relaxed")]
    [InlineData(new[] { "--agent", "gpt" }, "use one of: demo, openai")]
    [InlineData(new[] { "--store", "postgres" }, "use one of: sqlite, redis")]
    [InlineData(new[] { "--max-append-bytes", "lots" }, "use a positive whole number")]
    [InlineData(new[] { "--max-path-length", "-1" }, "use a positive whole number")]
    public async Task A_usage_error_is_one_line_naming_what_is_valid_and_exits_2(string[] args, string expected)
    {
        var (code, output, error) = await RunAsync(args);

        Assert.Equal(2, code);
        Assert.Empty(output);
        var line = Assert.Single(Lines(error));
        Assert.StartsWith("error: ", line, StringComparison.Ordinal);
        Assert.Contains(expected, line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_port_in_use_is_one_line_and_exits_1()
    {
        using var holder = new TcpListener(IPAddress.Loopback, 0);
        holder.Start();
        var url = $"http://127.0.0.1:{((IPEndPoint)holder.LocalEndpoint).Port}";

        var (code, output, error) = await RunAsync("--urls", url, "--data", DataDirectory());

        Assert.Equal(1, code);
        AssertOneLineFailure(output, error, $"DurableSessions cannot start: {url} is already in use by another process");
    }

    [Fact]
    public async Task An_unreachable_store_is_one_line_and_exits_1()
    {
        // A port nothing listens on: bound and released.
        var port = ServerProcess.FreePort();
        var (code, output, error) = await RunAsync("--store", "redis", "--redis", $"127.0.0.1:{port},connectTimeout=500", "--urls", $"http://127.0.0.1:{ServerProcess.FreePort()}");

        Assert.Equal(1, code);
        AssertOneLineFailure(output, error, $"DurableSessions cannot start: the store cannot be reached: Redis at 127.0.0.1:{port}");
    }

    [Fact]
    public async Task A_locked_data_directory_is_one_line_and_exits_1()
    {
        await using var first = await ServerProcess.StartAsync();

        var (code, output, error) = await RunAsync("--data", first.DataDirectory, "--urls", $"http://127.0.0.1:{ServerProcess.FreePort()}");

        Assert.Equal(1, code);
        AssertOneLineFailure(output, error, $"DurableSessions cannot start: The data directory {Path.GetFullPath(first.DataDirectory)} is in use by another DurableSessions process");
    }

    [Theory]
    [InlineData(new[] { "--Agent:TokensPerSecnd=50" }, "Agent:TokensPerSecnd is not a setting; Agent has: ApiKey, DeltaLinger, Enabled, Endpoint, Id, ")]
    [InlineData(new[] { "--Storage:Sqlite:Durabilty", "Relaxed" }, "Storage:Sqlite:Durabilty is not a setting; Storage:Sqlite has: AccessFlushInterval, ConvertTables, DataDirectory, Durability, ")]
    [InlineData(new[] { "--Agent:Model=gpt" }, "Agent:Model is 'gpt'; use one of: demo, openai.")]
    [InlineData(new[] { "--agent", "openai" }, "Agent:Model=openai needs Agent:Endpoint and Agent:ModelId")]
    [InlineData(new[] { "--Agent:DeltaLinger=00:00:05" }, "Agent:DeltaLinger must be between 00:00:00 and 00:00:01.")]
    [InlineData(new[] { "--Agent:DeltaLinger=soon" }, "Failed to convert configuration value")]
    [InlineData(new[] { "--Agent:MaxConcurrentRuns=0" }, "Agent:MaxConcurrentRuns must be at least 1.")]
    [InlineData(new[] { "--DurableStreams:SseKeepAliveInterval=00:00:00" }, "DurableStreams: SseKeepAliveInterval must be positive and at most one day.")]
    [InlineData(new[] { "--Storage:Sqlite:Durability", "Sometimes" }, "Storage:Sqlite:Durability is 'Sometimes'; use one of: Fsync, Relaxed.")]
    [InlineData(new[] { "--Storage:Sqlite:WriterCacheBytes=4096" }, "WriterCacheBytes ('4096') must be greater than or equal to '1048576'.")]
    [InlineData(new[] { "--Sessions:NotificationRetryDelay=-00:00:01" }, "Sessions: NotificationRetryDelay must be from 1 ms to 1 minute.")]
    [InlineData(new[] { "--Sessions:NotificationAttempts=0" }, "Sessions: NotificationAttempts must be from 1 to 20.")]
    [InlineData(new[] { "--Sessions:PresenceSweepInterval=00:00:00" }, "Sessions: PresenceSweepInterval must be from 10 ms to 1 day.")]
    [InlineData(new[] { "--Sessions:MaxInMemory=0" }, "Sessions: MaxInMemory must be from 1 to 1000000.")]
    [InlineData(new[] { "--Limits:RetryAfterSeconds=0" }, "Limits:RetryAfterSeconds must be between 1 and 3600.")]
    [InlineData(new[] { "--Limits:MaxConnections=-5" }, "Limits:MaxConnections must be 0 (derived from the open-file limit) or positive.")]
    [InlineData(new[] { "--WebSockets:MaxInFlight=0" }, "Invalid WebSockets settings")]
    [InlineData(new[] { "--Auth:ClockSkew=-00:01:00" }, "Auth: ClockSkew must be from 0 to 1 hour.")]
    [InlineData(new[] { "--Storage:Sqlite:ExpirySweepInterval=00:00:00" }, "ExpirySweepInterval ('00:00:00') must be greater than or equal to '00:00:00.0100000'.")]
    public async Task A_misconfigured_setting_is_one_line_and_exits_1(string[] args, string expected)
    {
        var (code, output, error) = await RunAsync([.. args, "--data", DataDirectory(), "--urls", $"http://127.0.0.1:{ServerProcess.FreePort()}"]);

        Assert.Equal(1, code);
        AssertOneLineFailure(output, error, "DurableSessions cannot start: " + expected);
    }

    [Fact]
    public async Task A_good_start_ends_with_the_address_of_the_demo_chat_and_named_options_take_effect()
    {
        await using var server = await ServerProcess.StartAsync(null, "--max-path-length", "40");
        var port = server.BaseAddress.Port;

        using var client = new HttpClient { BaseAddress = server.BaseAddress };
        Assert.Equal(HttpStatusCode.Created, (await client.PutAsync("/v1/stream/short", null)).StatusCode);
        Assert.Equal(HttpStatusCode.RequestUriTooLong, (await client.PutAsync("/v1/stream/" + new string('p', 41), null)).StatusCode);
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!server.RecentOutput.Contains($"DurableSessions is ready: open http://127.0.0.1:{port}/ for the demo chat.", StringComparison.Ordinal))
        {
            Assert.True(DateTime.UtcNow < deadline, server.RecentOutput);
            await Task.Delay(20);
        }
    }

    private static void AssertOneLineFailure(string output, string error, string expected)
    {
        var lines = Lines(output + "\n" + error);
        var line = Assert.Single(lines);
        Assert.StartsWith(expected, line, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception:", error, StringComparison.Ordinal);
    }

    private static List<string> Lines(string text) => [.. text.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.Trim().Length > 0)];

    private static async Task<(int ExitCode, string Output, string Error)> RunAsync(params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(ServerProcess.LocateServer());
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        // Only warnings and errors, as an operator would run it: the one line must stand alone.
        info.Environment["Logging__LogLevel__Default"] = "Warning";
        using var process = Process.Start(info)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"the server did not exit: {await output} {await error}");
        }

        return (process.ExitCode, await output, await error);
    }
}
