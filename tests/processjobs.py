"""Job functions for the isolated-job and prefork tests (tests/integration/test_worker_processes.py):
isolated ones must be importable by reference, and a prefork worker is loaded by `rjobs worker`."""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path
from typing import Any

from rjobs.worker.functions import Fail, job
from rjobs.worker.loop import Worker


def _note_pid(params: dict[str, Any]) -> None:
    if "pid_file" in params:
        Path(params["pid_file"]).write_text(str(os.getpid()))


@job(timeout=1.0, isolate=True)
def stuck(ctx: Any, params: dict[str, Any]) -> None:
    """Sleeps far past its hard limit."""
    _note_pid(params)
    time.sleep(1000)


@job(timeout=1.0, isolate=True)
def spin(ctx: Any, params: dict[str, Any]) -> None:
    """A CPU-bound loop that never ends."""
    _note_pid(params)
    n = 0
    while True:
        n += 1


@job(isolate=True)
def pid(ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Reports its process, with progress on the way."""
    _note_pid(params)
    ctx.progress_sync(50, step="half")
    ctx.comment_sync("from the child")
    return {"pid": os.getpid(), "attempt": ctx.attempt, "params": params}


@job(isolate=True)
async def async_pid(ctx: Any, params: dict[str, Any]) -> int:
    """An async isolated function."""
    await ctx.progress(10)
    return os.getpid()


@job(isolate=True)
def declined(ctx: Any, params: dict[str, Any]) -> None:
    """Raises in the child."""
    raise Fail("card declined", code="declined")


@job(isolate=True)
def crash(ctx: Any, params: dict[str, Any]) -> None:
    """Dies without answering: os._exit or a segfault."""
    _note_pid(params)
    if params.get("how") == "segfault":
        ctypes.string_at(0)
    os._exit(3)


@job(isolate=True)
def wait_long(ctx: Any, params: dict[str, Any]) -> None:
    """Sleeps until killed (no limit of its own)."""
    _note_pid(params)
    time.sleep(1000)


async def slow(ctx: Any, params: dict[str, Any]) -> str:
    """An in-process job that takes ``seconds`` (default 0.2) and reports its worker."""
    import anyio

    await anyio.sleep(float(params.get("seconds", 0.2)))
    return ctx.worker_id


def make_worker() -> Worker:
    """The prefork tests' worker, on queue RJOBS_TEST_QUEUE (the URL comes from --url)."""
    return Worker(
        os.environ.get("RJOBS_TEST_QUEUE", "pre"),
        [slow, pid],
        lease=float(os.environ.get("RJOBS_TEST_LEASE", "1.0")),
        concurrency=2,
        grace=5.0,
    )


def broken_startup(state: Any) -> None:
    """An on_startup that always fails."""
    raise RuntimeError("no database here")


def make_failing_worker() -> Worker:
    """A worker whose start-up fails (for the prefork tests)."""
    return Worker(os.environ.get("RJOBS_TEST_QUEUE", "pre"), [slow], on_startup=broken_startup)


@job(isolate=True)
def nap(ctx: Any, params: dict[str, Any]) -> int:
    """Sleeps ``seconds`` in its child, then returns its pid."""
    time.sleep(float(params["seconds"]))
    return os.getpid()
