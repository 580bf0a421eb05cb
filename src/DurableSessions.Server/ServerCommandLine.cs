using System.Numerics;
using System.CommandLine;
using System.Globalization;
using System.Reflection;

/// <summary>
/// The server's command line: named options with their defaults, <c>--help</c> and <c>--version</c>, and any setting as
/// <c>--Section:Key=value</c>. Options map onto configuration keys, so appsettings.json, environment variables and the
/// command line all set the same things.
/// </summary>
internal static class ServerCommandLine
{
    /// <summary>The exit code of a command line that cannot be used (unknown option, bad value), as shells expect.</summary>
    public const int UsageError = 2;

    /// <summary>
    /// Parses <paramref name="args"/>. Returns the configuration arguments for the host, or an exit code when the process
    /// should end now (help or version shown, or a usage error written to <paramref name="error"/>).
    /// </summary>
    public static (string[]? Configuration, int ExitCode) Parse(string[] args, TextWriter output, TextWriter error)
    {
        // `--Section:Key=value` (and `--Section:Key value`) reach configuration as they are: every setting in the README
        // can be given without a named option of its own.
        var settings = new List<string>();
        var named = new List<string>();
        for (var i = 0; i < args.Length; i++)
        {
            var name = args[i].Split('=', 2)[0];
            if (name.StartsWith("--", StringComparison.Ordinal) && name.Contains(':', StringComparison.Ordinal))
            {
                settings.Add(args[i]);
                if (!args[i].Contains('=', StringComparison.Ordinal) && i + 1 < args.Length)
                {
                    settings.Add(args[++i]);
                }
            }
            else
            {
                named.Add(args[i]);
            }
        }

        var command = Build(out var mappings);
        var result = command.Parse(named);
        if (result.Errors.Count > 0)
        {
            error.WriteLine($"error: {OneLine(result.Errors[0].Message)} (see --help)");
            return (null, UsageError);
        }

        if (result.Action is not null)
        {
            // --help or --version.
            return (null, result.Invoke(new InvocationConfiguration { Output = output, Error = error }));
        }

        foreach (var (option, key, convert) in mappings)
        {
            if (result.GetResult(option) is { Implicit: false } given)
            {
                settings.Add($"--{key}={convert(given.GetValueOrDefault<object?>())}");
            }
        }

        return ([.. settings], 0);
    }

    private static RootCommand Build(out List<(Option Option, string Key, Func<object?, string> Convert)> mappings)
    {
        var command = new RootCommand(
            "DurableSessions server: durable streams and sessions for AI chat and agents, with a demo agent and page.\n"
            + "Any setting can also be given as --Section:Key=value (for example --Agent:TokensPerSecond=50); see the README.");
        var map = new List<(Option, string, Func<object?, string>)>();
        string Text(object? value) => Convert.ToString(value, CultureInfo.InvariantCulture) ?? string.Empty;

        void Add<T>(Option<T> option, string key, Func<object?, string>? convert = null)
        {
            command.Options.Add(option);
            map.Add((option, key, convert ?? Text));
        }

        Add(new Option<string>("--urls") { Description = "Where the server listens.", DefaultValueFactory = _ => "http://127.0.0.1:4437", HelpName = "url" }, "urls");
        Add(Choice("--store", "Storage: sqlite (embedded, one process) or redis (many nodes).", "sqlite", "sqlite", "redis"), "Storage:Store");
        Add(new Option<string>("--redis") { Description = "The Redis to use with --store redis (StackExchange.Redis configuration).", DefaultValueFactory = _ => "127.0.0.1:6379", HelpName = "configuration" }, "Storage:Redis:Configuration");
        Add(new Option<string>("--data") { Description = "Directory of the embedded store (locked to one process).", DefaultValueFactory = _ => "data", HelpName = "dir" }, "Storage:Sqlite:DataDirectory");
        Add(Choice("--durability", "Fsync: flushed to disk before acknowledged. Relaxed: acknowledged once the OS has it.", "Fsync", "Fsync", "Relaxed"), "Storage:Sqlite:Durability");
        Add(Choice("--agent", "The built-in agent's model: demo (no network) or openai (with Agent:Endpoint and Agent:ModelId).", "demo", "demo", "openai"), "Agent:Model");
        Add(new Option<bool>("--no-agent") { Description = "Host no agent.", Arity = ArgumentArity.Zero }, "Agent:Enabled", _ => "false");
        Add(Positive<long>("--long-poll-timeout-ms", "How long a long-poll waits before answering 204, in ms.", 30_000), "DurableStreams:LongPollTimeout",
            v => TimeSpan.FromMilliseconds((long)v!).ToString("c", CultureInfo.InvariantCulture));
        Add(Positive<long>("--max-append-bytes", "Largest append or create body; larger gets 413.", 16_777_216), "DurableStreams:MaxAppendBytes");
        Add(Positive<int>("--max-path-length", "Longest stream path; longer gets 414.", 1024), "DurableStreams:MaxPathLength");
        mappings = map;
        return command;
    }

    private static Option<string> Choice(string name, string description, string defaultValue, params string[] values)
    {
        var option = new Option<string>(name) { Description = description, DefaultValueFactory = _ => defaultValue, HelpName = string.Join('|', values) };
        option.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<string>();
            if (!values.Contains(value, StringComparer.OrdinalIgnoreCase))
            {
                result.AddError($"{name} '{value}' is not valid; use one of: {string.Join(", ", values)}.");
            }
        });
        return option;
    }

    private static Option<T> Positive<T>(string name, string description, T defaultValue)
        where T : struct, INumber<T>
    {
        return new Option<T>(name)
        {
            Description = description,
            DefaultValueFactory = _ => defaultValue,
            HelpName = "n",
            CustomParser = result =>
            {
                var text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
                if (T.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) && value > T.Zero)
                {
                    return value;
                }

                result.AddError($"{name} '{text}' is not valid; use a positive whole number.");
                return default;
            },
        };
    }

    private static string OneLine(string message)
        => string.Join(' ', message.Split(['\r', '\n', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    /// <summary>The server's version, as <c>--version</c> prints it.</summary>
    public static string Version
        => typeof(ServerCommandLine).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";
}
