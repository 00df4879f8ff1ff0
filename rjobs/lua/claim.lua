-- claim.lua — promote due delayed jobs, then lease up to N ready jobs of the types a worker runs to
-- that worker. Ready jobs wait in lanes, one per job type (docs/design.md, decision 5): the claim
-- merges the heads of the lanes it serves by ready score, so a type no worker here runs is never
-- taken (it waits for a worker that runs it) and never blocks the others.
-- Called by: Worker (Scripts.claim)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  worker   worker id (charset A-Z a-z 0-9 _ . -, <= 200)
-- ARGV[3]  max_jobs how many jobs to lease at most (0-1000)
-- ARGV[4]  lease_ms lease length in ms (100 ms to 366 days)
-- ARGV[5]  promote  how many due delayed jobs to promote at most (0-10000)
-- ARGV[6]  seen     1 = record in the lanes index that a worker running these types came now (a
--                   worker sends it every few seconds, not on every claim); 0 = not this time
-- ARGV[7]  n        how many job types follow (0-1000), or '*' (alone): every type (the first 1000 lanes)
-- ARGV[8..] types   the job types the worker runs (charset A-Z a-z 0-9 _ . -, <= 128; a repeat counts once)
-- Reads    machine (field paused: set by pause.lua; traced: set by enqueue.lua)
-- Builds   job:<id>, job:<id>:history, ready:<type>, lanes, delayed, leases, state:<s>, workers, wake:<type>
--          metrics:<minute>, totals (the counters of the moves it makes: lib/write.lua)
-- Returns  {next_due_ms (-1 = nothing delayed), ready_left (in the lanes served; -1 = the queue is
--          paused: no job), jobs...}; each job is
--          {id, type, params, attempt, max_attempts, token, user_id, priority, retry_count,
--           created_ms, lease_deadline_ms, group ('' = none)[, trace ('' = none)]}: the job's trace
--          context comes only from a queue whose machine is marked traced
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
local seen = ARGV[6]
if seen ~= '0' and seen ~= '1' then return fail('RJ_INVALID', 'seen must be 0 or 1') end
local any = ARGV[7] == '*' and #ARGV == 7
local ntypes = any and 0 or int_arg(ARGV[7], 0, 1000)
if not ntypes or #ARGV ~= 7 + ntypes then
  return fail('RJ_INVALID', "types: n must be 0-1000 and match the list, or '*'")
