-- set_priority.lua — change the priority of a job that is not yet running (seed 003 updateTask);
-- a ready job is re-ranked in the same call, keeping its FIFO position within the new level.
-- Called by: Queue.set_priority (Scripts.set_priority)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor
-- ARGV[3]  id
-- ARGV[4]  priority 1-10
-- Builds   job:<id>, job:<id>:events, ready
-- Returns  the previous priority
-- Errors   RJ_NO_MACHINE, RJ_INVALID, RJ_NOT_FOUND <id>
--!include lib/core.lua
local err = RJ.init(KEYS, ARGV[1])
if err then return redis.error_reply(err) end
local actor, id, priority = ARGV[2], ARGV[3], tonumber(ARGV[4])
if not RJ.valid_name(id) then return redis.error_reply('RJ_INVALID job id') end
if not priority or priority < 1 or priority > 10 or priority % 1 ~= 0 then
  return redis.error_reply('RJ_INVALID priority must be an integer 1-10')
end
local jk = RJ.jkey(id)
local f = redis.call('HMGET', jk, 'status', 'priority', 'seq')
if not f[1] then return redis.error_reply('RJ_NOT_FOUND ' .. id) end
if RJ.m.is_leased[f[1]] or RJ.is_final(f[1]) then
  return redis.error_reply('RJ_INVALID the priority of a ' .. f[1] .. ' job can no longer change')
end
redis.call('HSET', jk, 'priority', priority, 'updated_ms', RJ.now)
if f[1] == RJ.m.role.ready then redis.call('ZADD', RJ.P .. 'ready', RJ.ready_score(priority, f[3]), id) end
RJ.emit(id, jk, 'priority', nil, nil, actor, f[2] .. ' -> ' .. priority)
return tonumber(f[2])
