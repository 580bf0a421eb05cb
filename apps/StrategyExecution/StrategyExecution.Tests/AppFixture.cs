namespace StrategyExecution.Tests;

/// <summary>One running app with the demo organisation, shared by the tests of a class.</summary>
public sealed class AppFixture : IAsyncLifetime
{
    public AppProcess App { get; private set; } = null!;

    public async ValueTask InitializeAsync() => App = await AppProcess.StartNewAsync();

    public async ValueTask DisposeAsync() => await App.DisposeAsync();
}
