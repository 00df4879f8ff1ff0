-- finish.lua — a worker reports outcomes for jobs it holds under a lease: success, partial,
-- failure, retry later (delayed), hand back (ready), review. Fenced: every request carries the
-- lease token from claim; a stale token writes nothing.
-- Called by: Worker (Scripts.finish), JobContext
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor    worker id
-- ARGV[3]  n        number of requests (1-1000)
-- ARGV[4..] n requests of 8 fields (see lib/apply.lua); token must not be empty
-- Builds   job:<id>, job:<id>:events, job:<id>:dependents, ready, delayed, leases, expiring,
--          state:<s>, cache:<k>, wake
-- Returns  one outcome per request: 'ok' | 'already' | 'RJ_LEASE_LOST ...' | 'RJ_<CODE> ...'
-- Errors   RJ_NO_MACHINE, RJ_INVALID <why> (malformed call: nothing written)
--!include lib/core.lua
--!include lib/apply.lua
local err = RJ.init(KEYS, ARGV[1])
if err then return redis.error_reply(err) end
local actor, n = ARGV[2], tonumber(ARGV[3])
if not n or n < 1 or n > 1000 or #ARGV ~= 3 + n * RJ.REQ_FIELDS then
  return redis.error_reply('RJ_INVALID malformed requests')
end
local reqs = {}
for i = 1, n do
  reqs[i] = RJ.read_request(ARGV, 4 + (i - 1) * RJ.REQ_FIELDS)
  if reqs[i].token == '' then return redis.error_reply('RJ_INVALID finish needs a lease token') end
end
local out = {}
for i = 1, n do out[i] = RJ.apply(reqs[i], actor) end
RJ.purge(2)
RJ.done()
return out
