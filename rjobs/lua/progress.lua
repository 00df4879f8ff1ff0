-- progress.lua — record progress (percent + named step) of a job held in a leased state, and
-- estimate the time left from the elapsed time. The job hash holds the latest progress; the
-- history keeps one entry per step: an update with the same step as the entry just before it
-- replaces that entry, and a job keeps at most 100 progress entries (docs/design.md, decision 1).
-- Fencing: the holder presents its token (a stale one is RJ_LEASE_LOST); without a token a
-- leased job needs operator = 1 (RJ_FENCED otherwise); an update without a token for a job that
-- is no longer leased is ignored and reported back, so the client can warn.
-- Called by: Queue.progress, JobContext.progress (Scripts.progress)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor    (charset A-Z a-z 0-9 _ . : @ -, <= 200)
-- ARGV[3]  id
-- ARGV[4]  token    lease token ('' = none)
-- ARGV[5]  percent  0-100 (a finite number)
-- ARGV[6]  step     short text ('' = none, <= 200 bytes)
-- ARGV[7]  operator 1 = act without the token on a leased job (recorded), else 0
-- Builds   job:<id>, job:<id>:history
-- Returns  {'ok', eta_ms (-1 = unknown)} | {'ignored', status}
-- Errors   RJ_NO_MACHINE, RJ_INVALID, RJ_NOT_FOUND <id>, RJ_LEASE_LOST <id> ..., RJ_FENCED <id> ...
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/write.lua
--!include lib/checks.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
local actor, id, token, percent, step, operator = ARGV[2], ARGV[3], ARGV[4], num_arg(ARGV[5], 0, 100), ARGV[6],
  ARGV[7]
if not valid_actor(actor) then return fail('RJ_INVALID', 'actor') end
if not valid_name(id) then return fail('RJ_INVALID', 'job id') end
if not percent then return fail('RJ_INVALID', 'percent must be a number 0-100') end
if type(step) ~= 'string' or #step > 200 then return fail('RJ_INVALID', 'step longer than 200 bytes') end
if operator ~= '0' and operator ~= '1' then return fail('RJ_INVALID', 'operator must be 0 or 1') end
if token ~= '' and not int_arg(token, 1, 9007199254740991) then return fail('RJ_INVALID', 'lease token') end
local rec = load_job(id, {'status', 'token', 'started_ms', 'attempt', 'progress_events'})
if not rec.status then return fail('RJ_NOT_FOUND', id) end
if token == '' and not M.is_leased[rec.status] then return {'ignored', rec.status} end
local e = fence(rec, token, operator)
if e then return fail(e) end
local eta = -1
local started = tonumber(field(rec, 'started_ms'))
if started and percent > 0 then eta = math.floor((NOW - started) * (100 - percent) / percent) end
local shown = string.format('%.15g', percent)
hset(rec, 'progress', shown)
hset(rec, 'step', step)
hset(rec, 'eta_ms', eta)
hset(rec, 'updated_ms', NOW)
-- the history: replace the entry just before when it is progress of the same step
local last = read('LINDEX', rec.jk .. ':history', -1)
local last_step = nil
if last and string.find(last, '"ev":"progress"', 1, true) then
  local ok, entry = pcall(cjson.decode, last)
  if ok and type(entry) == 'table' then last_step = entry.msg or '' end
end
local count = tonumber(field(rec, 'progress_events')) or 0
log_event(rec, 'progress', nil, nil, actor, step, field(rec, 'attempt'), nil, shown, token == '' or nil, false)
if last_step == step or (count >= 100 and last_step) then
  rec.hist_replace, rec.hist = rec.hist, {}
elseif count >= 100 then
  rec.hist = {}  -- the cap is reached: the hash holds the latest progress
else
  hset(rec, 'progress_events', count + 1)
end
commit()
return {'ok', eta}
