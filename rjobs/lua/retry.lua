-- retry.lua — the one explicit way out of a final state: a failed or cancelled job goes back to
-- the ready state with the same id, retry_count + 1, a fresh attempt budget and optionally new
-- params (seed 003 retryTask).
-- Called by: Queue.retry (Scripts.retry)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor
-- ARGV[3]  id
-- ARGV[4]  params   new params JSON ('' = keep)
-- Builds   job:<id>, job:<id>:events, ready, expiring, state:<s>, wake
-- Returns  the new status
-- Errors   RJ_NO_MACHINE, RJ_INVALID, RJ_NOT_FOUND <id>, RJ_TRANSITION <current> <ready> <id>
--!include lib/core.lua
--!include lib/move.lua
local err = RJ.init(KEYS, ARGV[1])
if err then return redis.error_reply(err) end
local actor, id, params = ARGV[2], ARGV[3], ARGV[4]
local m = RJ.m
if not RJ.valid_name(id) then return redis.error_reply('RJ_INVALID job id') end
if #params > RJ.max_payload() then return redis.error_reply('RJ_INVALID params too large') end
local jk = RJ.jkey(id)
local status = redis.call('HGET', jk, 'status')
if not status then return redis.error_reply('RJ_NOT_FOUND ' .. id) end
local role = m.final_role[status]
if role ~= 'failure' and role ~= 'cancelled' then
  return redis.error_reply('RJ_TRANSITION ' .. status .. ' ' .. m.role.ready .. ' ' .. id)
end
redis.call('ZREM', RJ.P .. 'expiring', id)
redis.call('HDEL', jk, 'completed_ms', 'duration_ms', 'expire_ms', 'result', 'error', 'step', 'eta_ms',
  'lease_deadline_ms')
redis.call('HINCRBY', jk, 'retry_count', 1)
local fields = {'attempt', 0, 'progress', 0, 'lease_losses', 0}
if params ~= '' then fields[#fields + 1] = 'params'; fields[#fields + 1] = params end
RJ.move(id, status, m.role.ready, {event = 'retried', actor = actor, fields = fields,
  msg = params ~= '' and 'retried with new params' or 'retried'})
RJ.done()
return m.role.ready
