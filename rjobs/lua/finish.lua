-- finish.lua — a worker reports outcomes for jobs it holds under a lease: success, partial,
-- failure, retry later (delayed), hand back (ready), review. Fenced: every request carries the
-- lease token from claim; a stale token writes nothing.
-- Called by: Worker (Scripts.finish), JobContext.review, Queue.hold
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor    worker id
-- ARGV[3]  n        number of requests (1-1000)
-- ARGV[4..] n requests of 10 fields (see lib/apply.lua); token must not be empty
-- Builds   job:<id>, job:<id>:history, job:<id>:dependents, ready:<type>, lanes, delayed, leases, state:<s>,
--          owner:<u>, dedupe:<k>, cache:<k>, wake:<type> (under the prefix)
--          metrics:<minute>, totals (the counters of the moves it makes: lib/write.lua)
-- Returns  one outcome per request: 'ok' | 'already' | a refusal 'RJ_<CODE> <detail>' with CODE
--          RJ_LEASE_LOST, RJ_INVALID, RJ_NOT_FOUND or RJ_TRANSITION (lib/apply.lua)
-- Errors   RJ_NO_MACHINE, RJ_INVALID <why> (malformed call: nothing written)
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/write.lua
--!include lib/checks.lua
--!include lib/move.lua
--!include lib/purge.lua
--!include lib/apply.lua
local err = init(KEYS, ARGV[1], true)
if err then return fail(err) end
return apply_call(ARGV, true)
