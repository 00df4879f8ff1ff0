-- declare_machine.lua — store the queue's state machine, or check it matches the stored one.
-- Called by: Queue.declare() (rjobs/store/scripts.py: Scripts.declare_machine)
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
--!include lib/layout.lua
--!include lib/core.lua
local machine_key, events_key = KEYS[1], KEYS[2]
local prefix, fingerprint, write_options = ARGV[1], ARGV[2], ARGV[4]
local nfields = type(ARGV[3]) == 'string' and string.find(ARGV[3], '^%d%d?%d?$') and tonumber(ARGV[3])
local FIRST = 5  -- the first machine pair
-- The compiled head's layout (lib/layout.lua, generated from rjobs/store/layout.py): the roles in
-- order, and the options in order as {name, default, lowest, highest}.
local ROLES, OPTIONS = {}, {}
for r in string.gmatch(LAYOUT_ROLES, '[^,]+') do ROLES[#ROLES + 1] = r end
for name, d, lo, hi in string.gmatch(LAYOUT_OPTIONS, '([%w_]+):(%-?%d+):(%-?%d+):(%-?%d+)') do
  OPTIONS[#OPTIONS + 1] = {name, tonumber(d), tonumber(lo), tonumber(hi)}
end
if type(prefix) ~= 'string' or not string.find(prefix, QUEUE_PREFIX) or
  machine_key ~= prefix .. 'machine' or events_key ~= prefix .. 'events' then
  return fail('RJ_INVALID', 'keys do not match the queue prefix')
end
if not nfields or nfields < 1 or #ARGV < FIRST - 1 + 2 * nfields or (#ARGV - FIRST + 1) % 2 ~= 0 then
  return fail('RJ_INVALID', 'malformed machine fields')
end
if write_options ~= '0' and write_options ~= '1' then return fail('RJ_INVALID', 'write_options') end
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
if bad then return fail('RJ_INVALID', 'compiled machine: field ' .. bad) end
-- The options by name (a stored value outside an option's range would fail a later script
-- half-way: XADD refuses a negative MAXLEN).
local BY_NAME = {}
for _, o in ipairs(OPTIONS) do BY_NAME[o[1]] = o end
for i = FIRST + 2 * nfields, #ARGV, 2 do
  local v = ARGV[i + 1]
  local o = BY_NAME[string.sub(ARGV[i], 5)]
  local n = string.sub(ARGV[i], 1, 4) == 'opt:' and o and #v <= 16 and string.find(v, '^%-?%d+$') and tonumber(v)
  if not n or n < o[3] or n > o[4] then
    return fail('RJ_INVALID', 'option ' .. ARGV[i] .. ' must be a known opt:<name> with an integer in range')
  end
end
-- Read the stored hash, overlay what this call would store, decide, then write once.
local f = {}
local flat = redis.call('HGETALL', machine_key)
for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
local stored = f['fingerprint']
if stored and stored ~= fingerprint then
  return fail('RJ_MACHINE_CONFLICT', 'queue already uses machine ' .. (f['name'] or '?') ..
    ' with a different table; use a new queue name or delete ' .. machine_key)
end
local status = 'created'
if stored then status = write_options == '1' and 'updated' or 'same' end
local writes = {}
if status ~= 'same' then
  writes = {'fingerprint', fingerprint}
  f['fingerprint'] = fingerprint
  for i = FIRST, #ARGV, 2 do
    writes[#writes + 1] = ARGV[i]; writes[#writes + 1] = ARGV[i + 1]
    f[ARGV[i]] = ARGV[i + 1]
  end
end
-- A table stored as it is ('same') by hand or by another version: refuse before compiling it.
bad = bad_table(function(k) return f[k] end)
if bad then return fail('RJ_INVALID', 'compiled machine: stored field ' .. bad) end
-- The options the scripts read, in the head's order, the default for any not stored or out of
-- range.
local out, v = {status}, {}
for i, o in ipairs(OPTIONS) do
  local raw = f['opt:' .. o[1]]
  local n = raw and string.find(raw, '^%-?%d+$') and tonumber(raw)
  if not n or n < o[3] or n > o[4] then n = o[2] end
  v[i] = string.format('%d', n)
  if raw then out[#out + 1] = o[1]; out[#out + 1] = v[i] end
end
-- The compiled form (see lib/layout.lua), derived from the stored readable table.
local role_states = {}
for i, r in ipairs(ROLES) do role_states[i] = f['role:' .. r] or '' end
local roles = table.concat(role_states, ',') .. '|' .. (f['role:leased'] or '')
local tokens = {}
for st in string.gmatch(f['states'], '[^,]+') do
  tokens[#tokens + 1] = '#' .. st
  for to in string.gmatch(f['next:' .. st] or '', '[^,]+') do tokens[#tokens + 1] = st .. '>' .. to end
end
local edges = '|' .. table.concat(tokens, '|') .. '|'
local head = LAYOUT_VERSION .. '|' .. table.concat(v, ',', 1, LAYOUT_EVENT_OPTIONS) .. '|' ..
  table.concat(v, ',', LAYOUT_EVENT_OPTIONS + 1, #v) .. '|' .. roles .. '|'
if f['compiled:head'] ~= head or f['compiled:edges'] ~= edges then
  writes[#writes + 1] = 'compiled:head'; writes[#writes + 1] = head
  writes[#writes + 1] = 'compiled:edges'; writes[#writes + 1] = edges
end
if #writes > 0 then redis.call('HSET', machine_key, unpack(writes)) end
return out
