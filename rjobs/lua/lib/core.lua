-- lib/core.lua — shared helpers, included at the top of every script by rjobs/scripts.py.
-- Not a script of its own. Conventions every script follows:
--   ARGV[1] is the queue prefix "rjobs:{Q}:"; KEYS[1] must equal prefix.."machine" and KEYS[2]
--   prefix.."events". Every other key a script touches is built from the prefix, so it shares the
--   queue's hash tag (one Cluster slot): job:<id>, job:<id>:events, job:<id>:assets,
--   job:<id>:dependents, ready, delayed, leases, expiring, seq, wake, workers, state:<s>,
--   owner:<u>, dedupe:<k>, cache:<k>.
--   RJ.init() validates and loads the machine; scripts validate everything, then write.
--   Errors are returned (never raised) as "RJ_<CODE> args...", mapped in rjobs/errors.py.
local RJ = {cascade = {}, cascading = false, wake = false}
local call = redis.call

local function split(s)
  local out = {}
  if s then for part in string.gmatch(s, '[^,]+') do out[#out + 1] = part end end
  return out
end

-- The compiled machine, written by declare_machine.lua into two fields of the machine hash:
--   compiled:head   rj2|<jmax>,<qev>,<smax>|<more options>|<9 role states>|<leased chain>|
--   compiled:edges  |#<state>|<from>><to>|...|  (every state, then its edges)
-- jmax, qev, smax: options job_events_maxlen, queue_events, stream_maxlen (every event needs
-- them); more options, in order: max_payload, cache_ttl_ms, keep_success_ms, keep_partial_ms,
-- keep_failure_ms, keep_cancelled_ms (parsed only by the calls that use them); roles in order:
-- initial, ready, delayed, waiting, review, success, partial, failure, cancelled ('' = none).
-- A call reads the short head with one HGET and one anchored string.match; the edges are read
-- only by calls that check an edge, with a plain string.find of '|from>to|'. Nothing decodes or
-- builds the whole table per call (cjson.decode of the whole machine was ~40% of a small call).
local HEAD = '^rj2|([^,]*),([^,]*),([^|]*)|([^|]*)|([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),' ..
  '([^,]*),([^|]*)|([^|]+)|$'

function RJ.init(keys, prefix)
  if type(prefix) ~= 'string' or keys[1] ~= prefix .. 'machine' or keys[2] ~= prefix .. 'events' then
    return 'RJ_INVALID keys do not match the queue prefix'
  end
  RJ.P = prefix
  RJ.events_key = keys[2]
  RJ.machine_key = keys[1]
  local t = redis.call('TIME')
  RJ.now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local head = call('HGET', keys[1], 'compiled:head')
  if not head then
    if call('EXISTS', keys[1]) == 0 then return 'RJ_NO_MACHINE no state machine declared for this queue' end
    return 'RJ_NO_MACHINE the stored machine was declared by another rjobs version: ' ..
      'declare the queue again (connect a Queue) to recompile it'
  end
  local jmax, qev, smax, more, initial, ready, delayed, waiting, review, success, partial, failure, cancelled,
    leased = string.match(head, HEAD)
  if not leased then
    return 'RJ_NO_MACHINE the stored machine was compiled by another rjobs version: ' ..
      'declare the queue again (connect a Queue) to recompile it'
  end
  local final_role = {[success] = 'success', [failure] = 'failure', [cancelled] = 'cancelled'}
  if partial ~= '' then final_role[partial] = 'partial' end
  local chain, is_leased
  if string.find(leased, ',', 1, true) then
    chain, is_leased = split(leased), {}
    for _, st in ipairs(chain) do is_leased[st] = true end
  else
    chain, is_leased = {leased}, {[leased] = true}
  end
  -- stream caps stay strings (XADD takes them as they are); `more` is parsed by RJ.opt()
  RJ.m = {leased = chain, is_leased = is_leased, final_role = final_role, jmax = jmax, qev = qev, smax = smax,
    more = more, role = {initial = initial, ready = ready, delayed = delayed, waiting = waiting, review = review,
      success = success, partial = partial, failure = failure, cancelled = cancelled}}
  return nil
end

-- The options beyond the stream caps, as numbers: max_payload, cache_ttl_ms, keep[final role].
function RJ.opt()
  local m = RJ.m
  if not m.opt then
    local mp, ttl, ks, kp, kf, kc = string.match(m.more, '^([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)$')
    m.opt = {max_payload = tonumber(mp), cache_ttl_ms = tonumber(ttl), keep = {success = tonumber(ks),
      partial = tonumber(kp), failure = tonumber(kf), cancelled = tonumber(kc)}}
  end
  return m.opt
end

-- max_payload alone (the first of the more options), for enqueue's hot path
function RJ.max_payload() return tonumber(string.match(RJ.m.more, '^[^,]*')) end

-- The states and edges of the compiled machine, read on first use.
function RJ.edges()
  local m = RJ.m
  if not m.edges then m.edges = call('HGET', RJ.machine_key, 'compiled:edges') or '' end
  return m.edges
end

function RJ.jkey(id) return RJ.P .. 'job:' .. id end

-- The table stored in Redis has the edge from -> to (a token '|from>to|' of the compiled machine).
function RJ.allows(from, to)
  return type(from) == 'string' and type(to) == 'string' and
    string.find(RJ.edges(), '|' .. from .. '>' .. to .. '|', 1, true) ~= nil
end

-- A declared state (a token '|#state|'); the charset check keeps a crafted name from matching
-- across tokens.
function RJ.is_state(state)
  return type(state) == 'string' and string.match(state, '^[%w_]+$') ~= nil and
    string.find(RJ.edges(), '|#' .. state .. '|', 1, true) ~= nil
end

function RJ.is_final(state) return RJ.m.final_role[state] ~= nil end

-- Valid ids/names: same charset rule as rjobs/keys.py, enforced again here so a raw EVALSHA from
-- redis-cli cannot forge keys either.
function RJ.valid_name(s, maxlen)
  return type(s) == 'string' and #s >= 1 and #s <= (maxlen or 128) and string.match(s, '^[%w_%.%-]+$') ~= nil
end

function RJ.ready_score(priority, seq)
  return (10 - tonumber(priority)) * 1e13 + tonumber(seq)
end

-- Append one event to the job's stream (jk: the job's key) and the queue's stream. Events carry
-- ids, states, actor and short text, never payloads. Missing values (nil, false as HMGET reports
-- an absent field, '') are left out.
function RJ.emit(id, jk, event, from, to, actor, msg, attempt, token, data)
  local a, n = {'event', event, 'job', id}, 4
  if from and from ~= '' then a[n + 1] = 'from'; a[n + 2] = from; n = n + 2 end
  if to and to ~= '' then a[n + 1] = 'to'; a[n + 2] = to; n = n + 2 end
  if actor and actor ~= '' then a[n + 1] = 'actor'; a[n + 2] = actor; n = n + 2 end
  if msg and msg ~= '' then a[n + 1] = 'msg'; a[n + 2] = msg; n = n + 2 end
  if attempt and attempt ~= '' then a[n + 1] = 'attempt'; a[n + 2] = attempt; n = n + 2 end
  if token and token ~= '' then a[n + 1] = 'token'; a[n + 2] = token; n = n + 2 end
  if data and data ~= '' then a[n + 1] = 'data'; a[n + 2] = data; n = n + 2 end
  local m = RJ.m
  call('XADD', jk .. ':events', 'MAXLEN', '~', m.jmax, '*', unpack(a, 1, n))
  if m.qev == '1' then
    call('XADD', RJ.events_key, 'MAXLEN', '~', m.smax, '*', unpack(a, 1, n))
  end
