-- lib/core.lua — included by every script after lib/layout.lua (rjobs/store/scripts.py expands the
-- include lines).
-- Conventions every script follows (docs/design.md, "The shape of a script"):
--   ARGV[1] is the queue prefix "rjobs:{Q}:"; KEYS[1] must be prefix.."machine", KEYS[2]
--   prefix.."events". Every other key is built from the prefix, so it shares the queue's hash tag.
--   A script validates its arguments, reads everything it needs and decides every change in Lua
--   memory (prepare, decide), and only then writes (lib/write.lua: commit): a refused call writes
--   nothing, and on a cluster a key that migrated aborts the script before its first write.
--   Errors: every refusal is the text "RJ_<CODE> <detail>": CODE is one of the codes
--   rjobs.errors.error_from_reply maps to an exception, detail is for people (for a few codes its
--   first words are the exception's arguments: RJ_NOT_FOUND <id>, RJ_TRANSITION <from> <to> <id>,
--   RJ_DEDUPE <holder> ...). A helper that refuses returns that text (a batch script reports it as
--   one request's outcome); a script refuses the whole call with fail(code, detail), or fail(text)
--   for a helper's text. Each script's contract lists the codes it can return ("Errors").
-- Style, for cost: every call runs the whole script again, and every allocation (a table, a
-- closure, a new field in a table) is a good share of a small call. So the shared state and the
-- helpers are locals of the script (no table of functions to grow), each helper file is
-- included only by the scripts that use it, and the helpers few calls need are made on first use.
local call = redis.call

-- The call's state, set by init.
local P, EVENTS_KEY, MACHINE_KEY, NOW, NOW_S, M  -- prefix, keys, server time (number, text), machine
local CLUSTER = false  -- the client declared the queue's keys beyond the two fixed ones
local FLOW = false  -- the queue has limits or grouped jobs (machine field flow): only then are they read
local PAUSED = false  -- the queue's pause (machine field paused: JSON by pause.lua), or false
local TRACED = false  -- a job of the queue was stored with a trace context (machine field traced)
local KNOWN = false  -- on a cluster: the keys read (so served here), see lib/write.lua
local JOBS, ORDER = {}, {}  -- loaded jobs by id, and in load order

-- The call's error reply "RJ_<CODE> <detail>" (the convention above); fail(text) for a text a
-- helper built.
local function fail(code, detail)
  if detail then return redis.error_reply(code .. ' ' .. detail) end
  return redis.error_reply(code)
end

-- A queue's prefix: rjobs:{<name>}: or, for partition <i> of a partitioned queue, rjobs:{<name>#<i>}:
-- (rjobs.store.keys holds the same rule).
local QUEUE_PREFIX = '^rjobs:{[%w_%.%-]+#?%d*}:$'

-- Check the keys, read the server time and the machine. with_edges: read the edges too (calls
-- that check an edge anyway). Returns an error string, or nil.
local function init(keys, prefix, with_edges)
  if type(prefix) ~= 'string' or not string.find(prefix, QUEUE_PREFIX) or
    keys[1] ~= prefix .. 'machine' or keys[2] ~= prefix .. 'events' then
    return 'RJ_INVALID keys do not match the queue prefix'
  end
  P, MACHINE_KEY, EVENTS_KEY = prefix, keys[1], keys[2]
  CLUSTER = keys[3] ~= nil
  if CLUSTER then KNOWN = {[keys[1]] = true} end
  local t = call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  NOW_S = string.format('%d', NOW)  -- formatted once: a number in a string costs a sprintf
  -- the flags every call may need come with the head: one read of the machine hash
  local r = with_edges and call('HMGET', keys[1], 'compiled:head', 'flow', 'paused', 'traced', 'compiled:edges') or
    call('HMGET', keys[1], 'compiled:head', 'flow', 'paused', 'traced')
  local head, edges = r[1], r[5] or nil
  FLOW, PAUSED, TRACED = r[2] and true or false, r[3], r[4] and true or false
  if not head then
    if call('EXISTS', keys[1]) == 0 then return 'RJ_NO_MACHINE no state machine declared for this queue' end
    return 'RJ_NO_MACHINE the stored machine was declared by another rjobs version: ' ..
      'declare the queue again (connect a Queue) to recompile it'
  end
  -- the head's parts, in lib/layout.lua's order (a unit test holds these names to it)
  local queue_events, stream_maxlen, more, initial, ready, delayed, waiting, review, success, partial, failure,
    cancelled, leased = string.match(head, LAYOUT_HEAD)
  if not leased then
    return 'RJ_NO_MACHINE the stored machine was compiled by another rjobs version: ' ..
      'declare the queue again (connect a Queue) to recompile it'
  end
  local final_role = {[success] = 'success', [failure] = 'failure', [cancelled] = 'cancelled'}
  if partial ~= '' then final_role[partial] = 'partial' end
  local is_leased, chain = {[leased] = true}, {leased}
  if string.find(leased, ',', 1, true) then
    is_leased, chain = {}, {}
    for st in string.gmatch(leased, '[^,]+') do is_leased[st] = true; chain[#chain + 1] = st end
  end
  -- the machine: the role states by role name, the event options as text, `more` (lib/move.lua: opt)
  M = {leased = leased, chain = chain, is_leased = is_leased, final_role = final_role, queue_events = queue_events,
    stream_maxlen = stream_maxlen, more = more, edges = edges, initial = initial, ready = ready, delayed = delayed,
    waiting = waiting, review = review, success = success, partial = partial, failure = failure, cancelled = cancelled}
  return nil
end

-- Numbers from ARGV: an integer in [lo, hi]. Lua's tonumber('nan') passes every
-- `x < lo or x > hi` test, so nothing else may parse a number from ARGV (lib/checks.lua has the
-- finite-number twin). Other spellings of a number ('1e3', '0x10') are that number.
local function int_arg(v, lo, hi)
  local n = tonumber(v)
  if not n or n ~= n or n < lo or n > hi or n % 1 ~= 0 then return nil end
  return n
end

local MAX_MS = 253402300799999  -- 9999-12-31: the largest epoch ms a job may be due at

-- Names that become part of a key (ids, types, users): the charset of rjobs/keys.py.
local function valid_name(s, maxlen)
  return type(s) == 'string' and #s >= 1 and #s <= (maxlen or 128) and string.find(s, '^[%w_%.%-]+$') ~= nil
end

-- Who acts (a worker id, a client, a person): the charset of rjobs.plans' actor rule, so it goes
-- into a history entry without escaping.
local function valid_actor(s)
  return type(s) == 'string' and #s >= 1 and #s <= 200 and string.find(s, '^[%w_%.:@%-]+$') ~= nil
end

-- A read of one key that also records the key as read (served here).
local function read(cmd, key, ...)
  if KNOWN then KNOWN[key] = true end
  return call(cmd, key, ...)
end

-- Jobs. A record: id, jk (its key), status (false: no such job), v (the fields read, at the
-- positions ix gives, kept current by hset/hdel), set (the field/value pairs to write, in order:
-- HSET keeps the last of a name), del (fields to delete), new (created by this call). field()
-- reads a field as the moves planned so far leave it.
local MOVE = {'status', 'token', 'attempt', 'priority', 'seq', 'started_ms', 'has_dependents', 'lease_deadline_ms',
  'dedupe_key', 'executions', 'type'}
local MOVE_IX = {status = 1, token = 2, attempt = 3, priority = 4, seq = 5, started_ms = 6, has_dependents = 7,
  lease_deadline_ms = 8, dedupe_key = 9, executions = 10, type = 11}
-- with limits or groups (FLOW), also the limit slots a leased job holds (a field absent from most
-- jobs costs a scan of the hash to read, so only then)
local MOVE_FLOW, MOVE_FLOW_IX = false, false  -- made on first use (a table made per call costs)

-- Load a job once per call: the fields `names` (names[1] must be 'status'), `ix` giving each
-- one's position (default: MOVE).
local function load_job(id, names, ix)
  local rec = JOBS[id]
  if rec then return rec end
  local jk = P .. 'job:' .. id
  if not names then
    if FLOW then
      if not MOVE_FLOW then
        MOVE_FLOW = {'status', 'token', 'attempt', 'priority', 'seq', 'started_ms', 'has_dependents',
          'lease_deadline_ms', 'dedupe_key', 'executions', 'lim', 'group', 'type', 'assignee'}
        MOVE_FLOW_IX = {status = 1, token = 2, attempt = 3, priority = 4, seq = 5, started_ms = 6, has_dependents = 7,
          lease_deadline_ms = 8, dedupe_key = 9, executions = 10, lim = 11, group = 12, type = 13, assignee = 14}
      end
      names, ix = MOVE_FLOW, MOVE_FLOW_IX
    else
      names, ix = MOVE, MOVE_IX
    end
  elseif not ix then
    ix = {}
    for i = 1, #names do ix[names[i]] = i end
  end
  local v = call('HMGET', jk, unpack(names))
  rec = {id = id, jk = jk, v = v, ix = ix, status = v[1], set = {}}
  if KNOWN then KNOWN[jk] = true end
  JOBS[id] = rec
  ORDER[#ORDER + 1] = rec
  return rec
end

-- A field of a job as the moves planned so far leave it (false: absent). A field not loaded is
-- read on first use (reads come before the first write: call this only while deciding).
local function field(rec, name)
  local ix = rec.ix
  local i = ix and ix[name]
  if i then return rec.v[i] end  -- hset and hdel keep the loaded values current
  local set = rec.set
  for j = #set - 1, 1, -2 do
    if set[j] == name then return set[j + 1] end
  end
  if rec.del and rec.del[name] then return false end
  if rec.new then return false end
  local lz = rec.lz
  if lz and lz[name] ~= nil then return lz[name] end
  local v = call('HGET', rec.jk, name)
  if not lz then lz = {}; rec.lz = lz end
  lz[name] = v
  return v
end
