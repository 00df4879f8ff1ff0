-- retry.lua — the one explicit way out of a final state: a failed or cancelled job goes back with
-- the same id, retry_count + 1, a fresh attempt budget and optionally new params. It goes to the
-- ready state, or to the waiting state while one of its dependencies has not ended (a dependency
-- that ended other than in success refuses the retry: retry that one first; a dependency already
-- purged counts as done). A job with a dedupe key takes the key back when it is free or held by a
-- finished job; when a live job holds it, the job's own dedupe policy decides: keep refuses the
-- retry (RJ_DEDUPE <holder>), replace cancels the holder (a running holder only when the job was
-- enqueued with cancel_running; otherwise the holder keeps running without the key).
-- Called by: Queue.retry (Scripts.retry)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor    (charset A-Z a-z 0-9 _ . : @ -, <= 200)
-- ARGV[3]  id
-- ARGV[4]  params   new params JSON ('' = keep; at most the queue's max_payload bytes)
-- Builds   job:<id>, job:<id>:history, job:<dep>:dependents, ready:<type>, lanes, waiting, state:<s>,
--          dedupe:<k>, cache:<k>, wake:<type>
--          metrics:<minute>, totals (the counters of the moves it makes: lib/write.lua)
-- Returns  the new status
-- Errors   RJ_NO_MACHINE, RJ_INVALID, RJ_NOT_FOUND, RJ_TRANSITION, RJ_DEPENDENCY, RJ_DEDUPE <holder> <why>
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/write.lua
--!include lib/move.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
local actor, id, params = ARGV[2], ARGV[3], ARGV[4]
local m, P = M, P
if not valid_actor(actor) then return fail('RJ_INVALID', 'actor') end
if not valid_name(id) then return fail('RJ_INVALID', 'job id') end
if type(params) ~= 'string' or #params > opt().max_payload then
  return fail('RJ_INVALID', 'params larger than ' .. opt().max_payload .. ' bytes')
end
local rec = load_job(id)
if not rec.status then return fail('RJ_NOT_FOUND', id) end
local role = m.final_role[rec.status]
if role ~= 'failure' and role ~= 'cancelled' then
  return fail('RJ_TRANSITION', rec.status .. ' ' .. m.ready .. ' ' .. id)
end
-- dependencies: still pending ones make the job wait again
local pending, deps = 0, {}
if field(rec, 'depends_on') then
  for dep in string.gmatch(field(rec, 'depends_on'), '[^,]+') do
    local d = load_job(dep)
    local fr = d.status and m.final_role[d.status]
    if d.status and fr and fr ~= 'success' then
      return fail('RJ_DEPENDENCY', 'dependency ' .. dep .. ' ended ' .. d.status .. ': retry it first')
    end
    if d.status and not fr then pending = pending + 1; deps[#deps + 1] = d end
  end
end
if pending > 0 and m.waiting == '' then
  return fail('RJ_INVALID', 'this machine has no waiting state for dependencies')
end
-- the dedupe key
local dkey = field(rec, 'dedupe_key')
local take, replace = false, nil
if dkey and dkey ~= '' then
  local holder = read('GET', P .. 'dedupe:' .. dkey)
  local h = holder and holder ~= id and load_job(holder) or nil
  if h and h.status and not M.final_role[h.status] then
    if field(rec, 'dedupe_policy') ~= 'replace' then
      return fail('RJ_DEDUPE', holder .. ' holds dedupe key ' .. dkey ..
        ' (policy keep): cancel it or wait for it before retrying ' .. id)
    end
    take = true
    if (not m.is_leased[h.status] or field(rec, 'cancel_running') == '1') and allows(h.status, m.cancelled) then
      replace = h
    end
  else
    take = holder ~= id
  end
end
-- write
for name in string.gmatch('completed_ms result error step eta_ms', '%S+') do hdel(rec, name) end
hset(rec, 'retry_count', (tonumber(field(rec, 'retry_count')) or 0) + 1)
hset(rec, 'attempt', 0)
hset(rec, 'progress', 0)
hset(rec, 'lease_losses', 0)
if params ~= '' then hset(rec, 'params', params) end
if replace then
  local msg = 'replaced by ' .. id .. ' (dedupe ' .. dkey .. ', retried)'
  hset(replace, 'error', '{"code":"replaced","message":' .. cjson.encode(msg) .. '}')
  move(replace, m.cancelled, {actor = actor, msg = msg, operator = m.is_leased[replace.status] or nil})
end
if take then
  op('SET', P .. 'dedupe:' .. dkey, id)
  op('DEL', P .. 'cache:' .. dkey)
end
local target, msg = m.ready, params ~= '' and 'retried with new params' or 'retried'
if pending > 0 then
  target = m.waiting
  hset(rec, 'deps_pending', pending)
  for _, d in ipairs(deps) do
    op('SADD', d.jk .. ':dependents', id)
    if not field(d, 'has_dependents') or field(d, 'has_dependents') == '' then hset(d, 'has_dependents', 1) end
  end
end
move(rec, target, {event = 'retried', actor = actor, msg = msg})
commit()
return target
