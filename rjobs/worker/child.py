"""The child process side of isolated jobs (``@rjobs.job(isolate=True)``): a loop that receives a
call over its pipe, imports the function by reference, runs it, and sends back what happened.

Messages (pickled by :mod:`multiprocessing`): the parent sends :class:`Call`; the child answers
``("started",)`` once the function is imported (its time limit starts then), any number of
``("progress", percent, step)`` / ``("comment", text)``, then ``("ok", value)`` or
``("error", code, message, traceback, retryable, retry_after)``. Closing the pipe ends the child.
The child is killed by the parent at its time limit, on cancellation, and if the parent dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import inspect
import logging
import signal
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from rjobs.models import ClaimedJob
from rjobs.worker.functions import JobFunction, error_code, retry_after, retryable

__all__ = ["Call", "IsolatedContext", "child_main", "resolve"]

_job_log = logging.getLogger("rjobs.job")
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Call:
    """One job for a child: the function by reference and what its context needs."""

    module: str
    qualname: str
    job: ClaimedJob
    worker_id: str
    queue: str


def resolve(module: str, qualname: str) -> JobFunction[Any]:
    """The job function at ``module``:``qualname`` (imported), as a JobFunction."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj if isinstance(obj, JobFunction) else JobFunction(obj)


class IsolatedContext:
    """The context of a job running in a child process: the job and its attempt, and progress
    and comments (sent to the worker, which writes them with the lease token). There is no
    ``ctx.state`` of the worker here (another process), and ``cancelled`` stays False: the worker
    kills the process instead."""

    def __init__(self, call: Call, conn: Connection) -> None:
        self.job = call.job
        self.worker_id = call.worker_id
        self.queue_name = call.queue
        self.cancelled = False
        self._conn = conn
        facts = {"job_id": call.job.id, "job_type": call.job.type, "queue": call.queue, "worker": call.worker_id}
        self.log = logging.LoggerAdapter(_job_log, facts)

    @property
    def attempt(self) -> int:
        """This attempt's number, 1-based."""
        return self.job.attempt

    @property
    def token(self) -> str:
        """The fencing token of this attempt's lease."""
        return self.job.token

    def progress_sync(self, percent: float, step: str | None = None) -> None:
        """Record progress (sent to the worker; not waited for)."""
        self._conn.send(("progress", percent, step))

    def comment_sync(self, text: str) -> None:
        """Add a comment to the job's history (sent to the worker; not waited for)."""
        self._conn.send(("comment", text))

    async def progress(self, percent: float, step: str | None = None) -> None:
        """:meth:`progress_sync` for async functions."""
        self.progress_sync(percent, step)

    async def comment(self, text: str) -> None:
        """:meth:`comment_sync` for async functions."""
        self.comment_sync(text)


def _die_with_parent() -> None:
    # Linux: killed when the worker process dies, even by SIGKILL; elsewhere the closed pipe ends
    # an idle child.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _error(exc: BaseException) -> tuple[Any, ...]:
    tb = "".join(traceback.format_exception(exc))
    return ("error", error_code(exc), str(exc) or type(exc).__name__, tb, retryable(exc), retry_after(exc))


def _run(call: Call, conn: Connection) -> tuple[Any, ...]:
    try:
        fn = resolve(call.module, call.qualname)
        params = fn.convert_params(call.job.params)
    except Exception as exc:
        return _error(exc)
    conn.send(("started",))
    ctx = IsolatedContext(call, conn)
    try:
        value = fn.fn(ctx, params)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
        return ("ok", value)
    except Exception as exc:
        return _error(exc)


async def _awaited(value: Any) -> Any:
    return await value


def child_main(conn: Connection) -> None:
    """The child's loop: run calls until the pipe closes."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle
    while True:
        try:
            call = conn.recv()
        except (EOFError, OSError):
            return
        if call is None:
            return
        reply = _run(call, conn)
        try:
            conn.send(reply)
        except Exception as exc:  # a result pickle cannot carry
            conn.send(("error", "unpicklable_result", f"the result cannot be sent: {exc}", "", False, None))
        sys.stdout.flush()
