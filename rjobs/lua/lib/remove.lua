-- lib/remove.lua — deleting jobs on request (delete.lua, drain.lua, obliterate.lua); included after
-- lib/move.lua and lib/purge.lua (drop() removes one job with everything it owns, as retention does).
-- The dependents policy says what happens to the jobs waiting for a deleted one (its dependents
-- in the waiting state; others no longer wait for it):
--   refuse  the job is not deleted (RJ_DEPENDENTS), unless every such dependent is deleted by the
--           same call
--   fail    they fail (cancelled where the machine has no waiting -> failure edge) with error code
--           dependency_deleted, as when a dependency fails; their own dependents follow
--   cancel  they are cancelled with that error, and their own dependents follow
--   delete  they are deleted too, with their own waiting dependents, the whole chain
local REMOVE_POLICY = {refuse = true, fail = true, cancel = true, delete = true}
local REMOVE_CHAIN = 100000  -- the most dependents one deleted job may take with it (a bound)

-- The jobs waiting for `rec` (its dependents now in the waiting state), read once per job.
local function waiting_for(rec)
  local kids = rec.kids
  if not kids then
    kids = {}
    for _, c in ipairs(read('SMEMBERS', rec.jk .. ':dependents')) do
      local cr = load_job(c, PURGE_FIELDS, PURGE_IX)
      if cr.status and cr.status == M.waiting then kids[#kids + 1] = cr end
    end
    rec.kids = kids
  end
  return kids
end

-- One deleted job: its last event on the queue stream (waits read it), then drop().
local function remove_one(rec, actor)
  log_event(rec, 'deleted', rec.status, '', actor, nil, nil, nil, nil, nil, false)
  drop(rec, true)
end

-- Decide the deletion of the jobs `ids` (valid names, none twice): `user` ('' = anyone's) is the
-- owner each must have, `force` lets a leased job go too (its holder's next heartbeat answers
-- 'lost', its writes find no job), `policy` is the dependents policy above. Every check is made
-- before anything is decided, so a refused id changes nothing. Returns one outcome per id ('ok'
-- or a refusal 'RJ_<CODE> ...'), how many jobs were deleted (dependents deleted with them
-- included) and how many dependents were moved.
local function remove_jobs(ids, user, force, policy, actor)
  local out, cand = {}, {}
  -- where fail and cancel move a waiting dependent: the asked final state, else the other one; a
  -- machine with neither edge from its waiting state cannot move them, so the delete is refused
  local first, second = M.failure, M.cancelled
  if policy == 'cancel' then first, second = M.cancelled, M.failure end
  local target = (allows(M.waiting, first) and first) or (allows(M.waiting, second) and second) or nil
  if (policy == 'fail' or policy == 'cancel') and not target then policy = 'refuse' end
  for i, id in ipairs(ids) do
    local rec = load_job(id, PURGE_FIELDS, PURGE_IX)
    if not rec.status then
      out[i] = 'RJ_NOT_FOUND ' .. id
    elseif user ~= '' and field(rec, 'user_id') ~= user then
      out[i] = 'RJ_UNAUTHORIZED job ' .. id .. ' belongs to another user'
    elseif M.is_leased[rec.status] and not force then
      out[i] = 'RJ_RUNNING ' .. id .. ' is ' .. rec.status .. ' under a lease: cancel it first, or force the delete'
    else
      out[i] = 'ok'
      cand[id] = rec
    end
  end
  local extra, order = {}, {}  -- dependents deleted with a requested job (policy delete)
  if policy == 'delete' then
    for i, id in ipairs(ids) do
      local rec = cand[id]
      if rec then
        local found, list, at, bad = {[id] = true}, {rec}, 1, nil
        while at <= #list and not bad do
          for _, c in ipairs(waiting_for(list[at])) do
            if not found[c.id] then
              found[c.id] = true
              list[#list + 1] = c
              if user ~= '' and field(c, 'user_id') ~= user then
                bad = 'RJ_UNAUTHORIZED job ' .. c.id .. ', which waits for ' .. id .. ', belongs to another user'
              elseif #list > REMOVE_CHAIN then
                bad = 'RJ_INVALID more than ' .. REMOVE_CHAIN .. ' jobs wait for ' .. id
              end
            end
          end
          at = at + 1
        end
        if bad then
          out[i], cand[id] = bad, nil
        else
          for j = 2, #list do
            local c = list[j]
            if not extra[c.id] then extra[c.id] = c; order[#order + 1] = c end
          end
        end
      end
    end
  elseif policy == 'refuse' then
    -- a job is refused while one of its dependents waits and is not deleted too; refusing one
    -- may refuse another (whose dependent it was): until nothing changes (at most #ids rounds)
    local changed = true
    while changed do
      changed = false
      for i, id in ipairs(ids) do
        local rec = cand[id]
        if rec then
          for _, c in ipairs(waiting_for(rec)) do
            if not cand[c.id] then
              out[i] = 'RJ_DEPENDENTS ' .. id .. ': job ' .. c.id .. ' waits for it (say what happens to its ' ..
                'dependents: fail, cancel or delete)'
              cand[id], changed = nil, true
              break
            end
          end
        end
      end
    end
  end
  local moved, removed = 0, 0
  if policy == 'fail' or policy == 'cancel' then
    for _, id in ipairs(ids) do
      local rec = cand[id]
      for _, c in ipairs(rec and waiting_for(rec) or {}) do
        if not cand[c.id] and c.status == M.waiting then
          local msg = 'dependency ' .. id .. ' was deleted'
          hset(c, 'error', '{"code":"dependency_deleted","message":' .. cjson.encode(msg) .. '}')
          move(c, target, {actor = actor, msg = msg})
          moved = moved + 1
        end
      end
    end
  end
  for _, id in ipairs(ids) do
    local rec = cand[id]
    if rec and not rec.dropped then remove_one(rec, actor); removed = removed + 1 end
  end
  for _, c in ipairs(order) do
    if not c.dropped and not cand[c.id] then remove_one(c, actor); removed = removed + 1 end
  end
  return out, removed, moved
end

-- Up to `limit` ids from the head of the index `key`; an entry whose job is gone is removed from
-- the index (counted in the second result) instead of returned.
local function index_head(key, limit, ids, seen)
  local stale = 0
  if limit <= 0 then return 0 end
  for _, id in ipairs(read('ZRANGE', key, 0, limit - 1)) do
    if not seen[id] then
      seen[id] = true
      local rec = load_job(id, PURGE_FIELDS, PURGE_IX)
      if rec.status then ids[#ids + 1] = id else zset(key, id, false); stale = stale + 1 end
    end
  end
  return stale
end
