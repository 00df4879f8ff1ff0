-- lib/move.lua — deciding moves (included after lib/core.lua and lib/write.lua by the scripts
-- that move jobs): the edges and options of the compiled machine, RJ.move, and the dependents of
-- a job that reached a final state. Nothing here writes; RJ.commit() does.

-- The options after the stream caps, as numbers: max_payload, cache_ttl_ms, keep[final role].
function RJ.opt()
  local m = RJ.m
  if not m.opt then
    local mp, ttl, ks, kp, kf, kc = string.match(m.more, '^([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)$')
    m.opt = {max_payload = tonumber(mp), cache_ttl_ms = tonumber(ttl), keep = {success = tonumber(ks),
      partial = tonumber(kp), failure = tonumber(kf), cancelled = tonumber(kc)}}
  end
  return m.opt
end

-- The states and edges of the compiled machine, read on first use.
function RJ.edges()
  local m = RJ.m
  if not m.edges then m.edges = redis.call('HGET', RJ.machine_key, 'compiled:edges') or '' end
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
  return type(state) == 'string' and #state <= 32 and string.find(state, '^[%w_]+$') ~= nil and
    string.find(RJ.edges(), '|#' .. state .. '|', 1, true) ~= nil
end

-- The due time of the earliest delayed job as this call will leave it (read once).
local function delayed_head()
  if RJ.dhead == nil then
    local h = RJ.read('ZRANGE', RJ.P .. 'delayed', 0, 0, 'WITHSCORES')
    RJ.dhead = h[2] and tonumber(h[2]) or false
  end
  return RJ.dhead
end

-- A new lease token (docs/design.md, decision 2): server ms * 1000 + the job's lease count
-- modulo 1000. Never issued twice for one job, even after lost writes: the clock moves on.
local function new_token(rec)
  local n = (tonumber(rec.f.token) or 0) % 1000 + 1
  return string.format('%d', RJ.now * 1000 + n % 1000)
end

-- Leave the indexes of `from`.
local function leave(rec, from)
  local m, P, id = RJ.m, RJ.P, rec.id
  if from == m.ready then RJ.zset(P .. 'ready', id, false)
  elseif from == m.delayed then RJ.zset(P .. 'delayed', id, false) end
  if m.is_leased[from] then RJ.zset(P .. 'leases', id, false) end
  RJ.zset(P .. 'state:' .. from, id, false)
end

-- Decide the move of a loaded job (rec.status; false = a new job) to `to`. The caller validated
-- the edge. opts: actor, msg, event (default: the target state), run_at (delayed target),
-- lease_ms and holder (entering a leased state from outside: a new token and lease), operator
-- (a write to a leased job without its token), token (the lease the request presented).
-- Updates rec in memory, queues index changes, the history entry and the queue event, and
-- decides the dependents of a job reaching a final state.
function RJ.move(rec, to, opts)
  local m, P, now, id = RJ.m, RJ.P, RJ.now, rec.id
  local from = rec.status
  if from then leave(rec, from) end
  RJ.zset(P .. 'state:' .. to, id, now)
  RJ.hset(rec, 'status', to)
  RJ.hset(rec, 'updated_ms', now)
  rec.status = to
  rec.moved = true
  if to == m.ready then
    RJ.zset(P .. 'ready', id, RJ.ready_score(rec.f.priority, rec.f.seq))
    RJ.wake = true
  elseif to == m.delayed then
    local head = delayed_head()
    if not head or head > opts.run_at then RJ.wake = true; RJ.dhead = opts.run_at end
    RJ.zset(P .. 'delayed', id, opts.run_at)
    RJ.hset(rec, 'scheduled_ms', opts.run_at)
  end
  local token = opts.token
  if m.is_leased[to] then
    if not (from and m.is_leased[from]) then
      -- entering the leased states: a new lease, a new token, an attempt
      token = new_token(rec)
      RJ.hset(rec, 'token', token)
      RJ.hset(rec, 'worker', opts.holder)
      RJ.hset(rec, 'started_ms', now)
      RJ.hset(rec, 'attempt', (tonumber(rec.f.attempt) or 0) + 1)
      RJ.hset(rec, 'executions', (tonumber(rec.f.executions) or 0) + 1)
      RJ.hset(rec, 'lease_deadline_ms', now + opts.lease_ms)
    end
    RJ.zset(P .. 'leases', id, tonumber(rec.f.lease_deadline_ms))
  end
  local final = m.final_role[to]
  if final then
    RJ.hset(rec, 'completed_ms', now)
    local started = tonumber(rec.f.started_ms)
    if started then RJ.hset(rec, 'duration_ms', now - started) end
  end
  local attempt = rec.f.attempt
  RJ.log(rec, opts.event or to, from, to, opts.actor, opts.msg, attempt and tostring(attempt) or nil,
    token, nil, opts.operator, final ~= nil)
  if final and (rec.new_dependents or (rec.f.has_dependents and rec.f.has_dependents ~= '')) then
    RJ.settle_dependents(rec, final)
  end
end

-- The fields a dependent's decision needs.
local DEP_FIELDS = {'deps_pending', 'scheduled_ms', 'on_dep_failure'}

-- A job reached a final state: release, fail or cancel the jobs waiting for it, along the whole
-- chain. A worklist (not recursion) bounds the work and keeps the Lua stack flat.
RJ.cascade, RJ.cascading = {}, false
function RJ.settle_dependents(rec, final)
  RJ.cascade[#RJ.cascade + 1] = {rec, final}
  if RJ.cascading then return end
  RJ.cascading = true
  local role = RJ.m.role
  local i = 1
  while i <= #RJ.cascade and i <= 100000 do
    local dep, dep_final = RJ.cascade[i][1], RJ.cascade[i][2]
    i = i + 1
    local children = dep.new and {} or RJ.read('SMEMBERS', dep.jk .. ':dependents')
    for _, child in ipairs(dep.new_dependents or {}) do children[#children + 1] = child end
    for _, child in ipairs(children) do
      local c = RJ.load(child, DEP_FIELDS)
      if c.status and c.status == role.waiting then
        if dep_final == 'success' then
          local left = (tonumber(c.f.deps_pending) or 1) - 1
          RJ.hset(c, 'deps_pending', left)
          if left <= 0 then
            local due = tonumber(c.f.scheduled_ms) or 0
            if due > RJ.now and role.delayed ~= '' and RJ.allows(c.status, role.delayed) then
              RJ.move(c, role.delayed, {run_at = due, actor = 'rjobs', msg = 'dependencies done'})
            else
              RJ.move(c, role.ready, {actor = 'rjobs', msg = 'dependencies done'})
            end
          end
        else
          local target = role.cancelled
          if c.f.on_dep_failure == 'fail' and RJ.allows(c.status, role.failure) then target = role.failure end
          if RJ.allows(c.status, target) then
            local msg = 'dependency ' .. dep.id .. ' ended ' .. dep_final
            RJ.hset(c, 'error', '{"code":"dependency_failed","message":' .. cjson.encode(msg) .. '}')
            RJ.move(c, target, {actor = 'rjobs', msg = msg})
          end
        end
      end
    end
  end
  RJ.cascade = {}
  RJ.cascading = false
end
