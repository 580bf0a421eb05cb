using System.Security.Cryptography;
using System.Text;
using StackExchange.Redis;

namespace DurableSessions.Storage.Redis;

/// <summary>
/// The server-side Lua scripts. Each touches only the keys of one stream (one hash tag, so one Redis Cluster slot) and
/// runs atomically, so no other writer can interleave between a check and the write it guards.
/// </summary>
/// <remarks>
/// <para>Keys of a stream: <c>KEYS[1]</c> its metadata hash, <c>KEYS[2]</c> its records (a Redis stream whose entry
/// ids are <c>{end position}-0</c>, with fields <c>s</c> = start position and <c>d</c> = data), <c>KEYS[3]</c> its
/// producers hash (producer id → <c>epoch:seq:last used ms</c>; older entries lack the last part and count as in use),
/// <c>KEYS[4]</c> how recent fork creates were settled (incarnation id → 'c' made, 'a' given up; an hour), <c>KEYS[5]</c>
/// the forks registered on it (fork incarnation id → '1' registered, '0' given back before its registration was seen).</para>
/// <para>Every change is published on the change channel as <c>header\n path data</c>, the header being
/// <c>node|id|start|end|closed|deleted|pathBytes|dataBytes</c>. Data above the inline limit is left out (dataBytes -1)
/// and a receiving node with a live reader of the stream reads it from the records.</para>
/// <para>Positions stay far below 2^53, so Lua's doubles hold them exactly; <c>n2s</c> prints them without exponent.</para>
/// </remarks>
internal static class RedisScripts
{
    private const string Common = """
        local function n2s(n) return string.format('%.0f', n) end
        local function expired(m, now)
          -- m: exp, ttl, access (strings or false)
          if m[1] and m[1] ~= '' and now >= tonumber(m[1]) then return true end
          if m[2] and m[2] ~= '' and now >= tonumber(m[3]) + tonumber(m[2]) * 1000 then return true end
          return false
        end
        local function publish(channel, node, id, path, s, e, closed, deleted, data, inline)
          local d = ''
          local len = -1
          if data and #data <= inline then d = data len = #data end
          if not data then len = 0 end
          redis.call('PUBLISH', channel, node .. '|' .. id .. '|' .. n2s(s) .. '|' .. n2s(e) .. '|' .. closed .. '|' .. deleted .. '|' .. #path .. '|' .. len .. '\n' .. path .. d)
        end
        """;

