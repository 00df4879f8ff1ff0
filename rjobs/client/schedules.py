"""Schedules of periodic jobs (docs/schedules.md): :class:`Cron`, the definition of one (a 5-field
cron expression read in a timezone, or ``every`` N seconds), checked here; the ticks it computes
with the cron library (cronsim); :class:`Schedule`, one as stored; and the plans that store,
remove, list and tick them (lua/set_schedule.lua, lua/remove_schedule.lua, lua/cron_tick.lua).

Which tick runs is decided in Redis, by the script, with the server's clock: the client only
proposes the tick that follows one (the library's answer), and the script refuses a proposal made
from a time that has passed.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from typing import Any, Literal

import msgspec
from cronsim import CronSim, CronSimError

from rjobs.config import parse_priority
from rjobs.errors import ValidationError
from rjobs.store import codec
from rjobs.store.keys import validate_name
from rjobs.store.messages import Arg
from rjobs.store.scripts import Cmd, Scripts
from rjobs.store.transport import Plan

__all__ = [
    "Cron",
    "Schedule",
    "TickResult",
    "check_cron",
    "list_plan",
    "next_after",
    "remove_plan",
    "set_plan",
    "tick_plan",
]

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")  # short enough that cron-<name>-<ms> is a job id
_TZ = re.compile(r"^(?!.*//)[A-Za-z0-9_+\-/]{1,64}$")
_LO, _HI = (0, 0, 1, 1, 0), (59, 23, 31, 12, 7)
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_NAMES: dict[int, dict[str, int]] = {
    3: {m: i + 1 for i, m in enumerate(_MONTHS)},
    4: {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}
Missed = Literal["skip", "once"]


def _value(text: str, field: int) -> int | None:
    n = int(text) if re.fullmatch(r"\d{1,2}", text) else _NAMES.get(field, {}).get(text.lower())
    return n if n is not None and _LO[field] <= n <= _HI[field] else None


def _shape_ok(expr: str) -> bool:
    # the rule of lua/lib/schedule.lua's valid_cron, written again (a unit test holds them together)
    fields = expr.split(" ")
    if len(expr) > 200 or len(fields) != 5:
        return False
    for i, f in enumerate(fields):
        if not re.fullmatch(r"[A-Za-z0-9*/,\-]+", f):
            return False
        for item in f.split(","):
            base, _, step = item.partition("/")
            if not base or (item.count("/") and not re.fullmatch(r"\d{1,2}", step)):
                return False
            if step and not 1 <= int(step) <= _HI[i]:
                return False
            if base == "*":
                continue
            lo, dash, hi = base.partition("-")
            a, b = _value(lo, i), (_value(hi, i) if dash else 0)
            if a is None or b is None or (dash and a > b) or (dash and not re.fullmatch(r"[A-Za-z0-9]+", hi)):
                return False
    return True


def _whole(v: object, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def check_cron(expr: object) -> str:
    """A standard 5-field cron expression (minute hour day-of-month month day-of-week: ``*``,
    values, ``a-b`` ranges, ``,`` lists, ``/step``, month and weekday names), its fields joined by
    one space; ValidationError otherwise (also for one that never fires, like ``0 0 31 2 *``)."""
    if not isinstance(expr, str):
        raise ValidationError(f"a cron expression is a string, not {type(expr).__name__}")
    norm = " ".join(expr.split())
    problem = "" if _shape_ok(norm) else "use 5 fields of *, values, ranges, lists and /steps"
    if not problem:
        try:
            CronSim(norm, dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
        except CronSimError as exc:
            problem = str(exc)
    if problem:
        raise ValidationError(f"invalid cron expression {expr[:60]!r}: {problem}")
    return norm


def check_tz(tz: object) -> zoneinfo.ZoneInfo:
    """The IANA timezone named ``tz``; ValidationError when there is no such zone."""
    if not isinstance(tz, str) or not _TZ.match(tz):
        raise ValidationError(f"invalid timezone {str(tz)[:60]!r}")
    try:
        return zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown timezone {tz!r} (an IANA name, like Europe/Paris or UTC)") from None


def next_after(ms: int, *, cron: str | None = None, every: int | None = None, tz: str = "UTC") -> int:
    """The first tick strictly after epoch ms ``ms``: of the cron expression read in ``tz`` (the
    wall clock there, DST included: see docs/schedules.md), or the next multiple of ``every``
    seconds since the epoch."""
    if every is not None:
        step = every * 1000
        return ms // step * step + step
    zone = check_tz(tz)
    # cronsim returns the first match strictly after its start
    utc = dt.datetime.fromtimestamp(ms // 1000, tz=dt.timezone.utc) + dt.timedelta(milliseconds=ms % 1000)
    start = utc.astimezone(zone)
    return int(next(CronSim(check_cron(cron), start)).timestamp()) * 1000


class Cron:
    """A schedule of periodic jobs: ``Cron("nightly", "report", cron="0 3 * * *", tz="Europe/Paris")``
    or ``Cron("poll", "poll", every=30)``. Each tick enqueues one job of ``job_type`` with
    ``params``, ``priority`` and ``max_attempts`` (id ``cron-<name>-<tick ms>``). ``missed``: what a
    tick more than ``grace`` seconds late (no worker was running) does: ``"skip"`` (the default:
    wait for the next tick) or ``"once"`` (one catch-up job now). ``queue``: which of a worker's
    queues holds it (default: the first). Bad input raises ValidationError."""

    __slots__ = (
        "cron", "every", "grace", "job_type", "max_attempts", "missed", "name", "params", "priority", "queue", "tz",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        job_type: str,
        *,
        cron: str | None = None,
        every: int | None = None,
        tz: str = "UTC",
        params: Any = None,
        priority: str | int = "normal",
        max_attempts: int = 3,
        missed: Missed = "skip",
        grace: int = 60,
        queue: str | None = None,
    ) -> None:
        self.name = validate_name("schedule name", name, pattern=_NAME)
        self.job_type = validate_name("job type", job_type)
        if (cron is None) == (every is None):
            raise ValidationError("a schedule needs cron= or every=, not both")
        self.cron = check_cron(cron) if cron is not None else None
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= 31_536_000
        ):
            raise ValidationError(f"every must be a whole number of seconds, 1 to a year, not {every!r}")
        self.every = every
        check_tz(tz)
        self.tz = tz
        self.params = codec.encode_json({} if params is None else params, what="params")
        if not self.params.startswith((b"{", b"[")):
            raise ValidationError("params must be a JSON object or array")
        self.priority = parse_priority(priority)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= 1000:
            raise ValidationError("max_attempts must be an integer 1-1000")
        self.max_attempts = max_attempts
        if missed not in ("skip", "once"):
            raise ValidationError(f"missed must be 'skip' or 'once', not {missed!r}")
        self.missed = missed
        if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= 86_400:
            raise ValidationError("grace must be a whole number of seconds 0-86400")
        self.grace = grace
        self.queue = validate_name("queue name", queue) if queue is not None else None

    def next_after(self, ms: int) -> int:
        """The first tick strictly after epoch ms ``ms``."""
        return next_after(ms, cron=self.cron, every=self.every, tz=self.tz)

    def fields(self, first: int | None) -> list[Arg]:
        """lua/set_schedule.lua's ARGV from the job type on; ``first``: the first tick (cron)."""
        return [
            self.job_type, self.cron or "", self.every or "", self.tz, self.params, self.priority,
            self.max_attempts, self.missed, self.grace, "" if self.every else (first or 0),
        ]  # fmt: skip

    def __repr__(self) -> str:
        when = f"cron={self.cron!r}, tz={self.tz!r}" if self.cron else f"every={self.every}"
        return f"Cron({self.name!r}, {self.job_type!r}, {when})"


