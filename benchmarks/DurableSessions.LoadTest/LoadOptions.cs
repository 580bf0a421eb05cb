using System.Globalization;

namespace DurableSessions.LoadTest;

/// <summary>Command-line settings of the load tool.</summary>
internal sealed record LoadOptions
{
    public const string Usage = """
        usage: DurableSessions.LoadTest --url <http://127.0.0.1:port> [options]
          --scenario append|batch|ws-append|idle|latency|sessions|seed|ask|strategy|all   (default all; ws-append, idle, sessions, seed, ask and strategy are not part of all)
          --pipeline <n>         appends in flight per WebSocket connection in the ws-append scenario (default 64)
          --transport <sse|websocket>   how the idle and latency scenarios' readers subscribe (default sse); idle needs --server-pid
          --questions <n>        questions the ask scenario posts into random stored sessions (default 100)
          --dashboards <n>       open dashboards in the strategy scenario, each following the audit stream (default 500)
          --streams <n>          streams to spread load over (default 100)
          --connections <n>      concurrent writers (default 64)
          --batch <n>            events per request in the batch scenario (default 100)
          --event-bytes <n>      size of each JSON event (default 256)
          --duration <seconds>   measured time per scenario (default 10)
          --warmup <seconds>     load run before the sessions scenario's window, not measured (default 0)
          --readers <n>          readers per stream in the latency scenario (default 2)
          --read-url <url>       where the latency scenario's readers connect (default --url; another node of a cluster)
          --rate <n>             appends per stream per second in the latency scenario (default 1)
          --label <text>         a label printed with the results (e.g. the server's name)
          --server-pid <pid>     the server's process id, to report its CPU use (sessions scenario)
          --timeline <file>      the sessions scenario writes each delivery there as "<produced, unix ms> <token->client ms>",
                                 to find when its slowest deliveries happened
        """;

    public string Url { get; init; } = "http://127.0.0.1:4437";

    /// <summary>Where the latency scenario's readers connect; another node of the same cluster measures cross-node delivery.</summary>
    public string? ReadUrl { get; init; }

    public string Scenario { get; init; } = "all";

    public int Streams { get; init; } = 100;

    public int Connections { get; init; } = 64;

    public int Batch { get; init; } = 100;

    public int EventBytes { get; init; } = 256;

    public int DurationSeconds { get; init; } = 10;

    /// <summary>Seconds the sessions scenario runs its load before it starts measuring.</summary>
    public int WarmupSeconds { get; init; }

    public int Readers { get; init; } = 2;

    public double Rate { get; init; } = 1;

    public string Label { get; init; } = string.Empty;

    public int? ServerPid { get; init; }

    public int Questions { get; init; } = 100;

    public int Pipeline { get; init; } = 64;

    public string Transport { get; init; } = "sse";

    public int Dashboards { get; init; } = 500;

    public string? Timeline { get; init; }

    public static LoadOptions? Parse(string[] args)
    {
        var options = new LoadOptions();
        for (var i = 0; i < args.Length; i++)
        {
            var value = i + 1 < args.Length ? args[i + 1] : null;
            if (value is null)
            {
                return null;
            }

            options = args[i] switch
            {
                "--url" => options with { Url = value.TrimEnd('/') },
                "--read-url" => options with { ReadUrl = value.TrimEnd('/') },
                "--scenario" => options with { Scenario = value },
                "--streams" => options with { Streams = int.Parse(value, CultureInfo.InvariantCulture) },
                "--connections" => options with { Connections = int.Parse(value, CultureInfo.InvariantCulture) },
                "--batch" => options with { Batch = int.Parse(value, CultureInfo.InvariantCulture) },
                "--event-bytes" => options with { EventBytes = int.Parse(value, CultureInfo.InvariantCulture) },
                "--duration" => options with { DurationSeconds = int.Parse(value, CultureInfo.InvariantCulture) },
                "--warmup" => options with { WarmupSeconds = int.Parse(value, CultureInfo.InvariantCulture) },
                "--readers" => options with { Readers = int.Parse(value, CultureInfo.InvariantCulture) },
                "--rate" => options with { Rate = double.Parse(value, CultureInfo.InvariantCulture) },
                "--label" => options with { Label = value },
                "--server-pid" => options with { ServerPid = int.Parse(value, CultureInfo.InvariantCulture) },
                "--questions" => options with { Questions = int.Parse(value, CultureInfo.InvariantCulture) },
                "--pipeline" => options with { Pipeline = int.Parse(value, CultureInfo.InvariantCulture) },
                "--transport" when value is "sse" or "websocket" => options with { Transport = value },
                "--dashboards" => options with { Dashboards = int.Parse(value, CultureInfo.InvariantCulture) },
                "--timeline" => options with { Timeline = value },
                _ => null,
            };
            if (options is null)
            {
                return null;
            }

            i++;
        }

        return options.Scenario is "append" or "batch" or "ws-append" or "idle" or "latency" or "sessions" or "seed" or "ask" or "strategy" or "all" && options.DurationSeconds is > 0 and <= 600 && options.WarmupSeconds is >= 0 and <= 600 ? options : null;
    }
}

/// <summary>What one scenario measured.</summary>
internal sealed record ScenarioResult(string Name, string Summary, long Operations, long Errors);
