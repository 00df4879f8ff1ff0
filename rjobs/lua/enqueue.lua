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
-- Returns  one flat array, 6 entries per job in request order: id, outcome (created|kept), status,
--          previous_id ('' = none), stale_cancelled (0|1), cache_invalidated (0|1)
-- Errors   RJ_NO_MACHINE, RJ_INVALID <why>, RJ_EXISTS <id>, RJ_DEPENDENCY <why>
--!include lib/core.lua
--!include lib/move.lua
local err = RJ.init(KEYS, ARGV[1])
if err then return redis.error_reply(err) end
local actor, njobs = ARGV[2], tonumber(ARGV[3])
local m, P, now = RJ.m, RJ.P, RJ.now
local role, valid_name = m.role, RJ.valid_name
if not njobs or njobs < 1 or njobs > 10000 then return redis.error_reply('RJ_INVALID njobs') end
local maxp = RJ.max_payload()

-- 1. Parse and validate every record before writing anything. A record stays in ARGV: the write
-- pass reads it again at its position (no table per job).
local starts, dues, pendings, ids, pos = {}, {}, {}, {}, 4
for n = 1, njobs do
  local id, jtype, params, priority, user = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2], tonumber(ARGV[pos + 3]),
    ARGV[pos + 4]
  local run_at, delay, max_attempts = tonumber(ARGV[pos + 5]), tonumber(ARGV[pos + 6]), tonumber(ARGV[pos + 7])
  local dkey, policy, on_dep, ndeps = ARGV[pos + 8], ARGV[pos + 9], ARGV[pos + 11], tonumber(ARGV[pos + 13])
  if not ndeps or ndeps < 0 or ndeps > 1000 then return redis.error_reply('RJ_INVALID dependency count') end
  if id ~= '' then
    if not valid_name(id) then return redis.error_reply('RJ_INVALID job id') end
    if call('EXISTS', RJ.jkey(id)) == 1 or ids[id] then return redis.error_reply('RJ_EXISTS ' .. id) end
    ids[id] = true
  end
  if not valid_name(jtype) then return redis.error_reply('RJ_INVALID job type') end
  if not params or #params > maxp then return redis.error_reply('RJ_INVALID params larger than ' .. maxp .. ' bytes') end
  if not priority or priority < 1 or priority > 10 or priority % 1 ~= 0 then
    return redis.error_reply('RJ_INVALID priority must be an integer 1-10')
  end
  if user ~= '' and not valid_name(user) then return redis.error_reply('RJ_INVALID user id') end
  if not run_at or not delay or run_at < 0 or delay < 0 then return redis.error_reply('RJ_INVALID run_at/delay') end
  if not max_attempts or max_attempts < 1 or max_attempts > 1000 then
    return redis.error_reply('RJ_INVALID max_attempts must be 1-1000')
  end
  if dkey ~= '' and not string.match(dkey, '^[%w_%.%-:/@=+]+$') then return redis.error_reply('RJ_INVALID dedupe key') end
  if policy ~= 'keep' and policy ~= 'replace' then return redis.error_reply('RJ_INVALID dedupe policy') end
  if on_dep ~= 'fail' and on_dep ~= 'cancel' then return redis.error_reply('RJ_INVALID on_dep_failure') end
  local due = run_at
  if delay > 0 then due = now + delay end
  local pending = 0
  for d = 1, ndeps do
    local dep = ARGV[pos + 13 + d]
    if not valid_name(dep) then return redis.error_reply('RJ_INVALID dependency id') end
    local st = call('HGET', RJ.jkey(dep), 'status')
    if not st then return redis.error_reply('RJ_DEPENDENCY dependency ' .. dep .. ' not found') end
    local fr = m.final_role[st]
    if fr and fr ~= 'success' then
      return redis.error_reply('RJ_DEPENDENCY dependency ' .. dep .. ' already ended ' .. st)
    end
    if not fr then pending = pending + 1 end
  end
  if pending > 0 and role.waiting == '' then
    return redis.error_reply('RJ_INVALID this machine has no waiting state for dependencies')
  end
  if due > now and pending == 0 and role.delayed == '' then
    return redis.error_reply('RJ_INVALID this machine has no delayed state')
  end
  starts[n], dues[n], pendings[n] = pos, due, pending
  pos = pos + 14 + ndeps
end
if pos ~= #ARGV + 1 then return redis.error_reply('RJ_INVALID malformed job records') end

