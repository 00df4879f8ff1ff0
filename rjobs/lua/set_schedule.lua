-- set_schedule.lua — store a schedule of periodic jobs (docs/schedules.md), or leave it as it is
-- when the stored definition is the same (its next tick and last run stay). A changed definition
-- (or a new schedule) takes the first tick after now: the last run is kept.
-- Called by: Queue.set_schedule (Scripts.set_schedule)
-- KEYS[1]  machine       hash    rjobs:{Q}:machine
-- KEYS[2]  events        stream  rjobs:{Q}:events
-- ARGV[1]  prefix        "rjobs:{Q}:"
-- ARGV[2]  actor         who stores it (charset A-Z a-z 0-9 _ . : @ -, <= 200)
-- ARGV[3]  name          the schedule's name (charset A-Z a-z 0-9 _ . -, <= 100)
-- ARGV[4]  type          the job type of its jobs
-- ARGV[5]  cron          a 5-field cron expression (fields separated by one space), or '' with every
-- ARGV[6]  every         seconds between ticks (integer 1-31536000), or '' with cron
-- ARGV[7]  tz            the IANA timezone the cron expression is read in (shape checked here)
-- ARGV[8]  params        the jobs' params, JSON text (at most the queue's max_payload bytes)
-- ARGV[9]  priority      integer 1-10
-- ARGV[10] max_attempts  integer 1-1000
-- ARGV[11] missed        'skip' | 'once': what a tick later than grace does (cron_tick.lua)
-- ARGV[12] grace         seconds a tick may be late and still run as itself (integer 0-86400)
-- ARGV[13] first         cron: the first tick after the server time the client last read (epoch
--                        ms, computed with the cron library); '' for every (computed here: the
--                        next multiple of every seconds since the epoch)
-- Builds   schedules (field <name>: the schedule as JSON, with next and last)
-- Returns  {outcome, next tick ms, server ms}: outcome created | updated | same, or retry when
--          `first` is not after the server time (the client computes it again from the time returned)
-- Errors   RJ_NO_MACHINE, RJ_INVALID
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/write.lua
--!include lib/move.lua
--!include lib/schedule.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
if #ARGV ~= 13 then return fail('RJ_INVALID', 'expected 13 arguments') end
local actor, name, jtype, cron, every, tz, params, missed, first = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
  ARGV[7], ARGV[8], ARGV[11], ARGV[13]
local priority, attempts, grace = int_arg(ARGV[9], 1, 10), int_arg(ARGV[10], 1, 1000), int_arg(ARGV[12], 0, 86400)
if not valid_actor(actor) then return fail('RJ_INVALID', 'actor') end
if not valid_schedule_name(name) then return fail('RJ_INVALID', 'schedule name (1-100 of A-Z a-z 0-9 _ . -)') end
if not valid_name(jtype) then return fail('RJ_INVALID', 'job type') end
if (cron == '') == (every == '') then return fail('RJ_INVALID', 'give a cron expression or every, not both') end
local step = every ~= '' and int_arg(every, 1, 31536000)
if cron ~= '' and not valid_cron(cron) then return fail('RJ_INVALID', 'cron expression') end
if every ~= '' and not step then return fail('RJ_INVALID', 'every must be an integer 1-31536000 (seconds)') end
if not valid_tz(tz) then return fail('RJ_INVALID', 'timezone') end
if #params > opt().max_payload then return fail('RJ_INVALID', 'params larger than ' .. opt().max_payload .. ' bytes') end
local ok, decoded = pcall(cjson.decode, params)
if not ok or type(decoded) ~= 'table' then return fail('RJ_INVALID', 'params must be a JSON object or array') end
if not priority or not attempts then return fail('RJ_INVALID', 'priority 1-10, max_attempts 1-1000') end
if missed ~= 'skip' and missed ~= 'once' then return fail('RJ_INVALID', 'missed must be skip or once') end
if not grace then return fail('RJ_INVALID', 'grace must be an integer 0-86400 (seconds)') end
local nxt
if step then
  if first ~= '' then return fail('RJ_INVALID', 'first must be empty with every') end
  nxt = math.floor(NOW / (step * 1000)) * step * 1000 + step * 1000
else
  nxt = int_arg(first, 0, MAX_MS)
  if not nxt then return fail('RJ_INVALID', 'first must be epoch ms') end
end

local key = P .. 'schedules'
local raw = call('HGET', key, name)
local old = raw and select(2, pcall(cjson.decode, raw))
if type(old) ~= 'table' then old = nil end
if old and old.type == jtype and (old.cron or '') == cron and tonumber(old.every or 0) == (step or 0) and
  old.tz == tz and old.params == params and tonumber(old.priority) == priority and
  tonumber(old.max_attempts) == attempts and old.missed == missed and tonumber(old.grace) == grace then
  return {'same', string.format('%d', tonumber(old.next) or 0), NOW_S}
end
if not step and nxt <= NOW then return {'retry', '', NOW_S} end
if not old and call('HLEN', key) >= 1000 then return fail('RJ_INVALID', 'a queue holds at most 1000 schedules') end
local s = {type = jtype, tz = tz, params = params, priority = priority, max_attempts = attempts, missed = missed,
  grace = grace, next = nxt, by = actor, t = NOW}
if step then s.every = step else s.cron = cron end
if old then s.last, s.last_job = old.last, old.last_job end
call('HSET', key, name, cjson.encode(s))
return {old and 'updated' or 'created', string.format('%d', nxt), NOW_S}
