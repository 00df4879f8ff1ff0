-- comment.lua — add a comment by an actor to a job's history (seed 003 addComment).
-- Called by: Queue.comment, JobContext.comment (Scripts.comment)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor
-- ARGV[3]  id
-- ARGV[4]  token    lease token ('' = not fenced)
-- ARGV[5]  text     1-1000 characters
-- Builds   job:<id>, job:<id>:events
-- Returns  'ok'
-- Errors   RJ_NO_MACHINE, RJ_INVALID, RJ_NOT_FOUND <id>, RJ_LEASE_LOST
--!include lib/core.lua
local err = RJ.init(KEYS, ARGV[1])
if err then return redis.error_reply(err) end
local actor, id, token, text = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not RJ.valid_name(id) then return redis.error_reply('RJ_INVALID job id') end
if #text < 1 or #text > 1000 then return redis.error_reply('RJ_INVALID comment must be 1-1000 characters') end
local jk = RJ.jkey(id)
local f = redis.call('HMGET', jk, 'status', 'token', 'attempt')
if not f[1] then return redis.error_reply('RJ_NOT_FOUND ' .. id) end
local e = RJ.check_token(id, f[1], token, f[2])
if e then return redis.error_reply(e) end
RJ.emit(id, jk, 'comment', nil, nil, actor, text, f[3])
return 'ok'
