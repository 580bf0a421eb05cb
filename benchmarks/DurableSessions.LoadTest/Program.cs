using System.Diagnostics;
using System.Globalization;
using DurableSessions.LoadTest;

// Load generator for any Durable Streams server. Every loop is bounded by --duration and stops by itself.
// Examples:
//   dotnet run -c Release --project benchmarks/DurableSessions.LoadTest -- --url http://127.0.0.1:4437 --scenario append --streams 100
//   dotnet run -c Release --project benchmarks/DurableSessions.LoadTest -- --url http://127.0.0.1:4437 --scenario batch --streams 10000 --batch 100
//   dotnet run -c Release --project benchmarks/DurableSessions.LoadTest -- --url http://127.0.0.1:4437 --scenario latency --streams 1000 --readers 2
//   dotnet run -c Release --project benchmarks/DurableSessions.LoadTest -- --url http://127.0.0.1:4437 --scenario all
//   benchmarks/run-stored-sessions.sh 100000      (seed, restart the default server, measure; see BENCHMARKS.md)
var options = LoadOptions.Parse(args);
if (options is null)
{
    Console.Error.WriteLine(LoadOptions.Usage);
    return 2;
}

var target = new Uri(options.Url);
if (!target.IsLoopback || (options.ReadUrl is { } readUrl && !new Uri(readUrl).IsLoopback))
{
    Console.Error.WriteLine("Refusing to load a non-loopback address: load tests run against 127.0.0.1 only.");
    return 2;
}

var results = new List<ScenarioResult>();
var scenarios = options.Scenario == "all"
    ? new[]
    {
        options with { Scenario = "latency", Streams = 1000 },
        options with { Scenario = "append", Streams = 100 },
        options with { Scenario = "append", Streams = 10_000 },
        options with { Scenario = "batch", Streams = 100 },
        options with { Scenario = "batch", Streams = 10_000 },
    }
    : new[] { options };

foreach (var scenario in scenarios)
{
    var stopwatch = Stopwatch.StartNew();
    var process = Process.GetCurrentProcess();
    var result = scenario.Scenario switch
    {
        "append" or "batch" => await AppendScenario.RunAsync(scenario),
        "ws-append" => await SocketAppendScenario.RunAsync(scenario),
        "idle" => await IdleScenario.RunAsync(scenario),
        "latency" => await LatencyScenario.RunAsync(scenario),
        "sessions" => await SessionScenario.RunAsync(scenario),
        "seed" => await StoredSessionScenario.SeedAsync(scenario),
        "ask" => await StoredSessionScenario.AskAsync(scenario),
        "strategy" => await StrategyScenario.RunAsync(scenario),
        _ => throw new InvalidOperationException("unknown scenario " + scenario.Scenario),
    };
    results.Add(result);
    Console.WriteLine($"# {result.Name}: {result.Summary} (took {stopwatch.Elapsed.TotalSeconds:F1}s)");
}

Console.WriteLine();
Console.WriteLine($"| scenario | result | label |");
Console.WriteLine($"| --- | --- | --- |");
foreach (var result in results)
{
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {result.Name} | {result.Summary} | {options.Label} |"));
}

return results.Any(r => r.Errors > 0 && r.Errors * 100 > r.Operations) ? 1 : 0;
