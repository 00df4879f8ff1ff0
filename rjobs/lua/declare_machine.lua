-- declare_machine.lua — store the queue's state machine, or check it matches the stored one.
-- Called by: Queue.declare() (rjobs/scripts.py: Scripts.declare_machine)
-- KEYS[1]  machine  hash   rjobs:{Q}:machine — next:<state>, role:<role>, opt:<option>, fingerprint,
--          compiled:head and compiled:edges (what the other scripts read, see lib/core.lua)
-- KEYS[2]  events   stream rjobs:{Q}:events (only checked for the prefix)
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  fingerprint  canonical JSON of the machine
-- ARGV[3]  nfields  number of machine field/value pairs that follow
-- ARGV[4]  write_options  1 = store the option pairs; 0 = keep the stored ones (a queue that
--          exists keeps its retention etc. unless a client passes a config explicitly)
-- ARGV[5]  compiled roles and leased chain "<9 role states>|<leased chain>" (rjobs.scripts)
-- ARGV[6]  compiled states and edges "|#<state>|<from>><to>|...|" (rjobs.scripts)
-- ARGV[7..] machine pairs, then option pairs (opt:<name>, integer) to the end
-- Returns  {"created" | "same" | "updated", opt name, value, ...} — the options now stored.
--          Every call (also "same") writes compiled:head (ARGV[5] and the options now stored)
--          and compiled:edges (ARGV[6]) where they differ, so connecting recompiles a queue
--          declared by another rjobs version.
-- Errors   RJ_INVALID (bad arguments), RJ_MACHINE_CONFLICT <stored machine name>
local machine_key, events_key = KEYS[1], KEYS[2]
local prefix, fingerprint, nfields, write_options = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local roles, edges = ARGV[5], ARGV[6]
if machine_key ~= prefix .. 'machine' or events_key ~= prefix .. 'events' then
  return redis.error_reply('RJ_INVALID keys do not match the queue prefix')
end
if not nfields or nfields < 1 or #ARGV < 6 + 2 * nfields or (#ARGV - 6) % 2 ~= 0 then
  return redis.error_reply('RJ_INVALID malformed machine fields')
end
if write_options ~= '0' and write_options ~= '1' then return redis.error_reply('RJ_INVALID write_options') end
if not string.match(roles, '^[%w_]*' .. string.rep(',[%w_]*', 8) .. '|[%w_,]+$') or
  not string.match(edges, '^|#[%w_|#>]*|$') then
  return redis.error_reply('RJ_INVALID compiled machine')
end
for i = 7 + 2 * nfields, #ARGV, 2 do
  if string.sub(ARGV[i], 1, 4) ~= 'opt:' or not tonumber(ARGV[i + 1]) then
    return redis.error_reply('RJ_INVALID option ' .. ARGV[i] .. ' must be opt:<name> with an integer')
  end
end
local stored = redis.call('HGET', machine_key, 'fingerprint')
if stored and stored ~= fingerprint then
  local name = redis.call('HGET', machine_key, 'name') or '?'
  return redis.error_reply('RJ_MACHINE_CONFLICT queue already uses machine ' .. name ..
    ' with a different table; use a new queue name or delete ' .. machine_key)
end
local status = 'created'
if stored then status = write_options == '1' and 'updated' or 'same' end
if status ~= 'same' then
  local pairs_ = {'fingerprint', fingerprint}
  for i = 7, #ARGV do pairs_[#pairs_ + 1] = ARGV[i] end
  redis.call('HSET', machine_key, unpack(pairs_))
end
local out = {status}
local opts = {}
local flat = redis.call('HGETALL', machine_key)
for i = 1, #flat, 2 do
  if string.sub(flat[i], 1, 4) == 'opt:' then
    out[#out + 1] = string.sub(flat[i], 5)
    out[#out + 1] = flat[i + 1]
    opts[out[#out - 1]] = flat[i + 1]
  end
end
-- The options the scripts read, in lib/core.lua's order, defaults for any not stored (the same
-- list as rjobs.scripts.COMPILED_OPTIONS): the stream caps, then the rest.
local order = {{'job_events_maxlen', 1000}, {'queue_events', 1}, {'stream_maxlen', 100000},
  {'max_payload', 1048576}, {'cache_ttl_ms', 0}, {'keep_success_ms', -1}, {'keep_partial_ms', -1},
  {'keep_failure_ms', -1}, {'keep_cancelled_ms', -1}}
local v = {}
for i, o in ipairs(order) do
  v[i] = string.format('%d', math.floor(tonumber(opts[o[1]] or '') or o[2]))
end
local head = 'rj2|' .. table.concat(v, ',', 1, 3) .. '|' .. table.concat(v, ',', 4, 9) .. '|' .. roles .. '|'
local now = redis.call('HMGET', machine_key, 'compiled:head', 'compiled:edges')
if now[1] ~= head or now[2] ~= edges then
  redis.call('HSET', machine_key, 'compiled:head', head, 'compiled:edges', edges)
end
return out