class Schedule(msgspec.Struct, frozen=True):
    """A schedule as stored in Redis: its definition, its next tick (``next_ms``, server epoch ms)
    and its last run (``last_ms``, the tick of ``last_job``; None before the first)."""

    name: str
    type: str
    cron: str | None
    every: int | None
    tz: str
    params: Any
    priority: int
    max_attempts: int
    missed: str
    grace: int
    next_ms: int
    last_ms: int | None = None
    last_job: str | None = None
    by: str | None = None
    updated_ms: int | None = None

    def spec(self) -> Cron:
        """The definition as a :class:`Cron` (ValidationError when what is stored no longer holds,
        say a timezone this machine does not know)."""
        return Cron(
            self.name, self.type, cron=self.cron, every=self.every, tz=self.tz, params=self.params,
            priority=self.priority, max_attempts=self.max_attempts, missed=self.missed,  # type: ignore[arg-type]
            grace=self.grace,
        )  # fmt: skip


def decode_schedule(name: str, raw: bytes | str) -> Schedule | None:
    """One field of the ``schedules`` hash as a Schedule (None when it cannot be read)."""
    try:
        d = msgspec.json.decode(raw)
        return Schedule(
            name, d["type"], d.get("cron"), d.get("every"), d["tz"], codec.decode_json(d["params"]),
            int(d["priority"]), int(d["max_attempts"]), d["missed"], int(d["grace"]), int(d["next"]),
            d.get("last"), d.get("last_job"), d.get("by"), d.get("t"),
        )  # fmt: skip
    except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def list_plan(scripts: Scripts) -> Plan[tuple[list[Schedule], int]]:
    """Every schedule of the queue by name, and the server time (ms)."""
    raw: list[Any] = yield [Cmd(("TIME",)), Cmd(("HGETALL", scripts.keys.schedules))]
    now = int(raw[0][0]) * 1000 + int(raw[0][1]) // 1000
    items = raw[1].items() if isinstance(raw[1], dict) else zip(raw[1][::2], raw[1][1::2])
    found = (decode_schedule(_text(k), v) for k, v in items)
    return sorted((s for s in found if s is not None), key=lambda s: s.name), now


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def set_plan(scripts: Scripts, actor: str, spec: Cron) -> Plan[tuple[str, int]]:
    """Store ``spec`` (see lua/set_schedule.lua) -> (created | updated | same, its next tick ms).
    A cron schedule's first tick is computed from the server time, and again if the script says
    that time has passed."""
    now = None
    for _ in range(5):
        if now is None and spec.cron:
            reply: Any = yield Cmd(("TIME",))
            now = int(reply[0]) * 1000 + int(reply[1]) // 1000
        first = spec.next_after(now) if spec.cron and now is not None else None
        outcome, nxt, now = yield scripts.set_schedule(actor, spec.name, spec.fields(first))
        if outcome != "retry":
            return outcome, nxt
    raise RuntimeError("the server clock kept passing the proposed first tick")  # pragma: no cover


