//! The Lua scripts behind every conditional write.
//!
//! Each script runs atomically on the server (Redis executes one script at a time) and touches
//! keys of **one hash slot** only, all declared in `KEYS`: the session's own slot (the session
//! hash, and the write fence of that slot) or the user's slot (the user's index, revocation
//! marker, and the fence of that slot). On a cluster, operations that concern both a session
//! and its user are two scripts, ordered so that a crash between them never leaves a live
//! session out of its user's index (see `docs/redis.md`, "Two slots, two steps"); on one server
//! the `one_*` scripts do both in one step ("On one server, one step"). They are sent once with
//! `SCRIPT LOAD` (to every node on a cluster) and then called by SHA1 (`EVALSHA`); `redis::Script`
//! reloads them transparently after a Redis restart (`NOSCRIPT`).
//!
//! Conventions shared by all scripts:
//!
//! - `ARGV[1]` is always the write epoch the sender knows: scripts that add or change a copy
//!   refuse an older one with `{-5, current epoch}` (the fence key is one of their `KEYS`).
//! - Times that come from the application (`created_at`, `last_seen`, `now`) are arguments;
//!   index pruning uses the server's clock (`TIME`), the same clock that expires the keys.
//! - Index scores are expiries in whole **seconds** since 2025-01-01, rounded up (never earlier
//!   than the session's expiry): a 32-bit integer in the listpack instead of a 64-bit one (16
//!   bytes less per index, by jemalloc's size classes). An entry is pruned within a second of
//!   its session's expiry.
//! - A script sent on the tracked connection (`apply`) reads the session key after its last
//!   change to it, so that the key stays tracked (`tracking.rs` has the argument).
//! - Scripts parse the stored fixed part (`codec::encode_meta` format 1) themselves to learn
//!   the user, idle timeout and absolute deadline: the stored copy is authoritative.

use std::sync::LazyLock;

use redis::Script;

/// Definitions every script starts with; `apply`, the one script on the path of every
/// request that changes a session, has these alone (`PRELUDE` adds the server clock and the
/// helpers that need it or are not needed there: every definition costs each call).
const BASE: &str = r#"
local EPOCH = ARGV[1]
local META = '\255'
local SEEN = '\254'
local SIZE = '\253'
local TOMB = '\252'

local function int(x) return string.format('%.0f', x) end

-- Whether a hash field is reserved for the store: one byte that is not valid UTF-8 on its own.
local function reserved(f) return #f == 1 and f:byte(1) >= 128 end

-- The size codec::record_size counts for the attributes stored under `key`: the running size
-- kept in the SIZE field, or, for a hash written before it was kept, a walk over every field.
local function attrs_size(key)
  local kept = tonumber(redis.call('HGET', key, SIZE))
  if kept then return kept end
  local size = 0
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if not reserved(f) then
      size = size + #f + redis.call('HSTRLEN', key, f) + 4
    end
  end
  return size
end

