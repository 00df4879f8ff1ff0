-- lib/write.lua — the write step (docs/design.md, decision 3). The decide step records every
-- change here; commit() first, on a cluster, makes sure every key it will write is served here
-- (one EXISTS over the keys the call has not read: a key that migrated aborts the script now,
-- before anything is written; on one server every key is, and the check is skipped), then writes
-- each job once (HDEL, HSET, RPUSH of its history), every index as one ZREM and one ZADD per key,
-- the queue stream, the other commands in the order they were recorded, and the wake token.
-- Made on first use: Z (index key -> {member -> score | false}) and ZKEYS (those keys in order),
-- OPS (other writes in order: {cmd, key, args...}), QEV (queue stream entries, flat: n, then n XADD
-- arguments).
local Z, ZKEYS, OPS, QEV = false, false, false, false
local MET = false  -- the counters this call adds to (docs/design.md, decision 8), made on first use by
                   -- move(): job type -> {created, claimed, waited ms, runs, run ms, [final state] = n}
local WAKE = false  -- job type -> true: a job of that lane became claimable (or due sooner): wake a
                    -- worker idle on that lane's line; made on first use

local function hset(rec, name, value)
  local set = rec.set
  set[#set + 1] = name
  set[#set + 1] = value
  local ix = rec.ix
  local i = ix and ix[name]
  if i then rec.v[i] = value end
  if rec.del then rec.del[name] = nil end
  rec.dirty = true
end

local function hdel(rec, name)
  local set = rec.set
  for i = 1, #set, 2 do
    if set[i] == name then  -- written earlier in this call: keep the other pairs only (rare)
      local kept = {}
      for j = 1, #set, 2 do
        if set[j] ~= name then kept[#kept + 1] = set[j]; kept[#kept + 1] = set[j + 1] end
      end
      rec.set = kept
      break
    end
  end
  local i = rec.ix and rec.ix[name]
  if i then rec.v[i] = false end
  rec.del = rec.del or {}
  rec.del[name] = true
  rec.dirty = true
end

-- Membership of `member` in the index `key`: a score, or false to remove it. The last word wins,
-- so a job moved twice in one call ends in exactly the indexes of its last state.
local function zset(key, member, score)
  if not Z then Z, ZKEYS = {}, {} end
  local t = Z[key]
  if not t then
    t = {}
    Z[key] = t
    ZKEYS[#ZKEYS + 1] = key
  end
  t[member] = score
end

local function op(...)
  if not OPS then OPS = {} end
  OPS[#OPS + 1] = {...}
end

-- One history entry of a job (docs/design.md, decision 1) and, per the queue's option, the same
-- event on the queue stream (final moves always: waits read them). The entry leaves out "ev" when
-- the event is the target state (a plain move: readers take "to" for it). Values are from
-- validated charsets except msg and data, which are JSON-escaped. `final`: the move reached a
-- final state.
local function log_event(rec, event, from, to, actor, msg, attempt, token, data, operator, final)
  if attempt then attempt = tostring(attempt) end
  local ev = event ~= to
  if from == '' then from = nil end
  if to == '' then to = nil end
  if actor == '' then actor = nil end
  if attempt == '' then attempt = nil end
  if token == '' then token = nil end
  if msg == '' then msg = nil end
  if data == '' then data = nil end
  -- one concatenation of plain values: a parenthesized `..` would build (and hash) a string of its own
  local e = '{"t":' .. NOW_S ..
    (ev and ',"ev":"' or '') .. (ev and event or '') .. (ev and '"' or '') ..
    (from and ',"from":"' or '') .. (from or '') .. (from and '"' or '') ..
    (to and ',"to":"' or '') .. (to or '') .. (to and '"' or '') ..
    (actor and ',"by":"' or '') .. (actor or '') .. (actor and '"' or '') ..
    (operator and ',"op":1' or '') ..
    (attempt and ',"n":' or '') .. (attempt or '') ..
    (token and ',"tok":"' or '') .. (token or '') .. (token and '"' or '') ..
    (msg and ',"msg":' or '') .. (msg and cjson.encode(msg) or '') ..
    (data and ',"data":' or '') .. (data and cjson.encode(data) or '') .. '}'
  local h = rec.hist  -- one entry: the string itself (no table for the common case)
  if not h then rec.hist = e
  elseif type(h) == 'string' then rec.hist = {h, e}
  else h[#h + 1] = e end
  if M.queue_events == '1' or final then
    if not QEV then QEV = {} end
    local q = QEV
    local at = #q + 1
    q[at + 1] = 'event'; q[at + 2] = event; q[at + 3] = 'job'; q[at + 4] = rec.id
    q[at + 5] = 'from'; q[at + 6] = from or ''; q[at + 7] = 'to'; q[at + 8] = to or ''
    q[at + 9] = 'actor'; q[at + 10] = actor or ''
    local n = 10
    if operator then q[at + n + 1] = 'op'; q[at + n + 2] = '1'; n = n + 2 end
    if msg then q[at + n + 1] = 'msg'; q[at + n + 2] = msg; n = n + 2 end
    if attempt then q[at + n + 1] = 'attempt'; q[at + n + 2] = attempt; n = n + 2 end
    if token then q[at + n + 1] = 'token'; q[at + n + 2] = token; n = n + 2 end
    if data then q[at + n + 1] = 'data'; q[at + n + 2] = data; n = n + 2 end
    q[at] = n
  end
end

local function commit()
  if CLUSTER then
    -- touch every key the writes need that the call has not read: one EXISTS
    local keys, n = {}, 0
    local function want(k)
      if not KNOWN[k] then KNOWN[k] = true; n = n + 1; keys[n] = k end
    end
    for i = 1, #ORDER do
      local rec = ORDER[i]
      if rec.hist or rec.dropped then want(rec.jk .. ':history') end
      if rec.dropped then want(rec.jk .. ':assets'); want(rec.jk .. ':dependents') end
    end
    for i = 1, ZKEYS and #ZKEYS or 0 do want(ZKEYS[i]) end
    for i = 1, OPS and #OPS or 0 do want(OPS[i][2]) end
    if QEV then want(EVENTS_KEY) end
    if WAKE then for t in pairs(WAKE) do want(P .. 'wake:' .. t) end end
    if WAKE then want(P .. 'lanes') end
    if MET then want(P .. 'metrics:' .. math.floor(NOW / METRICS_BUCKET_MS)); want(P .. 'totals') end
    for s = 1, n, 1000 do call('EXISTS', unpack(keys, s, math.min(s + 999, n))) end
  end
  -- from here on: writes only
  for i = 1, #ORDER do
    local rec = ORDER[i]
    local jk = rec.jk
    if rec.dropped then
      call('DEL', jk, jk .. ':history', jk .. ':assets', jk .. ':dependents')
    else
      if rec.dirty then
        local del = not rec.new and rec.del
        local name = del and next(del)
        if name then
          if next(del, name) == nil then call('HDEL', jk, name)  -- one field (a lease deadline): no table
          else
            local d = {}
            for nm in pairs(del) do d[#d + 1] = nm end
            call('HDEL', jk, unpack(d))
          end
        end
        if #rec.set > 0 then call('HSET', jk, unpack(rec.set)) end
      end
      local h = rec.hist
      if h then
        if rec.hist_replace then call('LSET', jk .. ':history', -1, rec.hist_replace) end
        if type(h) == 'string' then call('RPUSH', jk .. ':history', h)
        elseif #h > 0 then call('RPUSH', jk .. ':history', unpack(h)) end
      end
    end
  end
  local rem, add = ZKEYS and {}, ZKEYS and {}
  for i = 1, ZKEYS and #ZKEYS or 0 do
    local key = ZKEYS[i]
    local nr, na = 0, 0
    for member, score in pairs(Z[key]) do
      if score then add[na + 1] = score; add[na + 2] = member; na = na + 2 else nr = nr + 1; rem[nr] = member end
    end
    for s = 1, nr, 4000 do call('ZREM', key, unpack(rem, s, math.min(s + 3999, nr))) end
    for s = 1, na, 4000 do call('ZADD', key, unpack(add, s, math.min(s + 3999, na))) end
  end
  for i = 1, OPS and #OPS or 0 do call(unpack(OPS[i])) end
  if MET then
    -- Each sum is one HINCRBY on the current minute's bucket (and, for the created, claimed and
    -- final counts, on the totals). A bucket expires a day after its last new field: a field that
    -- HINCRBY made (its reply is the increment) renews the TTL, so most calls skip the EXPIRE.
    local bk, tk, fresh = P .. 'metrics:' .. math.floor(NOW / METRICS_BUCKET_MS), P .. 'totals', false
    for t, m in pairs(MET) do
      for k, n in pairs(m) do
        if n > 0 or k == 3 or k == 5 then
          local name, total
          if k == 1 then name, total = 'e:' .. t, true
          elseif k == 2 then name, total = 'c:' .. t, true
          elseif k == 3 then name = m[2] > 0 and 'w:' .. t
          elseif k == 4 then name = 'n:' .. t
          elseif k == 5 then name = m[4] > 0 and 'r:' .. t
          else name, total = 'd:' .. k .. ':' .. t, true end
          if name then
            if call('HINCRBY', bk, name, n) == n then fresh = true end
            if total then call('HINCRBY', tk, name, n) end
          end
        end
      end
    end
    if fresh then call('EXPIRE', bk, METRICS_TTL_S) end
  end
  if QEV then
    local q, smax = QEV, M.stream_maxlen
    local at = 1
    while at <= #q do
      local n = q[at]
      call('XADD', EVENTS_KEY, 'MAXLEN', '~', smax, '*', unpack(q, at + 1, at + n))
      at = at + n + 1
    end
  end
  if WAKE then
    -- A lane's line holds at most one token. Whoever pushes one also lists the type in the lanes
    -- index (score 0 = no worker that runs it seen yet, kept if listed) and the reaper drops both
    -- together, so a line with a token always has its type listed: a lane entered while the token
    -- waits needs no write to the index.
    for t in pairs(WAKE) do
      local wk = P .. 'wake:' .. t
      if call('LLEN', wk) == 0 then
        call('LPUSH', wk, '1')
        call('ZADD', P .. 'lanes', 'NX', 0, t)
      end
    end
  end
end
