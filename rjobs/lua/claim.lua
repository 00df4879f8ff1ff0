-- claim.lua — promote due delayed jobs, then lease up to N ready jobs to one worker.
-- Called by: Worker (Scripts.claim)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  worker   worker id
-- ARGV[3]  max_jobs how many jobs to lease at most (1-1000)
-- ARGV[4]  lease_ms lease length in ms
-- ARGV[5]  promote  how many due delayed jobs to promote at most (bounded work)
-- Builds   job:<id>, job:<id>:events, ready, delayed, leases, state:<s>, workers, wake
-- Returns  {next_due_ms (-1 = nothing delayed), ready_left, jobs...}; each job is
--          {id, type, params, attempt, max_attempts, token, user_id, priority, retry_count,
--           created_ms, lease_deadline_ms}
-- Errors   RJ_NO_MACHINE, RJ_INVALID <why>
--!include lib/core.lua
local err = RJ.init(KEYS, ARGV[1])
if err then return redis.error_reply(err) end
local worker, max_jobs, lease_ms, promote = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if not RJ.valid_name(worker, 200) then return redis.error_reply('RJ_INVALID worker id') end
if not max_jobs or max_jobs < 0 or max_jobs > 1000 then return redis.error_reply('RJ_INVALID max_jobs') end
if not lease_ms or lease_ms < 100 then return redis.error_reply('RJ_INVALID lease_ms') end
if not promote or promote < 0 or promote > 10000 then return redis.error_reply('RJ_INVALID promote') end
local m, P, now = RJ.m, RJ.P, RJ.now
local ready, delayed = m.role.ready, m.role.delayed

-- the head of the delayed set answers both "is anything due?" and the reply's next due time
local head = call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
if delayed ~= '' and promote > 0 and head[2] and tonumber(head[2]) <= now then
  for _, id in ipairs(call('ZRANGEBYSCORE', P .. 'delayed', '-inf', now, 'LIMIT', 0, promote)) do
    if call('HGET', RJ.jkey(id), 'status') == delayed then
      RJ.move(id, delayed, ready, {actor = 'rjobs', msg = 'due'})
    else
      call('ZREM', P .. 'delayed', id)  -- stale member; the hash is authoritative
    end
  end
  head = call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
end

local out = {-1, 0}
local deadline = now + lease_ms
call('ZADD', P .. 'workers', now, worker)
if max_jobs > 0 then
  local chain = m.leased
  for _, id in ipairs(call('ZRANGE', P .. 'ready', 0, max_jobs - 1)) do
    local jk = P .. 'job:' .. id
    -- one read of everything the worker needs, one write per state entered
    local f = call('HMGET', jk, 'status', 'token', 'attempt', 'executions', 'type', 'params',
      'max_attempts', 'user_id', 'priority', 'retry_count', 'created_ms')
    if f[1] ~= ready then
      call('ZREM', P .. 'ready', id)  -- stale member; the hash is authoritative
    else
      local token = (tonumber(f[2]) or 0) + 1
      local attempt = (tonumber(f[3]) or 0) + 1
      local fields = {'token', token, 'attempt', attempt, 'executions', (tonumber(f[4]) or 0) + 1,
        'worker', worker, 'started_ms', now, 'lease_ms', lease_ms}
      local from = ready
      for i = 1, #chain do
        local st = chain[i]
        RJ.move(id, from, st, {jk = jk, deadline = deadline, actor = worker, attempt = attempt, token = token,
          fields = fields})
        from = st
        fields = nil
      end
      -- fields at their default are absent from the hash: never put a nil in a reply array
      -- (Lua would cut the array short there)
      out[#out + 1] = {id, f[5], f[6], attempt, tonumber(f[7]) or 1, token, f[8] or '', tonumber(f[9]) or 0,
        tonumber(f[10]) or 0, tonumber(f[11]) or 0, deadline}
    end
  end
end
local left = call('ZCARD', P .. 'ready')
out[2] = left
if left > 0 then RJ.wake = true end
if head[2] then out[1] = tonumber(head[2]) end
RJ.done()
return out
