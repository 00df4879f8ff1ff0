-- comment.lua — add a comment by an actor to a job's history. Comments never change the job and
-- are never trimmed; a lease holder may present its token (a stale one is RJ_LEASE_LOST).
-- Called by: Queue.comment, JobContext.comment (Scripts.comment)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor    (charset A-Z a-z 0-9 _ . : @ -, <= 200)
-- ARGV[3]  id
-- ARGV[4]  token    lease token ('' = none)
-- ARGV[5]  text     1-1000 bytes
-- Builds   job:<id>:history
-- Returns  'ok'
-- Errors   RJ_NO_MACHINE, RJ_INVALID, RJ_NOT_FOUND <id>, RJ_LEASE_LOST
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/write.lua
--!include lib/checks.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
local actor, id, token, text = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not valid_actor(actor) then return fail('RJ_INVALID', 'actor') end
if not valid_name(id) then return fail('RJ_INVALID', 'job id') end
if type(text) ~= 'string' or #text < 1 or #text > 1000 then
  return fail('RJ_INVALID', 'comment must be 1-1000 bytes')
end
local rec = load_job(id)
if not rec.status then return fail('RJ_NOT_FOUND', id) end
if token ~= '' then
  local e = check_token(rec, token)
  if e then return fail(e) end
end
log_event(rec, 'comment', nil, nil, actor, text, field(rec, 'attempt'), nil, nil, nil, false)
commit()
return 'ok'
