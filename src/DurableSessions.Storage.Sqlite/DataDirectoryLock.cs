using System.Runtime.InteropServices;

namespace DurableSessions.Storage.Sqlite;

/// <summary>
/// An exclusive lock on a data directory, held by the one store that has it open: SQLite's own file locks let a second
/// process open the same database, and two writers that each keep their own in-memory view of the streams lose
/// acknowledged data.
/// </summary>
/// <remarks>
/// The lock is an operating-system lock on <c>{directory}/.lock</c>, so the operating system releases it when the process
/// ends in any way, <c>kill -9</c> included: there is never a stale lock to clean up by hand.
/// </remarks>
internal sealed class DataDirectoryLock : IDisposable
{
    private const string FileName = ".lock";
    private const int LockExclusive = 2;
    private const int LockNonBlocking = 4;

    private readonly FileStream _file;

    private DataDirectoryLock(FileStream file) => _file = file;

    /// <summary>Takes the lock, or throws <see cref="DataDirectoryLockedException"/> when another store holds it.</summary>
    public static DataDirectoryLock Acquire(string directory)
    {
        var fullDirectory = Path.GetFullPath(directory);
        var path = Path.Combine(fullDirectory, FileName);
        FileStream file;
        try
        {
            // FileShare.None: a sharing violation on Windows, flock(LOCK_EX | LOCK_NB) on Unix.
            file = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, bufferSize: 1, FileOptions.None);
        }
        catch (IOException ex) when (ex is not FileNotFoundException and not DirectoryNotFoundException and not PathTooLongException)
        {
            throw DataDirectoryLockedException.For(fullDirectory, ex);
        }

        // .NET skips its flock when DOTNET_SYSTEM_IO_DISABLEFILELOCKING is set; the data directory must stay locked even then.
        if (!OperatingSystem.IsWindows() && Flock(file.SafeFileHandle.DangerousGetHandle().ToInt32(), LockExclusive | LockNonBlocking) != 0)
        {
            file.Dispose();
            throw DataDirectoryLockedException.For(fullDirectory, null);
        }

        try
        {
            // Who holds the lock, for a person looking at the directory; the lock itself is the flock, not this text.
            file.SetLength(0);
            var owner = System.Text.Encoding.UTF8.GetBytes($"{Environment.ProcessId}\n");
            file.Write(owner);
            file.Flush();
        }
        catch (IOException)
        {
        }

        return new DataDirectoryLock(file);
    }

    /// <summary>Releases the lock.</summary>
    public void Dispose() => _file.Dispose();

    [DllImport("libc", EntryPoint = "flock", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int Flock(int fd, int operation);
}

/// <summary>Thrown when a store's data directory is already in use by another process (or another store in this process).</summary>
public sealed class DataDirectoryLockedException : IOException
{
    /// <summary>Creates the exception.</summary>
    public DataDirectoryLockedException()
        : base("The data directory is in use by another process.")
    {
        Directory = string.Empty;
    }

    /// <summary>Creates the exception with a message.</summary>
    public DataDirectoryLockedException(string message)
        : base(message)
    {
        Directory = string.Empty;
    }

    /// <summary>Creates the exception with a message and its cause.</summary>
    public DataDirectoryLockedException(string message, Exception? innerException)
        : base(message, innerException)
    {
        Directory = string.Empty;
    }

    /// <summary>The data directory that is locked.</summary>
    public string Directory { get; private init; }

    internal static DataDirectoryLockedException For(string directory, IOException? innerException) => new(
        $"The data directory {directory} is in use by another DurableSessions process (it holds {Path.Combine(directory, ".lock")}); stop that process or use another --data directory.",
        innerException)
    {
        Directory = directory,
    };
}
