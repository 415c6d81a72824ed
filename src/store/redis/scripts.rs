//! The Lua scripts that make each multi-step change atomic on the Redis server.
//!
//! Cluster rule: every key a script touches is in one slot. Session scripts touch only the
//! session's own hash (`…s:{id}`); index scripts only their index; lock scripts only keys
//! tagged `{locks}` (lock records, per-code holdings, the lock expiry set), which therefore all
//! live in one slot. Holdings keys of an *earlier* lock being replaced or released are built
//! inside the script from `hold_prefix` (same tag, so same slot) because the caller cannot
//! know them before the script has read the earlier lock.
//!
//! Times are milliseconds since the epoch chosen by the caller (`now`), the same clock the
//! memory store uses. Lua numbers are doubles: millisecond timestamps are exact, and are
//! written back with `%d` (never `tostring`, which would print `1.8e+12`).
//! Session hashes use the field names of `codec.rs`: `ea` expires_at, `la` last_access,
//! `im` idle ms (0 = fixed lifetime), `ad` absolute deadline, `lk` lock JSON.

use once_cell::sync::Lazy;
use redis::Script;

/// Records a use: `la = now`, `ea = min(now + im, ad)`, PEXPIREAT `ea` (only when `im > 0`).
/// KEYS: session. ARGV: now. Returns the session's fields, or nil when it is not live.
pub static TOUCH: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'ea', 'im', 'ad')
if not f[1] or tonumber(f[1]) <= now then return false end
local im = tonumber(f[2])
if im > 0 then
  local ea = string.format('%d', math.min(now + im, tonumber(f[3])))
  redis.call('HSET', KEYS[1], 'la', ARGV[1], 'ea', ea)
  redis.call('PEXPIREAT', KEYS[1], ea)
end
return redis.call('HGETALL', KEYS[1])
"#,
    )
});

/// Writes a new session unless a live one has its id.
/// A dead session's hash is deleted first; with no `ea` there is no hash to delete (every
/// script that writes a session hash writes `ea`, and an expired hash is gone from Redis), so
/// the usual create (a fresh id) skips the `DEL`: `CREATE_INDEXED` measured 10.3 -> 9.8 us per
/// call in redis-server (redis-benchmark EVALSHA, 50 clients, 4 runs each).
/// KEYS: session. ARGV: now, expires_at, field, value, …  Returns 1 created, 0 id taken.
pub static CREATE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r#"
local ea = redis.call('HGET', KEYS[1], 'ea')
if ea then
  if tonumber(ea) > tonumber(ARGV[1]) then return 0 end
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"#,
    )
});

/// `CREATE` with the session's index entries, where every key lives on one server
/// (standalone and Sentinel; Cluster spreads the keys over slots, see `Inner::create`): one
/// command per create, and the session and its entries are written together or not at all,
/// whether or not anyone still waits for the answer. The application check is
/// `APP_RESERVE`'s, done first as there. Entries are plain `ZADD`s: once the id is known to
/// be free, an entry already there can only be a dead session's.
/// KEYS: session, then one index key per letter of `kinds`. ARGV: now, expires_at, absolute
/// deadline, id, kinds (`x` expiry, `c` customer, `a` application), expiry member,
/// application limit (-1 = none), then field, value, …
/// Returns 1 created, 0 id taken, 2 application full (both: nothing but expired application
/// entries changed).
pub static CREATE_INDEXED: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r#"
local kinds = ARGV[5]
for i = 1, #kinds do
  if string.byte(kinds, i) == 97 then
    local k = KEYS[i + 1]
    redis.call('ZREMRANGEBYSCORE', k, '-inf', ARGV[1])
    if not redis.call('ZSCORE', k, ARGV[4]) then
      local limit = tonumber(ARGV[7])
      if limit >= 0 and redis.call('ZCARD', k) >= limit then return 2 end
    end
  end
end
local ea = redis.call('HGET', KEYS[1], 'ea')
if ea then
  if tonumber(ea) > tonumber(ARGV[1]) then return 0 end
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
for i = 1, #kinds do
  if string.byte(kinds, i) == 120 then
    redis.call('ZADD', KEYS[i + 1], ARGV[2], ARGV[6])
  else
    redis.call('ZADD', KEYS[i + 1], ARGV[3], ARGV[4])
  end
end
return 1
"#,
    )
});

