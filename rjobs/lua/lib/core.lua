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

local function split(s)
  local out = {}
  if s then for part in string.gmatch(s, '[^,]+') do out[#out + 1] = part end end
  return out
end

function RJ.init(keys, prefix)
  if type(prefix) ~= 'string' or keys[1] ~= prefix .. 'machine' or keys[2] ~= prefix .. 'events' then
    return 'RJ_INVALID keys do not match the queue prefix'
  end
  RJ.P = prefix
  RJ.events_key = keys[2]
  local t = redis.call('TIME')
  RJ.now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  -- The machine hash keeps readable next:/role:/opt: fields for people, and a precompiled JSON copy
  -- (written by declare_machine) that one C call decodes. Measured: building the same tables from
  -- the readable fields in Lua cost more than the rest of a typical script.
  local compiled = redis.call('HGET', keys[1], 'compiled')
  if not compiled then return 'RJ_NO_MACHINE no state machine declared for this queue' end
  local doc = cjson.decode(compiled)
  local m = {role = doc.r, edges = doc.n, opt = doc.o, leased = split(doc.l), is_leased = {}, final_role = {}}
  for _, st in ipairs(m.leased) do m.is_leased[st] = true end
  for _, r in ipairs({'success', 'partial', 'failure', 'cancelled'}) do
    if m.role[r] ~= '' then m.final_role[m.role[r]] = r end
  end
  RJ.m = m
  return nil
end

function RJ.jkey(id) return RJ.P .. 'job:' .. id end

function RJ.allows(from, to)
  local edges = RJ.m.edges[from]
  return edges ~= nil and string.find(',' .. edges .. ',', ',' .. to .. ',', 1, true) ~= nil
end

function RJ.is_state(state) return RJ.m.edges[state] ~= nil end

function RJ.is_final(state) return RJ.m.final_role[state] ~= nil end

-- Valid ids/names: same charset rule as rjobs/keys.py, enforced again here so a raw EVALSHA from
-- redis-cli cannot forge keys either.
function RJ.valid_name(s, maxlen)
  return type(s) == 'string' and #s >= 1 and #s <= (maxlen or 128) and string.match(s, '^[%w_%.%-]+$') ~= nil
end

function RJ.ready_score(priority, seq)
  return (10 - tonumber(priority)) * 1e13 + tonumber(seq)
end

-- Append one event to the job's stream and the queue's stream. Events carry ids, states, actor
-- and short text, never payloads.
function RJ.emit(id, event, fields)
  local args = {'event', event, 'job', id}
  for _, k in ipairs({'from', 'to', 'actor', 'msg', 'attempt', 'token', 'data'}) do
    local v = fields[k]
    -- false is how HMGET reports a missing field: leave it out, like nil and ''
    if v ~= nil and v ~= false and v ~= '' then args[#args + 1] = k; args[#args + 1] = tostring(v) end
  end
  local jmax = RJ.m.opt.job_events_maxlen or 1000
  redis.call('XADD', RJ.jkey(id) .. ':events', 'MAXLEN', '~', jmax, '*', unpack(args))
  if (RJ.m.opt.queue_events or 1) == 1 then
    redis.call('XADD', RJ.events_key, 'MAXLEN', '~', RJ.m.opt.stream_maxlen or 100000, '*', unpack(args))
  end
end

-- Move a job from `from` to `to`: every index and role structure, the hash, and one event.
-- The caller has validated the edge. opts: actor, msg, event, run_at, deadline, fields (extra
-- HSET pairs), priority, seq, started (started_ms if the caller read it), has_dependents.
function RJ.move(id, from, to, opts)
  local P, m, now = RJ.P, RJ.m, RJ.now
  local jk = RJ.jkey(id)
  local role = m.role
  if from == role.ready then redis.call('ZREM', P .. 'ready', id) end
  if from == role.delayed then redis.call('ZREM', P .. 'delayed', id) end
  if m.is_leased[from] and not (m.is_leased[to] and opts.deadline) then
    redis.call('ZREM', P .. 'leases', id)
  end
  if from ~= '' then redis.call('ZREM', P .. 'state:' .. from, id) end
  redis.call('ZADD', P .. 'state:' .. to, now, id)
  local hset = {'status', to, 'updated_ms', now}
  if to == role.ready then
    local pr = opts.priority or redis.call('HGET', jk, 'priority')
    local seq = opts.seq or redis.call('HGET', jk, 'seq')
    redis.call('ZADD', P .. 'ready', RJ.ready_score(pr, seq), id)
    RJ.wake = true
  elseif to == role.delayed then
    -- an idle worker sleeps until the head of the delayed set is due: wake it if this job is earlier
    local head = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
    if not head[2] or tonumber(head[2]) > opts.run_at then RJ.wake = true end
    redis.call('ZADD', P .. 'delayed', opts.run_at, id)
    hset[#hset + 1] = 'scheduled_ms'; hset[#hset + 1] = opts.run_at
  end
  if m.is_leased[to] and opts.deadline then
    redis.call('ZADD', P .. 'leases', opts.deadline, id)
    hset[#hset + 1] = 'lease_deadline_ms'; hset[#hset + 1] = opts.deadline
  end
  local final = m.final_role[to]
  if final then
    hset[#hset + 1] = 'completed_ms'; hset[#hset + 1] = now
    local started = opts.started  -- false: the caller read it and it is absent; nil: not read
    if started == nil then started = redis.call('HGET', jk, 'started_ms') end
    started = tonumber(started)
    if started then hset[#hset + 1] = 'duration_ms'; hset[#hset + 1] = now - started end
    local keep = m.opt['keep_' .. final .. '_ms'] or -1
    if keep >= 0 then
      redis.call('ZADD', P .. 'expiring', now + keep, id)
      hset[#hset + 1] = 'expire_ms'; hset[#hset + 1] = now + keep
    end
  end
  if opts.fields then for _, v in ipairs(opts.fields) do hset[#hset + 1] = v end end
  redis.call('HSET', jk, unpack(hset))
  RJ.emit(id, opts.event or to, {from = from, to = to, actor = opts.actor, msg = opts.msg,
    attempt = opts.attempt, token = opts.token})
  -- has_dependents is set by enqueue when a job gains a dependent: most jobs never do, and
  -- skipping the set lookup is measurable on the hot path.
  local deps = opts.has_dependents
  if deps == nil then deps = final and redis.call('HEXISTS', jk, 'has_dependents') == 1 end
  if final and deps then
    RJ.settle_dependents(id, final)
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
    local members = redis.call('SMEMBERS', RJ.jkey(dep_id) .. ':dependents')
    for _, child in ipairs(members) do RJ.settle_child(child, dep_id, dep_final) end
  end
  RJ.cascade = {}
  RJ.cascading = false
end

function RJ.settle_child(child, dep_id, dep_final)
  local role = RJ.m.role
  local ck = RJ.jkey(child)
  local status = redis.call('HGET', ck, 'status')
  if not status or status ~= role.waiting then return end
  if dep_final == 'success' then
    local left = redis.call('HINCRBY', ck, 'deps_pending', -1)
    if left > 0 then return end
    local due = tonumber(redis.call('HGET', ck, 'scheduled_ms') or '0') or 0
    if due > RJ.now and role.delayed ~= '' and RJ.allows(status, role.delayed) then
      RJ.move(child, status, role.delayed, {run_at = due, actor = 'rjobs', msg = 'dependencies done'})
    else
      RJ.move(child, status, role.ready, {actor = 'rjobs', msg = 'dependencies done'})
    end
    return
  end
  local policy = redis.call('HGET', ck, 'on_dep_failure')
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
  local due = redis.call('ZRANGEBYSCORE', P .. 'expiring', '-inf', RJ.now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local jk = RJ.jkey(id)
    local f = redis.call('HMGET', jk, 'status', 'user_id', 'dedupe_key', 'depends_on')
    if f[1] then redis.call('ZREM', P .. 'state:' .. f[1], id) end
    if f[2] and f[2] ~= '' then redis.call('ZREM', P .. 'owner:' .. f[2], id) end
    if f[3] and f[3] ~= '' then
      local dk = P .. 'dedupe:' .. f[3]
      if redis.call('GET', dk) == id then redis.call('DEL', dk) end
    end
    for _, dep in ipairs(split(f[4])) do redis.call('SREM', RJ.jkey(dep) .. ':dependents', id) end
    redis.call('DEL', jk, jk .. ':events', jk .. ':assets', jk .. ':dependents')
    redis.call('ZREM', P .. 'expiring', id)
  end
  return #due
end

-- Wake one idle worker when something became claimable. The list holds at most one token.
function RJ.done()
  if RJ.wake then
    redis.call('LPUSH', RJ.P .. 'wake', '1')
    redis.call('LTRIM', RJ.P .. 'wake', 0, 0)
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