    /// <summary>
    /// Append: the same decision as <see cref="AppendRules.Decide"/> (closed, content type, producer, Stream-Seq,
    /// expected tail), then the write, the producer state, the metadata and the notification, all at once.
    /// ARGV: now, media type ('' = unchecked), data, units, close, stream-seq, producer id ('' = none), epoch, seq,
    /// expected tail ('' = none), channel, node, inline limit, producer state TTL in ms, expected stream id ('' = none).
    /// Returns {status, tail, closed, producerEpoch, producerSeq} and, when appended, the stream id.
    /// </summary>
    public static readonly RedisScript Append = new(Common + "\n" + """
        local m = redis.call('HMGET', KEYS[1], 'id', 'tail', 'closed', 'media', 'seq', 'sdel', 'exp', 'ttl', 'access', 'cbp', 'cbe', 'cbs', 'path')
        if not m[1] then return {'NotFound', 0, 0, 0, 0} end
        local now = tonumber(ARGV[1])
        if m[6] == '1' then return {'Gone', 0, 0, 0, 0} end
        if expired({m[7], m[8], m[9]}, now) then return {'Expired', 0, 0, 0, 0} end
        local tail = tonumber(m[2])
        -- Before anything else: every other answer would be about a stream the caller did not decide on.
        if ARGV[15] ~= '' and ARGV[15] ~= m[1] then return {'TailMoved', tail, 0, 0, 0} end
        local units = tonumber(ARGV[4])
        local close = ARGV[5] == '1'
        local producer = ARGV[7]
        local epoch = tonumber(ARGV[8])
        local seq = tonumber(ARGV[9])
        local function touch() if m[8] and m[8] ~= '' then redis.call('HSET', KEYS[1], 'access', ARGV[1]) end end
        local state = nil
        if producer ~= '' then state = redis.call('HGET', KEYS[3], producer) end
        local se, ss = nil, nil
        local producerTtl = tonumber(ARGV[14])
        local function idle(value)
          local a = string.find(value, ':', 1, true)
          local b = a and string.find(value, ':', a + 1, true)
          return b ~= nil and now - tonumber(string.sub(value, b + 1)) >= producerTtl
        end
        if state and idle(state) then state = nil end
        if state then
          local colon = string.find(state, ':', 1, true)
          local colon2 = string.find(state, ':', colon + 1, true)
          se = tonumber(string.sub(state, 1, colon - 1))
          ss = tonumber(string.sub(state, colon + 1, (colon2 or 0) - 1))
        end

        if m[3] == '1' then
          if producer ~= '' and m[10] == producer and tonumber(m[11]) == epoch and tonumber(m[12]) == seq then
            touch()
            return {'Duplicate', tail, 1, epoch, ss or seq}
          end
          if close and units == 0 then touch() return {'AlreadyClosed', tail, 1, 0, 0} end
          return {'StreamClosed', tail, 1, 0, 0}
        end
        if units > 0 and ARGV[2] ~= '' and ARGV[2] ~= m[4] then return {'ContentTypeMismatch', tail, 0, 0, 0} end
        if producer ~= '' then
          if state then
            if epoch < se then return {'StaleEpoch', tail, 0, se, 0} end
            if epoch > se then
              if seq ~= 0 then return {'InvalidEpochSeq', tail, 0, se, 0} end
            elseif seq <= ss then
              touch()
              return {'Duplicate', tail, 0, se, ss}
            elseif seq ~= ss + 1 then
              return {'ProducerSeqGap', tail, 0, se, ss + 1}
            end
          elseif seq ~= 0 then
            return {'ProducerSeqGap', tail, 0, epoch, 0}
          end
        end
        if ARGV[6] ~= '' and m[5] and m[5] ~= '' then
          -- Stream-Seq compares bytewise.
          local a, b = ARGV[6], m[5]
          local greater = nil
          for i = 1, math.min(#a, #b) do
            local x, y = string.byte(a, i), string.byte(b, i)
            if x ~= y then greater = x > y break end
          end
          if greater == nil then greater = #a > #b end
          if not greater then return {'SequenceConflict', tail, 0, 0, 0} end
        end
        if ARGV[10] ~= '' and tonumber(ARGV[10]) ~= tail then return {'TailMoved', tail, 0, 0, 0} end

        local newTail = tail + units
        if units > 0 then redis.call('XADD', KEYS[2], n2s(newTail) .. '-0', 's', n2s(tail), 'd', ARGV[3]) end
        if producer ~= '' then
          redis.call('HSET', KEYS[3], producer, n2s(epoch) .. ':' .. n2s(seq) .. ':' .. ARGV[1])
          -- A new producer may push the hash past its mark: then idle producers are removed and the mark doubles, so the
          -- sweep costs O(1) per append amortized and the hash holds at most twice the producers in use.
          if not state then
            local count = redis.call('HLEN', KEYS[3])
            local mark = tonumber(redis.call('HGET', KEYS[1], 'pmark') or '64')
            if count > mark then
              local all = redis.call('HGETALL', KEYS[3])
              for i = 1, #all, 2 do
                if idle(all[i + 1]) then redis.call('HDEL', KEYS[3], all[i]) count = count - 1 end
              end
              redis.call('HSET', KEYS[1], 'pmark', n2s(math.max(64, count * 2)))
            end
          end
        end
        redis.call('HSET', KEYS[1], 'tail', n2s(newTail), 'access', ARGV[1])
        if close then
          redis.call('HSET', KEYS[1], 'closed', '1')
          if producer ~= '' then redis.call('HSET', KEYS[1], 'cbp', producer, 'cbe', n2s(epoch), 'cbs', n2s(seq)) end
        end
        if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'seq', ARGV[6]) end
        local data = nil
        if units > 0 then data = ARGV[3] end
        publish(ARGV[11], ARGV[12], m[1], m[13], tail, newTail, close and '1' or '0', '0', data, tonumber(ARGV[13]))
        local closedNow = 0
        if close then closedNow = 1 end
        return {'Appended', newTail, closedNow, epoch or 0, seq or 0, m[1]}
        """);

