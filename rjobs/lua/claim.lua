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
--!include lib/move.lua
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
  local chain = {}
  for st in string.gmatch(m.leased, '[^,]+') do chain[#chain + 1] = st end
  -- one fields table and one opts table for the whole call (move reads them, never keeps them)
  local fields = {}
  local opts = {deadline = deadline, actor = worker}
  for _, id in ipairs(call('ZRANGE', P .. 'ready', 0, max_jobs - 1)) do
    local jk = RJ.jkey(id)
    -- one read of everything the worker needs, one write per state entered
    local f = call('HMGET', jk, 'status', 'token', 'attempt', 'executions', 'type', 'params',
      'max_attempts', 'user_id', 'priority', 'retry_count', 'created_ms')
    if f[1] ~= ready then
      call('ZREM', P .. 'ready', id)  -- stale member; the hash is authoritative
    else
      local token = (tonumber(f[2]) or 0) + 1
      local attempt = (tonumber(f[3]) or 0) + 1
      fields[1] = 'token'; fields[2] = token; fields[3] = 'attempt'; fields[4] = attempt
      fields[5] = 'executions'; fields[6] = (tonumber(f[4]) or 0) + 1; fields[7] = 'worker'; fields[8] = worker
      fields[9] = 'started_ms'; fields[10] = now; fields[11] = 'lease_ms'; fields[12] = lease_ms
      opts.jk, opts.attempt, opts.token, opts.fields, opts.nf = jk, attempt, token, fields, 12
      local from = ready
      for i = 1, #chain do
        RJ.move(id, from, chain[i], opts)
        from = chain[i]
        opts.fields, opts.nf = nil, nil  -- the claim fields ride on the first move's HSET
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
