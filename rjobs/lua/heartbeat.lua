-- heartbeat.lua — renew every lease a holder (a worker, or a Queue.hold) has in one call, and tell
-- it per job whether to go on, stop because the job was cancelled, or stop because the lease was
-- lost.
-- Called by: Worker heartbeat loop (Scripts.heartbeat), Queue.hold
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  holder   worker id or actor (charset A-Z a-z 0-9 _ . : @ -, <= 200)
-- ARGV[3]  lease_ms new lease length from now, in ms (100 ms to 366 days)
-- ARGV[4]  register 1 = a worker: list it in the workers zset; 0 = a manual holder; 2 = a worker
--          leaving (shut down cleanly): drop it from workers and workers:info (n must be 0)
-- ARGV[5]  n        number of (id, token) pairs that follow (0-10000)
-- ARGV[6..] pairs   job id, lease token (as issued when the lease was taken)
-- ARGV[6+2n] info   optional, register 1 only: the worker's details (rjobs.worker.presence), a JSON
--          object of at most 4096 bytes, stored under the holder in workers:info
-- Builds   job:<id>, leases, workers, workers:info
-- Returns  one code per pair: 'ok' | 'cancel' | 'lost' (leaving: an empty list)
-- Errors   RJ_NO_MACHINE, RJ_INVALID
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/write.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
local holder, lease_ms, register, n = ARGV[2], int_arg(ARGV[3], 100, 366 * 86400000), ARGV[4],
  int_arg(ARGV[5], 0, 10000)
if not valid_actor(holder) then return fail('RJ_INVALID', 'holder') end
if not lease_ms then return fail('RJ_INVALID', 'lease_ms must be an integer 100 ms to 366 days') end
if register ~= '0' and register ~= '1' and register ~= '2' then
  return fail('RJ_INVALID', 'register must be 0, 1 or 2')
end
if not n or (#ARGV ~= 5 + 2 * n and #ARGV ~= 6 + 2 * n) then return fail('RJ_INVALID', 'pairs') end
local info = ARGV[6 + 2 * n]
if info then
  if register ~= '1' then return fail('RJ_INVALID', 'info is for a registering worker (register 1)') end
  local ok, doc = false, nil
  if #info <= 4096 and string.find(info, '^%s*{') then ok, doc = pcall(cjson.decode, info) end
  if not ok or type(doc) ~= 'table' then
    return fail('RJ_INVALID', 'info must be a JSON object of at most 4096 bytes')
  end
end
local m, P = M, P
if register == '2' then
  if n ~= 0 then return fail('RJ_INVALID', 'a leaving worker renews no leases (n must be 0)') end
  op('ZREM', P .. 'workers', holder)
  op('HDEL', P .. 'workers:info', holder)
  commit()
  return {}
end
local deadline = NOW + lease_ms
if register == '1' then op('ZADD', P .. 'workers', NOW, holder) end
if info then op('HSET', P .. 'workers:info', holder, info) end
local out = {}
local FIELDS, IX = {'status', 'token'}, {status = 1, token = 2}
for i = 1, n do
  local id, token = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  local rec = valid_name(id) and load_job(id, FIELDS, IX) or nil
  if rec and rec.status and field(rec, 'token') == token and m.is_leased[rec.status] then
    zset(P .. 'leases', id, deadline)
    hset(rec, 'lease_deadline_ms', deadline)
    out[i] = 'ok'
  elseif rec and rec.status and field(rec, 'token') == token and rec.status == m.cancelled then
    out[i] = 'cancel'
  else
    out[i] = 'lost'
  end
end
commit()
return out
