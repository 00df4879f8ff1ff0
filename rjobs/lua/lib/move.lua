-- lib/move.lua — deciding moves (included after lib/core.lua and lib/write.lua by the scripts
-- that move jobs): the edges and options of the compiled machine, move(), and the dependents of a
-- job that reached a final state. Nothing here writes; commit() does.
-- move(rec, to, opts) moves a loaded job (rec.status; false = a job this call creates) to the
-- state `to`; the caller checked the edge. Its steps: leave the old state's indexes, enter the
-- new state's, lease (or drop the lease deadline when leaving the leased states), final, record
-- (history and event), dependents. The keys of opts (nil =
-- absent; move only reads opts, so a caller may reuse one table for many moves, as claim does):
--   actor     who moves the job: the history's "by" and the event's actor
--   msg       a short reason for the history and the event (nil: none)
--   event     the name of the history entry and the event (nil: the target state)
--   run_at    epoch ms the job is due at; required when `to` is the delayed state
--   lease_ms  the new lease's length in ms; required when entering the leased states from outside
--   holder    who holds that new lease (the job's worker field); with lease_ms
--   token     the lease the request presented (history and event); moving within the leased
--             states, the job's current token. Entering them from outside issues a new one instead
--   operator  true: a write to a leased job without its token, recorded as such
--   assign    true: a lease taken by hand (transition, hold): the holder is the job's assignee,
--             listed in assigned:<holder> while the job stays leased

-- The options after the event options, as numbers, parsed on first use: max_payload,
-- cache_ttl_ms, keep[final role] (in lib/layout.lua's order; a unit test holds these names to it).
local function opt()
  if not M.opt then
    local max_payload, cache_ttl_ms, keep_success_ms, keep_partial_ms, keep_failure_ms, keep_cancelled_ms =
      string.match(M.more, LAYOUT_MORE)
    M.opt = {max_payload = tonumber(max_payload), cache_ttl_ms = tonumber(cache_ttl_ms), keep = {
      success = tonumber(keep_success_ms), partial = tonumber(keep_partial_ms), failure = tonumber(keep_failure_ms),
      cancelled = tonumber(keep_cancelled_ms)}}
  end
  return M.opt
end

-- The table stored in Redis has the edge from -> to (a token '|from>to|' of the compiled machine;
-- the edges are read on first use).
local function allows(from, to)
  if not M.edges then M.edges = call('HGET', MACHINE_KEY, 'compiled:edges') or '' end
  return type(from) == 'string' and type(to) == 'string' and
    string.find(M.edges, '|' .. from .. '>' .. to .. '|', 1, true) ~= nil
end

-- A declared state (a token '|#state|'); the charset check keeps a crafted name from matching
-- across tokens.
local function is_state(state)
  if not M.edges then M.edges = call('HGET', MACHINE_KEY, 'compiled:edges') or '' end
  return type(state) == 'string' and #state <= 32 and string.find(state, '^[%w_]+$') ~= nil and
    string.find(M.edges, '|#' .. state .. '|', 1, true) ~= nil
end

-- A ready job's rank: priority band, then FIFO by sequence.
local function ready_score(priority, seq)
  return (10 - tonumber(priority)) * 1e13 + tonumber(seq)
end

-- The lane of a job (docs/design.md, decision 5): ready jobs are kept per job type, so a claim
-- takes only the types its worker runs; the type is fixed at creation. lane_key(t) is the key of
-- a type's lane, made once per call and type.
local LANE_KEYS = {}
local function lane_key(t)
  local key = LANE_KEYS[t]
  if not key then key = P .. 'ready:' .. t; LANE_KEYS[t] = key end
  return key
end

local function lane_of(rec)
  return field(rec, 'type') or '?'
end

-- A job's group (a concurrency or rate key given at enqueue), or false. A grouped job waits in the
-- (type, group) lane ready:<type>:<group>, listed in its type's index groups:<type> by its turn
-- (claim.lua: fair across groups).
local function group_of(rec)
  local g = field(rec, 'group')
  return g and g ~= '' and g or false
end

local function lane_key_of(rec)
  local t, g = lane_of(rec), FLOW and group_of(rec)  -- without FLOW no job has a group
  if g then return P .. 'ready:' .. t .. ':' .. g, t, g end
  return lane_key(t), t, false
end

-- Mark a lane as having claimable work (or a delayed job due sooner): commit wakes its line.
local function wake(t)
  if not WAKE then WAKE = {} end
  WAKE[t] = true
end

local dhead, dhead_read = false, false  -- the earliest delayed job's due time, as this call leaves it
local settle_dependents  -- made on first use (few jobs have dependents): see define_settle below
local define_settle

-- Decide the move of a loaded job to `to` (the contract at the top of this file): updates rec in
-- memory, queues the index changes, the history entry and the queue event, and decides the
-- dependents of a job reaching a final state. Its steps are named blocks, not functions: a local
-- function is a closure every call of the script builds again, and a call per step per job costs
-- more than the 1% a step may (benchmarks/script_instructions.py).
local function move(rec, to, opts)
  local id, from = rec.id, rec.status
  -- 0. count (MET, lib/write.lua): created, claimed (and how long it waited ready), final (and how
  -- long the last attempt ran, when the move ends a lease); inline, as a call per count costs more
  -- than the counting. Read before step 2 rewrites updated_ms.
  local t = field(rec, 'type') or '?'
  local m = MET and MET[t]
  if not m then
    if not MET then MET = {} end
    m = {0, 0, 0, 0, 0}
    MET[t] = m
  end
  local waited = from == M.ready and M.is_leased[to] and tonumber(field(rec, 'updated_ms'))
  if not from then m[1] = m[1] + 1 end
  -- 1. leave: drop the job from the indexes of `from`
  if from then
    if from == M.ready then zset((lane_key_of(rec)), id, false)
    elseif from == M.delayed then zset(P .. 'delayed', id, false) end
    if M.is_leased[from] then zset(P .. 'leases', id, false) end
    zset(P .. 'state:' .. from, id, false)
  end
  -- 2. enter: the indexes and status fields of `to`; a claimable job wakes an idle worker
  zset(P .. 'state:' .. to, id, NOW)
  hset(rec, 'status', to)
  hset(rec, 'updated_ms', NOW_S)
  rec.status = to
  rec.moved = true
  if to == M.ready then
    local key, t, g = lane_key_of(rec)
    local score = ready_score(field(rec, 'priority'), field(rec, 'seq'))
    zset(key, id, score)
    -- a new group lane takes its first job's turn; a job of a higher priority moves its lane up
    if g then op('ZADD', P .. 'groups:' .. t, 'LT', score, g) end
    wake(t)
  elseif to == M.delayed then
    -- an idle worker sleeps until the earliest delayed job is due: wake it if this one is earlier
    if not dhead_read then
      local h = read('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
      dhead, dhead_read = h[2] and tonumber(h[2]) or false, true
    end
    if not dhead or dhead > opts.run_at then wake(lane_of(rec)); dhead = opts.run_at end
    zset(P .. 'delayed', id, opts.run_at)
    hset(rec, 'scheduled_ms', opts.run_at)
  end
  -- 3. lease: entering the leased states from outside takes a new lease (token, attempt, holder,
  -- deadline); moving within them keeps it; either way the leases index has the deadline
  local token = opts.token
  local attempt = field(rec, 'attempt')
  if M.is_leased[to] then
    local deadline
    if not (from and M.is_leased[from]) then
      -- the token (docs/design.md, decision 2): server ms * 1000 + the job's lease count modulo
      -- 1000; never issued twice for one job, even after lost writes: the clock moves on
      token = string.format('%d', NOW * 1000 + ((tonumber(field(rec, 'token')) or 0) % 1000 + 1) % 1000)
      attempt = (tonumber(attempt) or 0) + 1
      deadline = NOW + opts.lease_ms
      hset(rec, 'token', token)
      hset(rec, 'worker', opts.holder)
      hset(rec, 'started_ms', NOW_S)
      hset(rec, 'attempt', attempt)
      hset(rec, 'executions', (tonumber(field(rec, 'executions')) or 0) + 1)
      hset(rec, 'lease_deadline_ms', deadline)
      m[2] = m[2] + 1
      if waited and NOW > waited then m[3] = m[3] + NOW - waited end
      if opts.assign then  -- taken by hand (an assignee, not a worker's claim): listed by its holder
        hset(rec, 'assignee', opts.holder)
        zset(P .. 'assigned:' .. opts.holder, id, NOW)
        if not FLOW then op('HSET', MACHINE_KEY, 'flow', '1'); FLOW = true end
      end
    else
      deadline = tonumber(field(rec, 'lease_deadline_ms'))
    end
    zset(P .. 'leases', id, deadline)
  elseif from and M.is_leased[from] then
    hdel(rec, 'lease_deadline_ms')  -- only a leased job has a deadline (the leases index's score)
    local who = FLOW and field(rec, 'assignee')  -- without FLOW no job was assigned
    if who then
      zset(P .. 'assigned:' .. who, id, false)
      hdel(rec, 'assignee')
    end
    local held = FLOW and field(rec, 'lim')  -- without FLOW no claim took a slot
    if held then  -- the limit slots its claim took (claim.lua) are given back; its lanes may go on
      for name in string.gmatch(held, '[^,]+') do op('HINCRBY', P .. 'running', name, -1) end
      hdel(rec, 'lim')
      wake(lane_of(rec))
    end
  end
  -- 4. final: when a final state was reached (the duration is completed_ms - started_ms)
  local final = M.final_role[to]
  if final then
    hset(rec, 'completed_ms', NOW_S)
    m[to] = (m[to] or 0) + 1
    local began = from and M.is_leased[from] and tonumber(field(rec, 'started_ms'))
    if began then m[4] = m[4] + 1; if NOW > began then m[5] = m[5] + NOW - began end end
  end
  -- 5. record: the history entry and the queue event (lib/write.lua)
  log_event(rec, opts.event or to, from, to, opts.actor, opts.msg, attempt, token, nil, opts.operator, final ~= nil)
  -- 6. dependents: a final state releases, fails or cancels the jobs waiting for this one
  if final then
    local deps = field(rec, 'has_dependents')
    if rec.new_dependents or (deps and deps ~= '') then
      if not settle_dependents then define_settle() end
      settle_dependents(rec, final)
    end
  end
end

function define_settle()
  -- The fields a dependent's decision needs.
  local DEP_FIELDS = {'status', 'token', 'attempt', 'priority', 'seq', 'started_ms', 'has_dependents',
    'lease_deadline_ms', 'deps_pending', 'scheduled_ms', 'on_dep_failure', 'type'}
  local cascade, cascading = {}, false

  -- A job reached a final state: release, fail or cancel the jobs waiting for it, along the whole
  -- chain. A worklist (not recursion) bounds the work and keeps the Lua stack flat.
  settle_dependents = function(rec, final)
    cascade[#cascade + 1] = {rec, final}
    if cascading then return end
    cascading = true
    local i = 1
    while i <= #cascade and i <= 100000 do
      local dep, dep_final = cascade[i][1], cascade[i][2]
      i = i + 1
      local children = dep.new and {} or read('SMEMBERS', dep.jk .. ':dependents')
      for _, child in ipairs(dep.new_dependents or {}) do children[#children + 1] = child end
      for _, child in ipairs(children) do
        local c = load_job(child, DEP_FIELDS)
        if c.status and c.status == M.waiting then
          if dep_final == 'success' then
            local left = (tonumber(field(c, 'deps_pending')) or 1) - 1
            hset(c, 'deps_pending', left)
            if left <= 0 then
              local due = tonumber(field(c, 'scheduled_ms')) or 0
              if due > NOW and M.delayed ~= '' and allows(c.status, M.delayed) then
                move(c, M.delayed, {run_at = due, actor = 'rjobs', msg = 'dependencies done'})
              else
                move(c, M.ready, {actor = 'rjobs', msg = 'dependencies done'})
              end
            end
          else
            local target = M.cancelled
            if field(c, 'on_dep_failure') == 'fail' and allows(c.status, M.failure) then target = M.failure end
            if allows(c.status, target) then
              local msg = 'dependency ' .. dep.id .. ' ended ' .. dep_final
              hset(c, 'error', '{"code":"dependency_failed","message":' .. cjson.encode(msg) .. '}')
              move(c, target, {actor = 'rjobs', msg = msg})
            end
          end
        end
      end
    end
    cascade, cascading = {}, false
  end
end
