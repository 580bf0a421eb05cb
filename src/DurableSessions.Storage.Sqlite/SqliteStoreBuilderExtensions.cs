using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DurableSessions.Storage.Sqlite;

/// <summary>Plugs the embedded SQLite store into DurableSessions.</summary>
public static class SqliteStoreBuilderExtensions
{
    /// <summary>Stores streams in SQLite under <see cref="SqliteStreamStoreOptions.DataDirectory"/> (one process per directory).</summary>
    public static IDurableSessionsBuilder AddSqliteStore(this IDurableSessionsBuilder builder, Action<SqliteStreamStoreOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.AddOptions<SqliteStreamStoreOptions>().Configure(configure);
        builder.UseStore((sp, fanout, time) => SqliteStreamStore.Open(
            sp.GetRequiredService<IOptions<SqliteStreamStoreOptions>>().Value, time, fanout, sp.GetRequiredService<ILogger<SqliteStreamStore>>()));
        return builder;
    }

    /// <summary>Stores streams in SQLite, with settings bound from <paramref name="configuration"/> (e.g. <c>Storage:Sqlite</c>).</summary>
    public static IDurableSessionsBuilder AddSqliteStore(this IDurableSessionsBuilder builder, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configuration);
        builder.Services.AddOptions<SqliteStreamStoreOptions>().Bind(configuration);
        return builder.AddSqliteStore(_ => { });
    }
}