end
local types, serves = {}, {}
for i = 8, 7 + ntypes do
  local t = ARGV[i]
  if not valid_name(t) then return fail('RJ_INVALID', 'job type') end
  if not serves[t] then serves[t] = true; types[#types + 1] = t end
end
-- a paused queue (pause.lua): due delayed jobs still become ready, nothing is claimed; flow: the
-- queue has limits (set_limit.lua) or grouped jobs, which this call then reads (else it reads nothing
-- more than a queue without them)
local paused, flow = PAUSED, FLOW
if paused then max_jobs = 0 end
if any then  -- a consumer that takes every type: the lanes listed in the index (bounded)
  for _, t in ipairs(read('ZRANGE', P .. 'lanes', 0, 999)) do serves[t] = true; types[#types + 1] = t end
end
local m, P, now = M, P, NOW
local ready, delayed = m.ready, m.delayed
local CLAIM_FIELDS = {'status', 'token', 'attempt', 'executions', 'type', 'params', 'max_attempts', 'user_id',
  'priority', 'seq', 'retry_count', 'created_ms', 'updated_ms', flow and 'group' or nil, flow and 'lim' or nil}
local CLAIM_IX = {status = 1, token = 2, attempt = 3, executions = 4, type = 5, params = 6, max_attempts = 7,
  user_id = 8, priority = 9, seq = 10, retry_count = 11, created_ms = 12, updated_ms = 13, group = 14, lim = 15,
  trace = 99}
-- A job's trace context (rjobs.tracing) is read only in a queue that stored one (TRACED, read
-- by init): reading a field most jobs lack costs a scan of each job's hash. Elsewhere its position
-- is past the fields read, so it reads as absent without a lookup (as group and lim do without flow).
if TRACED then
  local n = flow and 16 or 14
  if not flow then CLAIM_IX.group, CLAIM_IX.lim = 99, 99 end
  CLAIM_FIELDS[n], CLAIM_IX.trace = 'trace', n
end

-- 1. Due delayed jobs become ready (whatever their type: the first claim after they are due
-- promotes them); those of a type served here may be claimed by this very call.
-- promoted: {score, id, type}, few; count: jobs per served lane; heads: per lane with jobs, its
-- best max_jobs as h = {id, score, id, score, ...}, a cursor and its type
local promoted, left, count, heads = {}, 0, {}, {}
-- Limits (docs/design.md, decision 5): a name ('t:<type>', 'g:<group>') may cap its running jobs
-- and rate its claims; allowance(name) is how many more jobs of it this call may lease (math.huge:
-- no limit), and when a rate window or a back-off opens (opens). Read once per name and call.
local LIM, opens_at = false, false
local allowance, open  -- made only for a queue with limits or groups (flow): closures cost per call
if flow then
  LIM = {}
  function allowance(name)
    local a = LIM[name]
    if a then return a end
    a = {allow = math.huge}
    local spec = read('HGET', P .. 'limits', name)
    if spec then
      local cap, n, per = string.match(spec, '^(%d+),(%d+),(%d+)$')
      cap, n, per = tonumber(cap), tonumber(n), tonumber(per)
      if cap and cap > 0 then
        a.cap = true
        a.allow = math.max(0, cap - math.max(0, tonumber(read('HGET', P .. 'running', name)) or 0))
      end
      if n and n > 0 then
        a.rate, a.per = P .. 'rate:' .. name, per
        local used = read('ZCOUNT', a.rate, '(' .. (now - per), '+inf')
        if used >= n then
          local oldest = read('ZRANGEBYSCORE', a.rate, '(' .. (now - per), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
          a.opens = oldest[2] and tonumber(oldest[2]) + per or now + per
        end
        a.allow = math.min(a.allow, math.max(0, n - used))
      end
    end
    local back = tonumber(read('HGET', P .. 'backoff', name))
    if back and back > now then
      a.allow, a.opens = 0, math.max(a.opens or 0, back)
    end
    if a.opens and (not opens_at or a.opens < opens_at) then opens_at = a.opens end
    LIM[name] = a
    return a
  end
  function open(l)  -- a source may lease one more job under every limit it is under
    for _, name in ipairs(l.names) do
      if LIM[name].allow <= 0 then return false end
    end
    return true
  end
end
local seq_now, turn = false, 0  -- a served group lane goes behind every job enqueued so far
for _, t in ipairs(paused and {} or types) do
  local key, n, tn = lane_key(t), 0, 't:' .. t
  local ta = flow and allowance(tn) or nil
  if max_jobs > 0 and (not ta or ta.allow > 0) then
    local h = read('ZRANGE', key, 0, max_jobs - 1, 'WITHSCORES')
    n = #h / 2
    if n == max_jobs then n = read('ZCARD', key) end  -- a full page: there may be more
    if n > 0 then heads[#heads + 1] = {h = h, at = 1, t = t, names = ta and {tn} or nil} end
    -- the lanes of the type's groups, in turn (bounded): fair across groups
    local groups = flow and read('ZRANGE', P .. 'groups:' .. t, 0, 99, 'WITHSCORES') or {}
    for i = 1, #groups, 2 do
      local g, gn = groups[i], 'g:' .. groups[i]
      local ga = allowance(gn)
      if ga.allow > 0 then
        local gkey = key .. ':' .. g
        local k = math.min(max_jobs, ga.allow, ta.allow)
        local gh = read('ZRANGE', gkey, 0, k - 1, 'WITHSCORES')
        if #gh == 0 then
          op('ZREM', P .. 'groups:' .. t, g)  -- an emptied lane leaves the index
        else
          heads[#heads + 1] = {h = gh, at = 1, t = t, g = g, key = gkey, names = {tn, gn},
            rot = tonumber(groups[i + 1]) % 1e13, more = #gh / 2 == k}
          n = n + #gh / 2
          if not seq_now then seq_now = tonumber(read('GET', P .. 'seq')) or 0 end
        end
      end
    end
  elseif max_jobs == 0 then
    n = read('ZCARD', key)
  end
  count[t] = n
  left = left + n
end
local skipped = 0  -- delayed members read, promoted or stale
local head = read('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
if delayed ~= '' and promote > 0 and head[2] and tonumber(head[2]) <= now then
  local due = read('ZRANGEBYSCORE', P .. 'delayed', '-inf', now, 'LIMIT', 0, promote)
  skipped = #due
  for _, id in ipairs(due) do
    local rec = load_job(id, CLAIM_FIELDS, CLAIM_IX)
    if rec.status == delayed then
      move(rec, ready, {actor = 'rjobs', msg = 'due'})
      local t = field(rec, 'type')
      if any and not serves[t] then serves[t] = true; types[#types + 1] = t; count[t] = 0 end
      if serves[t] and not paused and not group_of(rec) and not flow then
        promoted[#promoted + 1] = {ready_score(field(rec, 'priority'), field(rec, 'seq')), id, t}
        count[t] = count[t] + 1
        left = left + 1
      end
    else
      zset(P .. 'delayed', id, false)  -- stale member; the hash is authoritative
    end
  end
end
if skipped > 0 then head = read('ZRANGE', P .. 'delayed', skipped, skipped, 'WITHSCORES') end

-- 2. The best max_jobs of the served lanes and the promoted jobs, by ready score: a merge of
-- their heads (each lane is in order, and so is the sorted promoted list).
local out = {head[2] and tonumber(head[2]) or -1, 0}
op('ZADD', P .. 'workers', now, worker)
if seen == '1' and #types > 0 and not any then
  local listing = {}  -- the lanes index: each served type, with the time a worker that runs it last came
  for i, t in ipairs(types) do listing[2 * i - 1] = now; listing[2 * i] = t end
  op('ZADD', P .. 'lanes', unpack(listing))
end
if max_jobs > 0 and left > 0 then
  if #promoted > 1 then table.sort(promoted, function(a, b) return a[1] < b[1] end) end
  local claimed, p = 0, 1
  local opts = {lease_ms = lease_ms, holder = worker, actor = worker}
  local only = #heads == 1 and #promoted == 0 and not flow and heads[1]  -- one source: nothing to compare
  local lane
  while claimed < max_jobs do
    local id, t, best = nil, nil, nil
    lane = only
    if not only then
      for i = 1, #heads do
        local l = heads[i]
        if l.at < #l.h and (not l.names or open(l)) then
          local score = tonumber(l.h[l.at + 1])
          if l.g then score = math.floor(score / 1e13) * 1e13 + l.rot end  -- the group's turn
          if not best or score < best then best, lane = score, l end
        end
      end
    elseif only.at >= #only.h then
      lane = nil
    end
    if p <= #promoted and (not lane or promoted[p][1] < best) then
      id, t = promoted[p][2], promoted[p][3]; p = p + 1
      lane = nil
    elseif lane then
      id, t = lane.h[lane.at], lane.t; lane.at = lane.at + 2
    else
      break
    end
    local rec = load_job(id, CLAIM_FIELDS, CLAIM_IX)
    if rec.status ~= ready then
      zset(lane and lane.key or lane_key(t), id, false)  -- stale member; the hash is authoritative
      left = left - 1
      count[t] = count[t] - 1
    else
      if lane and lane.names then  -- under limits: a slot of each capped name, a mark in each rate
        local held = {}
        for _, name in ipairs(lane.names) do
          local a = LIM[name]
          a.allow = a.allow - 1
          if a.cap then held[#held + 1] = name; a.took = (a.took or 0) + 1 end
          if a.rate then op('ZADD', a.rate, now, id .. ':' .. (tonumber(field(rec, 'attempt')) or 0)); a.used = true end
        end
        if #held > 0 then hset(rec, 'lim', table.concat(held, ',')) end
      end
      if lane and lane.g then  -- the group goes behind the jobs enqueued so far (in its band)
        turn = turn + 1
        lane.rot = seq_now + turn
        lane.taken = true
      end
      for i, st in ipairs(m.chain) do
        opts.token = i > 1 and field(rec, 'token') or nil
        move(rec, st, opts)
      end
      claimed = claimed + 1
      left = left - 1
      count[t] = count[t] - 1
      local g = field
      -- never put a nil in a reply array (Lua would cut the array short there)
      out[#out + 1] = {id, t or '', g(rec, 'params') or '', tonumber(g(rec, 'attempt')),
        tonumber(g(rec, 'max_attempts')) or 1, g(rec, 'token'), g(rec, 'user_id') or '', tonumber(g(rec, 'priority')) or 0,
        tonumber(g(rec, 'retry_count')) or 0, tonumber(g(rec, 'created_ms')) or 0, tonumber(g(rec, 'lease_deadline_ms')),
        g(rec, 'group') or '', TRACED and (g(rec, 'trace') or '') or nil}
    end
  end
end
-- the limits' counts and windows, and each served group lane's new turn in its type's index
for name, a in pairs(LIM or {}) do
  if a.took then op('HINCRBY', P .. 'running', name, a.took) end
  if a.used then
    op('ZREMRANGEBYSCORE', a.rate, '-inf', now - a.per)
    op('PEXPIRE', a.rate, 2 * a.per)
  end
end
for _, l in ipairs(heads) do
  if l.taken then
    if l.at < #l.h then
      op('ZADD', P .. 'groups:' .. l.t, math.floor(tonumber(l.h[l.at + 1]) / 1e13) * 1e13 + l.rot, l.g)
    elseif l.more then  -- its next job was not read: its turn in the band of the last one
      op('ZADD', P .. 'groups:' .. l.t, math.floor(tonumber(l.h[l.at - 1]) / 1e13) * 1e13 + l.rot, l.g)
    else
      op('ZREM', P .. 'groups:' .. l.t, l.g)  -- its lane is empty now
    end
  end
end
if opens_at and (out[1] < 0 or opens_at < out[1]) then out[1] = opens_at end  -- wake when a limit opens
-- jobs left in a lane served here: wake another worker idle on that lane
for _, t in ipairs(types) do
  if (count[t] or 0) > 0 then wake(t) end
end
out[2] = paused and -1 or left
commit()
return out
