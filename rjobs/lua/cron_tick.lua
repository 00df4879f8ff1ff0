-- cron_tick.lua — claim a schedule's due tick and enqueue its job, atomically (docs/schedules.md).
-- A compare-and-set of the stored next tick: only the call that finds it still equal to
-- `expected` moves it forward, and that same call creates the tick's job (id
-- cron-<name>-<tick ms>), so a tick is enqueued once however many workers race for it, and a call
-- resent after a lost reply finds the tick moved on (stale) and creates nothing. A tick later
-- than the schedule's grace is missed: `skip` creates no job, `once` creates one catch-up job (id
-- of the first missed tick); either way the next tick is the first after now.
-- Called by: Queue.cron_tick (Scripts.cron_tick), run by every worker (rjobs/worker/cron.py)
-- KEYS[1]  machine   hash    rjobs:{Q}:machine
-- KEYS[2]  events    stream  rjobs:{Q}:events
-- ARGV[1]  prefix    "rjobs:{Q}:"
-- ARGV[2]  actor     who ticks, the worker id (charset A-Z a-z 0-9 _ . : @ -, <= 200)
-- ARGV[3]  name      the schedule's name (charset A-Z a-z 0-9 _ . -, <= 100)
-- ARGV[4]  expected  the schedule's next tick as the caller read it (epoch ms)
-- ARGV[5]  proposed  cron: the tick after `expected`, or when `expected` is missed the first tick
--                    after a server time the caller read (epoch ms, from the cron library);
--                    '' for every (computed here)
-- Builds   schedules (field <name>: next, last, last_job), and for a tick that runs what
--          enqueue.lua builds for one ready job: job:<id>, job:<id>:history, ready:<type>, lanes,
--          state:<s>, seq, wake:<type>, events
--          metrics:<minute>, totals (the counters of the moves it makes: lib/write.lua)
-- Returns  {outcome, job id or '', the next tick ms, server ms}; outcome: fired (the job was
--          created), caught_up (a missed tick under `once`: one job), skipped (missed under
--          `skip`: no job), exists (the tick's job id is taken: no job, the tick moves on), and
--          without a write: early (not due yet), stale (the stored next tick is not `expected`:
--          read it again), retry (`proposed` is not after the tick, or for a missed tick not after
--          the server time: compute it again from the time returned), gone (no such schedule)
-- Errors   RJ_NO_MACHINE, RJ_INVALID
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/write.lua
--!include lib/move.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
local actor, name, proposed = ARGV[2], ARGV[3], ARGV[5]
local expected = int_arg(ARGV[4], 0, MAX_MS)
if #ARGV ~= 5 then return fail('RJ_INVALID', 'expected 5 arguments') end
if not valid_actor(actor) then return fail('RJ_INVALID', 'actor') end
if not valid_name(name, 100) then return fail('RJ_INVALID', 'schedule name') end
if not expected then return fail('RJ_INVALID', 'expected must be epoch ms') end
local prop = proposed ~= '' and int_arg(proposed, 1, MAX_MS)
if proposed ~= '' and not prop then return fail('RJ_INVALID', 'proposed must be epoch ms or empty') end

local key = P .. 'schedules'
local raw = call('HGET', key, name)
if not raw then return {'gone', '', '0', NOW_S} end
local ok, s = pcall(cjson.decode, raw)
local nxt = ok and type(s) == 'table' and tonumber(s.next)
if not nxt or not valid_name(s.type) or type(s.params) ~= 'string' or not int_arg(s.priority, 1, 10) or
  not int_arg(s.max_attempts, 1, 1000) then
  return fail('RJ_INVALID', 'the stored schedule ' .. name .. ' is malformed: store it again')
end
local next_s = string.format('%d', nxt)
if nxt ~= expected then return {'stale', '', next_s, NOW_S} end
if expected > NOW then return {'early', '', next_s, NOW_S} end
local late = NOW - expected > (tonumber(s.grace) or 0) * 1000
local step = tonumber(s.every)
if step then
  step = step * 1000
  nxt = late and math.floor(NOW / step) * step + step or expected + step
else
  if not prop then return fail('RJ_INVALID', 'a cron schedule needs the proposed next tick') end
  if prop <= expected or (late and prop <= NOW) then return {'retry', '', next_s, NOW_S} end
  nxt = prop
end
local outcome, id = 'skipped', ''
if not late or s.missed == 'once' then
  id = 'cron-' .. name .. '-' .. string.format('%d', expected)
  local rec = load_job(id, {'status'})
  if rec.status or read('EXISTS', rec.jk .. ':history') == 1 then
    outcome = 'exists'
  else
    outcome = late and 'caught_up' or 'fired'
    local seq = (tonumber(read('GET', P .. 'seq')) or 0) + 1
    rec.new, rec.v, rec.ix = true, {'id', id, 'queue', string.sub(P, 8, -3), 'type', s.type, 'params', s.params,
      'priority', tonumber(s.priority), 'seq', seq, 'max_attempts', tonumber(s.max_attempts),
      'created_ms', NOW, 'scheduled_ms', expected},
      {id = 2, queue = 4, type = 6, params = 8, priority = 10, seq = 12, max_attempts = 14, created_ms = 16}
    rec.set = rec.v
    local msg = 'schedule ' .. name .. ' tick ' .. string.format('%d', expected)
    move(rec, M.ready, {event = 'created', actor = actor, msg = msg})
    op('SET', P .. 'seq', seq)
  end
  s.last, s.last_job = expected, id
end
s.next = nxt
op('HSET', key, name, cjson.encode(s))
commit()
return {outcome, id, string.format('%d', nxt), NOW_S}
