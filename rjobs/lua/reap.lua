-- reap.lua — recover jobs whose lease expired (the holder died, stalled, or a manual holder
-- stopped heartbeating) and purge finished jobs whose retention ended. Safe to run from every
-- worker at once: each call decides on what it read.
-- An expired job goes back to the ready state when the table has that edge, attempts remain and
-- it has not lost too many leases; otherwise it fails with code lease_expired (or poison_pill),
-- or is cancelled when the table has no failure edge from that state.
-- Called by: Worker reaper loop (Scripts.reap)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  limit    expired leases to handle at most (1-10000)
-- ARGV[3]  max_lease_losses  lease losses after which a job is a poison pill (1-1000)
-- ARGV[4]  purge    finished jobs to purge at most (0-10000)
-- ARGV[5]  worker_ttl_ms     drop workers silent for longer than this from the workers zset (1 s to 366 days)
-- Builds   job:<id> (+ :history :assets :dependents), leases, ready, delayed, state:<s>,
--          owner:<u>, dedupe:<k>, workers, wake
-- Returns  {requeued, failed, purged}
-- Errors   RJ_NO_MACHINE, RJ_INVALID
--!include lib/core.lua
--!include lib/write.lua
--!include lib/move.lua
--!include lib/purge.lua
local err = RJ.init(KEYS, ARGV[1])
if err then return redis.error_reply(err) end
local limit, max_losses = RJ.int(ARGV[2], 1, 10000), RJ.int(ARGV[3], 1, 1000)
local purge, worker_ttl = RJ.int(ARGV[4], 0, 10000), RJ.int(ARGV[5], 1000, 366 * 86400000)
if not limit then return redis.error_reply('RJ_INVALID limit must be an integer 1-10000') end
if not max_losses then return redis.error_reply('RJ_INVALID max_lease_losses must be an integer 1-1000') end
if not purge then return redis.error_reply('RJ_INVALID purge must be an integer 0-10000') end
if not worker_ttl then return redis.error_reply('RJ_INVALID worker_ttl_ms must be 1 s to 366 days in ms') end
local m, P, now = RJ.m, RJ.P, RJ.now
local requeued, failed = 0, 0
for _, id in ipairs(RJ.read('ZRANGEBYSCORE', P .. 'leases', '-inf', now, 'LIMIT', 0, limit)) do
  local rec = RJ.load(id, {'lease_losses'})
  local st = rec.status
  if not st or not m.is_leased[st] then
    RJ.zset(P .. 'leases', id, false)  -- stale member; the hash is authoritative
  else
    local losses = (tonumber(rec.f.lease_losses) or 0) + 1
    RJ.hset(rec, 'lease_losses', losses)
    local attempt, max_attempts = tonumber(rec.f.attempt) or 0, tonumber(rec.f.max_attempts) or 1
    local msg = 'lease of ' .. (rec.f.worker or '?') .. ' (token ' .. (rec.f.token or '?') .. ') expired'
    if attempt < max_attempts and losses < max_losses and RJ.allows(st, m.ready) then
      RJ.move(rec, m.ready, {actor = 'reaper', msg = msg, event = 'lease_expired'})
      requeued = requeued + 1
    else
      local code = losses >= max_losses and 'poison_pill' or 'lease_expired'
      local text = msg .. ' after ' .. attempt .. ' attempt(s)'
      RJ.hset(rec, 'error', '{"code":"' .. code .. '","message":' .. cjson.encode(text) .. '}')
      local target = m.failure
      if not RJ.allows(st, target) then target = m.cancelled end
      RJ.move(rec, target, {actor = 'reaper', msg = msg, event = 'lease_expired'})
      failed = failed + 1
    end
  end
end
RJ.op('ZREMRANGEBYSCORE', P .. 'workers', '-inf', now - worker_ttl)
local purged = RJ.purge(purge)
RJ.commit()
return {requeued, failed, purged}
