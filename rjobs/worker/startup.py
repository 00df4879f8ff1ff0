"""A worker's start: declare its queues and read the server's clock, waiting for a server that
cannot be reached yet or refuses for now (loading its data, out of memory...)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import redis

from rjobs.client.queue import Queue
from rjobs.errors import ServerRefused
from rjobs.worker.clock import ServerClock

__all__ = ["reach_server"]

log = logging.getLogger("rjobs.worker")


async def reach_server(
    queues: Sequence[Queue],
    clock: ServerClock,
    worker_id: str,
    start_timeout: float | None,
    pause: Callable[[float], Awaitable[None]],
    stopping: Callable[[], bool],
) -> bool:
    """Declare the queues and read the server's clock into ``clock``. While the server cannot be
    reached or refuses for now, ``pause`` and try again with a back-off, one log line per try,
    until ``start_timeout`` (None: for as long as it takes); False when ``stopping`` meanwhile."""
    failures, deadline = 0, None if start_timeout is None else time.monotonic() + start_timeout
    while True:
        try:
            for q in queues:
                await q.declare()
            sent = time.time()
            reply = await queues[0].backend.server_time()
            clock.observe(reply, sent, time.time())
            return True
        except (ServerRefused, redis.ConnectionError, OSError) as exc:
            if isinstance(exc, ServerRefused) and not exc.retryable:
                raise
            if deadline is not None and time.monotonic() >= deadline:
                raise
            failures += 1
            delay = min(5.0, 0.1 * 2**failures)
            log.warning("worker %s cannot start yet (%s); trying again in %.1f s", worker_id, exc, delay)
            await pause(delay)
            if stopping():
                return False
