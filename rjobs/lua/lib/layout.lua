-- lib/layout.lua — GENERATED from rjobs/store/layout.py: do not edit. Regenerate with
-- `python -m rjobs.store.layout` (`--check` exits 1 when this file is stale; so does a unit test).
-- The compiled machine, written by declare_machine.lua into two fields of the machine hash:
--   compiled:head   rj3|<queue_events>,<stream_maxlen>|
--                   <max_payload>,<cache_ttl_ms>,<keep_success_ms>,<keep_partial_ms>,<keep_failure_ms>,<keep_cancelled_ms>|
--                   <initial>,<ready>,<delayed>,<waiting>,<review>,<success>,<partial>,<failure>,<cancelled>|
--                   <leased chain>|
--   compiled:edges  |#<state>|<from>><to>|...|  (every state, then its edges)
-- A role the machine lacks is ''. Included first by every script (before lib/core.lua).

-- The machine record of a compiled head (lib/core.lua's M), nil for a head of another layout:
-- the options every call reads (text), `more` (the other options, text: see read_options), the
-- role states by role name, the leased chain, and the slots lib/core.lua and lib/move.lua fill in.
local function read_head(head)
  local queue_events, stream_maxlen, more, initial, ready, delayed, waiting, review, success, partial, failure,
    cancelled, leased =
    string.match(head, '^rj3|([^,]*),([^|]*)|([^|]*)|([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^|]*)|([^|]+)|$')
  if not leased then return nil end
  return {queue_events = queue_events, stream_maxlen = stream_maxlen, more = more, initial = initial, ready = ready,
    delayed = delayed, waiting = waiting, review = review, success = success, partial = partial, failure = failure,
    cancelled = cancelled, leased = leased, chain = false, is_leased = false, final_role = false, edges = false,
    opt = false}
end

-- The options in `more` as numbers; keep[final role] is that role's retention (keep_<role>_ms).
local function read_options(more)
  local max_payload, cache_ttl_ms, keep_success_ms, keep_partial_ms, keep_failure_ms,
    keep_cancelled_ms = string.match(more, '^([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)$')
  return {max_payload = tonumber(max_payload), cache_ttl_ms = tonumber(cache_ttl_ms),
    keep = {success = tonumber(keep_success_ms), partial = tonumber(keep_partial_ms),
    failure = tonumber(keep_failure_ms), cancelled = tonumber(keep_cancelled_ms)}}
end

-- For declare_machine.lua: the head's version tag, the roles in order, the options in order
-- ({name, default, lowest, highest}), and how many options come first (the event options).
local function compiled_layout()
  local roles = {'initial', 'ready', 'delayed', 'waiting', 'review', 'success', 'partial', 'failure', 'cancelled'}
  local options = {{'queue_events', 1, 0, 1}, {'stream_maxlen', 100000, 1, 1000000000},
    {'max_payload', 1048576, 1, 536870912}, {'cache_ttl_ms', 0, -1, 3153600000000},
    {'keep_success_ms', -1, -1, 3153600000000}, {'keep_partial_ms', -1, -1, 3153600000000},
    {'keep_failure_ms', -1, -1, 3153600000000}, {'keep_cancelled_ms', -1, -1, 3153600000000}}
  return 'rj3', roles, options, 2
end
