namespace DurableSessions;

/// <summary>
/// The store could not complete a request (for example a disk or connection failure). The request was not
/// acknowledged and may be retried; nothing previously acknowledged is affected.
/// </summary>
public sealed class StreamStoreUnavailableException : Exception
{
    /// <summary>Creates the exception.</summary>
    public StreamStoreUnavailableException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public StreamStoreUnavailableException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and its cause.</summary>
    public StreamStoreUnavailableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
