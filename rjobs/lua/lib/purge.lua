-- lib/purge.lua — retention (docs/design.md, decision 6), included after lib/move.lua by the
-- scripts that purge. A finished job is purged once it has been in its final state longer than
-- the queue keeps that outcome: read from the final state's index, no other set.

-- Decide the purge of at most `budget` due jobs, looking at the final roles in `roles` (nil: all).
-- Jobs this call moved are left for a later call. Returns how many were purged.
function RJ.purge(budget, roles)
  local m, P, now = RJ.m, RJ.P, RJ.now
  local keep = RJ.opt().keep
  local purged = 0
  for _, r in ipairs(roles or {'success', 'partial', 'failure', 'cancelled'}) do
    local st, k = m[r], keep[r]
    if purged >= budget then break end
    if st ~= '' and k and k >= 0 then
      local index = P .. 'state:' .. st
      local due = RJ.read('ZRANGEBYSCORE', index, '-inf', now - k, 'LIMIT', 0, budget - purged)
      for _, id in ipairs(due) do
        local rec = RJ.load(id, {'depends_on'})
        if not rec.dirty and not rec.dropped then
          if rec.status ~= st then
            RJ.zset(index, id, false)  -- stale entry (the hash is authoritative)
          else
            RJ.zset(index, id, false)
            local user, dkey = rec.f.user_id, rec.f.dedupe_key
            if user and user ~= '' then RJ.zset(P .. 'owner:' .. user, id, false) end
            if dkey and dkey ~= '' then
              local dk = P .. 'dedupe:' .. dkey
              if RJ.read('GET', dk) == id then RJ.op('DEL', dk) end
            end
            if rec.f.depends_on then
              for dep in string.gmatch(rec.f.depends_on, '[^,]+') do RJ.op('SREM', RJ.jkey(dep) .. ':dependents', id) end
            end
            RJ.drop(rec)
            purged = purged + 1
          end
        end
      end
    end
  end
  return purged
end
