-- enqueue.lua — create one or more jobs atomically (all or nothing), with dedupe, delay and
-- dependencies.
-- Called by: Queue.enqueue / Queue.enqueue_many (Scripts.enqueue)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor    who enqueues (short text)
-- ARGV[3]  njobs    number of job records that follow
-- ARGV[4..] per job, 14 fields then its dependency ids:
--          id ('' = generate), type, params (JSON), priority (1-10), user_id ('' = none),
--          run_at (epoch ms, 0 = none), delay (ms, 0 = none), max_attempts (>= 1),
--          dedupe_key ('' = none), dedupe_policy (keep|replace), cancel_running (0|1),
--          on_dep_failure (fail|cancel), hold (0|1: put in the initial state), ndeps, dep ids...
-- Builds   job:<id>, job:<id>:events, job:<dep>:dependents (+ has_dependents on job:<dep>), ready, delayed, state:<s>, owner:<u>,
--          dedupe:<k>, cache:<k>, seq, wake (all under the prefix)
-- Returns  per job {id, outcome (created|kept), status, previous_id, stale_cancelled (0|1),
--          cache_invalidated (0|1)}
-- Errors   RJ_NO_MACHINE, RJ_INVALID <why>, RJ_EXISTS <id>, RJ_DEPENDENCY <why>
--!include lib/core.lua
local err = RJ.init(KEYS, ARGV[1])
if err then return redis.error_reply(err) end
local actor, njobs = ARGV[2], tonumber(ARGV[3])
local m, P, now = RJ.m, RJ.P, RJ.now
local maxp = m.opt.max_payload or 1048576
if not njobs or njobs < 1 or njobs > 10000 then return redis.error_reply('RJ_INVALID njobs') end

-- 1. Parse and validate every record before writing anything.
local jobs, pos = {}, 4
for n = 1, njobs do
  local j = {id = ARGV[pos], type = ARGV[pos + 1], params = ARGV[pos + 2], priority = tonumber(ARGV[pos + 3]),
    user = ARGV[pos + 4], run_at = tonumber(ARGV[pos + 5]), delay = tonumber(ARGV[pos + 6]),
    max_attempts = tonumber(ARGV[pos + 7]), dkey = ARGV[pos + 8], policy = ARGV[pos + 9],
    cancel_running = ARGV[pos + 10], on_dep = ARGV[pos + 11], hold = ARGV[pos + 12],
    ndeps = tonumber(ARGV[pos + 13]), deps = {}}
  if not j.ndeps or j.ndeps < 0 or j.ndeps > 1000 then return redis.error_reply('RJ_INVALID dependency count') end
  for d = 1, j.ndeps do j.deps[d] = ARGV[pos + 13 + d] end
  pos = pos + 14 + j.ndeps
  if j.id ~= '' and not RJ.valid_name(j.id) then return redis.error_reply('RJ_INVALID job id') end
  if j.id ~= '' and redis.call('EXISTS', RJ.jkey(j.id)) == 1 then return redis.error_reply('RJ_EXISTS ' .. j.id) end
  if not RJ.valid_name(j.type) then return redis.error_reply('RJ_INVALID job type') end
  if not j.params or #j.params > maxp then return redis.error_reply('RJ_INVALID params larger than ' .. maxp .. ' bytes') end
  if not j.priority or j.priority < 1 or j.priority > 10 or j.priority % 1 ~= 0 then
    return redis.error_reply('RJ_INVALID priority must be an integer 1-10')
  end
  if j.user ~= '' and not RJ.valid_name(j.user) then return redis.error_reply('RJ_INVALID user id') end
  if not j.run_at or not j.delay or j.run_at < 0 or j.delay < 0 then return redis.error_reply('RJ_INVALID run_at/delay') end
  if not j.max_attempts or j.max_attempts < 1 or j.max_attempts > 1000 then
    return redis.error_reply('RJ_INVALID max_attempts must be 1-1000')
  end
  if j.dkey ~= '' and not string.match(j.dkey, '^[%w_%.%-:/@=+]+$') then return redis.error_reply('RJ_INVALID dedupe key') end
  if j.policy ~= 'keep' and j.policy ~= 'replace' then return redis.error_reply('RJ_INVALID dedupe policy') end
  if j.on_dep ~= 'fail' and j.on_dep ~= 'cancel' then return redis.error_reply('RJ_INVALID on_dep_failure') end
  j.due = j.run_at
  if j.delay > 0 then j.due = now + j.delay end
  j.pending = 0
  for _, dep in ipairs(j.deps) do
    if not RJ.valid_name(dep) then return redis.error_reply('RJ_INVALID dependency id') end
    local st = redis.call('HGET', RJ.jkey(dep), 'status')
    if not st then return redis.error_reply('RJ_DEPENDENCY dependency ' .. dep .. ' not found') end
    local fr = m.final_role[st]
    if fr and fr ~= 'success' then
      return redis.error_reply('RJ_DEPENDENCY dependency ' .. dep .. ' already ended ' .. st)
    end
    if not fr then j.pending = j.pending + 1 end
  end
  if j.pending > 0 and (m.role.waiting or '') == '' then
    return redis.error_reply('RJ_INVALID this machine has no waiting state for dependencies')
  end
  if j.due > now and j.pending == 0 and (m.role.delayed or '') == '' then
    return redis.error_reply('RJ_INVALID this machine has no delayed state')
  end
  jobs[n] = j