/// Applies a patch to a live session and records a use, then announces the change.
/// KEYS: session. ARGV: now, channel, message, n (count of set args), field, value, … (n
/// args), then fields to delete. Returns {before, after} field lists, or nil when not live.
pub static UPDATE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
local ea = redis.call('HGET', KEYS[1], 'ea')
if not ea or tonumber(ea) <= now then return false end
local before = redis.call('HGETALL', KEYS[1])
local n = tonumber(ARGV[4])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 5, 4 + n)) end
if #ARGV > 4 + n then redis.call('HDEL', KEYS[1], unpack(ARGV, 5 + n)) end
local f = redis.call('HMGET', KEYS[1], 'im', 'ad')
local im = tonumber(f[1])
if im > 0 then
  local nea = string.format('%d', math.min(now + im, tonumber(f[2])))
  redis.call('HSET', KEYS[1], 'la', ARGV[1], 'ea', nea)
  redis.call('PEXPIREAT', KEYS[1], nea)
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {before, redis.call('HGETALL', KEYS[1])}
"#,
    )
});

/// Ends a live session. When alias arguments follow, the key is replaced by that alias (a
/// transferred key in its grace period) expiring at the alias's `expires_at`.
/// KEYS: session. ARGV: now, channel, message, [alias expires_at, field, value, …].
/// Returns the ended session's fields, or nil when it was not live (nothing changes). With an
/// alias (a transfer or rotation), a key that is itself a grace alias (`mv`) is not live
/// either: of two replicas moving one id concurrently, exactly one wins.
pub static REMOVE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r#"
local ea = redis.call('HGET', KEYS[1], 'ea')
if not ea or tonumber(ea) <= tonumber(ARGV[1]) then return false end
if #ARGV > 4 and redis.call('HEXISTS', KEYS[1], 'mv') == 1 then return false end
local s = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
if #ARGV > 4 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 5))
  redis.call('PEXPIREAT', KEYS[1], ARGV[4])
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return s
"#,
    )
});

/// Adds `id` to an application index unless the application has `limit` live members
/// (members whose score, the absolute deadline, passed are pruned first).
/// KEYS: app index. ARGV: now, id, score, limit (-1 = none).
/// Returns 1 added, 2 already a member, 0 full.
pub static APP_RESERVE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 2 end
local limit = tonumber(ARGV[4])
if limit >= 0 and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
return 1
"#,
    )
});

/// Removes a member only if its score is still the one the caller saw, so a newer entry
/// for the same id (a re-created session) survives. KEYS: index. ARGV: member, score.
pub static ZREM_IF_SCORE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r#"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"#,
    )
});

/// Prunes members whose score passed and returns every remaining one with its score.
/// KEYS: index. ARGV: now.
pub static INDEX_MEMBERS: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
"#,
    )
});

/// Takes up to ARGV[2] members whose score is at most ARGV[1] out of a sorted set and
/// returns them with their scores. Concurrent sweepers get disjoint sets, so each expiry is
/// counted by exactly one replica. KEYS: expiry index.
pub static SWEEP: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r#"
local m = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #m, 2 do redis.call('ZREM', KEYS[1], m[i]) end
return m
"#,
    )
});

/// Sums what live holders other than `id` hold of one code, pruning expired holdings.
/// Shared by the lock scripts (prepended to them). Holdings are `"q c p ea"` strings.
const SUM_OTHERS: &str = r#"
local function sum_others(hk, id, now, prune)
  local q, c, p = 0, 0, 0
  local entries = redis.call('HGETALL', hk)
  for j = 1, #entries, 2 do
    local hq, hc, hp, hea = string.match(entries[j + 1], '^(%-?%d+) (%-?%d+) (%-?%d+) (%d+)$')
    if not hea or tonumber(hea) <= now then
      if prune then redis.call('HDEL', hk, entries[j]) end
    elseif entries[j] ~= id then
      q = q + tonumber(hq); c = c + tonumber(hc); p = p + tonumber(hp)
    end
  end
  return {q, c, p}
end
local function forget_holdings(prefix, id, lk)
  if not lk then return end
  local ok, lock = pcall(cjson.decode, lk)
  if not ok or type(lock) ~= 'table' or type(lock.holds) ~= 'table' then return end
  for _, h in ipairs(lock.holds) do
    if type(h) == 'table' and type(h.code) == 'string' then redis.call('HDEL', prefix .. h.code, id) end
  end
end
"#;