    /// <summary>
    /// Create: only where no incarnation exists (an expired one is deleted first, through <see cref="Delete"/>, which
    /// respects its forks and releases its own fork source). ARGV: channel, node, inline limit, initial data, units,
    /// start, closed, for a fork its incarnation id (else empty), then the metadata's field/value pairs. A fork's create
    /// is recorded in KEYS[4] ('c', for an hour), and refused when <see cref="Abandon"/> gave it up first. Returns 'OK',
    /// 'Retry' or 'Abandoned'.
    /// </summary>
    public static readonly RedisScript Create = new(Common + "\n" + """
        if redis.call('EXISTS', KEYS[1]) == 1 then return 'Retry' end
        if ARGV[8] ~= '' then
          if redis.call('HGET', KEYS[4], ARGV[8]) == 'a' then return 'Abandoned' end
          redis.call('HSET', KEYS[4], ARGV[8], 'c')
          redis.call('PEXPIRE', KEYS[4], 3600000)
        end
        local fields = {}
        for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
        redis.call('HSET', KEYS[1], unpack(fields))
        local units = tonumber(ARGV[5])
        local start = tonumber(ARGV[6])
        local data = nil
        if units > 0 then
          redis.call('XADD', KEYS[2], n2s(start + units) .. '-0', 's', n2s(start), 'd', ARGV[4])
          data = ARGV[4]
        end
        local id = redis.call('HGET', KEYS[1], 'id')
        local path = redis.call('HGET', KEYS[1], 'path')
        publish(ARGV[1], ARGV[2], id, path, start, start + units, ARGV[7], '0', data, tonumber(ARGV[3]))
        return 'OK'
        """);

    /// <summary>
    /// Settles a fork's create whose answer was lost. ARGV: the incarnation id it was creating. Returns 'Created' when
    /// that create ran (its mark in KEYS[4], whether or not the fork still exists); otherwise marks the id abandoned for
    /// an hour, so that the create, should it still run (sent, but held up), refuses, and returns 'Abandoned'. Scripts
    /// on one stream's keys run one at a time, so the create either ran before this or will find the mark; settling
    /// again answers the same.
    /// </summary>
    public static readonly RedisScript Abandon = new("""
        local mark = redis.call('HGET', KEYS[4], ARGV[1])
        if mark == 'c' then return 'Created' end
        if mark ~= 'a' then
          redis.call('HSET', KEYS[4], ARGV[1], 'a')
          redis.call('PEXPIRE', KEYS[4], 3600000)
        end
        return 'Abandoned'
        """);

    /// <summary>
    /// Removes member ARGV[1] from the sorted set KEYS[1] only while its score is still ARGV[2] (an index entry that was
    /// read, not one written again since). Returns 1 when removed.
    /// </summary>
    public static readonly RedisScript RemoveIndexEntry = new("""
        local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
        if score and tonumber(score) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
        return 0
        """);