end
if pos ~= #ARGV + 1 then return redis.error_reply('RJ_INVALID malformed job records') end

-- 2. Write.
local out = {}
local qname = string.match(P, '^rjobs:{(.*)}:$') or ''
for n, j in ipairs(jobs) do
  local prev, stale, cache_inv = '', 0, 0
  local kept = false
  if j.dkey ~= '' then
    local dk = P .. 'dedupe:' .. j.dkey
    prev = redis.call('GET', dk) or ''
    local pst = prev ~= '' and redis.call('HGET', RJ.jkey(prev), 'status') or nil
    if pst and not RJ.is_final(pst) then
      if j.policy == 'keep' then
        out[n] = {prev, 'kept', pst, prev, 0, 0}
        kept = true
      elseif (not m.is_leased[pst] or j.cancel_running == '1') and RJ.allows(pst, m.role.cancelled) then
        j.replace = {prev, pst}
      end
    end
  end
  if not kept then
    local seq = redis.call('INCR', P .. 'seq')
    local id = j.id
    if id == '' then id = string.format('%011x%05x', now, seq % 1048576) end
    if j.replace then
      local msg = 'replaced by ' .. id .. ' (dedupe ' .. j.dkey .. ')'
      local e = '{"code":"replaced","message":"' .. msg .. '"}'
      RJ.move(j.replace[1], j.replace[2], m.role.cancelled, {actor = actor, msg = msg, fields = {'error', e}})
      stale = 1
    end
    if j.dkey ~= '' then
      if prev ~= '' then cache_inv = redis.call('DEL', P .. 'cache:' .. j.dkey) end
      redis.call('SET', P .. 'dedupe:' .. j.dkey, id)
    end
    -- the creation fields ride on the placement move's HSET: one write of the hash
    -- fields at their defaults (zero counters, empty strings) are not written: every reader
    -- treats a missing field as its default, and a smaller hash is measurably cheaper to create
    local fields = {'id', id, 'queue', qname, 'type', j.type, 'params', j.params, 'priority', j.priority,
      'seq', seq, 'max_attempts', j.max_attempts, 'created_ms', now}
    local function opt(name, value, default)
      if value ~= default then fields[#fields + 1] = name; fields[#fields + 1] = value end
    end
    opt('user_id', j.user, '')
    opt('dedupe_key', j.dkey, '')
    if #j.deps > 0 then
      fields[#fields + 1] = 'depends_on'; fields[#fields + 1] = table.concat(j.deps, ',')
      fields[#fields + 1] = 'on_dep_failure'; fields[#fields + 1] = j.on_dep
      opt('deps_pending', j.pending, 0)
    end
    if j.user ~= '' then redis.call('ZADD', P .. 'owner:' .. j.user, now, id) end
    for _, dep in ipairs(j.deps) do
      redis.call('SADD', RJ.jkey(dep) .. ':dependents', id)
      redis.call('HSET', RJ.jkey(dep), 'has_dependents', 1)
    end
    local state = m.role.ready
    local opts = {event = 'created', actor = actor, priority = j.priority, seq = seq, fields = fields}
    if j.due > 0 and (j.pending > 0 or j.due <= now) then
      fields[#fields + 1] = 'scheduled_ms'; fields[#fields + 1] = j.due
    end
    if j.pending > 0 then
      state = m.role.waiting
    elseif j.due > now then
      state = m.role.delayed
      opts.run_at = j.due
    elseif j.hold == '1' then
      state = m.role.initial
    end
    if prev ~= '' then opts.msg = 'dedupe ' .. j.dkey .. ' previous ' .. prev end
    RJ.move(id, '', state, opts)
    out[n] = {id, 'created', state, prev, stale, cache_inv}
  end
end
RJ.done()
return out
