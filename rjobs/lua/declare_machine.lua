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
-- ARGV[5..] machine pairs (states, next:<state>, role:<role>, name), then option pairs
--          (opt:<name>, integer) to the end
-- Returns  {"created" | "same" | "updated", opt name, value, ...} — the options now stored.
--          Every call (also "same") derives compiled:head and compiled:edges from the stored
--          readable table (states, next:<state>, role:<role>) and options, and writes them where
--          they differ: the compiled form can never disagree with the table users read, and
--          connecting recompiles a queue declared by another rjobs version.
-- Errors   RJ_INVALID (bad arguments), RJ_MACHINE_CONFLICT <stored machine name>
local machine_key, events_key = KEYS[1], KEYS[2]
local prefix, fingerprint, nfields, write_options = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local FIRST = 5  -- the first machine pair
-- The roles in the compiled head, in lib/core.lua's order (rjobs.scripts.COMPILED_ROLES).
local ROLES = {'initial', 'ready', 'delayed', 'waiting', 'review', 'success', 'partial', 'failure', 'cancelled'}
if machine_key ~= prefix .. 'machine' or events_key ~= prefix .. 'events' then
  return redis.error_reply('RJ_INVALID keys do not match the queue prefix')
end
if not nfields or nfields < 1 or #ARGV < FIRST - 1 + 2 * nfields or (#ARGV - FIRST + 1) % 2 ~= 0 then
  return redis.error_reply('RJ_INVALID malformed machine fields')
end
if write_options ~= '0' and write_options ~= '1' then return redis.error_reply('RJ_INVALID write_options') end
-- State names end up in the compiled strings between '|', ',', '>' and '#': one charset for all
-- (the same rule as rjobs.machine), checked before anything is written.
local function bad_table(get)
  local states = get('states')
  if not states or not string.match(states, '^[%w_]+[%w_,]*$') then return 'states' end
  for st in string.gmatch(states, '[^,]+') do
    if not string.match(get('next:' .. st) or '', '^[%w_,]*$') then return 'next:' .. st end
  end
  for _, r in ipairs(ROLES) do
    if not string.match(get('role:' .. r) or '', '^[%w_]*$') then return 'role:' .. r end
  end
  if not string.match(get('role:leased') or '', '^[%w_,]*$') then return 'role:leased' end
  return nil
end
local given = {}
for i = FIRST, FIRST + 2 * nfields - 1, 2 do given[ARGV[i]] = ARGV[i + 1] end
local bad = bad_table(function(k) return given[k] end)
if bad then return redis.error_reply('RJ_INVALID compiled machine: field ' .. bad) end
for i = FIRST + 2 * nfields, #ARGV, 2 do
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
  for i = FIRST, #ARGV do pairs_[#pairs_ + 1] = ARGV[i] end
  redis.call('HSET', machine_key, unpack(pairs_))
end
local out = {status}
local opts = {}
local f = {}
local flat = redis.call('HGETALL', machine_key)
for i = 1, #flat, 2 do
  f[flat[i]] = flat[i + 1]
  if string.sub(flat[i], 1, 4) == 'opt:' then
    out[#out + 1] = string.sub(flat[i], 5)
    out[#out + 1] = flat[i + 1]
    opts[out[#out - 1]] = flat[i + 1]
  end
end
-- A table stored as it is ('same') by hand or by another version: refuse before compiling it.
bad = bad_table(function(k) return f[k] end)
if bad then return redis.error_reply('RJ_INVALID compiled machine: stored field ' .. bad) end
-- The compiled form (see lib/core.lua), derived from the stored readable table.
local role_states = {}
for i, r in ipairs(ROLES) do role_states[i] = f['role:' .. r] or '' end
local roles = table.concat(role_states, ',') .. '|' .. (f['role:leased'] or '')
local tokens = {}
for st in string.gmatch(f['states'], '[^,]+') do
  tokens[#tokens + 1] = '#' .. st
  for to in string.gmatch(f['next:' .. st] or '', '[^,]+') do tokens[#tokens + 1] = st .. '>' .. to end
end
local edges = '|' .. table.concat(tokens, '|') .. '|'
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