    /// <summary>
    /// Delete one incarnation: soft when forks still read from it, otherwise remove its keys (UNLINK: a long stream is
    /// freed off Redis's command thread). ARGV: id, channel, node, and for a delete because it expired, now: then it
    /// deletes only what is still expired (an append or a read since the caller looked may have renewed its sliding TTL).
    /// Returns {'Retry'} when the incarnation is no longer there or no longer expired, {'Gone'} when it is already
    /// soft-deleted, {'Soft', tail, closed}, or {'Hard', fork source id, fork source path, tail, closed, owner, fsreg} (the
    /// tail and closed flag its notification carries; the owner whose set of paths it leaves, or empty; '1' when it was
    /// registered on its source by its id, see <see cref="Fork"/>).
    /// </summary>
    public static readonly RedisScript Delete = new(Common + "\n" + """
        local m = redis.call('HMGET', KEYS[1], 'id', 'forks', 'fsid', 'fspath', 'path', 'tail', 'closed', 'sdel', 'exp', 'ttl', 'access', 'owner', 'fsreg')
        if not m[1] or m[1] ~= ARGV[1] then return {'Retry'} end
        if ARGV[4] and not expired({m[9], m[10], m[11]}, tonumber(ARGV[4])) then return {'Retry'} end
        if m[8] == '1' then return {'Gone'} end
        local tail = tonumber(m[6])
        if tonumber(m[2] or '0') > 0 then
          redis.call('HSET', KEYS[1], 'sdel', '1')
          publish(ARGV[2], ARGV[3], m[1], m[5], tail, tail, m[7] or '0', '1', nil, 0)
          return {'Soft', n2s(tail), m[7] or '0'}
        end
        redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[5])
        publish(ARGV[2], ARGV[3], m[1], m[5], tail, tail, m[7] or '0', '1', nil, 0)
        return {'Hard', m[3] or '', m[4] or '', n2s(tail), m[7] or '0', m[12] or '', m[13] or ''}
        """);

    /// <summary>
    /// Registers (+1) or releases (-1) a fork on its source, by the fork's incarnation id (in KEYS[5]): each id counts
    /// once in the source's 'forks', however often it is registered or released (a call whose answer was lost is sent
    /// again safely), and a registration that arrives after its give-back counts nothing.
    /// ARGV: source id, delta, channel, node, now, the fork position (for a registration), the fork's id, and for a
    /// release '1' when the fork was registered by its id (a fork registered before ids were kept is released by count).
    /// A release that leaves a soft-deleted source without forks removes it. Returns {'Missing'}, {'Gone'},
    /// {'Trimmed'} (the fork position is before the source's retained start), {'OK', retained start} or {'Hard', its own
    /// source id, its own source path, tail, closed, owner, fsreg}. A source so removed that was a fork itself leaves a
    /// note in KEYS[4] for at least an hour (fields <c>rsid:</c>, <c>rspath:</c>, <c>rsreg:</c>, <c>rsown:</c> and
    /// <c>rsby:</c>, each followed by its id): the same release sent again after its answer was lost gets {'Removed', its
    /// own source id, its own source path, fsreg, owner}, so the caller still does what the answer would have had it do.
    /// </summary>
    public static readonly RedisScript Fork = new(Common + "\n" + """
        local m = redis.call('HMGET', KEYS[1], 'id', 'sdel', 'fsid', 'fspath', 'path', 'tail', 'closed', 'exp', 'ttl', 'access', 'rfrom', 'owner', 'fsreg')
        local delta = tonumber(ARGV[2])
        if not m[1] or m[1] ~= ARGV[1] then
          if delta < 0 then
            -- Only the release that removed it is answered from the note: another fork's release that comes late found
            -- the chain carried on already.
            local r = redis.call('HMGET', KEYS[4], 'rsid:' .. ARGV[1], 'rspath:' .. ARGV[1], 'rsreg:' .. ARGV[1], 'rsown:' .. ARGV[1], 'rsby:' .. ARGV[1])
            if r[1] and r[1] ~= '' and r[2] and r[5] == ARGV[7] then return {'Removed', r[1], r[2], r[3] or '', r[4] or ''} end
          end
          return {'Missing'}
        end
        if delta > 0 and m[2] == '1' then return {'Gone'} end
        if delta > 0 and expired({m[8], m[9], m[10]}, tonumber(ARGV[5])) then return {'Missing'} end
        if delta > 0 and tonumber(ARGV[6]) < tonumber(m[11] or '0') then return {'Trimmed'} end
        local was = redis.call('HGET', KEYS[5], ARGV[7])
        if delta > 0 then
          -- Registered already ('1'), or given back before this registration arrived ('0': it counts nothing).
          if was == '0' then return {'Gone'} end
          if was == '1' then return {'OK', m[11] or '0'} end
          redis.call('HSET', KEYS[5], ARGV[7], '1')
        elseif was == '1' then
          redis.call('HDEL', KEYS[5], ARGV[7])
        elseif ARGV[8] == '1' then
          -- Released already, or never registered (a give-back after a lost answer): a registration still on its way
          -- must find it given back.
          if not was then redis.call('HSET', KEYS[5], ARGV[7], '0') end
          return {'OK', m[11] or '0'}
        end
        local forks = redis.call('HINCRBY', KEYS[1], 'forks', delta)
        if forks <= 0 and m[2] == '1' then
          redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[5])
          if m[4] and m[4] ~= '' then
            redis.call('HSET', KEYS[4], 'rsid:' .. m[1], m[3] or '', 'rspath:' .. m[1], m[4], 'rsreg:' .. m[1], m[13] or '',
              'rsown:' .. m[1], m[12] or '', 'rsby:' .. m[1], ARGV[7])
            redis.call('PEXPIRE', KEYS[4], 3600000)
          end
          local tail = tonumber(m[6])
          publish(ARGV[3], ARGV[4], m[1], m[5], tail, tail, m[7] or '0', '1', nil, 0)
          return {'Hard', m[3] or '', m[4] or '', n2s(tail), m[7] or '0', m[12] or '', m[13] or ''}
        end
        return {'OK', m[11] or '0'}
        """);

