using Microsoft.AspNetCore.Authorization;

namespace DurableSessions.AspNetCore.Auth;

/// <summary>
/// The requirement of a capability on a stream, checked against a <see cref="StreamResource"/> with ASP.NET Core's
/// <see cref="IAuthorizationService"/>: <c>authorization.AuthorizeAsync(user, new StreamResource(path), StreamAccessRequirement.Write)</c>.
/// </summary>
/// <remarks>
/// The built-in handler grants it from the token's <c>grants</c> claim and the configured scope and role grants. An
/// application adds rules of its own by registering another <see cref="IAuthorizationHandler"/> for this requirement:
/// any handler that succeeds grants the capability, and any handler that fails refuses it.
/// </remarks>
public sealed class StreamAccessRequirement : IAuthorizationRequirement
{
    private StreamAccessRequirement(Capability capability) => Capability = capability;

    /// <summary>Read streams and session snapshots, tail live.</summary>
    public static StreamAccessRequirement Read { get; } = new(Capability.Read);

    /// <summary>Create streams and sessions, append, post messages, announce presence.</summary>
    public static StreamAccessRequirement Write { get; } = new(Capability.Write);

    /// <summary>Cancel and steer runs, take and return the session's control lease.</summary>
    public static StreamAccessRequirement Control { get; } = new(Capability.Control);

    /// <summary>Delete streams and manage subscriptions.</summary>
    public static StreamAccessRequirement Admin { get; } = new(Capability.Admin);

    /// <summary>The capability required.</summary>
    public Capability Capability { get; }

    /// <summary>The requirement of <paramref name="capability"/>.</summary>
    public static StreamAccessRequirement For(Capability capability) => capability switch
    {
        Capability.Read => Read,
        Capability.Write => Write,
        Capability.Control => Control,
        Capability.Admin => Admin,
        _ => throw new ArgumentOutOfRangeException(nameof(capability), capability, "Not a capability."),
    };

    /// <inheritdoc/>
    public override string ToString() => $"{Capability.ToString().ToLowerInvariant()} on the stream";
}

/// <summary>
/// The stream (or, with <see cref="IsPattern"/>, every stream a path glob can match) that a
/// <see cref="StreamAccessRequirement"/> is checked on.
/// </summary>
/// <param name="Path">A stream path such as <c>sessions/chat-42</c>, or a glob such as <c>jobs/**</c>.</param>
/// <param name="IsPattern">Whether <paramref name="Path"/> is a glob whose every present and future match must be covered.</param>
public sealed record StreamResource(string Path, bool IsPattern = false);

/// <summary>Grants a <see cref="StreamAccessRequirement"/> when the caller's token grants the capability on the resource.</summary>
internal sealed class StreamAccessHandler(AccessControl access) : AuthorizationHandler<StreamAccessRequirement, StreamResource>
{
    protected override Task HandleRequirementAsync(AuthorizationHandlerContext context, StreamAccessRequirement requirement, StreamResource resource)
    {
        if (access.AccessOf(context.User) is { } granted
            && (resource.IsPattern ? granted.AllowsEvery(resource.Path, requirement.Capability) : granted.Allows(resource.Path, requirement.Capability)))
        {
            context.Succeed(requirement);
        }

        return Task.CompletedTask;
    }
}