end

-- Move a job from `from` ('' = a new job) to `to`: every index and role structure, the hash, and
-- one event. The caller has validated the edge. opts: actor, msg, event, run_at, deadline, fields
-- (extra HSET pairs, appended to by this function: pass a fresh table; no name may repeat one
-- set here), priority, seq, started (started_ms if the caller read it), has_dependents, attempt,
-- token, jk (the job's key if the caller built it).
function RJ.move(id, from, to, opts)
  local P, m, now = RJ.P, RJ.m, RJ.now
  local jk = opts.jk or P .. 'job:' .. id
  local role, is_leased = m.role, m.is_leased
  local lease = is_leased[to] and opts.deadline
  if from ~= '' then
    if from == role.ready then call('ZREM', P .. 'ready', id)
    elseif from == role.delayed then call('ZREM', P .. 'delayed', id) end
    if is_leased[from] and not lease then call('ZREM', P .. 'leases', id) end
    call('ZREM', P .. 'state:' .. from, id)
  end
  call('ZADD', P .. 'state:' .. to, now, id)
  local hset = opts.fields or {}
  local n = #hset
  hset[n + 1] = 'status'; hset[n + 2] = to; hset[n + 3] = 'updated_ms'; hset[n + 4] = now
  n = n + 4
  if to == role.ready then
    local pr, seq = opts.priority, opts.seq
    if not pr or not seq then
      local f = call('HMGET', jk, 'priority', 'seq')
      pr, seq = pr or f[1], seq or f[2]
    end
    call('ZADD', P .. 'ready', RJ.ready_score(pr, seq), id)
    RJ.wake = true
  elseif to == role.delayed then
    -- an idle worker sleeps until the head of the delayed set is due: wake it if this job is earlier
    local head = call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
    if not head[2] or tonumber(head[2]) > opts.run_at then RJ.wake = true end
    call('ZADD', P .. 'delayed', opts.run_at, id)
    hset[n + 1] = 'scheduled_ms'; hset[n + 2] = opts.run_at
    n = n + 2
  end
  if lease then
    call('ZADD', P .. 'leases', lease, id)
    hset[n + 1] = 'lease_deadline_ms'; hset[n + 2] = lease
    n = n + 2
  end
  local final = m.final_role[to]
  if final then
    hset[n + 1] = 'completed_ms'; hset[n + 2] = now
    n = n + 2
    local started = opts.started  -- false: the caller read it and it is absent; nil: not read
    if started == nil then started = call('HGET', jk, 'started_ms') end
    started = tonumber(started)
    if started then hset[n + 1] = 'duration_ms'; hset[n + 2] = now - started; n = n + 2 end
    local keep = RJ.opt().keep[final]
    if keep >= 0 then
      call('ZADD', P .. 'expiring', now + keep, id)
      hset[n + 1] = 'expire_ms'; hset[n + 2] = now + keep
      n = n + 2
    end
  end
  call('HSET', jk, unpack(hset, 1, n))
  RJ.emit(id, jk, opts.event or to, from, to, opts.actor, opts.msg, opts.attempt, opts.token)
  if final then
    -- has_dependents is set by enqueue when a job gains a dependent: most jobs never do, and
    -- skipping the set lookup is measurable on the hot path.
    local deps = opts.has_dependents
    if deps == nil then deps = call('HEXISTS', jk, 'has_dependents') == 1 end
    if deps then RJ.settle_dependents(id, final) end
  end
end

-- A job reached a final state: release or fail/cancel the jobs waiting for it. A worklist (not
-- recursion) bounds the work and keeps the Lua stack flat for long chains.
function RJ.settle_dependents(id, final)
  RJ.cascade[#RJ.cascade + 1] = {id, final}
  if RJ.cascading then return end
  RJ.cascading = true
  local i, guard = 1, 100000
  while i <= #RJ.cascade and i <= guard do
    local dep_id, dep_final = RJ.cascade[i][1], RJ.cascade[i][2]
    i = i + 1
    local members = call('SMEMBERS', RJ.jkey(dep_id) .. ':dependents')
    for _, child in ipairs(members) do RJ.settle_child(child, dep_id, dep_final) end
  end
  RJ.cascade = {}
  RJ.cascading = false
end

function RJ.settle_child(child, dep_id, dep_final)
  local role = RJ.m.role
  local ck = RJ.jkey(child)
  local status = call('HGET', ck, 'status')
  if not status or status ~= role.waiting then return end
  if dep_final == 'success' then
    local left = call('HINCRBY', ck, 'deps_pending', -1)
    if left > 0 then return end
    local due = tonumber(call('HGET', ck, 'scheduled_ms') or '0') or 0
    if due > RJ.now and role.delayed ~= '' and RJ.allows(status, role.delayed) then
      RJ.move(child, status, role.delayed, {run_at = due, actor = 'rjobs', msg = 'dependencies done'})
    else
      RJ.move(child, status, role.ready, {actor = 'rjobs', msg = 'dependencies done'})
    end
    return
  end
  local policy = call('HGET', ck, 'on_dep_failure')
  local target = role.cancelled
  if policy == 'fail' and RJ.allows(status, role.failure) then target = role.failure end
  if not RJ.allows(status, target) then return end
  local msg = 'dependency ' .. dep_id .. ' ended ' .. dep_final
  local err = '{"code":"dependency_failed","message":"' .. msg .. '"}'
  RJ.move(child, status, target, {actor = 'rjobs', msg = msg, fields = {'error', err}})
end

-- Purge finished jobs whose retention ended: the hash, its streams, assets, dependents set, and
-- every index entry that points at it. Bounded by `limit` per call.
function RJ.purge(limit)
  local P = RJ.P
  local due = call('ZRANGEBYSCORE', P .. 'expiring', '-inf', RJ.now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local jk = RJ.jkey(id)
    local f = call('HMGET', jk, 'status', 'user_id', 'dedupe_key', 'depends_on')
    if f[1] then call('ZREM', P .. 'state:' .. f[1], id) end
    if f[2] and f[2] ~= '' then call('ZREM', P .. 'owner:' .. f[2], id) end
    if f[3] and f[3] ~= '' then
      local dk = P .. 'dedupe:' .. f[3]
      if call('GET', dk) == id then call('DEL', dk) end
    end
    for _, dep in ipairs(split(f[4])) do call('SREM', RJ.jkey(dep) .. ':dependents', id) end
    call('DEL', jk, jk .. ':events', jk .. ':assets', jk .. ':dependents')
    call('ZREM', P .. 'expiring', id)
  end
  return #due
end

-- Wake one idle worker when something became claimable. The list holds at most one token: push
-- one only when it is empty (one LLEN instead of LPUSH + LTRIM when a token is already waiting).
function RJ.done()
  if RJ.wake then
    local wk = RJ.P .. 'wake'
    if call('LLEN', wk) == 0 then call('LPUSH', wk, '1') end
  end
end

-- Check a worker's lease token. Returns nil when it holds the job in a leased state.
function RJ.check_token(id, status, token, job_token)
  if token == nil or token == '' then return nil end
  if job_token ~= token or not RJ.m.is_leased[status] then
    return 'RJ_LEASE_LOST ' .. id .. ' token ' .. token .. ' is not the lease of this job (now ' ..
      tostring(status) .. ')'
  end
  return nil
end