/// Acquires (or overwrites) a lock, all-or-nothing: refuses if any code would exceed its
/// limit counting every other live holder; otherwise forgets the earlier lock under this key,
/// records the new holdings and writes the lock record.
/// KEYS: lock record, lock expiry set, holdings key of each hold (same order as the holds).
/// ARGV: now, id, channel, message, hold_prefix, hold count n, then per hold: code, quantity,
/// credits, points, limit (-1 = none); then expires_at, then the record's field, value, …
/// Returns {1, earlier record fields (empty if none), {{q, c, p} per hold}} or {0, code}.
pub static ACQUIRE_LOCK: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        "{SUM_OTHERS}{}",
        r#"
local now = tonumber(ARGV[1])
local id = ARGV[2]
local n = tonumber(ARGV[6])
local asked = {}
for i = 0, n - 1 do
  local code = ARGV[7 + i * 5]
  asked[code] = (asked[code] or 0) + tonumber(ARGV[8 + i * 5])
end
local others = {}
for i = 0, n - 1 do
  local b = 7 + i * 5
  local t = sum_others(KEYS[3 + i], id, now, true)
  local limit = tonumber(ARGV[b + 4])
  if limit >= 0 and t[1] + asked[ARGV[b]] > limit then return {0, ARGV[b]} end
  others[#others + 1] = t
end
local old = {}
local oea = redis.call('HGET', KEYS[1], 'ea')
if oea and tonumber(oea) > now then
  old = redis.call('HGETALL', KEYS[1])
  forget_holdings(ARGV[5], id, redis.call('HGET', KEYS[1], 'lk'))
end
local ea = ARGV[7 + n * 5]
local held = {}
for i = 0, n - 1 do
  local b = 7 + i * 5
  local code = ARGV[b]
  local t = held[code] or {0, 0, 0, i}
  t[1] = t[1] + tonumber(ARGV[b + 1]); t[2] = t[2] + tonumber(ARGV[b + 2]); t[3] = t[3] + tonumber(ARGV[b + 3])
  held[code] = t
end
for code, t in pairs(held) do
  redis.call('HSET', KEYS[3 + t[4]], id, string.format('%d %d %d %s', t[1], t[2], t[3], ea))
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 8 + n * 5))
redis.call('PEXPIREAT', KEYS[1], ea)
redis.call('ZADD', KEYS[2], ea, id)
if #old > 0 then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return {1, old, others}
"#
    ))
});

/// Ends a live lock and releases its holdings.
/// KEYS: lock record, lock expiry set. ARGV: now, id, channel, message, hold_prefix.
/// Returns the lock's fields, or nil when it was not live.
pub static REMOVE_LOCK: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        "{SUM_OTHERS}{}",
        r#"
local ea = redis.call('HGET', KEYS[1], 'ea')
if not ea or tonumber(ea) <= tonumber(ARGV[1]) then return false end
local s = redis.call('HGETALL', KEYS[1])
forget_holdings(ARGV[5], ARGV[2], redis.call('HGET', KEYS[1], 'lk'))
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return s
"#
    ))
});

/// What live locks other than `id` hold of each code. KEYS: holdings keys. ARGV: now, id.
/// Returns {{q, c, p} per key}.
pub static LOCKED_BY_OTHERS: Lazy<Script> = Lazy::new(|| {
    Script::new(&format!(
        "{SUM_OTHERS}{}",
        r#"
local out = {}
for i = 1, #KEYS do out[i] = sum_others(KEYS[i], ARGV[2], tonumber(ARGV[1]), false) end
return out
"#
    ))
});

/// The start-up permission probe: every command the scripts use, once, on two throwaway keys
/// of one slot, so an ACL user lacking one is refused at start with Redis's own NOPERM
/// message (which names the command) rather than on the first request that needs it.
/// KEYS: a hash and a sorted set (same slot). ARGV: a deadline (ms), the invalidation channel.
pub static PROBE: Lazy<Script> = Lazy::new(|| {
    Script::new(
        r#"
redis.call('HSET', KEYS[1], 'p', '1', 'q', '2')
redis.call('HGET', KEYS[1], 'p')
redis.call('HMGET', KEYS[1], 'p', 'q')
redis.call('HEXISTS', KEYS[1], 'p')
redis.call('HDEL', KEYS[1], 'q')
redis.call('HGETALL', KEYS[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 1, 'm')
redis.call('ZSCORE', KEYS[2], 'm')
redis.call('ZCARD', KEYS[2])
redis.call('ZRANGE', KEYS[2], 0, -1)
redis.call('ZRANGEBYSCORE', KEYS[2], 0, '+inf')
redis.call('ZREMRANGEBYSCORE', KEYS[2], 0, 0)
redis.call('ZREM', KEYS[2], 'm')
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[2], '')
return 1
"#,
    )
});
