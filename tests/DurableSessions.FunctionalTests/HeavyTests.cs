namespace DurableSessions.FunctionalTests;

/// <summary>
/// Tests that load the whole machine (hundreds of megabytes of bodies, thousands of sessions, a fuzz run against a real
/// server): they run alone, so the timing of the tests beside them does not depend on them.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class HeavyTests
{
    public const string Name = "Heavy";
}
