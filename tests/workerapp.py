"""Job functions and a worker factory for tests that run workers in subprocesses.

``make_worker()`` reads its settings from the environment so each test can shape the worker:
RJOBS_TEST_QUEUE, RJOBS_TEST_LEASE, RJOBS_TEST_GRACE, RJOBS_TEST_MAX_LEASE_LOSSES,
RJOBS_TEST_CONCURRENCY. The URL comes from ``run_from_cli(url=...)``.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import anyio

from rjobs.worker.context import JobContext
from rjobs.worker.loop import Worker

QUEUE = "chaos"


async def sleepy(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Run ``first`` seconds on the job's first lease, ``then`` seconds afterwards, reporting
    progress every 0.1 s so a stale worker keeps trying to write. (A token is server ms * 1000 +
    the job's lease count modulo 1000.)"""
    seconds = float(params["first"] if int(ctx.token) % 1000 == 1 else params.get("then", 0))
    steps = max(1, int(seconds / 0.1))
    for i in range(steps):
        await anyio.sleep(seconds / steps)
        await ctx.progress(100 * (i + 1) / steps, step=f"step {i + 1}")
    return {"token": ctx.token, "worker": ctx.worker_id}


async def quick(ctx: JobContext, params: dict[str, Any]) -> str:
    """Sleep ``seconds`` and return the lease token; writes nothing itself, so every Redis call of
    its attempt is the worker's own (claim, heartbeat, finish)."""
    await anyio.sleep(float(params.get("seconds", 0.05)))
    return ctx.token


def suicide(ctx: JobContext, params: Any) -> None:
    """A poison pill: kills the worker process running it."""
    os.kill(os.getpid(), signal.SIGKILL)


def make_worker() -> Worker:
    """The subprocess tests' worker, shaped by RJOBS_TEST_* environment variables."""
    env = os.environ.get
    return Worker(
        env("RJOBS_TEST_QUEUE", QUEUE),
        [sleepy, quick, suicide],
        lease=float(env("RJOBS_TEST_LEASE", "1.0")),
        grace=float(env("RJOBS_TEST_GRACE", "5.0")),
        max_lease_losses=int(env("RJOBS_TEST_MAX_LEASE_LOSSES", "3")),
        concurrency=int(env("RJOBS_TEST_CONCURRENCY", "4")),
    )