    /// <summary>
    /// Retention: removes the records that end at or before the last record end at or before ARGV[2] (never inside a
    /// record), and moves the retained start there. ARGV: id, before. Returns {'Retry'} when the incarnation is no longer
    /// there, {'Gone'} when soft-deleted, {'HasForks', retained start}, or {'Trimmed', retained start}.
    /// </summary>
    public static readonly RedisScript Trim = new(Common + "\n" + """
        local m = redis.call('HMGET', KEYS[1], 'id', 'sdel', 'forks', 'rfrom', 'tail')
        if not m[1] or m[1] ~= ARGV[1] then return {'Retry'} end
        local rfrom = tonumber(m[4] or '0')
        if m[2] == '1' then return {'Gone', n2s(rfrom)} end
        if tonumber(m[3] or '0') > 0 then return {'HasForks', n2s(rfrom)} end
        local before = math.min(tonumber(ARGV[2]), tonumber(m[5]))
        local last = redis.call('XREVRANGE', KEYS[2], n2s(before) .. '-0', '-', 'COUNT', 1)
        if #last == 0 then return {'Trimmed', n2s(rfrom)} end
        local cut = tonumber(string.match(last[1][1], '^(%d+)'))
        if cut <= rfrom then return {'Trimmed', n2s(rfrom)} end
        redis.call('XTRIM', KEYS[2], 'MINID', n2s(cut + 1) .. '-0')
        redis.call('HSET', KEYS[1], 'rfrom', n2s(cut))
        return {'Trimmed', n2s(cut)}
        """);