-- HSET/HDEL/ZREM with any number of arguments, in batches that Lua's unpack accepts.
local function batched(cmd, key, list, step)
  for i = 1, #list, step do
    local args = { cmd, key }
    for j = i, math.min(i + step - 1, #list) do args[#args + 1] = list[j] end
    redis.call(unpack(args))
  end
end
"#;

/// The rest of the definitions of every script but `apply`.
const PRELUDE: &str = r#"
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Index scores are expiries in whole seconds since 2025-01-01 (SCORE_EPOCH), rounded up: a
-- 32-bit integer in a listpack until 2093. An entry whose second has begun is gone (its
-- session expired at or before that second's start).
local SCORE_EPOCH = 1735689600
local function before_now() return int(math.floor(NOW / 1000) - SCORE_EPOCH) end
local function score_ms(s) return (tonumber(s) + SCORE_EPOCH) * 1000 end

-- The fixed part as codec::encode_meta writes it (format 2), or nil if it does not parse:
-- format, flags, varints version, created, idle, absolute offset, [8 fp], [varint length,
-- user], the two durations coded as whole seconds s * 2 + 1 or milliseconds ms * 2; format 1
-- (0.1.0) has plain milliseconds and 16 bytes of CSRF secret before the fingerprint. Bytes are
-- read one at a time, only those of the varints (a table of the whole header cost a sixth more
-- per parse).
local function parse_meta(m)
  if type(m) ~= 'string' or #m < 2 then return nil end
  local byte = string.byte
  local fmt, flags = byte(m, 1, 2)
  if (fmt ~= 2 and fmt ~= 1) or flags > 3 then return nil end
  local has_user = flags % 2 == 1
  local skip = 0
  if fmt == 1 then skip = 16 end
  if flags >= 2 then skip = skip + 8 end
  local pos, f = 3, { 0, 0, 0, 0, 0 }
  for i = 1, has_user and 5 or 4 do
    if i == 5 then pos = pos + skip end
    local v, mul = 0, 1
    repeat
      local x = byte(m, pos)
      if not x or mul > 2^63 then return nil end
      pos = pos + 1
      v = v + (x % 128) * mul
      mul = mul * 128
    until x < 128
    f[i] = v
  end
  local user = false
  if has_user then
    user = m:sub(pos, pos + f[5] - 1)
    if #user ~= f[5] then return nil end
    pos = pos + f[5]
  else
    pos = pos + skip
  end
  if pos - 1 ~= #m then return nil end
  local idle, off = f[3], f[4]
  if fmt == 2 then
    if idle % 2 == 1 then idle = (idle - 1) / 2 * 1000 else idle = idle / 2 end
    if off % 2 == 1 then off = (off - 1) / 2 * 1000 else off = off / 2 end
  end
  return { user = user, created = f[2], idle = idle, abs = f[2] + off }
end

-- Write a session's expiry and, when it is capped by the absolute deadline, its last_seen
-- (otherwise last_seen = expiry - idle timeout and is not stored).
local function set_expiry(key, meta, ls, had_seen)
  local exp = math.min(ls + meta.idle, meta.abs)
  if ls + meta.idle > meta.abs then
    redis.call('HSET', key, SEEN, int(ls))
  elseif had_seen then
    redis.call('HDEL', key, SEEN)
  end
  redis.call('PEXPIREAT', key, int(exp))
  return exp
end

-- Writes that add or change a copy carry the write epoch their sender knew; `fence` is the
-- fence key of the slot they write in. A recovery from an outage starts a new epoch before it
-- deletes what the outage left stale, so a write sent before it that arrives late is refused
-- here instead of bringing a copy back. A live sender is told the epoch and sends again.
local function stale_epoch(fence)
  local e = redis.call('GET', fence)
  if e and e ~= EPOCH then return { -5, tonumber(e) } end
  return nil
end

-- After entries left an index (or expired): drop the expired ones and let the index expire
-- with its last member (an empty sorted set is deleted by Redis). Returns how many were pruned.
local function tidy(ik)
  local n = redis.call('ZREMRANGEBYSCORE', ik, '-inf', before_now())
  local hi = redis.call('ZRANGE', ik, -1, -1, 'WITHSCORES')
  if #hi > 0 then redis.call('PEXPIREAT', ik, int(score_ms(hi[2]))) end
  return n
end
"#;

/// The start of `create` and `restore` (session slot): KEYS[1] session key, KEYS[2] the
/// slot's fence; ARGV[2] encoded meta, ARGV[3] last_seen, ARGV[4..] attribute name/value
/// pairs. An existing key is a collision (-2), or, if it is a revoke-all's tombstone, a
/// revocation (-3): the revoke-all ran between this create's index step and this step.
const CREATE_HEAD: &str = r#"
local stale = stale_epoch(KEYS[2])
if stale then return stale end
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then
  if redis.call('HEXISTS', key, TOMB) == 1 then return -3 end
  return -2
end
local meta = parse_meta(ARGV[2])
if not meta then return redis.error_reply('ERR ratatoskr: the fixed part does not parse') end
"#;

/// `restore` writes nothing (0) for a copy already past its deadline by the server's clock.
const RESTORE_EXPIRY_CHECK: &str = r#"
if math.min(tonumber(ARGV[3]) + meta.idle, meta.abs) <= NOW then return 0 end
"#;

/// The rest of `create` and `restore`: write the hash and its expiry. The attributes start at
/// `ARGV[A0]`.
const CREATE_TAIL: &str = r#"
local size = 0
for i = A0, #ARGV, 2 do size = size + #ARGV[i] + #ARGV[i + 1] + 4 end
local fields = { META, ARGV[2], SIZE, int(size) }
for i = A0, #ARGV do fields[#fields + 1] = ARGV[i] end
batched('HSET', key, fields, 200)
set_expiry(key, meta, tonumber(ARGV[3]), false)
-- A read after the change: sent on the tracked connection (`create_cacheable`), it tracks the
-- new key, so that the next change by anyone else is announced (see `APPLY`).
redis.call('HLEN', key)
"#;

/// The attributes of the two-step `create` and `restore` start at `ARGV[4]`.
const CREATE_ARGS: &str = "local A0 = 4\n";

/// `index_add` (user slot): KEYS[1] the user's index, KEYS[2] the user's revocation marker,
/// KEYS[3] the slot's fence; ARGV[2] raw session key, ARGV[3] its expiry in whole seconds
/// (rounded up), ARGV[4] the time a revocation must be older than (`created_at` for a create,
/// `now` for a rotation; empty: no check, for a restore). ARGV[5] `XX` to only raise an
/// existing entry (a touch), else empty. Returns 1, or -3 when revoked. Runs **before** the
/// session is written: a crash in between leaves an entry without a session (skipped by
/// listings, pruned at its expiry), never a session without an entry.
const INDEX_ADD: &str = r#"
local stale = stale_epoch(KEYS[3])
if stale then return stale end
local ik = KEYS[1]
if ARGV[4] ~= '' then
  local r = tonumber(redis.call('GET', KEYS[2]))
  if r ~= nil and r >= tonumber(ARGV[4]) then return -3 end
end
if ARGV[5] == 'XX' then
  redis.call('ZADD', ik, 'XX', 'GT', ARGV[3], ARGV[2])
else
  redis.call('ZADD', ik, 'GT', ARGV[3], ARGV[2])
end
tidy(ik)
return 1
"#;

/// `index_del` (user slot): KEYS[1] the user's index; ARGV[2..] raw session keys to remove.
/// Runs **after** the sessions are gone. Returns how many expired entries were pruned besides.
const INDEX_DEL: &str = r#"
local gone = {}
for i = 2, #ARGV do gone[#gone + 1] = ARGV[i] end
batched('ZREM', KEYS[1], gone, 200)
return tidy(KEYS[1])
"#;

/// `apply` (session slot): KEYS[1] session key; ARGV[2] size limit, ARGV[3] number of
/// removals, then the removed names, then set name/value pairs. Returns {1}, {-1} (not found)
/// or {-4, size}. The work is proportional to the attributes the delta names, not to the
/// record: the size check uses the running size in the SIZE field.
///
/// It runs on the tracked connection in tracking mode and so ends with a read of the key
/// (`HLEN`) after changing it; the refusals change nothing and have read it (`HMGET`).
const APPLY: &str = r#"
local key = KEYS[1]
local nrem = tonumber(ARGV[3])
-- The final change per name: false when removed, the new value's length when set.
local change, names = {}, {}
for i = 4, 3 + nrem do change[ARGV[i]] = false end
for i = 4 + nrem, #ARGV, 2 do change[ARGV[i]] = #ARGV[i + 1] end
for f in pairs(change) do names[#names + 1] = f end
-- The fixed part, the running size and the old values of the names changed, in one read
-- (a delta of very many names reads their lengths one by one: unpack's limit).
local q = { 'HMGET', key, META, SIZE }
local few = #names <= 200
if few then
  for i = 1, #names do q[#q + 1] = names[i] end
end
local v = redis.call(unpack(q))
local m = v[1]
-- Present, and a fixed part of a format this script knows (its first byte: 2, or 1 as 0.1.0
-- wrote it): no more parsing, the client holds the session it writes to.
local fmt = m and string.byte(m, 1)
if fmt ~= 2 and fmt ~= 1 then return { -1 } end
local size = tonumber(v[2]) or attrs_size(key)
for i, f in ipairs(names) do
  local old
  if few then
    old = v[i + 2]
    old = old and #old
  else
    old = redis.call('HSTRLEN', key, f)
    if old == 0 and redis.call('HEXISTS', key, f) == 0 then old = nil end
  end
  if old then size = size - (#f + old + 4) end
  if change[f] then size = size + #f + change[f] + 4 end
end
-- Removals alone can only shrink the record: the size is checked when something is set.
if #ARGV > 3 + nrem and #m + 12 + size > tonumber(ARGV[2]) then
  return { -4, #m + 12 + size }
end
local dels = {}
for f, len in pairs(change) do
  if not len then dels[#dels + 1] = f end
end
batched('HDEL', key, dels, 200)
local sets = { SIZE, int(size) }
for i = 4 + nrem, #ARGV do sets[#sets + 1] = ARGV[i] end
batched('HSET', key, sets, 200)
-- A read after the change: sent on the tracked connection (NOLOOP), the change above made
-- Redis forget that this connection tracks the key, without a notice; this read tracks it
-- again, so the next change by anyone else is announced to this connection. Must stay last.
redis.call('HLEN', key)
return { 1 }
"#;

/// `touch` (session slot): KEYS[1] session key; ARGV[2] last_seen. Returns 1 if the session
/// exists, else 0. The index entry was raised before (see `index_add` with `XX`).
const TOUCH: &str = r#"
local key = KEYS[1]
local v = redis.call('HMGET', key, META, SEEN)
local meta = parse_meta(v[1])
if not meta then return 0 end
local cur = tonumber(v[2])
if not cur then
  local pt = redis.call('PEXPIRETIME', key)
  cur = pt >= 0 and (pt - meta.idle) or 0
end
set_expiry(key, meta, math.max(cur, tonumber(ARGV[2])), v[2])
return 1
"#;

/// `rotate` when both keys share a slot (always on a standalone Redis): KEYS[1] old key,
/// KEYS[2] new key, KEYS[3] the slot's fence; ARGV[2] new encoded meta, ARGV[3] now,
/// ARGV[4] size limit. Returns {1, old user or false}, {-1} (old missing), {-2} (new exists),
/// {-3} (new is a tombstone) or {-4, size}. The new user's index entry was added before, the
/// old one is removed after.
const ROTATE_HEAD: &str = r#"
local stale = stale_epoch(KEYS[3])
if stale then return stale end
local old, new = KEYS[1], KEYS[2]
"#;

/// The rotation itself, shared by `rotate` and `one_rotate` (`old`, `new` set before): the
/// checks (the old session, the new key, the size), then one atomic step — the attributes move
/// with the key, the old key is gone. Leaves `oldmeta` for what follows.
const ROTATE_CORE: &str = r#"
local oldmeta = parse_meta(redis.call('HGET', old, META))
if not oldmeta then return { -1 } end
if redis.call('EXISTS', new) == 1 then
  if redis.call('HEXISTS', new, TOMB) == 1 then return { -3 } end
  return { -2 }
end
local meta = parse_meta(ARGV[2])
if not meta then return redis.error_reply('ERR ratatoskr: the fixed part does not parse') end
local size = #ARGV[2] + 12 + attrs_size(old)
if size > tonumber(ARGV[4]) then return { -4, size } end
redis.call('RENAME', old, new)
redis.call('HSET', new, META, ARGV[2])
set_expiry(new, meta, tonumber(ARGV[3]), true)
"#;

/// `take` (old key's slot, rotation across slots): KEYS[1] old key; ARGV[2] new meta length,
/// ARGV[3] size limit. Checks and deletes the old session in one step and returns its
/// attributes: {1, old user or false, name, value, …}, {-1} or {-4, size}. Deltas sent to the
/// old key after this step are refused as for any rotated-away key: none is lost.
const TAKE: &str = r#"
local old = KEYS[1]
local oldmeta = parse_meta(redis.call('HGET', old, META))
if not oldmeta then return { -1 } end
local size = tonumber(ARGV[2]) + 12 + attrs_size(old)
if size > tonumber(ARGV[3]) then return { -4, size } end
local out = { 1, oldmeta.user }
local all = redis.call('HGETALL', old)
for i = 1, #all, 2 do
  if not reserved(all[i]) then
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
redis.call('DEL', old)
return out
"#;

/// `destroy` (session slot): KEYS[1] session key; ARGV[2] how long (ms) to keep a tombstone
/// when there is no live session to end (0: none, see `ENTOMB`). Returns {1 or 0, user or
/// false}: 1 if a live, decodable session was destroyed. Its index entry is removed after.
const DESTROY_ARGS: &str = r#"
local TTL = tonumber(ARGV[2])
local function destroyed(user) end
"#;

/// The body of `destroy` and `one_destroy`: `TTL` and `destroyed(user)` (what else goes with a
/// live session) are defined before it.
const DESTROY: &str = r#"
local key = KEYS[1]
local meta = parse_meta(redis.call('HGET', key, META))
if meta then
  redis.call('DEL', key)
  destroyed(meta.user)
  return { 1, meta.user }
end
entomb(key, TTL)
return { 0, false }
"#;

/// The end of `destroy` when no live session was there: an undecodable hash is deleted; with
/// `ttl` > 0 (a copy discarded by a tiered store, `discard_copy`) a tombstone is left for
/// `ttl` ms (or kept, if one is there for longer), which `create` and `restore` refuse. A tier
/// writes its copy after the database took the session: a removal that finds no copy may
/// have overtaken that copy's write, which must not land afterwards.
const ENTOMB: &str = r#"
local function entomb(key, ttl)
  local keep = -1
  if redis.call('HEXISTS', key, TOMB) == 1 then keep = redis.call('PTTL', key) end
  redis.call('DEL', key)
  if ttl > 0 or keep > 0 then
    redis.call('HSET', key, TOMB, '1')
    redis.call('PEXPIRE', key, int(math.max(ttl, keep)))
  end
end
"#;

/// `revoke_mark` (user slot): KEYS[1] the user's index, KEYS[2] its revocation marker;
/// ARGV[2] now, ARGV[3] minimum marker lifetime in ms, ARGV[4] raw key to spare (or empty).
/// Raises the marker, then returns the indexed sessions but the spared one, as {raw, expiry
/// seconds, …}. From here on `index_add` refuses older creates; the ones indexed before are in
/// this list and are ended by `revoke_one`.
const REVOKE_MARK: &str = r#"
local rk = KEYS[2]
local at = math.max(tonumber(redis.call('GET', rk)) or 0, tonumber(ARGV[2]))
local keep = math.max(redis.call('PEXPIRETIME', rk), NOW + tonumber(ARGV[3]))
redis.call('SET', rk, int(at), 'PXAT', int(keep))
tidy(KEYS[1])
local out = {}
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #all, 2 do
  if all[i] ~= ARGV[4] then
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
"#;

/// `revoke_one` (session slot): KEYS[1] session key; ARGV[2] the index entry's expiry in
/// seconds, ARGV[3] the user. Deletes the session (returns 1 if it was live). If it does not exist yet — its
/// create passed `index_add` before the revoke-all and has not written the hash — leaves a
/// tombstone until the entry's expiry, which that create's session step refuses (-3).
const REVOKE_ONE: &str = r#"
local key = KEYS[1]
local v = redis.call('HMGET', key, META, TOMB)
if v[1] then
  local meta = parse_meta(v[1])
  -- An entry can name another user's session only after a key collision: never touch it.
  if meta and meta.user ~= ARGV[3] then return 0 end
  redis.call('DEL', key)
  return meta and 1 or 0
end
if not v[2] then
  local until_ms = score_ms(ARGV[2])
  if until_ms > NOW then
    redis.call('HSET', key, TOMB, '1')
    redis.call('PEXPIREAT', key, int(until_ms))
  end
end
return 0
"#;

/// `index_list` (user slot): KEYS[1] the user's index. Prunes expired entries, returns the
/// raw keys. Entries whose session is missing are skipped by the caller, not removed here:
/// the session may be a create between its two steps.
const INDEX_LIST: &str = r#"
tidy(KEYS[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;

/// `summary` (session slot): KEYS[1] session key. {meta, last_seen or '', expiry}, or false.
const SUMMARY: &str = r#"
local v = redis.call('HMGET', KEYS[1], META, SEEN)
if not v[1] then return false end
return { v[1], v[2] or '', redis.call('PEXPIRETIME', KEYS[1]) }
"#;

/// `discard` (session slot): KEYS[1] a hash under the prefix. Deletes it unless it is a
/// revoke-all's tombstone (which must keep refusing a create caught between its steps).
/// Returns 1 if deleted.
const DISCARD: &str = r#"
if redis.call('HEXISTS', KEYS[1], TOMB) == 1 then return 0 end
return redis.call('DEL', KEYS[1])
"#;

/// `tidy` (user slot): KEYS[1] a user's index. Returns how many expired entries were pruned.
const TIDY: &str = r#"
return tidy(KEYS[1])
"#;

/// Definitions of the one-server scripts (a single Redis or a Sentinel group's master: every
/// key on one server, so one script may touch a session and its user's index). They build the
/// names of keys they learn while running (a user's index, the sessions an index names) from
/// the key prefix, as `RedisStore`'s key-name methods do; a cluster would refuse that, and uses
/// the two-step scripts above instead.
const ONE_PRELUDE: &str = r#"
local function index_of(prefix, user) return prefix .. '{u:' .. user .. '}' end

-- Take `raw` out of the index of `user` (if any) and tidy that index.
local function unindex(prefix, user, raw)
  if not user then return end
  local ik = index_of(prefix, user)
  redis.call('ZREM', ik, raw)
  tidy(ik)
end

-- Append to `out` the live sessions the index `ik` names: raw key, fixed part, last_seen
-- ('' when not stored), expiry (PEXPIRETIME). False, and nothing appended, when the index holds
-- more entries than one script should walk while Redis waits (`LIST_MAX`): the caller lists in
-- steps instead.
local LIST_MAX = 256
local function listing(prefix, ik, out)
  tidy(ik)
  if redis.call('ZCARD', ik) > LIST_MAX then return false end
  for _, raw in ipairs(redis.call('ZRANGE', ik, 0, -1)) do
    local key = prefix .. raw
    local v = redis.call('HMGET', key, META, SEEN)
    if v[1] then
      out[#out + 1] = raw
      out[#out + 1] = v[1]
      out[#out + 1] = v[2] or ''
      out[#out + 1] = redis.call('PEXPIRETIME', key)
    end
  end
  return true
end
"#;

/// `create` and `restore` of a user's session on one server: the index entry and the session
/// in one step. KEYS[1] session key, KEYS[2] the fence, KEYS[3] the user's index, KEYS[4] its
/// revocation marker; ARGV[2] encoded meta, ARGV[3] last_seen, ARGV[4] raw session key,
/// ARGV[5] its index score, ARGV[6] the time a revocation must be older than (empty for a
/// restore: no check), ARGV[7..] attribute name/value pairs. Replies as `create` / `restore`.
const ONE_CREATE_ARGS: &str = "local A0 = 7\n";

/// A one-server create's revocation check (after the checks of `CREATE_HEAD`), as `index_add`
/// makes it.
const ONE_CREATE_REVOKED: &str = r#"
if ARGV[6] ~= '' then
  local r = tonumber(redis.call('GET', KEYS[4]))
  if r ~= nil and r >= tonumber(ARGV[6]) then return -3 end
end
"#;

/// The end of a one-server create: the index entry, once the session is written.
const ONE_CREATE_INDEX: &str = r#"
redis.call('ZADD', KEYS[3], 'GT', ARGV[5], ARGV[4])
tidy(KEYS[3])
"#;

/// `rotate` on one server, index entries included: KEYS[1] old key, KEYS[2] new key, KEYS[3]
/// the fence, and for a session of a user KEYS[4] the user's index, KEYS[5] its revocation
/// marker; ARGV[2] new encoded meta, ARGV[3] now, ARGV[4] size limit, ARGV[5] key prefix,
/// ARGV[6] old raw key, ARGV[7] new raw key, ARGV[8] the new entry's index score, ARGV[9] `1`
/// to list the user's sessions after the rotation. Returns {1, old user or false, listed (1 or
/// 0), raw, meta, last_seen, expiry, …} or the refusals of `rotate` (and {-3} when the user's
/// sessions were revoked at or after `now`, as `index_add` refuses).
const ONE_ROTATE_HEAD: &str = r#"
local ik = KEYS[4]
if ik then
  local r = tonumber(redis.call('GET', KEYS[5]))
  if r ~= nil and r >= tonumber(ARGV[3]) then return { -3 } end
end
"#;

/// The end of `one_rotate`, after `ROTATE_CORE`: the index entries, and the list.
const ONE_ROTATE_TAIL: &str = r#"
unindex(ARGV[5], oldmeta.user, ARGV[6])
if ik then
  redis.call('ZADD', ik, 'GT', ARGV[8], ARGV[7])
  tidy(ik)
end
local out = { 1, oldmeta.user, 0 }
if ik and ARGV[9] == '1' and listing(ARGV[5], ik, out) then out[3] = 1 end
return out
"#;

/// `destroy` on one server: KEYS[1] session key; ARGV[2] key prefix, ARGV[3] raw key, ARGV[4]
/// tombstone ms as for `destroy`. The session and its index entry in one step; replies as
/// `destroy`.
const ONE_DESTROY_ARGS: &str = r#"
local TTL = tonumber(ARGV[4])
local function destroyed(user) unindex(ARGV[2], user, ARGV[3]) end
"#;

/// `list_user` on one server: KEYS[1] the user's index; ARGV[2] key prefix. Returns {listed
/// (1 or 0), raw, meta, last_seen, expiry, …}; 0 when the index is too long for one step.
const ONE_LIST: &str = r#"
local out = { 0 }
if listing(ARGV[2], KEYS[1], out) then out[1] = 1 end
return out
"#;

/// The compiled scripts (SHA1 computed once per process).
pub(crate) struct Scripts {
    pub create: Script,
    pub restore: Script,
    pub index_add: Script,
    pub index_del: Script,
    pub apply: Script,
    pub touch: Script,
    pub rotate: Script,
    pub take: Script,
    pub destroy: Script,
    pub revoke_mark: Script,
    pub revoke_one: Script,
    pub index_list: Script,
    pub summary: Script,
    pub tidy: Script,
    pub discard: Script,
    pub one_create: Script,
    pub one_restore: Script,
    pub one_rotate: Script,
    pub one_destroy: Script,
    pub one_list: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{BASE}\n{PRELUDE}\n{body}"))
}

/// A one-server script: the shared definitions, the one-server ones, the body.
fn one_server(body: &str) -> Script {
    Script::new(&format!("{BASE}\n{PRELUDE}\n{ONE_PRELUDE}\n{body}"))
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    // create: refuses a collision (-2) or a revoke-all's tombstone (-3); else 1. The user's
    // revocation marker was checked by `index_add`, in the user's slot, just before.
    create: script(&[CREATE_ARGS, CREATE_HEAD, CREATE_TAIL, "return 1"].concat()),
    // restore: a record copied from another tier, already authoritative: refuses a collision
    // or a tombstone and writes nothing for an expired copy (0); else 1.
    restore: script(
        &[
            CREATE_ARGS,
            CREATE_HEAD,
            RESTORE_EXPIRY_CHECK,
            CREATE_TAIL,
            "return 1",
        ]
        .concat(),
    ),
    index_add: script(INDEX_ADD),
    index_del: script(INDEX_DEL),
    apply: Script::new(&format!("{BASE}\n{APPLY}")),
    touch: script(TOUCH),
    rotate: script(&[ROTATE_HEAD, ROTATE_CORE, "return { 1, oldmeta.user }"].concat()),
    take: script(TAKE),
    destroy: script(&[ENTOMB, DESTROY_ARGS, DESTROY].concat()),
    revoke_mark: script(REVOKE_MARK),
    revoke_one: script(REVOKE_ONE),
    index_list: script(INDEX_LIST),
    summary: script(SUMMARY),
    tidy: script(TIDY),
    discard: script(DISCARD),
    // The one-server forms (see `ONE_PRELUDE`).
    one_create: one_server(
        &[
            ONE_CREATE_ARGS,
            CREATE_HEAD,
            ONE_CREATE_REVOKED,
            CREATE_TAIL,
            ONE_CREATE_INDEX,
            "return 1",
        ]
        .concat(),
    ),
    one_restore: one_server(
        &[
            ONE_CREATE_ARGS,
            CREATE_HEAD,
            ONE_CREATE_REVOKED,
            RESTORE_EXPIRY_CHECK,
            CREATE_TAIL,
            ONE_CREATE_INDEX,
            "return 1",
        ]
        .concat(),
    ),
    one_rotate: one_server(&[ROTATE_HEAD, ONE_ROTATE_HEAD, ROTATE_CORE, ONE_ROTATE_TAIL].concat()),
    one_destroy: one_server(&[ENTOMB, ONE_DESTROY_ARGS, DESTROY].concat()),
    one_list: one_server(ONE_LIST),
});
