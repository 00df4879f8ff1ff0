-- lib/apply.lua — one requested move of one job (shared by transition.lua and finish.lua).
-- A request is 8 ARGV fields: id, token ('' = not fenced), target state, result JSON ('' = keep),
-- error JSON ('' = keep; a success without one clears it), run_at epoch ms (0 = none; < 0 = that
-- many ms from server time; required when the target is the delayed state), msg (short reason), refund (1 = the attempt does not count: a graceful hand-back).
-- Returns 'ok', 'already' (same fenced final move repeated) or an error string "RJ_<CODE> ...".
RJ.REQ_FIELDS = 8

-- The request at argv[pos..pos+7] (no table per request: read in place).
function RJ.apply(argv, pos, actor)
  local m = RJ.m
  local id, token, target, result, err, run_at, msg, refund = argv[pos], argv[pos + 1], argv[pos + 2],
    argv[pos + 3], argv[pos + 4], tonumber(argv[pos + 5]), argv[pos + 6], argv[pos + 7]
  if not RJ.valid_name(id) then return 'RJ_INVALID job id' end
  if not RJ.is_state(target) then return 'RJ_INVALID unknown state ' .. tostring(target) end
  if not run_at or #msg > 1000 then return 'RJ_INVALID run_at or msg' end
  local jk = RJ.jkey(id)
  local f = call('HMGET', jk, 'status', 'token', 'dedupe_key', 'attempt', 'started_ms', 'has_dependents')
  local status, jtoken = f[1], f[2]
  if not status then return 'RJ_NOT_FOUND ' .. id end
  if token ~= '' then
    if jtoken == token and status == target and RJ.is_final(status) then return 'already' end
    local e = RJ.check_token(id, status, token, jtoken)
    if e then return e end
  end
  if not RJ.allows(status, target) then return 'RJ_TRANSITION ' .. status .. ' ' .. target .. ' ' .. id end
  local fields, n = {}, 0
  local opts = {jk = jk, actor = actor, msg = msg, fields = fields, started = f[5] or false,
    has_dependents = f[6] == '1', token = token ~= '' and token or nil, attempt = f[4]}
  if target == m.role.delayed then
    if run_at == 0 then return 'RJ_INVALID moving to ' .. target .. ' needs run_at' end
    -- a negative run_at is a delay in ms from the server's own clock (no client clock involved)
    opts.run_at = run_at > 0 and run_at or RJ.now - run_at
  end
  if result ~= '' then fields[n + 1] = 'result'; fields[n + 2] = result; n = n + 2 end
  if err ~= '' then fields[n + 1] = 'error'; fields[n + 2] = err; n = n + 2 end
  local final = m.final_role[target]
  if final == 'success' or final == 'partial' then fields[n + 1] = 'progress'; fields[n + 2] = 100; n = n + 2 end
  local attempt = tonumber(f[4]) or 0
  if final == 'success' and err == '' and attempt > 1 then
    call('HDEL', jk, 'error')  -- an earlier attempt's error does not describe a success
    -- (only later attempts can carry one: retry.lua clears it on an explicit retry)
  end
  if m.is_leased[target] and not m.is_leased[status] then
    -- a manual hold (seed 003 startTask): held by the actor, no lease, never reaped
    fields[n + 1] = 'worker'; fields[n + 2] = actor; fields[n + 3] = 'started_ms'; fields[n + 4] = RJ.now
    n = n + 4
  end
  if refund == '1' and attempt > 0 then
    fields[n + 1] = 'attempt'; fields[n + 2] = attempt - 1
  end
  RJ.move(id, status, target, opts)
  if final == 'success' and result ~= '' and f[3] and f[3] ~= '' then
    local ttl = RJ.opt().cache_ttl_ms
    if ttl > 0 then call('SET', RJ.P .. 'cache:' .. f[3], result, 'PX', ttl) end
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
  local w = RJ.REQ_FIELDS
  if fenced then
    for pos = 5, 3 + n * w, w do
      if argv[pos] == '' then return redis.error_reply('RJ_INVALID finish needs a lease token') end
    end
  end
  local out = {}
  for i = 1, n do out[i] = RJ.apply(argv, 4 + (i - 1) * w, actor) end
  RJ.purge(2)
  RJ.done()
  return out
end
