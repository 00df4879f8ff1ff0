-- enqueue.lua — create one or more jobs atomically (all or nothing), with dedupe, delay and
-- dependencies. Every request is validated and decided before anything is written; requests
-- are decided in order, each on the state the earlier ones leave (a dependency on a job that an
-- earlier request of the call replaced is refused; a second request with the same dedupe key
-- keeps or replaces the job the first one made).
-- Called by: Queue.enqueue / Queue.enqueue_many (Scripts.enqueue)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor    who enqueues (charset A-Z a-z 0-9 _ . : @ -, <= 200)
-- ARGV[3]  njobs    number of job records that follow (1-10000)
-- ARGV[4..] per job, the 16 fields at the offsets below (rjobs.store.scripts.EnqueueSpec, same order),
--          then its dependency ids; `trace` is '' or a W3C trace context (see valid_trace below),
--          stored as the job's field `trace`
-- Builds   job:<id>, job:<id>:history, job:<dep>:dependents (+ has_dependents on job:<dep>),
--          ready:<type>[:<group>], groups:<type>, lanes, delayed, state:<s>, owner:<u>, dedupe:<k>, cache:<k>, seq,
--          wake:<type> (under the prefix), machine (flow: set once a job names a group; traced: set
--          once a job is stored with a trace context, so claims read it)
--          metrics:<minute>, totals (the counters of the moves it makes: lib/write.lua)
-- Returns  one flat array, 6 entries per job in request order: id, outcome (created|kept|cached), status,
--          previous_id ('' = none), stale_cancelled (0|1), cache_invalidated (0|1); for `cached` (policy
--          reuse and a fresh cached result: nothing created) id and previous_id are the key's holder
--          ('' when purged), status its status ('' when purged), and the last entry is the cached result
-- Errors   RJ_NO_MACHINE, RJ_INVALID <why>, RJ_EXISTS <id>, RJ_DEPENDENCY <why>; every error about
--          one request ends with "(request <n>)", n counting from 1 within the call
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/write.lua
--!include lib/checks.lua
--!include lib/move.lua
local ID, TYPE, PARAMS, PRIORITY, USER, RUN_AT, DELAY, MAX_ATTEMPTS, DEDUPE_KEY, DEDUPE, CANCEL_RUNNING,
  ON_DEP_FAILURE, HOLD, GROUP, TRACE, NDEPS = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
local FIELDS = 16

-- The trace context a job continues (rjobs.tracing): a W3C traceparent (2-32-16-2
-- lowercase hex digits joined by '-', version ff refused; a later version may append '-' fields),
-- then optionally ';' and the tracestate (printable ASCII); at most 512 bytes. Readers hand it to
-- a propagator, so nothing else may pass.
local function valid_trace(s)
  local hex = '[0-9a-f]'
  local shape = '^' .. hex:rep(2) .. '%-' .. hex:rep(32) .. '%-' .. hex:rep(16) .. '%-' .. hex:rep(2)
  if #s > 512 or not string.find(s, shape) or string.sub(s, 1, 2) == 'ff' then return false end
  local cut = string.find(s, ';', 1, true)
  local parent = cut and string.sub(s, 1, cut - 1) or s
  if #parent > 55 and (string.sub(parent, 56, 56) ~= '-' or string.find(parent, '[^0-9a-f%-]')) then return false end
  return not cut or not string.find(s, '[^\32-\126]', cut + 1)
end

