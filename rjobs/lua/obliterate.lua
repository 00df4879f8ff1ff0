-- obliterate.lua — remove a whole queue, a batch per call: first its jobs with everything they own
-- (read from the state indexes, no keyspace scan), then, once none is left, the queue's own keys
-- (lanes and wake lines, delayed, leases, seq, workers, workers:info, events, the counters and the
-- machine).
-- Refused while a job is leased unless forced; the first call pauses the queue so no worker
-- claims meanwhile. Called in a loop until it answers done; each call is all-or-nothing.
-- Called by: Queue.obliterate (Scripts.obliterate)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor    who obliterates (charset A-Z a-z 0-9 _ . : @ -, <= 200)
-- ARGV[3]  force    1 = leased jobs too (their holders' heartbeats answer 'lost'), 0 = refuse
-- ARGV[4]  limit    jobs to take from the indexes at most (1-1000; their waiting dependents go too)
-- Builds   deletes job:<id> (+ :history :assets :dependents), state:<s>, ready:<type>, wake:<type>,
--          groups:<type>, lanes, delayed, leases, owner:<u>, dedupe:<k>, cache:<k>, seq, workers,
--          workers:info, events, limits, running, backoff, rate:<name>, schedules, actors, ready (the layout before
--          lanes), totals, metrics:<minute> (the last 25 hours'), machine (paused while the jobs go)
-- Returns  {jobs removed by this call, 1 when the queue is gone (else 0)}
-- Errors   RJ_NO_MACHINE, RJ_INVALID, RJ_RUNNING <n> (jobs leased, without force: nothing written)
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/write.lua
--!include lib/move.lua
--!include lib/purge.lua
--!include lib/remove.lua
local err = init(KEYS, ARGV[1], true)
if err then return fail(err) end
local actor, force, limit = ARGV[2], ARGV[3], int_arg(ARGV[4], 1, 1000)
if not valid_actor(actor) then return fail('RJ_INVALID', 'actor') end
if force ~= '0' and force ~= '1' then return fail('RJ_INVALID', 'force must be 0 or 1') end
if not limit or #ARGV ~= 4 then return fail('RJ_INVALID', 'limit must be an integer 1-1000') end
local leased = read('ZCARD', P .. 'leases')
if leased > 0 and force ~= '1' then
  return fail('RJ_RUNNING', leased .. ' job(s) of this queue are leased: cancel them, wait for them, or force')
end
local ids, seen, stale = {}, {}, 0
for st in string.gmatch(M.edges or '', '|#([%w_]+)') do
  if #ids >= limit then break end
  stale = stale + index_head(P .. 'state:' .. st, limit - #ids, ids, seen)
end
for _, key in ipairs({P .. 'delayed', P .. 'leases'}) do
  stale = stale + index_head(key, limit - #ids, ids, seen)
end
if #ids > 0 or stale > 0 then
  if read('HEXISTS', MACHINE_KEY, 'paused') == 0 then
    op('HSET', MACHINE_KEY, 'paused', cjson.encode({by = actor, t = NOW, msg = 'obliterating the queue'}))
  end
  local _, removed = remove_jobs(ids, '', true, 'delete', actor)
  commit()
  return {removed + stale, 0}
end
-- no job left: the queue's own keys (the lanes a batch at a time)
local types = read('ZRANGE', P .. 'lanes', 0, 999)
for _, t in ipairs(types) do
  read('EXISTS', lane_key(t), P .. 'wake:' .. t, P .. 'groups:' .. t)
  op('DEL', lane_key(t))
  op('DEL', P .. 'wake:' .. t)
  op('DEL', P .. 'groups:' .. t)  -- its group lanes went with their jobs
end
if #types >= 1000 then
  op('ZREM', P .. 'lanes', unpack(types))
  commit()
  return {0, 0}
end
for _, name in ipairs(read('HKEYS', P .. 'limits')) do  -- each limited name's rate window
  read('EXISTS', P .. 'rate:' .. name)
  op('DEL', P .. 'rate:' .. name)
end
for _, name in ipairs({'lanes', 'delayed', 'leases', 'seq', 'workers', 'workers:info', 'ready', 'events', 'limits',
  'running', 'backoff', 'schedules', 'actors', 'totals', 'machine'}) do
  op('DEL', P .. name)
end
-- the counters: every minute's bucket that may still exist (one lives METRICS_TTL_S after its
-- minute at most), named from the clock: no keyspace scan
local last, buckets = math.floor(NOW / METRICS_BUCKET_MS) + 1, {}
for m = last - math.ceil(METRICS_TTL_S * 1000 / METRICS_BUCKET_MS) - 1, last do buckets[#buckets + 1] = P .. 'metrics:' .. m end
op('DEL', unpack(buckets))
commit()
return {0, 1}
