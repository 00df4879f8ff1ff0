"""A queue's counters: :class:`QueueCounters`, a base of :class:`rjobs.Queue` (what the scripts
that move jobs count per minute and since the queue began; docs/design.md, "Counters").

This module is the async source of :mod:`rjobs.client.sync_counters`, generated from it by
``scripts/unasync.py``: edit this file, then run the script.
"""

from __future__ import annotations

from typing import Any, TypeVar

from rjobs.client.operations import QueuePlans
from rjobs.errors import ValidationError
from rjobs.models import MetricsBucket, QueueTotals
from rjobs.store.keys import QueueKeys
from rjobs.store.layout import METRICS_BUCKET_MS, METRICS_TTL_S
from rjobs.store.scripts import Cmd
from rjobs.store.transport import Plan

__all__ = ["MAX_MINUTES", "QueueCounters", "metrics_plan", "totals_plan"]

T = TypeVar("T")

#: The most minutes :meth:`QueueCounters.metrics` reads: a bucket lives a day (and a margin).
MAX_MINUTES = 1440
assert MAX_MINUTES * METRICS_BUCKET_MS <= METRICS_TTL_S * 1000


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _counts(raw: dict[Any, Any]) -> dict[str, dict[str, int]]:
    """A counters hash -> {kind: {rest of the field: n}}; kind d's rest is "<state>:<type>"."""
    out: dict[str, dict[str, int]] = {}
    for k, v in raw.items():
        kind, _, rest = _text(k).partition(":")
        out.setdefault(kind, {})[rest] = int(v)
    return out


def _finished(per: dict[str, int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for key, n in per.items():
        state, _, job_type = key.partition(":")
        out.setdefault(state, {})[job_type] = n
    return out


def metrics_plan(keys: QueueKeys, minutes: int) -> Plan[list[MetricsBucket]]:
    """The last ``minutes`` minutes of counters, oldest first, the current minute last (server
    time), empty minutes included: one TIME, then one pipelined HGETALL per minute."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_MINUTES:
        raise ValidationError(f"minutes must be an integer 1-{MAX_MINUTES}")
    now: list[Any] = yield Cmd(("TIME",))
    last = (int(now[0]) * 1000 + int(now[1]) // 1000) // METRICS_BUCKET_MS
    first = last - minutes + 1
    rows: list[Any] = yield [Cmd(("HGETALL", keys.metrics(m))) for m in range(first, last + 1)]
    out = []
    for minute, raw in zip(range(first, last + 1), rows):
        c = _counts(raw or {})
        out.append(
            MetricsBucket(
                start_ms=minute * METRICS_BUCKET_MS,
                enqueued=c.get("e", {}),
                claimed=c.get("c", {}),
                wait_ms=c.get("w", {}),
                finished=_finished(c.get("d", {})),
                runs=c.get("n", {}),
                run_ms=c.get("r", {}),
            )
        )
    return out


def totals_plan(keys: QueueKeys) -> Plan[QueueTotals]:
    """The counters since the queue began: one HGETALL."""
    raw: dict[Any, Any] = yield Cmd(("HGETALL", keys.totals))
    c = _counts(raw or {})
    return QueueTotals(enqueued=c.get("e", {}), claimed=c.get("c", {}), finished=_finished(c.get("d", {})))


class QueueCounters:
    """What the queue counted: per minute for charts (:meth:`metrics`), in all for Prometheus
    (:meth:`totals`). The scripts that create, claim and finish jobs keep them, in the same
    atomic write as the move they count."""

    _plans: QueuePlans

    async def _read(self, plan: Plan[T]) -> T:
        raise NotImplementedError

    async def metrics(self, minutes: int = 60) -> list[MetricsBucket]:
        """The last ``minutes`` (1-1440) minutes of counters, one :class:`rjobs.MetricsBucket` per
        minute of server time, oldest first, the current (partial) minute last."""
        return await self._read(metrics_plan(self._plans.keys, minutes))

    async def totals(self) -> QueueTotals:
        """The counters since the queue began (:class:`rjobs.QueueTotals`): only grow."""
        return await self._read(totals_plan(self._plans.keys))
