-- delete.lua — delete jobs with everything they own: hash, history, assets, dependents set, their
-- entry in the dependents sets of the jobs they wait for, their dedupe key and its cached result
-- (while the key is theirs), and every index entry (state, lane, delayed, leases, owner).
-- A leased job goes only with force (its holder's next heartbeat answers 'lost' and its writes
-- find no job); a job others wait for goes only with a dependents policy (lib/remove.lua).
-- Called by: Queue.delete / bulk_delete (Scripts.delete)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor    who deletes (charset A-Z a-z 0-9 _ . : @ -, <= 200)
-- ARGV[3]  user     '' = any owner; else every job must belong to this user (RJ_UNAUTHORIZED)
-- ARGV[4]  force    1 = leased jobs too, 0 = refuse them (RJ_RUNNING)
-- ARGV[5]  dependents  refuse | fail | cancel | delete: what happens to jobs waiting for a deleted one
-- ARGV[6]  n        number of job ids that follow (1-1000), none twice
-- ARGV[7..] ids
-- Builds   deletes job:<id> (+ :history :assets :dependents); ready:<type>, delayed, leases, state:<s>,
--          owner:<u>, dedupe:<k>, cache:<k>, job:<dep>:dependents; moved dependents as finish does
--          (job:<id>, job:<id>:history, state:<s>, events)
--          metrics:<minute>, totals (the counters of the moves it makes: lib/write.lua)
-- Returns  {deleted (dependents deleted with them included), dependents moved, one outcome per id:
--          'ok' | 'RJ_<CODE> <detail>' with CODE RJ_NOT_FOUND, RJ_UNAUTHORIZED, RJ_RUNNING,
--          RJ_DEPENDENTS or RJ_INVALID (a refused id wrote nothing)}
-- Errors   RJ_NO_MACHINE, RJ_INVALID (malformed call: nothing written)
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/write.lua
--!include lib/move.lua
--!include lib/purge.lua
--!include lib/remove.lua
local err = init(KEYS, ARGV[1], true)
if err then return fail(err) end
local actor, user, force, policy, n = ARGV[2], ARGV[3], ARGV[4], ARGV[5], int_arg(ARGV[6], 1, 1000)
if not valid_actor(actor) then return fail('RJ_INVALID', 'actor') end
if user ~= '' and not valid_name(user) then return fail('RJ_INVALID', 'user id') end
if force ~= '0' and force ~= '1' then return fail('RJ_INVALID', 'force must be 0 or 1') end
if not REMOVE_POLICY[policy] then return fail('RJ_INVALID', 'dependents must be refuse, fail, cancel or delete') end
if not n or #ARGV ~= 6 + n then return fail('RJ_INVALID', 'malformed ids') end
local ids, listed = {}, {}
for i = 1, n do
  local id = ARGV[6 + i]
  if not valid_name(id) then return fail('RJ_INVALID', 'job id') end
  if listed[id] then return fail('RJ_INVALID', 'job id ' .. id .. ' listed twice') end
  listed[id] = true
  ids[i] = id
end
local out, removed, moved = remove_jobs(ids, user, force == '1', policy, actor)
commit()
return {removed, moved, unpack(out)}
