"""The worker's cron task (docs/schedules.md): it stores the schedules the worker declares in code
(:class:`rjobs.Cron`) when it starts, then enqueues the due ticks of every schedule of its queues,
declared in code or added with ``rjobs schedule add``. Every worker does so: which one enqueues a
tick is decided in Redis (lua/cron_tick.lua), so each tick is enqueued once however many run.

It sleeps until the earliest next tick by the server's clock, at most :data:`TICK_CAP` seconds,
so a schedule added or changed elsewhere is seen within that time; it never busy-polls.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio

from rjobs.client.queue import Queue
from rjobs.client.schedules import Cron
from rjobs.errors import ValidationError
from rjobs.worker.leases import RETRYABLE

__all__ = ["TICK_CAP", "CronTicker", "declared_schedules"]

log = logging.getLogger("rjobs.worker")
#: The longest a worker's cron task sleeps between two rounds (s).
TICK_CAP = 1.0


def declared_schedules(cron: Sequence[Cron], queues: Sequence[Queue]) -> list[Cron]:
    """The schedules a Worker is given, checked: rjobs.Cron instances with distinct names per
    queue, each in one of ``queues`` (ValueError otherwise)."""
    specs = list(cron)
    for spec in specs:
        if not isinstance(spec, Cron):
            raise TypeError(f"cron= takes rjobs.Cron schedules, not {type(spec).__name__}")
    names = [(s.queue, s.name) for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("two schedules of one queue have the same name")
    for spec in specs:
        _queue_for(spec, queues)
    return specs


def _queue_for(spec: Cron, queues: Sequence[Queue]) -> Queue:
    if spec.queue is None:
        return queues[0]
    for q in queues:
        if q.name in (spec.queue, f"{spec.queue}#0"):  # a partitioned queue: its first partition
            return q
    raise ValueError(f"schedule {spec.name!r} names queue {spec.queue!r}, which this worker does not serve")


class CronTicker:
    """Stores ``declared`` (each in its queue, last writer wins per name) and then ticks every
    schedule of ``queues`` until cancelled."""

    def __init__(self, declared: Sequence[Cron], queues: Sequence[Queue], worker_id: str) -> None:
        self.placed = [(spec, _queue_for(spec, queues)) for spec in declared]
        self.queues = list(queues)
        self.worker_id = worker_id
        self.enqueued = 0  # ticks this worker enqueued
        self._broken: set[tuple[str, str]] = set()

    async def run(self) -> None:
        """Store the declared schedules (trying again while Redis is unreachable), then tick."""
        await self._store()
        while True:
            wait = await self.round()
            await anyio.sleep(wait)

    async def _store(self) -> None:
        failures = 0
        pending = list(self.placed)
        while pending:
            spec, q = pending[0]
            try:
                outcome = await q.set_schedule(spec, actor=self.worker_id)
            except ValidationError as exc:  # refused (params over the queue's payload limit): not stored
                log.error("schedule %s refused by queue %s: %s", spec.name, q.name, exc)
                pending.pop(0)
                continue
            except RETRYABLE as exc:
                failures += 1
                log.warning("storing schedule %s failed (%s); trying again", spec.name, exc)
                await anyio.sleep(min(5.0, 0.1 * 2**failures))
                continue
            if outcome != "same":
                log.info("schedule %s %s on queue %s: %r", spec.name, outcome, q.name, spec)
            pending.pop(0)

    async def round(self) -> float:
        """Enqueue every due tick of every queue once; the seconds to sleep until the next round."""
        wait = TICK_CAP
        for q in self.queues:
            try:
                result = await q.cron_tick(actor=self.worker_id)
            except RETRYABLE as exc:  # Redis down or refusing: the tick stays due, the next round takes it
                log.warning("schedules of queue %s: %s: %s", q.name, type(exc).__name__, exc)
                continue
            except Exception:  # a reply that cannot be decoded: never die here
                log.exception("schedules of queue %s", q.name)
                continue
            for job_id, outcome in result.jobs.items():
                self.enqueued += 1
                log.info("schedule tick %s enqueued on %s%s", job_id, q.name, " (catch-up)" * (outcome == "caught_up"))
            for name in result.broken:
                if (q.name, name) not in self._broken:
                    self._broken.add((q.name, name))
                    log.error("schedule %s of queue %s cannot be computed here: store it again", name, q.name)
            if result.next_ms is not None:
                wait = min(wait, (result.next_ms - result.now_ms) / 1000)
        return max(0.005, wait)
