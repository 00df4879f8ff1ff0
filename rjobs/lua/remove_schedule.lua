-- remove_schedule.lua — remove a schedule of periodic jobs (docs/schedules.md). The jobs it made
-- stay; a worker that declares it in code stores it again when it starts.
-- Called by: Queue.remove_schedule (Scripts.remove_schedule)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  name     the schedule's name (charset A-Z a-z 0-9 _ . -, <= 100)
-- Builds   schedules (deletes the field)
-- Returns  1 when the schedule existed, 0 when not
-- Errors   RJ_NO_MACHINE, RJ_INVALID
--!include lib/layout.lua
--!include lib/core.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
if #ARGV ~= 2 or not valid_name(ARGV[2], 100) then return fail('RJ_INVALID', 'schedule name') end
return call('HDEL', P .. 'schedules', ARGV[2])
