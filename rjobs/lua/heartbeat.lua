-- heartbeat.lua — renew every lease a worker holds in one call, and tell it per job whether to
-- go on, stop because the job was cancelled, or stop because the lease was lost.
-- Called by: Worker heartbeat loop (Scripts.heartbeat)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  worker   worker id
-- ARGV[3]  lease_ms new lease length from now, in ms
-- ARGV[4]  n        number of (id, token) pairs that follow (0-10000)
-- ARGV[5..] pairs   job id, lease token (as issued by claim)
-- Builds   job:<id>, leases, workers
-- Returns  one code per pair: 'ok' | 'cancel' | 'lost'
-- Errors   RJ_NO_MACHINE, RJ_INVALID
--!include lib/core.lua
local err = RJ.init(KEYS, ARGV[1])
if err then return redis.error_reply(err) end
local worker, lease_ms, n = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if not RJ.valid_name(worker, 200) then return redis.error_reply('RJ_INVALID worker id') end
if not lease_ms or lease_ms < 100 then return redis.error_reply('RJ_INVALID lease_ms') end
if not n or n < 0 or n > 10000 or #ARGV ~= 4 + 2 * n then return redis.error_reply('RJ_INVALID pairs') end
local m, P = RJ.m, RJ.P
local deadline = RJ.now + lease_ms
redis.call('ZADD', P .. 'workers', RJ.now, worker)
local out = {}
for i = 1, n do
  local id, token = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  local f = RJ.valid_name(id) and redis.call('HMGET', RJ.jkey(id), 'status', 'token') or {}
  if f[1] and f[2] == token and m.is_leased[f[1]] then
    redis.call('ZADD', P .. 'leases', 'XX', deadline, id)
    redis.call('HSET', RJ.jkey(id), 'lease_deadline_ms', deadline)
    out[i] = 'ok'
  elseif f[1] and f[2] == token and f[1] == m.role.cancelled then
    out[i] = 'cancel'
  else
    out[i] = 'lost'
  end
end
return out
