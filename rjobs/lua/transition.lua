-- transition.lua — move one or more jobs along the queue's table (client side: transition,
-- bulk_transition, cancel, bulk_cancel, complete/fail/partial, hold).
-- Called by: Queue.transition / bulk_transition / cancel / bulk_cancel / complete / fail / partial / hold
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor    who acts (worker id, user, or client name; charset A-Z a-z 0-9 _ . : @ -, <= 200)
-- ARGV[3]  n        number of requests (1-1000)
-- ARGV[4..] n requests of 10 fields (see lib/apply.lua)
-- Builds   job:<id>, job:<id>:history, job:<id>:dependents, ready:<type>, lanes, delayed, leases, state:<s>,
--          owner:<u>, dedupe:<k>, cache:<k>, wake:<type> (under the prefix)
--          metrics:<minute>, totals (the counters of the moves it makes: lib/write.lua)
-- Returns  one outcome per request: 'ok' | 'already' | a refusal 'RJ_<CODE> <detail>' with CODE
--          RJ_INVALID, RJ_NOT_FOUND, RJ_FENCED, RJ_LEASE_LOST or RJ_TRANSITION (lib/apply.lua; a
--          bulk call reports each id; a refused request wrote nothing)
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
return apply_call(ARGV, false)
