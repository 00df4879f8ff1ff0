-- declare_machine.lua — store the queue's state machine, or check it matches the stored one.
-- Called by: Queue.declare() (rjobs/scripts.py: Scripts.declare_machine)
-- KEYS[1]  machine  hash   rjobs:{Q}:machine — next:<state>, role:<role>, opt:<option>, fingerprint
-- KEYS[2]  events   stream rjobs:{Q}:events (only checked for the prefix)
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  fingerprint  canonical JSON of the machine
-- ARGV[3]  nfields  number of machine field/value pairs that follow
-- ARGV[4..] machine pairs, then option pairs (opt:<name>, integer) to the end
-- Returns  "created" | "same"
-- Errors   RJ_INVALID (bad arguments), RJ_MACHINE_CONFLICT <stored machine name>
local machine_key, events_key = KEYS[1], KEYS[2]
local prefix, fingerprint, nfields = ARGV[1], ARGV[2], tonumber(ARGV[3])
if machine_key ~= prefix .. 'machine' or events_key ~= prefix .. 'events' then
  return redis.error_reply('RJ_INVALID keys do not match the queue prefix')
end
if not nfields or nfields < 1 or #ARGV < 3 + 2 * nfields or (#ARGV - 3) % 2 ~= 0 then
  return redis.error_reply('RJ_INVALID malformed machine fields')
end
for i = 4 + 2 * nfields, #ARGV, 2 do
  if string.sub(ARGV[i], 1, 4) ~= 'opt:' or not tonumber(ARGV[i + 1]) then
    return redis.error_reply('RJ_INVALID option ' .. ARGV[i] .. ' must be opt:<name> with an integer')
  end
end
local stored = redis.call('HGET', machine_key, 'fingerprint')
if stored and stored ~= fingerprint then
  local name = redis.call('HGET', machine_key, 'name') or '?'
  return redis.error_reply('RJ_MACHINE_CONFLICT queue already uses machine ' .. name ..
    ' with a different table; use a new queue name or delete ' .. machine_key)
end
local pairs_ = {'fingerprint', fingerprint}
for i = 4, #ARGV do pairs_[#pairs_ + 1] = ARGV[i] end
redis.call('HSET', machine_key, unpack(pairs_))
if stored then return 'same' end
return 'created'
