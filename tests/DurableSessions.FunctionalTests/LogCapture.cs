using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace DurableSessions.FunctionalTests;

/// <summary>
/// Counts the event ids logged (by the categories it is given, or all), and waits for a count: a test's view of what a
/// server or a host said. Add it as an <see cref="ILoggerProvider"/>, or take a logger of one category with <see cref="For{T}"/>.
/// </summary>
internal sealed class LogCapture(Func<string, bool>? categories = null) : ILoggerProvider, ILogger
{
    private readonly ConcurrentDictionary<int, int> _counts = new();
    private readonly SemaphoreSlim _logged = new(0);

    /// <summary>The event ids logged so far.</summary>
    public IReadOnlyCollection<int> EventIds => [.. _counts.Keys];

    /// <summary>A logger of category <typeparamref name="T"/> that reports here.</summary>
    public ILogger<T> For<T>() => new Logger<T>(new LoggerFactory([this]));

    /// <summary>Whether event <paramref name="eventId"/> was logged <paramref name="count"/> times within <paramref name="timeout"/>.</summary>
    public async Task<bool> WaitFor(int eventId, int count, TimeSpan timeout)
    {
        using var cancel = new CancellationTokenSource(timeout);
        try
        {
            while (_counts.GetValueOrDefault(eventId) < count)
            {
                await _logged.WaitAsync(cancel.Token);
            }

            return true;
        }
        catch (OperationCanceledException)
        {
            return _counts.GetValueOrDefault(eventId) >= count;
        }
    }

    public ILogger CreateLogger(string categoryName) => categories is null || categories(categoryName) ? this : NullLogger.Instance;

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        _counts.AddOrUpdate(eventId.Id, 1, (_, n) => n + 1);
        _logged.Release();
    }

    public void Dispose()
    {
    }
}
