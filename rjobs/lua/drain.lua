-- drain.lua — remove a batch of the jobs that wait to run (BullMQ's drain): those in the waiting,
-- delayed, initial and ready states (every lane), with everything they own; running jobs and
-- finished ones stay. Jobs waiting for a drained job are drained with it. Called in a loop until
-- it finds nothing: each call is all-or-nothing for its batch.
-- Called by: Queue.drain (Scripts.drain)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor    who drains (charset A-Z a-z 0-9 _ . : @ -, <= 200)
-- ARGV[3]  limit    jobs to take from the indexes at most (1-1000; their waiting dependents go too)
-- Builds   deletes job:<id> (+ :history :assets :dependents); ready:<type>, delayed, state:<s>,
--          owner:<u>, dedupe:<k>, cache:<k>, job:<dep>:dependents
--          metrics:<minute>, totals (the counters of the moves it makes: lib/write.lua)
-- Returns  jobs removed by this call (stale index entries dropped included); 0 = nothing left
-- Errors   RJ_NO_MACHINE, RJ_INVALID
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/write.lua
--!include lib/move.lua
--!include lib/purge.lua
--!include lib/remove.lua
local err = init(KEYS, ARGV[1], true)
if err then return fail(err) end
local actor, limit = ARGV[2], int_arg(ARGV[3], 1, 1000)
if not valid_actor(actor) then return fail('RJ_INVALID', 'actor') end
if not limit or #ARGV ~= 3 then return fail('RJ_INVALID', 'limit must be an integer 1-1000') end
local ids, seen, stale = {}, {}, 0
-- the waiting first: a waiting job's dependencies are drained with their dependents anyway
for _, st in ipairs({M.waiting, M.delayed, M.initial}) do
  if st ~= '' and st ~= M.ready and not M.is_leased[st] and not M.final_role[st] then
    stale = stale + index_head(P .. 'state:' .. st, limit - #ids, ids, seen)
  end
end
if M.delayed ~= '' then stale = stale + index_head(P .. 'delayed', limit - #ids, ids, seen) end
for _, t in ipairs(read('ZRANGE', P .. 'lanes', 0, 999)) do
  if #ids >= limit then break end
  stale = stale + index_head(lane_key(t), limit - #ids, ids, seen)
end
stale = stale + index_head(P .. 'state:' .. M.ready, limit - #ids, ids, seen)
local _, removed = remove_jobs(ids, '', false, 'delete', actor)
commit()
return removed + stale
