-- lib/move.lua — moving jobs between states (included after lib/core.lua by the scripts that
-- move jobs): the edges and options of the compiled machine, RJ.move, the dependents of a job
-- that finished, and waking an idle worker.

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

-- Index adds of a move: now, or (opts.batch, enqueue_many) queued per key in the batch table and
-- written by the caller as one ZADD per key before anything reads those sets (one call per member
-- costs more than the add itself).
local function zadd(batch, key, score, member)
  if not batch then return call('ZADD', key, score, member) end
  local q = batch[key]
  if not q then q = {}; batch[key] = q; batch[#batch + 1] = key end
  q[#q + 1] = score
  q[#q + 1] = member
end

RJ.hs = {}  -- scratch HSET arguments for moves without caller fields (HSET runs before any nested move)

-- Move a job from `from` ('' = a new job) to `to`: every index and role structure, the hash, and
-- one event. The caller has validated the edge. opts: actor, msg, event, run_at, deadline, fields
-- (extra HSET pairs fields[1..nf]; this function writes its own pairs after them, so a caller may
-- reuse one table across moves; no name may repeat one set here), nf (default #fields), priority,
-- seq, batch (see zadd above), started (started_ms if the caller read it), has_dependents, attempt, token, jk (the job's
-- key if the caller built it).
function RJ.move(id, from, to, opts)
  local P, m, now = RJ.P, RJ.m, RJ.now
  local jk = opts.jk or RJ.jkey(id)
  local role, is_leased = m.role, m.is_leased
  local lease = is_leased[to] and opts.deadline
  if from ~= '' then
    if from == role.ready then call('ZREM', P .. 'ready', id)
    elseif from == role.delayed then call('ZREM', P .. 'delayed', id) end
    if is_leased[from] and not lease then call('ZREM', P .. 'leases', id) end
    call('ZREM', P .. 'state:' .. from, id)
  end
  zadd(opts.batch, P .. 'state:' .. to, now, id)
  local hset, n = opts.fields, opts.nf
  if not hset then hset, n = RJ.hs, 0 elseif not n then n = #hset end
  hset[n + 1] = 'status'; hset[n + 2] = to; hset[n + 3] = 'updated_ms'; hset[n + 4] = now
  n = n + 4
  if to == role.ready then
    local pr, seq = opts.priority, opts.seq
    if not pr or not seq then
      local f = call('HMGET', jk, 'priority', 'seq')
      pr, seq = pr or f[1], seq or f[2]
    end
    zadd(opts.batch, P .. 'ready', RJ.ready_score(pr, seq), id)
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
-- recursion) bounds the work and keeps the Lua stack flat for long chains. Few jobs have
-- dependents, so the per-child step is a closure made only here, not on every call.
function RJ.settle_dependents(id, final)
  RJ.cascade[#RJ.cascade + 1] = {id, final}
  if RJ.cascading then return end
  RJ.cascading = true
  local role = RJ.m.role
  local function settle_child(child, dep_id, dep_final)
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
  local i, guard = 1, 100000
  while i <= #RJ.cascade and i <= guard do
    local dep_id, dep_final = RJ.cascade[i][1], RJ.cascade[i][2]
    i = i + 1
    local members = call('SMEMBERS', RJ.jkey(dep_id) .. ':dependents')
    for _, child in ipairs(members) do settle_child(child, dep_id, dep_final) end
  end
  RJ.cascade = {}
  RJ.cascading = false
end

-- Wake one idle worker when something became claimable. The list holds at most one token: push
-- one only when it is empty (one LLEN instead of LPUSH + LTRIM when a token is already waiting).
function RJ.done()
  if RJ.wake then
    local wk = RJ.P .. 'wake'
    if call('LLEN', wk) == 0 then call('LPUSH', wk, '1') end
  end
end
