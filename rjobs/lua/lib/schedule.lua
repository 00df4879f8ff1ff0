-- lib/schedule.lua — the checks of a schedule of periodic jobs (docs/schedules.md), included by
-- set_schedule.lua; rjobs/client/schedules.py holds the same rules (a unit test compares them).
-- A cron expression is checked for its shape only (5 fields of lists of `*`, values and ranges,
-- each with an optional /step, values in the field's range, month and weekday names): the ticks
-- themselves are computed by the client with a cron library, never here.
local CRON_LO, CRON_HI = {0, 0, 1, 1, 0}, {59, 23, 31, 12, 7}
local CRON_NAMES = {
  [4] = {jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6, jul = 7, aug = 8, sep = 9, oct = 10, nov = 11,
    dec = 12},
  [5] = {sun = 0, mon = 1, tue = 2, wed = 3, thu = 4, fri = 5, sat = 6}}

local function cron_value(s, i)
  local n
  if string.find(s, '^%d%d?$') then n = tonumber(s)
  elseif CRON_NAMES[i] then n = CRON_NAMES[i][string.lower(s)] end
  if n and n >= CRON_LO[i] and n <= CRON_HI[i] then return n end
  return nil
end

local function valid_cron(expr)
  if type(expr) ~= 'string' or #expr > 200 or not string.find(expr, '^%S+ %S+ %S+ %S+ %S+$') then return false end
  local i = 0
  for f in string.gmatch(expr, '%S+') do
    i = i + 1
    if not string.find(f, '^[%w%*/,%-]+$') or string.find(f, ',,', 1, true) or string.sub(f, 1, 1) == ',' or
      string.sub(f, -1) == ',' then return false end
    for item in string.gmatch(f, '[^,]+') do
      local base, step = string.match(item, '^([^/]+)/(%d%d?)$')
      if not base then
        if string.find(item, '/', 1, true) then return false end
        base = item
      end
      if step and (tonumber(step) < 1 or tonumber(step) > CRON_HI[i]) then return false end
      if base ~= '*' then
        local a, b = string.match(base, '^(%w+)%-(%w+)$')
        if a then
          local x, y = cron_value(a, i), cron_value(b, i)
          if not x or not y or x > y then return false end
        elseif not cron_value(base, i) then return false end
      end
    end
  end
  return i == 5
end

-- A schedule's name: the key charset, short enough that its jobs' ids (cron-<name>-<tick ms>) fit.
local function valid_schedule_name(s)
  return valid_name(s, 100)
end

-- An IANA timezone name's shape (Europe/Paris, America/Argentina/Buenos_Aires, UTC, Etc/GMT+3);
-- whether the zone exists is checked by the client, which has the zone database.
local function valid_tz(s)
  return type(s) == 'string' and #s >= 1 and #s <= 64 and string.find(s, '^[%w_%+%-/]+$') ~= nil and
    not string.find(s, '//', 1, true)
end
