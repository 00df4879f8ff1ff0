-- reap.lua — recover jobs whose lease expired (the worker died or stalled) and purge finished
-- jobs whose retention ended. Safe to run from every worker at once: each step re-reads state.
-- An expired job goes back to the ready state when the table has that edge, attempts remain and
-- it has not lost too many leases; otherwise it fails with code lease_expired (or poison_pill),
-- or is cancelled when the table has no failure edge from that state.
-- Called by: Worker reaper loop (Scripts.reap)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  limit    expired leases to handle at most (1-10000)
-- ARGV[3]  max_lease_losses  lease losses after which a job is a poison pill (>= 1)
-- ARGV[4]  purge    finished jobs to purge at most (0-10000)
-- ARGV[5]  worker_ttl_ms     drop workers silent for longer than this from the workers zset
-- Builds   job:<id> (+ :events :assets :dependents), leases, ready, expiring, state:<s>,
--          owner:<u>, dedupe:<k>, workers, wake
-- Returns  {requeued, failed, purged}
-- Errors   RJ_NO_MACHINE, RJ_INVALID
--!include lib/core.lua
--!include lib/move.lua
--!include lib/purge.lua
local err = RJ.init(KEYS, ARGV[1])
if err then return redis.error_reply(err) end
local limit, max_losses, purge, worker_ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if not limit or limit < 1 or limit > 10000 then return redis.error_reply('RJ_INVALID limit') end
if not max_losses or max_losses < 1 then return redis.error_reply('RJ_INVALID max_lease_losses') end
if not purge or purge < 0 or purge > 10000 then return redis.error_reply('RJ_INVALID purge') end
if not worker_ttl or worker_ttl < 1000 then return redis.error_reply('RJ_INVALID worker_ttl_ms') end
local m, P, now = RJ.m, RJ.P, RJ.now
local requeued, failed = 0, 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now, 'LIMIT', 0, limit)) do
  local jk = RJ.jkey(id)
  local f = redis.call('HMGET', jk, 'status', 'attempt', 'max_attempts', 'lease_losses', 'worker', 'token')
  if not f[1] or not m.is_leased[f[1]] then
    redis.call('ZREM', P .. 'leases', id)  -- stale member; the hash is authoritative
  else
    local losses = redis.call('HINCRBY', jk, 'lease_losses', 1)
    local attempt, max_attempts = tonumber(f[2]) or 0, tonumber(f[3]) or 1
    local msg = 'lease of ' .. (f[5] or '?') .. ' (token ' .. (f[6] or '?') .. ') expired'
    if attempt < max_attempts and losses < max_losses and RJ.allows(f[1], m.role.ready) then
      RJ.move(id, f[1], m.role.ready, {actor = 'reaper', msg = msg, event = 'lease_expired'})
      requeued = requeued + 1
    else
      local code = losses >= max_losses and 'poison_pill' or 'lease_expired'
      local e = '{"code":"' .. code .. '","message":"' .. msg .. ' after ' .. attempt .. ' attempt(s)"}'
      local target = m.role.failure
      if not RJ.allows(f[1], target) then target = m.role.cancelled end
      RJ.move(id, f[1], target, {actor = 'reaper', msg = msg, event = 'lease_expired', fields = {'error', e}})
      failed = failed + 1
    end
  end
end
redis.call('ZREMRANGEBYSCORE', P .. 'workers', '-inf', now - worker_ttl)
local purged = RJ.purge(purge)
RJ.done()
return {requeued, failed, purged}
