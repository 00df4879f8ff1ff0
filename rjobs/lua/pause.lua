-- pause.lua — pause a queue (workers stop claiming; running jobs go on and finish, due delayed jobs
-- still become ready) or resume it (every lane's wake line gets a token, so idle workers claim at
-- once). The flag lives in the machine hash, which every claim reads anyway.
-- Called by: Queue.pause, Queue.resume (Scripts.pause)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor    who pauses or resumes (charset A-Z a-z 0-9 _ . : @ -, <= 200)
-- ARGV[3]  paused   1 = pause, 0 = resume
-- ARGV[4]  reason   a short text for people (<= 1000 bytes; may be empty)
-- Builds   machine (field paused: JSON {by, t (server ms), msg}), wake:<type> (on resume), lanes
-- Returns  1 when the call changed the queue (paused it, or resumed a paused queue), 0 when it
--          already was so
-- Errors   RJ_NO_MACHINE, RJ_INVALID
--!include lib/layout.lua
--!include lib/core.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
local actor, on, reason = ARGV[2], ARGV[3], ARGV[4]
if not valid_actor(actor) then return fail('RJ_INVALID', 'actor') end
if on ~= '0' and on ~= '1' then return fail('RJ_INVALID', 'paused must be 0 or 1') end
if #ARGV ~= 4 or #reason > 1000 then return fail('RJ_INVALID', 'reason (at most 1000 bytes)') end
local was = PAUSED  -- read by init with the machine's head
if on == '1' then
  if was then return 0 end
  call('HSET', MACHINE_KEY, 'paused', cjson.encode({by = actor, t = NOW, msg = reason}))
  return 1
end
if not was then return 0 end
-- the lanes whose line has no token, read before the first write (docs/design.md, decision 3);
-- bounded as a claim's '*' is
local lines = {}
for _, t in ipairs(call('ZRANGE', P .. 'lanes', 0, 999)) do
  local line = P .. 'wake:' .. t
  if call('LLEN', line) == 0 then lines[#lines + 1] = line end
end
call('HDEL', MACHINE_KEY, 'paused')
for _, line in ipairs(lines) do call('LPUSH', line, '1') end
return 1
