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
-- Builds   job:<id>, job:<id>:history, job:<dep>:dependents, ready, waiting, state:<s>,
--          dedupe:<k>, cache:<k>, wake
-- Returns  the new status
-- Errors   RJ_NO_MACHINE, RJ_INVALID, RJ_NOT_FOUND, RJ_TRANSITION, RJ_DEPENDENCY, RJ_DEDUPE <holder> <why>
--!include lib/core.lua
--!include lib/write.lua
--!include lib/move.lua
local err = RJ.init(KEYS, ARGV[1])
if err then return redis.error_reply(err) end
local actor, id, params = ARGV[2], ARGV[3], ARGV[4]
local m, P = RJ.m, RJ.P
if not RJ.valid_actor(actor) then return redis.error_reply('RJ_INVALID actor') end
if not RJ.valid_name(id) then return redis.error_reply('RJ_INVALID job id') end
if type(params) ~= 'string' or #params > RJ.opt().max_payload then
  return redis.error_reply('RJ_INVALID params larger than ' .. RJ.opt().max_payload .. ' bytes')
end
local rec = RJ.load(id, {'depends_on', 'dedupe_policy', 'cancel_running', 'retry_count'})
if not rec.status then return redis.error_reply('RJ_NOT_FOUND ' .. id) end
local role = m.final_role[rec.status]
if role ~= 'failure' and role ~= 'cancelled' then
  return redis.error_reply('RJ_TRANSITION ' .. rec.status .. ' ' .. m.ready .. ' ' .. id)
end
-- dependencies: still pending ones make the job wait again
local pending, deps = 0, {}
if rec.f.depends_on then
  for dep in string.gmatch(rec.f.depends_on, '[^,]+') do
    local d = RJ.load(dep)
    local fr = d.status and m.final_role[d.status]
    if d.status and fr and fr ~= 'success' then
      return redis.error_reply('RJ_DEPENDENCY dependency ' .. dep .. ' ended ' .. d.status .. ': retry it first')
    end
    if d.status and not fr then pending = pending + 1; deps[#deps + 1] = d end
  end
end
if pending > 0 and m.waiting == '' then
  return redis.error_reply('RJ_INVALID this machine has no waiting state for dependencies')
end
-- the dedupe key
local dkey = rec.f.dedupe_key
local take, replace = false, nil
if dkey and dkey ~= '' then
  local holder = RJ.read('GET', P .. 'dedupe:' .. dkey)
  local h = holder and holder ~= id and RJ.load(holder) or nil
  if h and h.status and not RJ.is_final(h.status) then
    if rec.f.dedupe_policy ~= 'replace' then
      return redis.error_reply('RJ_DEDUPE ' .. holder .. ' holds dedupe key ' .. dkey ..
        ' (policy keep): cancel it or wait for it before retrying ' .. id)
    end
    take = true
    if (not m.is_leased[h.status] or rec.f.cancel_running == '1') and RJ.allows(h.status, m.cancelled) then
      replace = h
    end
  else
    take = holder ~= id
  end
end
-- write
for name in string.gmatch('completed_ms duration_ms result error step eta_ms', '%S+') do RJ.hdel(rec, name) end
RJ.hset(rec, 'retry_count', (tonumber(rec.f.retry_count) or 0) + 1)
RJ.hset(rec, 'attempt', 0)
RJ.hset(rec, 'progress', 0)
RJ.hset(rec, 'lease_losses', 0)
if params ~= '' then RJ.hset(rec, 'params', params) end
if replace then
  local msg = 'replaced by ' .. id .. ' (dedupe ' .. dkey .. ', retried)'
  RJ.hset(replace, 'error', '{"code":"replaced","message":' .. cjson.encode(msg) .. '}')
  RJ.move(replace, m.cancelled, {actor = actor, msg = msg, operator = m.is_leased[replace.status] or nil})
end
if take then
  RJ.op('SET', P .. 'dedupe:' .. dkey, id)
  RJ.op('DEL', P .. 'cache:' .. dkey)
end
local target, msg = m.ready, params ~= '' and 'retried with new params' or 'retried'
if pending > 0 then
  target = m.waiting
  RJ.hset(rec, 'deps_pending', pending)
  for _, d in ipairs(deps) do
    RJ.op('SADD', d.jk .. ':dependents', id)
    if not d.f.has_dependents or d.f.has_dependents == '' then RJ.hset(d, 'has_dependents', 1) end
  end
end
RJ.move(rec, target, {event = 'retried', actor = actor, msg = msg})
RJ.commit()
return target