def remove_plan(scripts: Scripts, name: str) -> Plan[bool]:
    """Remove the schedule ``name`` -> whether it existed."""
    existed: bool = yield scripts.remove_schedule(validate_name("schedule name", name, pattern=_NAME))
    return existed


#: The most ticks of one schedule a round enqueues (late ticks within grace, one call each).
TICKS_PER_ROUND = 100


class TickResult(msgspec.Struct, frozen=True):
    """What one worker's round of ticks did on one queue: the jobs it enqueued (id -> outcome:
    fired or caught_up), the earliest next tick (ms; None without schedules) and the server time."""

    jobs: dict[str, str]
    next_ms: int | None
    now_ms: int
    broken: list[str] = msgspec.field(default_factory=list)


def tick_plan(scripts: Scripts, actor: str) -> Plan[TickResult]:
    """Read the queue's schedules and claim each due tick (lua/cron_tick.lua); a tick another
    worker claimed first is left to it. ``broken``: schedules that cannot be read or computed."""
    schedules, now = yield from list_plan(scripts)
    jobs: dict[str, str] = {}
    broken: list[str] = []
    nexts: list[int] = []
    for s in schedules:
        expected = s.next_ms
        try:
            spec = s.spec()
            for _ in range(TICKS_PER_ROUND):
                if expected > now:
                    break
                late = now - expected > s.grace * 1000
                proposed = None if s.every else spec.next_after(now if late else expected)
                outcome, job, expected, now = yield scripts.cron_tick(actor, s.name, expected, proposed, s.type)
                if outcome in ("fired", "caught_up"):
                    jobs[job] = outcome
                if outcome == "gone":
                    break
        except ValidationError:
            broken.append(s.name)
            continue
        nexts.append(expected)
    return TickResult(jobs, min(nexts) if nexts else None, now, broken)
