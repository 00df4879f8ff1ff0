-- claim.lua — promote due delayed jobs, then lease up to N ready jobs to one worker.
-- Called by: Worker (Scripts.claim)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  worker   worker id (charset A-Z a-z 0-9 _ . -, <= 200)
-- ARGV[3]  max_jobs how many jobs to lease at most (0-1000)
-- ARGV[4]  lease_ms lease length in ms (100 ms to 366 days)
-- ARGV[5]  promote  how many due delayed jobs to promote at most (0-10000)
-- Builds   job:<id>, job:<id>:history, ready, delayed, leases, state:<s>, workers, wake
-- Returns  {next_due_ms (-1 = nothing delayed), ready_left, jobs...}; each job is
--          {id, type, params, attempt, max_attempts, token, user_id, priority, retry_count,
--           created_ms, lease_deadline_ms}
-- Errors   RJ_NO_MACHINE, RJ_INVALID <why>
--!include lib/core.lua
--!include lib/write.lua
--!include lib/move.lua
local err = RJ.init(KEYS, ARGV[1])
if err then return redis.error_reply(err) end
local worker = ARGV[2]
local max_jobs, lease_ms, promote = RJ.int(ARGV[3], 0, 1000), RJ.int(ARGV[4], 100, 366 * 86400000),
  RJ.int(ARGV[5], 0, 10000)
if not RJ.valid_name(worker, 200) then return redis.error_reply('RJ_INVALID worker id') end
if not max_jobs then return redis.error_reply('RJ_INVALID max_jobs must be an integer 0-1000') end
if not lease_ms then return redis.error_reply('RJ_INVALID lease_ms must be an integer 100 ms to 366 days') end
if not promote then return redis.error_reply('RJ_INVALID promote must be an integer 0-10000') end
local m, P, now = RJ.m, RJ.P, RJ.now
local ready, delayed = m.ready, m.delayed
local CLAIM_FIELDS = {'type', 'params', 'retry_count', 'created_ms'}

-- 1. Due delayed jobs become ready; they may be claimed by this very call.
local candidates, left = {}, RJ.read('ZCARD', P .. 'ready')
local skipped = 0  -- delayed members read, promoted or stale
if delayed ~= '' and promote > 0 then
  local due = RJ.read('ZRANGEBYSCORE', P .. 'delayed', '-inf', now, 'LIMIT', 0, promote)
  skipped = #due
  for _, id in ipairs(due) do
    local rec = RJ.load(id, CLAIM_FIELDS)
    if rec.status == delayed then
      RJ.move(rec, ready, {actor = 'rjobs', msg = 'due'})
      candidates[#candidates + 1] = {RJ.ready_score(rec.f.priority, rec.f.seq), id}
      left = left + 1
    else
      RJ.zset(P .. 'delayed', id, false)  -- stale member; the hash is authoritative
    end
  end
end
local head = RJ.read('ZRANGE', P .. 'delayed', skipped, skipped, 'WITHSCORES')

-- 2. The best max_jobs of the ready set and the promoted jobs, by ready score.
local out = {head[2] and tonumber(head[2]) or -1, 0}
RJ.op('ZADD', P .. 'workers', now, worker)
if max_jobs > 0 then
  local best = RJ.read('ZRANGE', P .. 'ready', 0, max_jobs - 1, 'WITHSCORES')
  for i = 1, #best, 2 do candidates[#candidates + 1] = {tonumber(best[i + 1]), best[i]} end
  if #candidates > #best / 2 then table.sort(candidates, function(a, b) return a[1] < b[1] end) end
  local claimed = 0
  local opts = {lease_ms = lease_ms, holder = worker, actor = worker}
  for _, c in ipairs(candidates) do
    if claimed >= max_jobs then break end
    local id = c[2]
    local rec = RJ.load(id, CLAIM_FIELDS)
    if rec.status ~= ready then
      RJ.zset(P .. 'ready', id, false)  -- stale member; the hash is authoritative
      left = left - 1
    else
      for i, st in ipairs(m.chain) do
        opts.token = i > 1 and rec.f.token or nil
        RJ.move(rec, st, opts)
      end
      claimed = claimed + 1
      left = left - 1
      local f = rec.f
      -- never put a nil in a reply array (Lua would cut the array short there)
      out[#out + 1] = {id, f.type or '', f.params or '', tonumber(f.attempt), tonumber(f.max_attempts) or 1,
        f.token, f.user_id or '', tonumber(f.priority) or 0, tonumber(f.retry_count) or 0,
        tonumber(f.created_ms) or 0, tonumber(f.lease_deadline_ms)}
    end
  end
end
out[2] = left
if left > 0 then RJ.wake = true end
RJ.commit()
return out
