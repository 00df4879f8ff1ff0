-- lib/apply.lua — one requested move of one job (shared by transition.lua and finish.lua).
-- A request is 8 ARGV fields: id, token ('' = not fenced), target state, result JSON ('' = keep),
-- error JSON ('' = keep; a success without one clears it), run_at epoch ms (0 = none; < 0 = that
-- many ms from server time; required when the target is the delayed state), msg (short reason), refund (1 = the attempt does not count: a graceful hand-back).
-- Returns 'ok', 'already' (same fenced final move repeated) or an error string "RJ_<CODE> ...".
RJ.REQ_FIELDS = 8

function RJ.read_request(argv, pos)
  return {id = argv[pos], token = argv[pos + 1], target = argv[pos + 2], result = argv[pos + 3],
    error = argv[pos + 4], run_at = tonumber(argv[pos + 5]), msg = argv[pos + 6], refund = argv[pos + 7]}
end

function RJ.apply(req, actor)
  local m, id = RJ.m, req.id
  if not RJ.valid_name(id) then return 'RJ_INVALID job id' end
  if not RJ.is_state(req.target) then return 'RJ_INVALID unknown state ' .. tostring(req.target) end
  if not req.run_at or #req.msg > 1000 then return 'RJ_INVALID run_at or msg' end
  local jk = RJ.jkey(id)
  local f = redis.call('HMGET', jk, 'status', 'token', 'dedupe_key', 'attempt', 'started_ms', 'has_dependents')
  local status, jtoken = f[1], f[2]
  if not status then return 'RJ_NOT_FOUND ' .. id end
  local target = req.target
  if req.token ~= '' then
    if jtoken == req.token and status == target and RJ.is_final(status) then return 'already' end
    local e = RJ.check_token(id, status, req.token, jtoken)
    if e then return e end
  end
  if not RJ.allows(status, target) then return 'RJ_TRANSITION ' .. status .. ' ' .. target .. ' ' .. id end
  local opts = {actor = actor, msg = req.msg, fields = {}, started = f[5] or false, has_dependents = f[6] == '1',
    token = req.token ~= '' and req.token or nil, attempt = f[4]}
  if target == m.role.delayed then
    if req.run_at == 0 then return 'RJ_INVALID moving to ' .. target .. ' needs run_at' end
    -- a negative run_at is a delay in ms from the server's own clock (no client clock involved)
    opts.run_at = req.run_at > 0 and req.run_at or RJ.now - req.run_at
  end
  local fields = opts.fields
  if req.result ~= '' then fields[#fields + 1] = 'result'; fields[#fields + 1] = req.result end
  if req.error ~= '' then fields[#fields + 1] = 'error'; fields[#fields + 1] = req.error end
  local final = m.final_role[target]
  if final == 'success' or final == 'partial' then fields[#fields + 1] = 'progress'; fields[#fields + 1] = 100 end
  if final == 'success' and req.error == '' and (tonumber(f[4]) or 0) > 1 then
    redis.call('HDEL', RJ.jkey(id), 'error')  -- an earlier attempt's error does not describe a success
    -- (only later attempts can carry one: retry.lua clears it on an explicit retry)
  end
  if m.is_leased[target] and not m.is_leased[status] then
    -- a manual hold (seed 003 startTask): held by the actor, no lease, never reaped
    fields[#fields + 1] = 'worker'; fields[#fields + 1] = actor
    fields[#fields + 1] = 'started_ms'; fields[#fields + 1] = RJ.now
  end
  if req.refund == '1' and (tonumber(f[4]) or 0) > 0 then
    fields[#fields + 1] = 'attempt'; fields[#fields + 1] = tonumber(f[4]) - 1
  end
  RJ.move(id, status, target, opts)
  local ttl = m.opt.cache_ttl_ms or 0
  if final == 'success' and req.result ~= '' and f[3] and f[3] ~= '' and ttl > 0 then
    redis.call('SET', RJ.P .. 'cache:' .. f[3], req.result, 'PX', ttl)
  end
  return 'ok'
end

-- The body of transition.lua and finish.lua: read ARGV[2] actor, ARGV[3] n and n requests,
-- validate the whole call (and, when fenced, that every request has a token) before any write,
-- apply each, then purge a little and wake a worker. Returns the outcomes or an error reply.
function RJ.apply_call(argv, fenced)
  local actor, n = argv[2], tonumber(argv[3])
  if not n or n < 1 or n > 1000 or #argv ~= 3 + n * RJ.REQ_FIELDS then
    return redis.error_reply('RJ_INVALID malformed requests')
  end
  local reqs = {}
  for i = 1, n do
    reqs[i] = RJ.read_request(argv, 4 + (i - 1) * RJ.REQ_FIELDS)
    if fenced and reqs[i].token == '' then return redis.error_reply('RJ_INVALID finish needs a lease token') end
  end
  local out = {}
  for i = 1, n do out[i] = RJ.apply(reqs[i], actor) end
  RJ.purge(2)
  RJ.done()
  return out
end
