-- lib/write.lua — the write step (docs/design.md, decision 3). The decide step records every
-- change here; RJ.commit() first makes sure every key it will write is served here (one EXISTS
-- over the keys the call has not read: on a cluster, a key that migrated aborts the script now,
-- before anything is written), then writes each job once (HDEL, HSET, RPUSH of its history),
-- every index as one ZREM and one ZADD per key, the queue stream, the other commands in the
-- order they were recorded, and the wake token.

RJ.z, RJ.zkeys = {}, {}  -- index key -> {member -> score | false (remove)}, keys in first-use order
RJ.ops = {}              -- other writes in order: {cmd, key, args...}
RJ.qev = {}              -- queue stream entries (argument arrays for XADD)
RJ.drops = {}            -- records to delete with every key they own (purge)
RJ.wake = false

function RJ.hset(rec, name, value)
  rec.f[name] = value
  rec.set[name] = value
  rec.del[name] = nil
  rec.dirty = true
end

function RJ.hdel(rec, name)
  rec.f[name] = false
  rec.set[name] = nil
  rec.del[name] = true
  rec.dirty = true
end

-- Membership of `member` in the index `key`: a score, or false to remove it. The last word wins,
-- so a job moved twice in one call ends in exactly the indexes of its last state.
function RJ.zset(key, member, score)
  local t = RJ.z[key]
  if not t then
    t = {}
    RJ.z[key] = t
    RJ.zkeys[#RJ.zkeys + 1] = key
  end
  t[member] = score
end

function RJ.op(...)
  RJ.ops[#RJ.ops + 1] = {...}
end

-- One history entry of a job (docs/design.md, decision 1) and, per the queue's option, the same
-- event on the queue stream (final moves always: waits read them). Values are from validated
-- charsets except msg, which is JSON-escaped. `final`: the move reached a final state.
function RJ.log(rec, event, from, to, actor, msg, attempt, token, data, operator, final)
  local e = '{"t":' .. RJ.now .. ',"ev":"' .. event .. '"'
  if from and from ~= '' then e = e .. ',"from":"' .. from .. '"' end
  if to and to ~= '' then e = e .. ',"to":"' .. to .. '"' end
  if actor and actor ~= '' then e = e .. ',"by":"' .. actor .. '"' end
  if operator then e = e .. ',"op":1' end
  if attempt and attempt ~= '' then e = e .. ',"n":' .. attempt end
  if token and token ~= '' then e = e .. ',"tok":"' .. token .. '"' end
  if msg and msg ~= '' then e = e .. ',"msg":' .. cjson.encode(msg) end
  if data and data ~= '' then e = e .. ',"data":' .. cjson.encode(data) end
  local h = rec.hist
  if not h then h = {}; rec.hist = h end
  h[#h + 1] = e .. '}'
  if RJ.m.qev == '1' or final then
    local a = {'event', event, 'job', rec.id}
    if from and from ~= '' then a[#a + 1] = 'from'; a[#a + 1] = from end
    if to and to ~= '' then a[#a + 1] = 'to'; a[#a + 1] = to end
    if actor and actor ~= '' then a[#a + 1] = 'actor'; a[#a + 1] = actor end
    if operator then a[#a + 1] = 'op'; a[#a + 1] = '1' end
    if msg and msg ~= '' then a[#a + 1] = 'msg'; a[#a + 1] = msg end
    if attempt and attempt ~= '' then a[#a + 1] = 'attempt'; a[#a + 1] = attempt end
    if token and token ~= '' then a[#a + 1] = 'token'; a[#a + 1] = token end
    if data and data ~= '' then a[#a + 1] = 'data'; a[#a + 1] = data end
    RJ.qev[#RJ.qev + 1] = a
  end
end

-- Delete a job with every key it owns; the caller has removed its index entries.
function RJ.drop(rec)
  rec.dropped = true
  RJ.drops[#RJ.drops + 1] = rec
end

local function chunks(cmd, key, args)
  for s = 1, #args, 4000 do call(cmd, key, unpack(args, s, math.min(s + 3999, #args))) end
end

-- Every key the writes below touch that this call has not read yet.
local function unread()
  local known, out = RJ.known, {}
  local function want(k) if not known[k] then known[k] = true; out[#out + 1] = k end end
  for _, rec in ipairs(RJ.order) do
    if rec.dirty then want(rec.jk) end
    if rec.hist then want(rec.jk .. ':history') end
    if rec.dropped then
      want(rec.jk .. ':history'); want(rec.jk .. ':assets'); want(rec.jk .. ':dependents')
    end
  end
  for _, k in ipairs(RJ.zkeys) do want(k) end
  for _, o in ipairs(RJ.ops) do want(o[2]) end
  if #RJ.qev > 0 then want(RJ.events_key) end
  if RJ.wake then want(RJ.P .. 'wake') end
  return out
end

function RJ.commit()
  local keys = unread()
  for s = 1, #keys, 1000 do call('EXISTS', unpack(keys, s, math.min(s + 999, #keys))) end
  -- from here on: writes only
  for _, rec in ipairs(RJ.order) do
    if rec.dropped then
      call('DEL', rec.jk, rec.jk .. ':history', rec.jk .. ':assets', rec.jk .. ':dependents')
    else
      if rec.dirty then
        local d, s = {}, {}
        for name in pairs(rec.del) do d[#d + 1] = name end
        for name, value in pairs(rec.set) do s[#s + 1] = name; s[#s + 1] = value end
        if #d > 0 and not rec.new then call('HDEL', rec.jk, unpack(d)) end
        if #s > 0 then call('HSET', rec.jk, unpack(s)) end
      end
      if rec.hist then
        if rec.hist_replace then call('LSET', rec.jk .. ':history', -1, rec.hist_replace) end
        if #rec.hist > 0 then call('RPUSH', rec.jk .. ':history', unpack(rec.hist)) end
      end
    end
  end
  for _, key in ipairs(RJ.zkeys) do
    local rem, add = {}, {}
    for member, score in pairs(RJ.z[key]) do
      if score then add[#add + 1] = score; add[#add + 1] = member else rem[#rem + 1] = member end
    end
    if #rem > 0 then chunks('ZREM', key, rem) end
    if #add > 0 then chunks('ZADD', key, add) end
  end
  for _, o in ipairs(RJ.ops) do call(unpack(o)) end
  local m = RJ.m
  for _, a in ipairs(RJ.qev) do
    call('XADD', RJ.events_key, 'MAXLEN', '~', m.smax, '*', unpack(a))
  end
  if RJ.wake then
    local wk = RJ.P .. 'wake'
    if call('LLEN', wk) == 0 then call('LPUSH', wk, '1') end
  end
end
