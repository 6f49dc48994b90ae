//! The Lua scripts behind every conditional write.
//!
//! Each script runs atomically on the server (Redis executes one script at a time), so each
//! store operation is one indivisible step for every client, on every application instance.
//! They are sent once with `SCRIPT LOAD` and then called by SHA1 (`EVALSHA`); `redis::Script`
//! reloads them transparently after a Redis restart (`NOSCRIPT`).
//!
//! Conventions shared by all scripts:
//!
//! - `KEYS` holds the session key(s) the operation is about; `ARGV[1]` is always
//!   `<write epoch>|<key prefix>`: the epoch fences off late writes (scripts that add or change
//!   a copy refuse an old one with `{-5, current epoch}`), and the prefix is what the index keys
//!   are derived from (`<prefix>live`, `<prefix>users`, `<prefix>u:<user>`,
//!   `<prefix>r:<user>`). Standalone Redis accepts keys computed inside a script; Redis Cluster
//!   would not (see `docs/redis.md`).
//! - Times that come from the application (`created_at`, `last_seen`, `now`) are arguments;
//!   index pruning uses the server's clock (`TIME`), the same clock that expires the keys, so an
//!   index entry is dropped exactly when the key it names has expired.
//! - Scores and expiries are integer milliseconds since the epoch. Lua numbers are doubles,
//!   exact for every integer below 2^53 (year 287,396), and are written back with `%.0f`.
//! - Scripts parse the stored fixed part (`codec::encode_meta` format 1) themselves to learn
//!   the user, idle timeout and absolute deadline: the stored copy is authoritative, and no
//!   second field has to be kept in the hash for it.

use std::sync::LazyLock;

use redis::Script;

/// Definitions every script starts with.
const PRELUDE: &str = r#"
local EPOCH, P = string.match(ARGV[1], '^(%d*)|(.*)$')
local LIVE = P .. 'live'
local USERS = P .. 'users'
local META = '\255'
local SEEN = '\254'
local SIZE = '\253'
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function int(x) return string.format('%.0f', x) end
local function before_now() return '(' .. int(NOW) end
local function uidx(user) return P .. 'u:' .. user end

-- The fixed part as codec::encode_meta writes it (format 1), or nil if it does not parse:
-- format, flags, varints version, created, idle, absolute offset, 16 csrf, [8 fp],
-- [varint length, user]. The header (at most 76 bytes) is read with one string.byte call.
local function parse_meta(m)
  if type(m) ~= 'string' or #m < 2 then return nil end
  local b = { string.byte(m, 1, 90) }
  if b[1] ~= 1 or b[2] > 3 then return nil end
  local flags, pos, f = b[2], 3, {}
  for i = 1, 5 do
    if i == 5 then
      pos = pos + 16
      if flags >= 2 then pos = pos + 8 end
      if flags % 2 == 0 then break end
    end
    local v, mul = 0, 1
    repeat
      local x = b[pos]
      if not x or mul > 2^63 then return nil end
      pos = pos + 1
      v = v + (x % 128) * mul
      mul = mul * 128
    until x < 128
    f[i] = v
  end
  local user = false
  if flags % 2 == 1 then
    user = m:sub(pos, pos + f[5] - 1)
    if #user ~= f[5] then return nil end
    pos = pos + f[5]
  end
  if pos - 1 ~= #m then return nil end
  return { user = user, created = f[2], idle = f[3], abs = f[2] + f[4] }
end

-- Whether a hash field is reserved for the store: one byte that is not valid UTF-8 on its own.
-- Attribute names are UTF-8, so they never collide with these.
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

-- Make `key` live at least until `exp` (a key without a TTL gets one; a missing key stays so).
local function extend(key, exp)
  if redis.call('PEXPIREAT', key, int(exp), 'GT') == 0 and redis.call('PTTL', key) == -1 then
    redis.call('PEXPIREAT', key, int(exp))
  end
end