    /// <summary>
    /// Reads records of one incarnation: nil when the stream at the path is no longer that incarnation (its records
    /// would be another's). ARGV: id, start entry id (exclusive with a leading '('), most records, byte budget. Records
    /// are returned until their data reaches the budget, so a read of large records moves about a read's worth out of
    /// Redis, not the whole count of them (128 records of 8 MiB would be 1 GiB). They are ranged 8 at a time: that
    /// bounds what the script reads past the budget to 7 records, and costs no more than one range of 128 small records.
    /// </summary>
    public static readonly RedisScript Read = new("""
        if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return false end
        local out, from, count, budget, total = {}, ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), 0
        while #out < count and total < budget do
          local want = math.min(8, count - #out)
          local batch = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', want)
          for _, entry in ipairs(batch) do
            out[#out + 1] = entry
            local fields = entry[2]
            for i = 1, #fields - 1, 2 do
              if fields[i] == 'd' then total = total + #fields[i + 1] end
            end
            from = '(' .. entry[1]
            if total >= budget then break end
          end
          if #batch < want then break end
        end
        return out
        """);

    /// <summary>Resets the sliding TTL of one incarnation. ARGV: id, now.</summary>
    public static readonly RedisScript Touch = new("""
        if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then redis.call('HSET', KEYS[1], 'access', ARGV[2]) end
        return 1
        """);

    /// <summary>
    /// Releases a lock only if it is still held with this token (it may have run out and been taken by another node):
    /// the check and the delete in one round trip. KEYS[1] the lock, ARGV[1] the token. Returns 1 when released.
    /// </summary>
    public static readonly RedisScript ReleaseLock = new("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """);

    /// <summary>
    /// Extends a lock's lease only if it is still held with this token. KEYS[1] the lock, ARGV[1] the token, ARGV[2] the
    /// lease in ms. Returns 1 when extended, 0 when the lock ran out (and may be another node's now).
    /// </summary>
    public static readonly RedisScript RenewLock = new("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
        return 0
        """);

    /// <summary>
    /// Writes a document only while a lock is held with this token: the check and the write in one step, so a holder
    /// whose lease ran out cannot overwrite what the lock's next holder wrote. KEYS[1] the lock, KEYS[2] the collection's
    /// hash, ARGV[1] the token, ARGV[2] the document's key, ARGV[3] its value (none: the document is removed). Returns 1
    /// when written, 0 when the lock is not held with this token (nothing written).
    /// </summary>
    public static readonly RedisScript FencedDocumentWrite = new("""
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        if #ARGV >= 3 then redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) else redis.call('HDEL', KEYS[2], ARGV[2]) end
        return 1
        """);
}

/// <summary>
/// A Lua script and its SHA-1. It is run by hash (<c>EVALSHA</c>), so neither its text is sent nor is it hashed again on
/// each call (the client's own lookup of a script's hash hashes its whole text, several KB, every time); the text is
/// sent only when the server does not have the script (<c>NOSCRIPT</c>: its first use, or after a restart, a failover or
/// <c>SCRIPT FLUSH</c>).
/// </summary>
internal sealed class RedisScript(string text)
{
    /// <summary>The script's text.</summary>
    public string Text { get; } = text;

    /// <summary>The script's SHA-1, the name Redis caches it by.</summary>
#pragma warning disable CA5350 // SHA-1 is how Redis names scripts (EVALSHA), not a security measure.
    public byte[] Hash { get; } = SHA1.HashData(Encoding.UTF8.GetBytes(text));
#pragma warning restore CA5350

    /// <summary>Runs the script by hash, or by text when the server does not have it yet.</summary>
    public async Task<RedisResult> EvaluateAsync(IDatabaseAsync db, RedisKey[] keys, RedisValue[] values)
    {
        try
        {
            return await db.ScriptEvaluateAsync(Hash, keys, values).ConfigureAwait(false);
        }
        catch (RedisServerException ex) when (ex.Message.StartsWith("NOSCRIPT", StringComparison.Ordinal))
        {
            // Nothing ran, so sending it again is safe; the client then runs it by text, and by hash once it knows it is loaded.
            return await db.ScriptEvaluateAsync(Text, keys, values).ConfigureAwait(false);
        }
    }
}
