-- lib/purge.lua — retention (docs/design.md, decision 6), included after lib/move.lua by the
-- scripts that purge. A finished job is purged once it has been in its final state longer than
-- the queue keeps that outcome: read from the final state's index, no other set.
local PURGE_FIELDS = {'status', 'user_id', 'dedupe_key', 'depends_on'}
local PURGE_IX = {status = 1, user_id = 2, dedupe_key = 3, depends_on = 4}
local ALL_FINAL = {'success', 'partial', 'failure', 'cancelled'}

-- Decide the purge of at most `budget` due jobs, looking at the final roles in `roles` (nil: all).
-- Jobs this call changed are left for a later call. Returns how many were purged.
local function purge(budget, roles)
  local keep = opt().keep
  local purged = 0
  for _, r in ipairs(roles or ALL_FINAL) do
    local st, k = M[r], keep[r]
    if purged >= budget then break end
    if st ~= '' and k and k >= 0 then
      local index = P .. 'state:' .. st
      local due = read('ZRANGEBYSCORE', index, '-inf', NOW - k, 'LIMIT', 0, budget - purged)
      for _, id in ipairs(due) do
        local rec = load_job(id, PURGE_FIELDS, PURGE_IX)
        if not rec.dirty and not rec.dropped then
          zset(index, id, false)
          if rec.status == st then  -- else a stale entry (the hash is authoritative)
            local user, dkey, deps = field(rec, 'user_id'), field(rec, 'dedupe_key'), field(rec, 'depends_on')
            if user and user ~= '' then zset(P .. 'owner:' .. user, id, false) end
            if dkey and dkey ~= '' then
              local dk = P .. 'dedupe:' .. dkey
              if read('GET', dk) == id then op('DEL', dk) end
            end
            if deps then
              for dep in string.gmatch(deps, '[^,]+') do op('SREM', P .. 'job:' .. dep .. ':dependents', id) end
            end
            rec.dropped = true  -- commit deletes it with every key it owns
            purged = purged + 1
          end
        end
      end
    end
  end
  return purged
end
