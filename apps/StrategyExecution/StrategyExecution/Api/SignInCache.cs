using System.Collections.Concurrent;
using StrategyExecution.Data;

namespace StrategyExecution.Api;

/// <summary>
/// The people behind recently used tokens, so that a page of open dashboards does not look its token up on every read.
/// An entry lives 60 seconds at most and never past its token's expiry; signing out, revoking a token and changing a
/// password evict at once. The app runs as one process, so every eviction happens here. Bounded: at most 50,000 tokens
/// are remembered, and the cache starts over when full.
/// </summary>
public sealed class SignInCache(TimeProvider time)
{
    private const int MaxEntries = 50_000;
    private static readonly TimeSpan Lifetime = TimeSpan.FromSeconds(60);
    private readonly ConcurrentDictionary<string, (Person Person, DateTimeOffset Until)> _entries = new(StringComparer.Ordinal);
    private long _evictions;

    /// <summary>
    /// A count of evictions: a lookup takes it before reading the database and hands it to <see cref="Remember"/>, so a
    /// token read just before its revocation is not remembered just after it.
    /// </summary>
    public long Evictions => Interlocked.Read(ref _evictions);

    /// <summary>The person behind <paramref name="hash"/>, if remembered and still valid.</summary>
    public Person? Find(string hash)
    {
        if (_entries.TryGetValue(hash, out var entry))
        {
            if (entry.Until > time.GetUtcNow())
            {
                return entry.Person;
            }

            _entries.TryRemove(KeyValuePair.Create(hash, entry));
        }

        return null;
    }

    /// <summary>
    /// Remembers that <paramref name="hash"/> is <paramref name="person"/>'s, until its expiry at the latest, unless
    /// anything was evicted since <paramref name="evictionsBefore"/> (then the next request looks it up again).
    /// </summary>
    public void Remember(string hash, Person person, DateTimeOffset expiresAt, long evictionsBefore)
    {
        if (Evictions != evictionsBefore)
        {
            return;
        }

        if (_entries.Count >= MaxEntries)
        {
            _entries.Clear();
        }

        var until = time.GetUtcNow() + Lifetime;
        _entries[hash] = (person, until < expiresAt ? until : expiresAt);

        // An eviction that ran while this entry was being stored may have missed it.
        if (Evictions != evictionsBefore)
        {
            _entries.TryRemove(hash, out _);
        }
    }

    /// <summary>Forgets one token.</summary>
    public void Forget(string hash)
    {
        Interlocked.Increment(ref _evictions);
        _entries.TryRemove(hash, out _);
    }

    /// <summary>Forgets every token of <paramref name="personId"/>.</summary>
    public void ForgetPerson(int personId)
    {
        Interlocked.Increment(ref _evictions);
        foreach (var entry in _entries.Where(e => e.Value.Person.Id == personId).ToList())
        {
            _entries.TryRemove(entry);
        }
    }
}
