"""Limits on a job type or a group, as plans (sans I/O): the checks of what callers pass, and the
reads that show limits and groups. The scripts enforce them at claim time (lua/claim.lua), in
every worker process alike: a name caps its running jobs (``concurrency``) and/or its claims per
window (``rate`` per ``per`` seconds); a job over a limit stays ready and spends no attempt."""

from __future__ import annotations

import math
from typing import Any

from rjobs.errors import ValidationError
from rjobs.store.keys import QueueKeys, validate_name
from rjobs.store.messages import decode_text
from rjobs.store.scripts import Cmd, Scripts
from rjobs.store.transport import Plan

__all__ = ["backoff_plan", "clear_limit_plan", "limit_name", "limits_plan", "set_limit_plan"]

MAX_LIMIT = 1_000_000
GROUPS_SHOWN = 20  # per job type, in turn order


def limit_name(type: str | None = None, group: str | None = None) -> str:
    """``t:<type>`` or ``g:<group>``: exactly one of the two."""
    if (type is None) == (group is None):
        raise ValidationError("name exactly one of type= or group=")
    if type is not None:
        return "t:" + validate_name("job type", type)
    return "g:" + validate_name("group", group)


def _count(value: object, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise ValidationError(f"{what} must be an integer 1-{MAX_LIMIT} (or None for no {what})")
    return value


def _ms(seconds: object, what: str, lo: float) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise ValidationError(f"{what} must be a finite number of seconds")
    ms = round(seconds * 1000)
    if not lo <= ms <= 366 * 86_400_000:
        raise ValidationError(f"{what} must be {lo / 1000:g} s to 366 days")
    return ms


def set_limit_plan(
    scripts: Scripts, name: str, concurrency: int | None, rate: int | None, per: float | None
) -> Plan[dict[str, Any] | None]:
    """Set the limits of ``name`` (:func:`limit_name`); the previous ones, or None."""
    cap, n = _count(concurrency, "concurrency"), _count(rate, "rate")
    if not cap and not n:
        raise ValidationError("give concurrency and/or rate (clear_limit removes a name's limits)")
    if n and per is None:
        raise ValidationError("a rate needs per= (the window, seconds)")
    if not n and per is not None:
        raise ValidationError("per= goes with rate=")
    per_ms = _ms(per, "per", 10) if n else 0
    previous: str = yield scripts.set_limit(name, cap, n, per_ms)
    return _spec(previous)


def clear_limit_plan(scripts: Scripts, name: str) -> Plan[dict[str, Any] | None]:
    """Remove the limits of ``name``; the previous ones, or None."""
    previous: str = yield scripts.set_limit(name, 0, 0, 0)
    return _spec(previous)


def backoff_plan(scripts: Scripts, name: str, seconds: float) -> Plan[int]:
    """No job of ``name`` is claimed for ``seconds``; the back-off's end (server epoch ms)."""
    until: int = yield scripts.backoff(name, _ms(seconds, "seconds", 1))
    return until


def _spec(raw: Any) -> dict[str, Any] | None:
    text = raw.decode() if isinstance(raw, bytes) else str(raw or "")
    if not text:
        return None
    cap, n, per = (int(x) for x in text.split(","))
    return {"concurrency": cap or None, "rate": n or None, "per": per / 1000 if n else None}


def limits_plan(keys: QueueKeys) -> Plan[dict[str, Any]]:
    """The limits with their running counts and back-offs (``limits``), and per job type the
    ready jobs of its groups in turn order, the first few (``groups``)."""
    limits, running, backoff, lanes = yield [
        Cmd(("HGETALL", keys.limits)),
        Cmd(("HGETALL", keys.running)),
        Cmd(("HGETALL", keys.backoff)),
        Cmd(("ZRANGE", keys.lanes, 0, 999)),
    ]
    runs = {decode_text(k): int(v) for k, v in running.items()}
    backs = {decode_text(k): int(v) for k, v in backoff.items()}
    out: dict[str, Any] = {}
    for k, v in sorted(limits.items()):
        name = decode_text(k)
        out[name] = {**(_spec(v) or {}), "running": max(0, runs.get(name, 0)), "backoff_until_ms": backs.get(name)}
    types = [decode_text(t) for t in lanes]
    listed: list[Any] = []
    if types:
        listed = yield [Cmd(("ZRANGE", keys.groups(t), 0, GROUPS_SHOWN - 1)) for t in types]
    pairs = [(t, decode_text(g)) for t, gs in zip(types, listed) for g in gs]
    ready: list[Any] = []
    if pairs:
        ready = yield [Cmd(("ZCARD", keys.group_lane(t, g))) for t, g in pairs]
    groups: dict[str, dict[str, int]] = {}
    for (t, g), n in zip(pairs, ready):
        groups.setdefault(t, {})[g] = int(n)
    return {"limits": out, "groups": groups}
