-- name_actors.lua — keep the display names of structured actors (rjobs.Actor: type agent, human or
-- worker, an id, a name) in the queue's actor directory, so histories and listings that record
-- 'type:id' can show who that is.
-- Called by: Queue.name_actors, Queue.assign (Scripts.name_actors)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  n        how many actors follow (1-100)
-- ARGV[3..] per actor: type (agent|human|worker), id (charset A-Z a-z 0-9 _ . @ -, <= 128), name
--          (text, <= 800 bytes; '' = forget the name)
-- Builds   actors (field 'type:id' -> JSON {"type", "id", "name"})
-- Returns  how many entries changed
-- Errors   RJ_NO_MACHINE, RJ_INVALID
--!include lib/layout.lua
--!include lib/core.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
local n = int_arg(ARGV[2], 1, 100)
if not n or #ARGV ~= 2 + 3 * n then return fail('RJ_INVALID', 'expected n, then type, id, name per actor') end
local TYPES = {agent = true, human = true, worker = true}
for i = 0, n - 1 do
  local t, id, name = ARGV[3 + 3 * i], ARGV[4 + 3 * i], ARGV[5 + 3 * i]
  if not TYPES[t] then return fail('RJ_INVALID', 'actor type must be agent, human or worker') end
  if not (#id >= 1 and #id <= 128 and string.find(id, '^[%w_%.@%-]+$')) then return fail('RJ_INVALID', 'actor id') end
  if #name > 800 then return fail('RJ_INVALID', 'actor name longer than 800 bytes') end
end
-- read every entry before the first write (docs/design.md, decision 3)
local keys = {}
for i = 0, n - 1 do keys[i + 1] = ARGV[3 + 3 * i] .. ':' .. ARGV[4 + 3 * i] end
local current = call('HMGET', P .. 'actors', unpack(keys))
local changed = 0
for i = 0, n - 1 do
  local t, id, name = ARGV[3 + 3 * i], ARGV[4 + 3 * i], ARGV[5 + 3 * i]
  local entry = name ~= '' and cjson.encode({type = t, id = id, name = name}) or false
  if entry ~= current[i + 1] then
    if entry then call('HSET', P .. 'actors', keys[i + 1], entry) else call('HDEL', P .. 'actors', keys[i + 1]) end
    current[i + 1] = entry
    changed = changed + 1
  end
end
return changed
