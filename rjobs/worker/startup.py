"""How a worker reaches its server at start: declare its queues and read the server's clock,
and while the server cannot be reached or refuses for now (loading its data, out of memory...)
wait and try again with a back-off, one log line per try."""

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
    timeout: float | None,
    backoff: Callable[[float], Awaitable[bool]],
) -> bool:
    """Declare ``queues`` and observe the server's clock on ``clock``; True once done. Until
    ``timeout`` seconds passed (None: for as long as it takes) a server that cannot be reached or
    refuses for now is tried again after ``backoff(delay)``, which waits and returns False when the
    worker was stopped meanwhile (then this returns False)."""
    failures, deadline = 0, None if timeout is None else time.monotonic() + timeout
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
            if not await backoff(delay):
                return False
