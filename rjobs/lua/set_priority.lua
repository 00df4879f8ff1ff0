-- set_priority.lua — change the priority of a job that is not yet running; a ready job is
-- re-ranked in the same call, keeping its FIFO position within the new level.
-- Called by: Queue.set_priority (Scripts.set_priority)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor    (charset A-Z a-z 0-9 _ . : @ -, <= 200)
-- ARGV[3]  id
-- ARGV[4]  priority 1-10
-- Builds   job:<id>, job:<id>:history, ready:<type>
-- Returns  the previous priority
-- Errors   RJ_NO_MACHINE, RJ_INVALID, RJ_NOT_FOUND <id>, RJ_STATE <id> <status> (running or finished)
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/write.lua
--!include lib/move.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
local actor, id, priority = ARGV[2], ARGV[3], int_arg(ARGV[4], 1, 10)
if not valid_actor(actor) then return fail('RJ_INVALID', 'actor') end
if not valid_name(id) then return fail('RJ_INVALID', 'job id') end
if not priority then return fail('RJ_INVALID', 'priority must be an integer 1-10') end
local rec = load_job(id)
if not rec.status then return fail('RJ_NOT_FOUND', id) end
if M.is_leased[rec.status] or M.final_role[rec.status] then
  return fail('RJ_STATE', id .. ' ' .. rec.status .. ' the priority of a ' .. rec.status ..
    ' job can no longer change')
end
local previous = field(rec, 'priority')
hset(rec, 'priority', priority)
hset(rec, 'updated_ms', NOW)
if rec.status == M.ready then zset(lane_key(lane_of(rec)), id, ready_score(priority, field(rec, 'seq'))) end
log_event(rec, 'priority', nil, nil, actor, tostring(previous) .. ' -> ' .. priority, nil, nil, nil, nil, false)
commit()
return tonumber(previous)
