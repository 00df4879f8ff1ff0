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
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/write.lua
--!include lib/move.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
local worker = ARGV[2]
local max_jobs, lease_ms, promote = int_arg(ARGV[3], 0, 1000), int_arg(ARGV[4], 100, 366 * 86400000),
  int_arg(ARGV[5], 0, 10000)
if not valid_name(worker, 200) then return fail('RJ_INVALID', 'worker id') end
if not max_jobs then return fail('RJ_INVALID', 'max_jobs must be an integer 0-1000') end
if not lease_ms then return fail('RJ_INVALID', 'lease_ms must be an integer 100 ms to 366 days') end
if not promote then return fail('RJ_INVALID', 'promote must be an integer 0-10000') end
local m, P, now = M, P, NOW
local ready, delayed = m.ready, m.delayed
local CLAIM_FIELDS = {'status', 'token', 'attempt', 'executions', 'type', 'params', 'max_attempts', 'user_id',
  'priority', 'seq', 'retry_count', 'created_ms'}
local CLAIM_IX = {status = 1, token = 2, attempt = 3, executions = 4, type = 5, params = 6, max_attempts = 7,
  user_id = 8, priority = 9, seq = 10, retry_count = 11, created_ms = 12}

-- 1. Due delayed jobs become ready; they may be claimed by this very call.
local promoted, left = {}, read('ZCARD', P .. 'ready')  -- promoted: {score, id}, few
local skipped = 0  -- delayed members read, promoted or stale
local head = read('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
if delayed ~= '' and promote > 0 and head[2] and tonumber(head[2]) <= now then
  local due = read('ZRANGEBYSCORE', P .. 'delayed', '-inf', now, 'LIMIT', 0, promote)
  skipped = #due
  for _, id in ipairs(due) do
    local rec = load_job(id, CLAIM_FIELDS, CLAIM_IX)
    if rec.status == delayed then
      move(rec, ready, {actor = 'rjobs', msg = 'due'})
      promoted[#promoted + 1] = {ready_score(field(rec, 'priority'), field(rec, 'seq')), id}
      left = left + 1
    else
      zset(P .. 'delayed', id, false)  -- stale member; the hash is authoritative
    end
  end
end
if skipped > 0 then head = read('ZRANGE', P .. 'delayed', skipped, skipped, 'WITHSCORES') end

-- 2. The best max_jobs of the ready set and the promoted jobs, by ready score.
local out = {head[2] and tonumber(head[2]) or -1, 0}
op('ZADD', P .. 'workers', now, worker)
if max_jobs > 0 then
  -- the ready set's best (id, score pairs, in order) merged with the promoted jobs
  local best = read('ZRANGE', P .. 'ready', 0, max_jobs - 1, 'WITHSCORES')
  if #promoted > 1 then table.sort(promoted, function(a, b) return a[1] < b[1] end) end
  local claimed, b, p = 0, 1, 1
  local opts = {lease_ms = lease_ms, holder = worker, actor = worker}
  while claimed < max_jobs and (b < #best or p <= #promoted) do
    local id
    if p <= #promoted and (b >= #best or promoted[p][1] < tonumber(best[b + 1])) then
      id = promoted[p][2]; p = p + 1
    else
      id = best[b]; b = b + 2
    end
    local rec = load_job(id, CLAIM_FIELDS, CLAIM_IX)
    if rec.status ~= ready then
      zset(P .. 'ready', id, false)  -- stale member; the hash is authoritative
      left = left - 1
    else
      for i, st in ipairs(m.chain) do
        opts.token = i > 1 and field(rec, 'token') or nil
        move(rec, st, opts)
      end
      claimed = claimed + 1
      left = left - 1
      local g = field
      -- never put a nil in a reply array (Lua would cut the array short there)
      out[#out + 1] = {id, g(rec, 'type') or '', g(rec, 'params') or '', tonumber(g(rec, 'attempt')),
        tonumber(g(rec, 'max_attempts')) or 1, g(rec, 'token'), g(rec, 'user_id') or '', tonumber(g(rec, 'priority')) or 0,
        tonumber(g(rec, 'retry_count')) or 0, tonumber(g(rec, 'created_ms')) or 0, tonumber(g(rec, 'lease_deadline_ms'))}
    end
  end
end
out[2] = left
if left > 0 then WAKE = true end
commit()
return out
