//! The Lua scripts: each runs atomically on the server, so a check and the
//! command it guards (room before `XADD`, `XACK` before `XDEL`, a delivery
//! count before a dead-letter move) can never be split by another client.
//!
//! Keys (one hash tag, so they share a cluster slot): the stream, the
//! closed flag, the dead-letter stream. A message is a stream entry with
//! one field, `d`, holding the payload; a dead letter has the fields `id`
//! (the message's id in the queue), `deliveries`, `reason` and `d`.

use redis::Script;

/// `put` and `put_many`: refuses when closed (-1) or when the stream has
/// no room for every payload given (0), else adds them all, in order (1).
/// All or nothing: the check and the adds are one atomic step. With a
/// third key, a counter, it also adds the number of payloads to the
/// counter in the same step and returns 1 + the counter's new value (a
/// pool's submissions, so that a server that lost them can be told).
/// KEYS: stream, closed[, counter]. ARGV: maxsize (0: unbounded), payloads.
const PUT: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local max = tonumber(ARGV[1])
if max > 0 and redis.call('XLEN', KEYS[1]) + #ARGV - 1 > max then return 0 end
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'd', ARGV[i])
end
if KEYS[3] then return 1 + redis.call('INCRBY', KEYS[3], #ARGV - 1) end
return 1
";

/// `get`, the non-blocking part: first a bounded step of the `XAUTOCLAIM`
/// scan for messages idle longer than the minimum (their consumer died or
/// stalls), moving those delivered `max_deliveries` times already to the
/// dead-letter stream; then new messages, up to the count asked in all;
/// then, if none, whether the queue is closed and drained.
/// KEYS: stream, closed, dead. ARGV: group, consumer, min idle (ms),
/// max deliveries, scan cursor, count.
/// Returns {kind, cursor[, {{id, deliveries, fields}, …}]}, kind one of
/// `some`, `closed`, `empty`.
const TAKE: &str = r"
local stream, group, me = KEYS[1], ARGV[1], ARGV[2]
local maxd = tonumber(ARGV[4])
local cursor = ARGV[5]
local want = tonumber(ARGV[6])
local out = {}
local function payload(fields)
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'd' then return fields[i + 1] end
  end
  return ''
end
for _ = 1, 8 do
  local r = redis.call('XAUTOCLAIM', stream, group, me, ARGV[3], cursor, 'COUNT', want - #out)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    if e and e[1] then
      local p = redis.call('XPENDING', stream, group, e[1], e[1], 1)
      local n = 1
      if p[1] then n = p[1][4] end
      if n > maxd then
        redis.call('XACK', stream, group, e[1])
        redis.call('XDEL', stream, e[1])
        redis.call('XADD', KEYS[3], '*', 'id', e[1], 'deliveries', n - 1,
          'reason', 'deliveries', 'd', payload(e[2]))
      else
        out[#out + 1] = {e[1], n, e[2]}
      end
    end
  end
  if cursor == '0-0' or #out >= want then break end
end
if #out < want then
  local r = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', want - #out,
    'STREAMS', stream, '>')
  if r then
    for _, e in ipairs(r[1][2]) do out[#out + 1] = {e[1], 1, e[2]} end
  end
end
if #out > 0 then return {'some', cursor, out} end
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('XLEN', stream) == 0 then
  return {'closed', cursor}
end
return {'empty', cursor}
";

/// Acknowledges and deletes messages; returns how many it acknowledged
/// (one already acknowledged counts 0). KEYS: stream. ARGV: group, ids.
/// Every script that acknowledges also deletes in the same atomic step,
/// so a message no longer pending is deleted already and `XDEL` of every
/// id given is right; ids go 1000 at a time (Lua's `unpack` limit).
pub(crate) const ACK: &str = r"
local done = 0
for i = 2, #ARGV, 1000 do
  local j = math.min(i + 999, #ARGV)
  done = done + redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, j))
  redis.call('XDEL', KEYS[1], unpack(ARGV, i, j))
end
return done
";

/// Gives messages this consumer read ahead and never handed out back to
/// the group: each becomes idle for the minimum idle time (so any
/// consumer's next `XAUTOCLAIM` step takes it over at once) with its
/// delivery count set back by the delivery that never reached a caller.
/// `JUSTID` keeps `XCLAIM` itself from counting a delivery. A message
/// another consumer took over meanwhile is left to it, count and all:
/// claiming it back would let a message that kills its consumers be
/// delivered more than `max_deliveries` times (the pool's model shows
/// it). KEYS: stream. ARGV: group, consumer, min idle (ms), then pairs of
/// id and delivery count.
const RELEASE: &str = r"
for i = 4, #ARGV - 1, 2 do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    local n = tonumber(ARGV[i + 1]) - 1
    if n < 0 then n = 0 end
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i],
      'IDLE', ARGV[3], 'RETRYCOUNT', n, 'JUSTID')
  end
end
return 1
";

/// Moves one pending message to the dead-letter stream (unless somebody
/// acknowledged it meanwhile); returns 1 if it moved it.
/// KEYS: stream, dead. ARGV: group, id, deliveries, reason.
const DEAD: &str = r"
local n = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if n == 1 then
  local d = ''
  local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
  if e[1] then
    local f = e[1][2]
    for i = 1, #f - 1, 2 do
      if f[i] == 'd' then d = f[i + 1] end
    end
  end
  redis.call('XDEL', KEYS[1], ARGV[2])
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'deliveries', ARGV[3],
    'reason', ARGV[4], 'd', d)
end
return n
";

/// Removes and returns the oldest dead letter (nil if none). KEYS: dead.
const TAKE_DEAD: &str = r"
local r = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #r == 0 then return false end
redis.call('XDEL', KEYS[1], r[1][1])
return r[1]
";

/// Resets the idle time of messages this consumer holds, so that a
/// consumer busy with them is not taken for dead; a message another
/// consumer has taken over meanwhile is left to it. `JUSTID` keeps the
/// delivery count as it is. KEYS: stream. ARGV: group, consumer, ids.
const TOUCH: &str = r"
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
";

/// Deletes a consumer from the group if it holds no pending message.
/// KEYS: stream. ARGV: group, consumer.
const FORGET: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
";

/// The scripts, hashed once per queue.
pub(crate) struct Scripts {
    pub(crate) put: Script,
    pub(crate) take: Script,
    pub(crate) ack: Script,
    pub(crate) release: Script,
    pub(crate) dead: Script,
    pub(crate) take_dead: Script,
    pub(crate) forget: Script,
    pub(crate) touch: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            put: Script::new(PUT),
            take: Script::new(TAKE),
            ack: Script::new(ACK),
            release: Script::new(RELEASE),
            dead: Script::new(DEAD),
            take_dead: Script::new(TAKE_DEAD),
            forget: Script::new(FORGET),
            touch: Script::new(TOUCH),
        }
    }
}