-- The index adds queued by RJ.move (opts.batch): one ZADD per key, at most 2 x 1000 arguments
-- per call (Lua's unpack limit is ~8000).
local function flush_zadds(batch)
  for i = 1, #batch do
    local key = batch[i]
    local q = batch[key]
    for s = 1, #q, 2000 do call('ZADD', key, unpack(q, s, math.min(s + 1999, #q))) end
    batch[key] = nil
    batch[i] = nil
  end
end

-- 2. Write. One INCRBY reserves a sequence number per record (a kept record leaves a gap: seq only
-- orders jobs). The ready set and state indexes are written as one ZADD per key at the end
-- (opts.batch); a replaced job's move reads them, so the batch is flushed before it.
local out, batch = {}, njobs > 1 and {} or nil  -- one job: nothing to batch
local qname = string.match(P, '^rjobs:{(.*)}:$') or ''
local seq0 = call('INCRBY', P .. 'seq', njobs) - njobs
-- One HSET argument table and one options table for every record (RJ.move writes after opts.nf):
-- a table per job was a measurable share of a bulk enqueue. The creation fields ride on the
-- placement move's HSET (one write of the hash); fields at their defaults (zero counters, empty
-- strings) are not written: every reader treats a missing field as its default, and a smaller
-- hash is measurably cheaper to create.
local fields = {'id', '', 'queue', qname, 'type', '', 'params', '', 'priority', 0, 'seq', 0, 'max_attempts', 0,
  'created_ms', now}
local opts = {event = 'created', actor = actor, fields = fields, batch = batch}
for n = 1, njobs do
  pos = starts[n]
  local due, pending = dues[n], pendings[n]
  local id, dkey, ndeps = ARGV[pos], ARGV[pos + 8], tonumber(ARGV[pos + 13])
  local prev, stale, cache_inv = '', 0, 0
  local kept, rep_id, rep_st = false, nil, nil
  if dkey ~= '' then
    local dk = P .. 'dedupe:' .. dkey
    prev = call('GET', dk) or ''
    local pst = prev ~= '' and call('HGET', RJ.jkey(prev), 'status') or nil
    if pst and not RJ.is_final(pst) then
      if ARGV[pos + 9] == 'keep' then
        local o = 6 * n - 6
        out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5], out[o + 6] = prev, 'kept', pst, prev, 0, 0
        kept = true
      elseif (not m.is_leased[pst] or ARGV[pos + 10] == '1') and RJ.allows(pst, role.cancelled) then
        rep_id, rep_st = prev, pst
      end
    end
  end
  if not kept then
    local seq = seq0 + n
    if id == '' then id = string.format('%011x%05x', now, seq % 1048576) end
    if rep_id then
      local msg = 'replaced by ' .. id .. ' (dedupe ' .. dkey .. ')'
      local e = '{"code":"replaced","message":"' .. msg .. '"}'
      if batch then flush_zadds(batch) end
      RJ.move(rep_id, rep_st, role.cancelled, {actor = actor, msg = msg, fields = {'error', e}})
      stale = 1
    end
    if dkey ~= '' then
      if prev ~= '' then cache_inv = call('DEL', P .. 'cache:' .. dkey) end
      call('SET', P .. 'dedupe:' .. dkey, id)
    end
    local priority, user = tonumber(ARGV[pos + 3]), ARGV[pos + 4]
    fields[2], fields[6], fields[8], fields[10], fields[12], fields[14] = id, ARGV[pos + 1], ARGV[pos + 2], priority,
      seq, tonumber(ARGV[pos + 7])
    local k = 16
    if user ~= '' then
      fields[k + 1] = 'user_id'; fields[k + 2] = user; k = k + 2
      call('ZADD', P .. 'owner:' .. user, now, id)
    end
    if dkey ~= '' then fields[k + 1] = 'dedupe_key'; fields[k + 2] = dkey; k = k + 2 end
    if ndeps > 0 then
      fields[k + 1] = 'depends_on'; fields[k + 2] = table.concat(ARGV, ',', pos + 14, pos + 13 + ndeps)
      fields[k + 3] = 'on_dep_failure'; fields[k + 4] = ARGV[pos + 11]
      k = k + 4
      if pending ~= 0 then fields[k + 1] = 'deps_pending'; fields[k + 2] = pending; k = k + 2 end
      for d = pos + 14, pos + 13 + ndeps do
        local dk = RJ.jkey(ARGV[d])
        call('SADD', dk .. ':dependents', id)
        call('HSET', dk, 'has_dependents', 1)
      end
    end
    local state = role.ready
    opts.priority, opts.seq, opts.run_at, opts.msg = priority, seq, nil, nil
    if due > 0 and (pending > 0 or due <= now) then
      fields[k + 1] = 'scheduled_ms'; fields[k + 2] = due; k = k + 2
    end
    opts.nf = k
    if pending > 0 then
      state = role.waiting
    elseif due > now then
      state = role.delayed
      opts.run_at = due
    elseif ARGV[pos + 12] == '1' then
      state = role.initial
    end
    if prev ~= '' then opts.msg = 'dedupe ' .. dkey .. ' previous ' .. prev end
    RJ.move(id, '', state, opts)
    local o = 6 * n - 6
    out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5], out[o + 6] = id, 'created', state, prev, stale, cache_inv
  end
end
if batch then flush_zadds(batch) end
RJ.done()
return out