-- The global index of live sessions (for count): a 12-byte prefix of the session key,
-- scored by its expiry. 96 bits never collide among live sessions in practice. It lives as
-- long as its latest session, and an empty sorted set is deleted by Redis itself.
local function live_set(raw, exp)
  redis.call('ZADD', LIVE, int(exp), raw:sub(1, 12))
  extend(LIVE, exp)
end
local function live_del(raw) redis.call('ZREM', LIVE, raw:sub(1, 12)) end
local function live_prune() return redis.call('ZREMRANGEBYSCORE', LIVE, '-inf', before_now()) end

-- File session `raw` (expiring at `exp`) in its user's index, prune the index, let it live as
-- long as its latest entry, and keep the user in the registry of indexes no later than `exp`.
-- The registry score of a user is never later than the earliest expiry in the user's index,
-- so reap visits every index that has something to prune (and sometimes one that has not).
local function index_set(user, raw, exp)
  local ik = uidx(user)
  redis.call('ZADD', ik, int(exp), raw)
  redis.call('ZREMRANGEBYSCORE', ik, '-inf', before_now())
  extend(ik, exp)
  redis.call('ZADD', USERS, 'LT', int(exp), user)
  extend(USERS, exp)
end

-- After entries left a user's index: drop its expired entries, let the index expire with its
-- last member, and file the user in the registry under its earliest expiry, or take it out
-- when the index is empty. Returns how many entries were pruned.
local function tidy(user)
  local ik = uidx(user)
  local n = redis.call('ZREMRANGEBYSCORE', ik, '-inf', before_now())
  local lo = redis.call('ZRANGE', ik, 0, 0, 'WITHSCORES')
  if #lo == 0 then
    redis.call('ZREM', USERS, user)
    return n
  end
  local hi = redis.call('ZRANGE', ik, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', ik, hi[2])
  redis.call('ZADD', USERS, lo[2], user)
  extend(USERS, tonumber(hi[2]))
  return n
end

-- Prune the indexes of up to `limit` users whose earliest entry has expired. Returns the
-- number of entries removed and the number of users visited.
local function reap_users(limit)
  local n = 0
  local due = redis.call('ZRANGEBYSCORE', USERS, '-inf', before_now(), 'LIMIT', 0, limit)
  for _, user in ipairs(due) do n = n + tidy(user) end
  return n, #due
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

-- Writes that add or change a copy carry the write epoch their sender knew. A recovery from an
-- outage starts a new epoch (`<prefix>fence`) before it deletes what the outage left stale, so
-- a write sent before it that arrives late is refused here instead of bringing a copy back.
-- A live sender is told the current epoch and sends again.
local function stale_epoch()
  local e = redis.call('GET', P .. 'fence')
  if e and e ~= EPOCH then return { -5, tonumber(e) } end
  return nil
end

-- Whether the user's sessions were revoked at or after `at`.
local function revoked(user, at)
  local r = tonumber(redis.call('GET', P .. 'r:' .. user))
  return r ~= nil and r >= at
end
"#;

/// The start of `create` and `restore`: KEYS[1] session key; ARGV[2] encoded meta, ARGV[3]
/// last_seen, ARGV[4..] attribute name/value pairs. Refuses an existing key with -2.
const CREATE_HEAD: &str = r#"
local stale = stale_epoch()
if stale then return stale end
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then return -2 end
local meta = parse_meta(ARGV[2])
if not meta then return redis.error_reply('ERR ratatoskr: the fixed part does not parse') end
"#;

/// `create` refuses a session of a user revoked at or after its creation (-3).
const CREATE_REVOCATION_CHECK: &str = r#"
if meta.user and revoked(meta.user, meta.created) then return -3 end
"#;

/// `restore` writes nothing (0) for a copy already past its deadline by the server's clock: it
/// would expire at once, and "written" would be untrue.
const RESTORE_EXPIRY_CHECK: &str = r#"
if math.min(tonumber(ARGV[3]) + meta.idle, meta.abs) <= NOW then return 0 end
"#;

/// The rest of `create` and `restore`: write the hash, its expiry and the index entries exactly
/// as `create` does. Returns 1.
const CREATE_TAIL: &str = r#"
local size = 0
for i = 4, #ARGV, 2 do size = size + #ARGV[i] + #ARGV[i + 1] + 4 end
local fields = { META, ARGV[2], SIZE, int(size) }
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
batched('HSET', key, fields, 200)
local exp = set_expiry(key, meta, tonumber(ARGV[3]), false)
local raw = key:sub(#P + 1)
live_prune()
live_set(raw, exp)
if meta.user then index_set(meta.user, raw, exp) end
reap_users(2)
return 1
"#;

/// `apply`: KEYS[1] session key; ARGV[2] size limit, ARGV[3] number of removals, then the
/// removed names, then set name/value pairs. Returns {1}, {-1} (not found) or {-4, size}.
/// The work is proportional to the attributes the delta names, not to the record: the size
/// check uses the running size in the SIZE field, adjusted by the changed attributes' old and
/// new lengths.
const APPLY: &str = r#"
local key = KEYS[1]
local v = redis.call('HMGET', key, META, SIZE)
local m = v[1]
-- Present, and a fixed part of a format this script knows (its first byte): no more parsing,
-- the client holds the session it writes to.
if not m or string.byte(m, 1) ~= 1 then return { -1 } end
local nrem = tonumber(ARGV[3])
-- The final change per name: false when removed, the new value's length when set.
local change = {}
for i = 4, 3 + nrem do change[ARGV[i]] = false end
for i = 4 + nrem, #ARGV, 2 do change[ARGV[i]] = #ARGV[i + 1] end
local size = tonumber(v[2]) or attrs_size(key)
for f, len in pairs(change) do
  local old = redis.call('HSTRLEN', key, f)
  if old > 0 or redis.call('HEXISTS', key, f) == 1 then size = size - (#f + old + 4) end
  if len then size = size + #f + len + 4 end
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
return { 1 }
"#;

/// `touch`: KEYS[1] session key; ARGV[2] last_seen. Returns 1 if the session exists, else 0.
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
local exp = set_expiry(key, meta, math.max(cur, tonumber(ARGV[2])), v[2])
local raw = key:sub(#P + 1)
-- The session exists (checked above, atomically), so re-adding index entries that were
-- missing can only repair the indexes, never resurrect a session.
live_set(raw, exp)
if meta.user then index_set(meta.user, raw, exp) end
return 1
"#;

/// `rotate`: KEYS[1] old key, KEYS[2] new key; ARGV[2] new encoded meta, ARGV[3] now,
/// ARGV[4] size limit. Returns {1}, {-1} (old missing), {-2} (new exists), {-3} (revoked) or
/// {-4, size}.
const ROTATE: &str = r#"
local stale = stale_epoch()
if stale then return stale end
local old, new = KEYS[1], KEYS[2]
local oldmeta = parse_meta(redis.call('HGET', old, META))
if not oldmeta then return { -1 } end
if redis.call('EXISTS', new) == 1 then return { -2 } end
local meta = parse_meta(ARGV[2])
if not meta then return redis.error_reply('ERR ratatoskr: the fixed part does not parse') end
local now = tonumber(ARGV[3])
if meta.user and revoked(meta.user, now) then return { -3 } end
local size = #ARGV[2] + 12 + attrs_size(old)
if size > tonumber(ARGV[4]) then return { -4, size } end
-- One atomic step: the attributes move with the key, the old key is gone.
redis.call('RENAME', old, new)
redis.call('HSET', new, META, ARGV[2])
local exp = set_expiry(new, meta, now, true)
local oldraw, newraw = old:sub(#P + 1), new:sub(#P + 1)
live_del(oldraw)
live_prune()
live_set(newraw, exp)
if oldmeta.user then
  redis.call('ZREM', uidx(oldmeta.user), oldraw)
  tidy(oldmeta.user)
end
if meta.user then index_set(meta.user, newraw, exp) end
reap_users(2)
return { 1 }
"#;

/// `destroy`: KEYS[1] session key. Returns 1 if a live, decodable session was destroyed.
const DESTROY: &str = r#"
local key = KEYS[1]
local meta = parse_meta(redis.call('HGET', key, META))
if redis.call('DEL', key) == 0 then return 0 end
local raw = key:sub(#P + 1)
live_del(raw)
if meta and meta.user then
  redis.call('ZREM', uidx(meta.user), raw)
  tidy(meta.user)
end
return meta and 1 or 0
"#;

/// `destroy_user`: ARGV[2] user id, ARGV[3] now, ARGV[4] raw key to spare (or empty),
/// ARGV[5] minimum lifetime of the revocation marker in ms. Returns how many live sessions
/// were destroyed.
const DESTROY_USER: &str = r#"
local user = ARGV[2]
local rk = P .. 'r:' .. user
local at = math.max(tonumber(redis.call('GET', rk)) or 0, tonumber(ARGV[3]))
local keep = math.max(redis.call('PEXPIRETIME', rk), NOW + tonumber(ARGV[5]))
redis.call('SET', rk, int(at), 'PXAT', int(keep))
local ik = uidx(user)
local n = 0
local gone = {}
for _, raw in ipairs(redis.call('ZRANGE', ik, 0, -1)) do
  if raw ~= ARGV[4] then
    n = n + redis.call('DEL', P .. raw)
    live_del(raw)
    gone[#gone + 1] = raw
  end
end
batched('ZREM', ik, gone, 200)
tidy(user)
return n
"#;

/// `list_user`: ARGV[2] user id. Returns {raw key, meta, last_seen or '', expiry} per
/// indexed session that still exists; drops index entries whose session is gone.
const LIST_USER: &str = r#"
local user = ARGV[2]
local ik = uidx(user)
redis.call('ZREMRANGEBYSCORE', ik, '-inf', before_now())
local out = {}
local gone = {}
for _, raw in ipairs(redis.call('ZRANGE', ik, 0, -1)) do
  local key = P .. raw
  local v = redis.call('HMGET', key, META, SEEN)
  if v[1] then
    out[#out + 1] = { raw, v[1], v[2] or '', redis.call('PEXPIRETIME', key) }
  else
    gone[#gone + 1] = raw
  end
end
batched('ZREM', ik, gone, 200)
tidy(user)
return out
"#;

/// `count`: the number of live sessions.
const COUNT: &str = r#"
live_prune()
return redis.call('ZCARD', LIVE)
"#;

/// `reap`: ARGV[2] how many users to visit at most. Returns {entries removed, users visited}.
const REAP: &str = r#"
local n = live_prune()
local m, users = reap_users(tonumber(ARGV[2]))
return { n + m, users }
"#;

/// The compiled scripts (SHA1 computed once per process).
pub(crate) struct Scripts {
    pub create: Script,
    pub restore: Script,
    pub apply: Script,
    pub touch: Script,
    pub rotate: Script,
    pub destroy: Script,
    pub destroy_user: Script,
    pub list_user: Script,
    pub count: Script,
    pub reap: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    // create: refuses a collision (-2) or a revoked user (-3); else 1.
    create: script(&[CREATE_HEAD, CREATE_REVOCATION_CHECK, CREATE_TAIL].concat()),
    // restore: a record copied from another tier, already authoritative: refuses a collision
    // (-2) and writes nothing for an expired copy (0), never checks the revocation marker;
    // else 1.
    restore: script(&[CREATE_HEAD, RESTORE_EXPIRY_CHECK, CREATE_TAIL].concat()),
    apply: script(APPLY),
    touch: script(TOUCH),
    rotate: script(ROTATE),
    destroy: script(DESTROY),
    destroy_user: script(DESTROY_USER),
    list_user: script(LIST_USER),
    count: script(COUNT),
    reap: script(REAP),
});
