-- set_limit.lua — set or clear the limits of a name: a job type ('t:<type>') or a group
-- ('g:<group>', given at enqueue). cap: at most that many of its jobs leased at once; rate: at most
-- n claims per per_ms (a sliding window). claim.lua enforces them in every worker process; a job
-- over a limit stays ready, no attempt counted. Idle workers are woken to claim under the new limits.
-- Called by: Queue.set_limit, Queue.clear_limit (Scripts.set_limit)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  name     't:<type>' or 'g:<group>' (the name: charset A-Z a-z 0-9 _ . -, <= 128)
-- ARGV[3]  cap      running jobs at most (0-1000000; 0 = no cap)
-- ARGV[4]  rate     claims per window at most (0-1000000; 0 = no rate)
-- ARGV[5]  per_ms   the window in ms (10 ms to 366 days with a rate; 0 without)
-- Builds   limits (name -> "cap,rate,per_ms"; cap and rate 0 = the name's limits cleared),
--          machine (flow), wake:<type> (every lane, bounded)
-- Returns  the name's previous limits "cap,rate,per_ms", or '' when it had none
-- Errors   RJ_NO_MACHINE, RJ_INVALID
--!include lib/layout.lua
--!include lib/core.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
if #ARGV ~= 5 then return fail('RJ_INVALID', 'expected name, cap, rate, per_ms') end
local name = ARGV[2]
local kind, base = string.match(name, '^([tg]):(.+)$')
if not kind or not valid_name(base) then return fail('RJ_INVALID', "name must be 't:<type>' or 'g:<group>'") end
local cap, rate, per = int_arg(ARGV[3], 0, 1000000), int_arg(ARGV[4], 0, 1000000), int_arg(ARGV[5], 0, 366 * 86400000)
if not cap then return fail('RJ_INVALID', 'cap must be an integer 0-1000000') end
if not rate then return fail('RJ_INVALID', 'rate must be an integer 0-1000000') end
if not per or (rate > 0 and per < 10) or (rate == 0 and per ~= 0) then
  return fail('RJ_INVALID', 'per_ms must be 10 ms to 366 days with a rate, 0 without')
end
local previous = call('HGET', P .. 'limits', name) or ''
-- the lanes to wake, read before the first write (docs/design.md, decision 3)
local lines = {}
for _, t in ipairs(call('ZRANGE', P .. 'lanes', 0, 999)) do
  local line = P .. 'wake:' .. t
  if call('LLEN', line) == 0 then lines[#lines + 1] = line end
end
if CLUSTER then call('EXISTS', P .. 'limits', P .. 'backoff') end
if cap == 0 and rate == 0 then
  call('HDEL', P .. 'limits', name)
  call('HDEL', P .. 'backoff', name)
else
  call('HSET', P .. 'limits', name, cap .. ',' .. rate .. ',' .. per)
  call('HSET', MACHINE_KEY, 'flow', '1')
end
for _, line in ipairs(lines) do call('LPUSH', line, '1') end
return previous