-- A job this call creates (its keys were checked to be free by the caller); `fields` is its flat
-- field/value list (the creation HSET).
-- where the creation fields below keep their values (the first eight, always present)
local NEW_IX = {id = 2, queue = 4, type = 6, params = 8, priority = 10, seq = 12, max_attempts = 14, created_ms = 16}
local function new_job(id, fields, findable)
  local jk = P .. 'job:' .. id
  local rec = {id = id, jk = jk, status = false, set = fields, v = fields, ix = NEW_IX, new = true}
  if KNOWN then KNOWN[jk] = true end
  if findable then JOBS[id] = rec end  -- a later request may name it (its dedupe key)
  ORDER[#ORDER + 1] = rec
  return rec
end
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
local actor, njobs = ARGV[2], int_arg(ARGV[3], 1, 10000)
local m, P, now = M, P, NOW
local int = int_arg
if not njobs then return fail('RJ_INVALID', 'njobs must be an integer 1-10000') end
if not valid_actor(actor) then return fail('RJ_INVALID', 'actor') end
local maxp = opt().max_payload
local function refuse(code, text, n) return fail(code, text .. ' (request ' .. n .. ')') end

-- 1. Validate every record (no reads yet). A record stays in ARGV; later steps read it in place.
local starts, dues, pos = {}, {}, 4
local grouped = false  -- a request names a group: the queue's claims then read groups (claim.lua)
for n = 1, njobs do
  local ndeps = int(ARGV[pos + NDEPS], 0, 1000)
  if not ndeps or pos + FIELDS + ndeps - 1 > #ARGV then return refuse('RJ_INVALID', 'malformed job record', n) end
  local id, params, user, dkey = ARGV[pos + ID], ARGV[pos + PARAMS], ARGV[pos + USER], ARGV[pos + DEDUPE_KEY]
  local run_at, delay = int(ARGV[pos + RUN_AT], 0, MAX_MS), int(ARGV[pos + DELAY], 0, 3153600000000)
  if id ~= '' and not valid_name(id) then return refuse('RJ_INVALID', 'job id', n) end
  if not valid_name(ARGV[pos + TYPE]) then return refuse('RJ_INVALID', 'job type', n) end
  if #params > maxp then return refuse('RJ_INVALID', 'params larger than ' .. maxp .. ' bytes', n) end
  if not int(ARGV[pos + PRIORITY], 1, 10) then return refuse('RJ_INVALID', 'priority must be an integer 1-10', n) end
  if user ~= '' and not valid_name(user) then return refuse('RJ_INVALID', 'user id', n) end
  if not run_at or not delay then return refuse('RJ_INVALID', 'run_at/delay must be integer ms in range', n) end
  if not int(ARGV[pos + MAX_ATTEMPTS], 1, 1000) then return refuse('RJ_INVALID', 'max_attempts must be 1-1000', n) end
  if dkey ~= '' and not valid_dedupe_key(dkey) then return refuse('RJ_INVALID', 'dedupe key', n) end
  local group = ARGV[pos + GROUP]
  if group ~= '' then
    if not valid_name(group) then return refuse('RJ_INVALID', 'group', n) end
    grouped = true
  end
  local trace = ARGV[pos + TRACE]
  if trace ~= '' and not valid_trace(trace) then return refuse('RJ_INVALID', 'trace context', n) end
  local policy, cancel_running = ARGV[pos + DEDUPE], ARGV[pos + CANCEL_RUNNING]
  if (policy ~= 'keep' and policy ~= 'replace' and policy ~= 'reuse') or
    (cancel_running ~= '0' and cancel_running ~= '1') then
    return refuse('RJ_INVALID', 'dedupe policy must be keep, replace or reuse, cancel_running 0 or 1', n)
  end
  local on_dep, hold = ARGV[pos + ON_DEP_FAILURE], ARGV[pos + HOLD]
  if (on_dep ~= 'fail' and on_dep ~= 'cancel') or (hold ~= '0' and hold ~= '1') then
    return refuse('RJ_INVALID', 'on_dep_failure must be fail or cancel, hold 0 or 1', n)
  end
  if hold == '1' and m.initial == m.ready then
    return refuse('RJ_INVALID', 'this machine cannot hold a job: its initial state is its ready state', n)
  end
  local seen = {}
  for d = pos + FIELDS, pos + FIELDS + ndeps - 1 do
    local dep = ARGV[d]
    if not valid_name(dep) then return refuse('RJ_INVALID', 'dependency id', n) end
    if seen[dep] then return refuse('RJ_INVALID', 'dependency ' .. dep .. ' listed twice', n) end
    seen[dep] = true
  end
  starts[n] = pos
  dues[n] = delay > 0 and now + delay or run_at
  pos = pos + FIELDS + ndeps
end
if pos ~= #ARGV + 1 then return fail('RJ_INVALID', 'malformed job records') end
local had_flow = FLOW
if grouped then FLOW = true end  -- grouped jobs enter their group's lane (lib/move.lua)

-- 2. Generated ids: server ms and the queue's sequence, and in partition <i> of a partitioned
-- queue (prefix rjobs:{<name>#<i>}:) the suffix -p<i>, so an id names its partition. One EXISTS
-- checks that none is taken (an explicit id of an earlier call may look like one); a taken one
-- gets a suffix.
local seq0 = tonumber(read('GET', P .. 'seq')) or 0
local part = string.match(P, '#(%d+)}:$')
local id_form = part and ('%011x%05x-p' .. part) or '%011x%05x'
local gen, probe = {}, {}
for n = 1, njobs do
  if ARGV[starts[n] + ID] == '' then
    gen[n] = string.format(id_form, now, (seq0 + n) % 1048576)
    local jk = P .. 'job:' .. gen[n]
    probe[#probe + 1] = jk
    probe[#probe + 1] = jk .. ':history'
  end
end
local taken = 0
for s = 1, #probe, 1000 do taken = taken + redis.call('EXISTS', unpack(probe, s, math.min(s + 999, #probe))) end
if KNOWN then for _, k in ipairs(probe) do KNOWN[k] = true end end

-- 3. Decide every request in order.
local out, holders, caches = {}, {}, {}
local traced = false  -- a created job stores a trace context
for n = 1, njobs do
  pos = starts[n]
  local due = dues[n]
  local dkey, ndeps = ARGV[pos + DEDUPE_KEY], tonumber(ARGV[pos + NDEPS])
  local o = 6 * n - 6
  -- the dedupe key: keep the live holder, or replace it, or reuse the key's cached result
  local prev, replace = '', nil
  if dkey ~= '' then
    if holders[dkey] == nil then holders[dkey] = read('GET', P .. 'dedupe:' .. dkey) or false end
    prev = holders[dkey] or ''
    local h = prev ~= '' and load_job(prev) or nil
    local policy = ARGV[pos + DEDUPE]
    -- reuse: a fresh cached result of the key answers the request (its TTL is its freshness);
    -- without one, reuse is keep. `caches` holds the cached value (or false) once read.
    if policy == 'reuse' and caches[dkey] == nil then caches[dkey] = read('GET', P .. 'cache:' .. dkey) or false end
    if policy == 'reuse' and caches[dkey] then
      out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5], out[o + 6] =
        prev, 'cached', h and h.status or '', prev, 0, caches[dkey]
    elseif h and h.status and not M.final_role[h.status] then
      if policy ~= 'replace' then
        out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5], out[o + 6] = prev, 'kept', h.status, prev, 0, 0
      elseif (not m.is_leased[h.status] or ARGV[pos + CANCEL_RUNNING] == '1') and allows(h.status, m.cancelled) then
        replace = h
      end
    end
  end
  if not out[o + 2] then  -- not kept, not answered from the cache
    -- the id
    local id = ARGV[pos + ID]
    if id ~= '' then
      local old = load_job(id, {'status'})
      if old.status or old.new then return refuse('RJ_EXISTS', id, n) end
    else
      id = gen[n]
      if taken > 0 then
        local base, k = id, 0
        while JOBS[id] or redis.call('EXISTS', P .. 'job:' .. id, P .. 'job:' .. id .. ':history') > 0 do
          k = k + 1
          if k > 16 then return refuse('RJ_EXISTS', base .. ' (every generated id is taken)', n) end
          id = base .. '.' .. k
        end
      end
    end
    -- dependencies, on the state the earlier requests leave
    local pending, deps = 0, {}
    for d = pos + FIELDS, pos + FIELDS + ndeps - 1 do
      local dep = ARGV[d]
      local drec = load_job(dep)
      local fr = drec.status and m.final_role[drec.status]
      if drec == replace then
        return refuse('RJ_DEPENDENCY', 'dependency ' .. dep .. ' is the job this request replaces', n)
      end
      if not drec.status then return refuse('RJ_DEPENDENCY', 'dependency ' .. dep .. ' not found', n) end
      if fr and fr ~= 'success' then
        return refuse('RJ_DEPENDENCY', 'dependency ' .. dep .. ' already ended ' .. drec.status, n)
      end
      if not fr then pending = pending + 1; deps[#deps + 1] = drec end
    end
    if pending > 0 and m.waiting == '' then
      return refuse('RJ_INVALID', 'this machine has no waiting state for dependencies', n)
    end
    if due > now and pending == 0 and m.delayed == '' then
      return refuse('RJ_INVALID', 'this machine has no delayed state', n)
    end
    -- the replaced job, then the key
    local stale, cache_inv = 0, 0
    if replace then
      local msg = 'replaced by ' .. id .. ' (dedupe ' .. dkey .. ')'
      hset(replace, 'error', '{"code":"replaced","message":' .. cjson.encode(msg) .. '}')
      move(replace, m.cancelled, {actor = actor, msg = msg, operator = m.is_leased[replace.status] or nil})
      stale = 1
    end
    if dkey ~= '' then
      if prev ~= '' then
        if caches[dkey] == nil then caches[dkey] = read('EXISTS', P .. 'cache:' .. dkey) == 1 end
        if caches[dkey] then cache_inv = 1; caches[dkey] = false; op('DEL', P .. 'cache:' .. dkey) end
      end
      holders[dkey] = id
      op('SET', P .. 'dedupe:' .. dkey, id)
    end
    -- the job
    local seq = seq0 + n
    local user = ARGV[pos + USER]
    local f = {'id', id, 'queue', string.sub(P, 8, -3), 'type', ARGV[pos + TYPE], 'params', ARGV[pos + PARAMS],
      'priority', tonumber(ARGV[pos + PRIORITY]), 'seq', seq, 'max_attempts', tonumber(ARGV[pos + MAX_ATTEMPTS]),
      'created_ms', now}
    if user ~= '' then
      f[#f + 1] = 'user_id'; f[#f + 1] = user
      zset(P .. 'owner:' .. user, id, now)
    end
    if dkey ~= '' then
      f[#f + 1] = 'dedupe_key'; f[#f + 1] = dkey
      f[#f + 1] = 'dedupe_policy'; f[#f + 1] = ARGV[pos + DEDUPE]
      if ARGV[pos + CANCEL_RUNNING] == '1' then f[#f + 1] = 'cancel_running'; f[#f + 1] = '1' end
    end
    if ARGV[pos + GROUP] ~= '' then f[#f + 1] = 'group'; f[#f + 1] = ARGV[pos + GROUP] end
    if ARGV[pos + TRACE] ~= '' then f[#f + 1] = 'trace'; f[#f + 1] = ARGV[pos + TRACE]; traced = true end
    if ndeps > 0 then
      f[#f + 1] = 'depends_on'; f[#f + 1] = table.concat(ARGV, ',', pos + FIELDS, pos + FIELDS + ndeps - 1)
      f[#f + 1] = 'on_dep_failure'; f[#f + 1] = ARGV[pos + ON_DEP_FAILURE]
      if pending > 0 then f[#f + 1] = 'deps_pending'; f[#f + 1] = pending end
      for _, drec in ipairs(deps) do
        op('SADD', drec.jk .. ':dependents', id)
        if drec.new then
          drec.new_dependents = drec.new_dependents or {}
          drec.new_dependents[#drec.new_dependents + 1] = id
        end
        if not field(drec, 'has_dependents') or field(drec, 'has_dependents') == '' then hset(drec, 'has_dependents', 1) end
      end
    end
    if due > 0 and (pending > 0 or due <= now) then f[#f + 1] = 'scheduled_ms'; f[#f + 1] = due end
    local rec = JOBS[id]
    if rec then  -- an explicit id: the record of its existence check becomes the new job
      rec.new, rec.set, rec.v, rec.ix = true, f, f, NEW_IX
    else
      rec = new_job(id, f, dkey ~= '')
    end
    local state = m.ready
    if pending > 0 then state = m.waiting
    elseif due > now then state = m.delayed
    elseif ARGV[pos + HOLD] == '1' then state = m.initial end
    move(rec, state, {event = 'created', actor = actor, run_at = due,
      msg = prev ~= '' and ('dedupe ' .. dkey .. ' previous ' .. prev) or nil})
    out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5], out[o + 6] = id, 'created', state, prev, stale, cache_inv
  end
end
-- the sequence moves only when a job was made (every new job enters a state index): a call whose
-- requests were all kept or answered from the cache writes nothing
if Z then op('SET', P .. 'seq', seq0 + njobs) end
if grouped and not had_flow then op('HSET', MACHINE_KEY, 'flow', '1') end
if traced and not TRACED then op('HSET', MACHINE_KEY, 'traced', '1') end
commit()
return out
