/// <summary>Maps the server's short command-line options onto configuration keys.</summary>
internal static class ServerCommandLine
{
    private static readonly Dictionary<string, string> Aliases = new(StringComparer.OrdinalIgnoreCase)
    {
        ["--store"] = "--Storage:Store",
        ["--redis"] = "--Storage:Redis:Configuration",
        ["--data"] = "--Storage:Sqlite:DataDirectory",
        ["--durability"] = "--Storage:Sqlite:Durability",
        ["--long-poll-timeout-ms"] = "--DurableStreams:LongPollTimeout",
        ["--max-append-bytes"] = "--DurableStreams:MaxAppendBytes",
        ["--max-path-length"] = "--DurableStreams:MaxPathLength",
        ["--agent"] = "--Agent:Model",
        ["--no-agent"] = "--Agent:Enabled",
    };

    public static string[] Normalize(string[] args)
    {
        var result = new List<string>(args.Length);
        for (var i = 0; i < args.Length; i++)
        {
            var arg = args[i];
            var name = arg;
            string? value = null;
            var equals = arg.IndexOf('=', StringComparison.Ordinal);
            if (equals > 0)
            {
                name = arg[..equals];
                value = arg[(equals + 1)..];
            }

            if (!Aliases.TryGetValue(name, out var key))
            {
                result.Add(arg);
                continue;
            }

            if (name.Equals("--no-agent", StringComparison.OrdinalIgnoreCase))
            {
                result.Add($"{key}=false");
                continue;
            }

            value ??= i + 1 < args.Length ? args[++i] : string.Empty;
            if (name.Equals("--long-poll-timeout-ms", StringComparison.OrdinalIgnoreCase) && long.TryParse(value, out var ms))
            {
                value = TimeSpan.FromMilliseconds(ms).ToString("c", System.Globalization.CultureInfo.InvariantCulture);
            }

            result.Add($"{key}={value}");
        }

        return [.. result];
    }
}
