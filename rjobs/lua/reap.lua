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
-- ARGV[5]  worker_ttl_ms     drop workers silent for longer than this from the workers zset and
--          their details from workers:info (1 s to 366 days; at most 1000 workers a call)
-- Builds   job:<id> (+ :history :assets :dependents), leases, ready:<type>, lanes, delayed, state:<s>,
--          owner:<u>, dedupe:<k>, workers, workers:info, wake:<type>, ready (the layout before lanes: emptied)
--          metrics:<minute>, totals (the counters of the moves it makes: lib/write.lua)
-- Returns  {requeued, failed, purged}
-- Errors   RJ_NO_MACHINE, RJ_INVALID
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/write.lua
--!include lib/move.lua
--!include lib/purge.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
local limit, max_losses = int_arg(ARGV[2], 1, 10000), int_arg(ARGV[3], 1, 1000)
local purge_max, worker_ttl = int_arg(ARGV[4], 0, 10000), int_arg(ARGV[5], 1000, 366 * 86400000)
if not limit then return fail('RJ_INVALID', 'limit must be an integer 1-10000') end
if not max_losses then return fail('RJ_INVALID', 'max_lease_losses must be an integer 1-1000') end
if not purge_max then return fail('RJ_INVALID', 'purge must be an integer 0-10000') end
if not worker_ttl then return fail('RJ_INVALID', 'worker_ttl_ms must be 1 s to 366 days in ms') end
local m, P, now = M, P, NOW
local requeued, failed = 0, 0
local FIELDS = {'status', 'token', 'attempt', 'max_attempts', 'lease_losses', 'worker', 'priority', 'seq',
  'started_ms', 'has_dependents', 'lease_deadline_ms', 'type'}
local IX = {status = 1, token = 2, attempt = 3, max_attempts = 4, lease_losses = 5, worker = 6, priority = 7, seq = 8,
  started_ms = 9, has_dependents = 10, lease_deadline_ms = 11, type = 12}
for _, id in ipairs(read('ZRANGEBYSCORE', P .. 'leases', '-inf', now, 'LIMIT', 0, limit)) do
  local rec = load_job(id, FIELDS, IX)
  local st = rec.status
  if not st or not m.is_leased[st] then
    zset(P .. 'leases', id, false)  -- stale member; the hash is authoritative
  else
    local losses = (tonumber(field(rec, 'lease_losses')) or 0) + 1
    hset(rec, 'lease_losses', losses)
    local attempt, max_attempts = tonumber(field(rec, 'attempt')) or 0, tonumber(field(rec, 'max_attempts')) or 1
    local msg = 'lease of ' .. (field(rec, 'worker') or '?') .. ' (token ' .. (field(rec, 'token') or '?') .. ') expired'
    if attempt < max_attempts and losses < max_losses and allows(st, m.ready) then
      move(rec, m.ready, {actor = 'reaper', msg = msg, event = 'lease_expired'})
      requeued = requeued + 1
    else
      local code = losses >= max_losses and 'poison_pill' or 'lease_expired'
      local text = msg .. ' after ' .. attempt .. ' attempt(s)'
      hset(rec, 'error', '{"code":"' .. code .. '","message":' .. cjson.encode(text) .. '}')
      local target = m.failure
      if not allows(st, target) then target = m.cancelled end
      move(rec, target, {actor = 'reaper', msg = msg, event = 'lease_expired'})
      failed = failed + 1
    end
  end
end
local gone = read('ZRANGEBYSCORE', P .. 'workers', '-inf', now - worker_ttl, 'LIMIT', 0, 1000)
if #gone > 0 then
  op('ZREM', P .. 'workers', unpack(gone))
  op('HDEL', P .. 'workers:info', unpack(gone))
end
-- ready jobs left in the single ready set of the layout before lanes (an upgrade while jobs
-- waited) move into their type's lane, a bounded batch per call
for _, id in ipairs(read('ZRANGE', P .. 'ready', 0, 99)) do
  local rec = load_job(id, FIELDS, IX)
  if rec.status == m.ready then
    local t = lane_of(rec)
    zset(lane_key(t), id, ready_score(field(rec, 'priority'), field(rec, 'seq')))
    wake(t)
  end
  zset(P .. 'ready', id, false)
end
-- the lanes index: a type no worker has come for in a day leaves it once its lane is empty (bounded)
for _, t in ipairs(read('ZRANGEBYSCORE', P .. 'lanes', '-inf', now - 86400000, 'LIMIT', 0, 100)) do
  if read('ZCARD', lane_key(t)) == 0 then
    read('EXISTS', P .. 'wake:' .. t)  -- read before the first write (docs/design.md, decision 3)
    op('ZREM', P .. 'lanes', t)
    op('DEL', P .. 'wake:' .. t)  -- its line's token, if any, would only wake a worker for nothing
  end
end
local purged = purge(purge_max)
commit()
return {requeued, failed, purged}
