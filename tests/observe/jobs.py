"""Job functions and a worker factory for the metrics tests, run by ``rjobs worker`` in a subprocess
(``tests.observe.jobs:make_worker``): each function ends its attempts one known way."""

from __future__ import annotations

import os
from typing import Any

from rjobs.worker.context import JobContext
from rjobs.worker.functions import Fail
from rjobs.worker.loop import Worker
from rjobs.worker.retry import RetryPolicy

QUEUE = "metered"


async def ok(ctx: JobContext, params: Any) -> str:
    """Succeeds."""
    return "done"


async def flaky(ctx: JobContext, params: Any) -> str:
    """Fails its first attempt (retried at once), then succeeds."""
    if ctx.attempt == 1:
        raise ValueError("first try")
    return "second"


async def broken(ctx: JobContext, params: Any) -> None:
    """Fails for good."""
    raise Fail("declined", code="declined")


async def lost(ctx: JobContext, params: Any) -> str:
    """Loses its first lease (an operator sends the job back to the queue under it), then succeeds."""
    if int(ctx.token) % 1000 == 1:  # the job's first lease (rjobs.worker.context: the token's low digits)
        await ctx.queue.transition(ctx.job.id, "queued", operator=True)
        await ctx.progress(50)  # the token is no longer current: LeaseLost
    return "second lease"


def make_worker() -> Worker:
    """The worker of the metrics tests (queue ``RJOBS_TEST_QUEUE``, else :data:`QUEUE`)."""
    return Worker(
        os.environ.get("RJOBS_TEST_QUEUE", QUEUE),
        [ok, flaky, broken, lost],
        concurrency=4,
        lease=2.0,
        retry=RetryPolicy(base=0, jitter="none"),
    )
