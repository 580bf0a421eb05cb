using System.Net;
using System.Net.Sockets;

/// <summary>
/// What can stop the server from starting, said in one line each: bad settings, a port in use, a store that cannot be
/// reached or opened. The full exception goes to the Debug log, never to the console as a stack trace.
/// </summary>
internal static class StartupChecks
{
    /// <summary>Prints <paramref name="problem"/> and returns the exit code of a failed start.</summary>
    public static int Fail(string problem)
    {
        Console.Error.WriteLine($"DurableSessions cannot start: {problem}");
        return 1;
    }

    /// <summary>Settings with a fixed set of values, checked wherever they came from (file, environment, command line).</summary>
    public static string? Configuration(IConfiguration configuration)
    {
        static string? OneOf(IConfiguration configuration, string key, params string[] values)
            => configuration[key] is { } value && !values.Contains(value, StringComparer.OrdinalIgnoreCase)
                ? $"{key} is '{value}'; use one of: {string.Join(", ", values)}."
                : null;

        var problem = UnknownSetting(configuration)
            ?? OneOf(configuration, "Storage:Store", "sqlite", "redis")
            ?? OneOf(configuration, "Storage:Sqlite:Durability", "Fsync", "Relaxed");
        if (problem is not null || !configuration.GetValue("Agent:Enabled", true))
        {
            return problem;
        }

        problem = OneOf(configuration, "Agent:Model", "demo", "openai");
        if (problem is null)
        {
            try
            {
                problem = (configuration.GetSection("Agent").Get<EmbeddedAgentOptions>() ?? new EmbeddedAgentOptions()).Problem();
            }
            catch (InvalidOperationException ex)
            {
                // A value that is not of the setting's type: the binder's message names the key and the type.
                problem = ex.Message;
            }
        }

        if (problem is null && string.Equals(configuration["Agent:Model"], "openai", StringComparison.OrdinalIgnoreCase)
            && (string.IsNullOrEmpty(configuration["Agent:Endpoint"]) || string.IsNullOrEmpty(configuration["Agent:ModelId"])))
        {
            problem = "Agent:Model=openai needs Agent:Endpoint and Agent:ModelId (and Agent:ApiKey if the endpoint requires one).";
        }

        return problem;
    }

    /// <summary>
    /// A key in one of the server's own sections that no setting has (a typo in <c>--Agent:TokensPerSecnd</c>, an
    /// environment variable or <c>appsettings.json</c>), or null. Without this check it would be ignored without a word.
    /// Only each section's own keys are checked; the values under a dictionary setting (<c>Auth:ScopeGrants</c>) are free.
    /// </summary>
    public static string? UnknownSetting(IConfiguration configuration)
    {
        var sections = new List<(string Section, IEnumerable<string> Keys)>
        {
            ("DurableStreams", Settings(typeof(DurableSessions.AspNetCore.DurableStreamsOptions))),
            ("Subscriptions", Settings(typeof(DurableSessions.AspNetCore.Subscriptions.SubscriptionOptions))),
            ("Sessions", Settings(typeof(DurableSessions.AspNetCore.Sessions.SessionServiceOptions))),
            ("Auth", Settings(typeof(DurableSessions.AspNetCore.Auth.AccessOptions))),
            ("Agents", Settings(typeof(DurableSessions.AspNetCore.Agents.AgentTurnOptions))),
            ("WebSockets", Settings(typeof(DurableSessions.AspNetCore.WebSockets.StreamSocketOptions))),
            ("Limits", Settings(typeof(DurableSessions.AspNetCore.Connections.ConnectionLimitOptions))),
            ("Agent", Settings(typeof(EmbeddedAgentOptions))),
            ("Storage", ["Store", "Sqlite", "Redis"]),
            ("Storage:Sqlite", Settings(typeof(DurableSessions.Storage.Sqlite.SqliteStreamStoreOptions))),
            ("Telemetry", ["Prometheus"]),
        };
        if (string.Equals(configuration["Storage:Store"], "redis", StringComparison.OrdinalIgnoreCase))
        {
            sections.Add(("Storage:Redis", RedisStore.SettingNames()));
        }

        foreach (var (section, keys) in sections)
        {
            var known = new HashSet<string>(keys, StringComparer.OrdinalIgnoreCase);
            if (configuration.GetSection(section).GetChildren().FirstOrDefault(child => !known.Contains(child.Key)) is { } unknown)
            {
                return $"{section}:{unknown.Key} is not a setting; {section} has: {string.Join(", ", known.Order(StringComparer.Ordinal))}.";
            }
        }

        return null;
    }

    /// <summary>The names configuration binds on <paramref name="options"/>: its public properties that can be set.</summary>
    public static IEnumerable<string> Settings([System.Diagnostics.CodeAnalysis.DynamicallyAccessedMembers(System.Diagnostics.CodeAnalysis.DynamicallyAccessedMemberTypes.PublicProperties)] Type options)
        => options.GetProperties(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance)
            .Where(p => p.SetMethod is { IsPublic: true })
            .Select(p => p.Name);

    /// <summary>A listen address another process already holds (checked by binding it for a moment), or null.</summary>
    public static string? Ports(string urls)
    {
        foreach (var url in urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!Uri.TryCreate(url.Replace("://+", "://0.0.0.0", StringComparison.Ordinal).Replace("://*", "://0.0.0.0", StringComparison.Ordinal), UriKind.Absolute, out var uri)
                || uri.Port <= 0)
            {
                continue;
            }

            var address = uri.Host == "localhost" ? IPAddress.Loopback : IPAddress.TryParse(uri.Host.Trim('[', ']'), out var parsed) ? parsed : null;
            if (address is null)
            {
                continue;
            }

            try
            {
                var probe = new TcpListener(address, uri.Port);
                probe.Start();
                probe.Stop();
            }
            catch (SocketException ex) when (ex.SocketErrorCode == SocketError.AddressAlreadyInUse)
            {
                return $"{url} is already in use by another process (choose another address with --urls).";
            }
            catch (SocketException ex)
            {
                return $"cannot listen on {url}: {ex.Message}.";
            }
        }

        return null;
    }

    /// <summary>One line for an exception that stopped the start.</summary>
    public static string Describe(Exception exception, IConfiguration configuration)
    {
        for (var inner = exception; inner is not null; inner = inner.InnerException)
        {
            if (inner is Microsoft.AspNetCore.Connections.AddressInUseException inUse)
            {
                return $"{inUse.Message.TrimEnd('.')} (choose another address with --urls).";
            }

            if (inner is StackExchange.Redis.RedisException)
            {
                // The client's own message is a screenful of counters: say which Redis, and that it did not answer.
                var redis = configuration["Storage:Redis:Configuration"] ?? "127.0.0.1:6379";
                return $"the store cannot be reached: Redis at {redis} did not answer ({inner.GetType().Name}). Is redis-server running there?";
            }
        }

        var message = exception is DurableSessions.StreamStoreUnavailableException ? "the store cannot be reached: " + exception.Message : exception.Message;

        // The first line: enough to act on, never a stack trace.
        var line = message.Split('\n', 2)[0].Trim();
        return line.EndsWith('.') ? line : line + ".";
    }
}
