"""Every worker's reaper: recovers expired leases and purges finished jobs past their retention."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from rjobs.worker.clock import ServerClock
from rjobs.worker.leases import RETRYABLE, transient
from rjobs.worker.stats import WorkerStats

if TYPE_CHECKING:
    from rjobs.client.queue import Queue


__all__ = ["Reaper"]

log = logging.getLogger("rjobs.worker")


class Reaper:
    """Every worker's reaper: recovers expired leases (and purges expired finished jobs) of each
    queue every ``interval`` seconds, +-20% jitter so workers started together spread out. The
    script re-reads every job it touches, so any number of workers may reap at once."""

    def __init__(
        self,
        queues: Sequence[Queue],
        stats: WorkerStats,
        clock: ServerClock,
        *,
        lease: float,
        max_lease_losses: int,
        limit: int,
    ) -> None:
        self.queues = queues
        self.stats = stats
        self.clock = clock
        self.interval = lease / 2
        self.max_lease_losses = max_lease_losses
        self.limit = limit
        # Workers are listed while they heartbeat (every lease / 3); forget them after a few leases.
        self.worker_ttl_ms = max(5000, int(lease * 3000))

    async def run(self) -> None:
        """Reap at once, then on the jittered timer, until cancelled."""
        while True:
            for queue in self.queues:
                await self.reap(queue)
            await anyio.sleep(self.interval * random.uniform(0.8, 1.2))

    async def reap(self, queue: Queue) -> None:
        """Reap one queue until a call comes back with less than a full batch of expired leases
        and of purged jobs: a backlog (a burst of finished jobs past their retention) is drained
        at once, each call's work bounded by ``limit``."""
        while True:
            sent = time.time()
            try:
                # TIME rides along to keep the server clock estimate fresh at no extra round trip.
                reaped, now = await queue.backend.reap(
                    self.limit, self.max_lease_losses, self.limit, self.worker_ttl_ms
                )
                failed_with = next((r for r in (reaped, now) if isinstance(r, BaseException)), None)
            except RETRYABLE as exc:
                failed_with = exc
            if failed_with is not None:  # one line, no traceback: the next round tries again
                level = logging.WARNING if transient(failed_with) else logging.ERROR
                log.log(level, "reap failed (%s: %s)", type(failed_with).__name__, failed_with)
                return
            self.clock.observe(now, sent, time.time())
            requeued, failed, purged = reaped
            self.stats.reaped += requeued + failed
            self.stats.purged += purged
            if requeued or failed:
                log.info("reaper: %d expired lease(s) re-queued, %d failed", requeued, failed)
            if requeued + failed < self.limit and purged < self.limit:
                return
            await anyio.lowlevel.checkpoint()  # a long drain must not starve the loop
