-- progress.lua — record progress (percent + named step) of a job held in a leased state, and
-- estimate the time left from the elapsed time. An unfenced late update for a job no longer leased
-- is ignored (seed 000) and reported back so the client can warn; a fenced one is RJ_LEASE_LOST.
-- Called by: Queue.progress, JobContext.progress (Scripts.progress)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor
-- ARGV[3]  id
-- ARGV[4]  token    lease token ('' = not fenced)
-- ARGV[5]  percent  0-100 (number)
-- ARGV[6]  step     short text ('' = none)
-- Builds   job:<id>, job:<id>:events
-- Returns  {'ok', eta_ms (-1 = unknown)} | {'ignored', status}
-- Errors   RJ_NO_MACHINE, RJ_INVALID, RJ_NOT_FOUND <id>, RJ_LEASE_LOST <id> ...
--!include lib/core.lua
local err = RJ.init(KEYS, ARGV[1])
if err then return redis.error_reply(err) end
local actor, id, token, percent, step = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
if not RJ.valid_name(id) then return redis.error_reply('RJ_INVALID job id') end
if not percent or percent < 0 or percent > 100 then return redis.error_reply('RJ_INVALID percent must be 0-100') end
if #step > 200 then return redis.error_reply('RJ_INVALID step longer than 200 characters') end
local jk = RJ.jkey(id)
local f = redis.call('HMGET', jk, 'status', 'token', 'started_ms', 'attempt')
if not f[1] then return redis.error_reply('RJ_NOT_FOUND ' .. id) end
if token ~= '' and f[2] ~= token then
  return redis.error_reply('RJ_LEASE_LOST ' .. id .. ' token ' .. token .. ' is not the lease of this job')
end
if not RJ.m.is_leased[f[1]] then
  -- a lease holder whose job left the leased states (cancelled, reaped) has lost it; an unfenced
  -- late update is only ignored, as seed 000 asks
  if token ~= '' then return redis.error_reply('RJ_LEASE_LOST ' .. id .. ' is ' .. f[1] .. ', no longer leased') end
  return {'ignored', f[1]}
end
local eta = -1
local started = tonumber(f[3])
if started and percent > 0 then eta = math.floor((RJ.now - started) * (100 - percent) / percent) end
redis.call('HSET', jk, 'progress', percent, 'step', step, 'eta_ms', eta, 'updated_ms', RJ.now)
RJ.emit(id, jk, 'progress', nil, nil, actor, step, f[4], nil, tostring(percent))
return {'ok', eta}
