"""Isolated jobs (``@rjobs.job(isolate=True)``) run in child processes, so a hard time limit can
really stop them: a thread cannot be killed, a process can.

The decision: a small pool of **reusable** children per worker (multiprocessing, ``spawn``
context), started on demand, at most one per slot running an isolated job; a child that answered
goes back to the pool for the next isolated job, so a worker spawns one child per concurrent
isolated job, not one per job. A child is never reused after it was killed or died.

For each job the parent sends the function *by reference* (module and qualified name; the child
imports it) with the claimed job; the child answers when the function is imported, and the
function's ``timeout`` counts from then (importing a heavy module is not the job's time). At the
limit, on cancellation (an operator cancel, a lost lease, shutdown) or when the worker itself is
cancelled, the child gets SIGTERM, then SIGKILL after :data:`KILL_GRACE` seconds, and is reaped
before the outcome is written. A child that dies on its own (a segfault, ``os._exit``) is a
retryable failure with code ``child_died``. Meanwhile the lease is heartbeated as for any job.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
from collections.abc import Iterable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

import anyio

from rjobs.errors import LeaseLost
from rjobs.worker.child import Call, child_main
from rjobs.worker.functions import JobFunction

if TYPE_CHECKING:
    from rjobs.worker.context import JobContext

__all__ = ["KILL_GRACE", "ChildDied", "ChildError", "ChildPool", "HardTimeout"]

log = logging.getLogger("rjobs.worker")
KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL
START_LIMIT = 60.0  # seconds a child may take to import the function before it is given up


class ChildError(Exception):
    """An exception raised by an isolated function, as its child described it."""

    def __init__(
        self, code: str, message: str, child_traceback: str, retryable: bool, retry_after: float | None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.child_traceback = child_traceback
        self.retryable = retryable
        self.retry_after = retry_after


class ChildDied(Exception):
    """The child process running an isolated job ended without answering."""

    code = "child_died"


class HardTimeout(Exception):
    """An isolated job ran past its ``timeout``; its process was killed."""

    code = "timeout"


async def _readable(fds: Iterable[int]) -> None:
    """Wait until one of ``fds`` is readable (a pipe with data, or a process sentinel that ended)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    fds = list(fds)
    for fd in fds:
        loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        for fd in fds:
            loop.remove_reader(fd)


class Child:
    """One child process and the parent's end of its pipe."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self.process.pid

    async def receive(self) -> Any:
        """The child's next message, or None when it died without one."""
        while True:
            if self.conn.poll():
                try:
                    return self.conn.recv()
                except (EOFError, OSError):
                    return None
            if not self.process.is_alive():
                return None
            await _readable((self.conn.fileno(), self.process.sentinel))

    async def kill(self) -> None:
        """SIGTERM, SIGKILL after :data:`KILL_GRACE` s, then reap it (shielded)."""
        with anyio.CancelScope(shield=True):
            process = self.process
            if process.is_alive():
                process.terminate()
                with anyio.move_on_after(KILL_GRACE):
                    while process.is_alive():
                        await _readable((process.sentinel,))
            if process.is_alive():
                process.kill()
                with anyio.move_on_after(5.0):
                    while process.is_alive():
                        await _readable((process.sentinel,))
            process.join(0)
            self.conn.close()

    def died(self) -> ChildDied:
        """Why the child ended, as the job's error."""
        self.process.join(0)
        code = self.process.exitcode
        if code is not None and code < 0:
            how = f"was killed by signal {signal.Signals(-code).name}"
        else:
            how = f"exited with code {code}" if code is not None else "closed its pipe"
        return ChildDied(f"the job's process (pid {self.pid}) {how} before the job ended")


class ChildPool:
    """The worker's reusable child processes (see the module docstring)."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self._idle: list[Child] = []
        self._context = multiprocessing.get_context("spawn")
        self.running: dict[str, int] = {}  # job id -> pid of the child running it (for tests and logs)

    def _spawn(self) -> Child:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=child_main, args=(child,), name="rjobs-isolated", daemon=True)
        process.start()
        child.close()
        log.debug("started a child process for isolated jobs (pid %s)", process.pid)
        return Child(process, parent)

    def _take(self) -> Child:
        while self._idle:
            child = self._idle.pop()
            if child.process.is_alive():
                return child
            child.process.join(0)
            child.conn.close()
        return self._spawn()

    async def run(self, fn: JobFunction[Any], ctx: JobContext, limit: float | None) -> Any:
        """Run ``fn`` for ``ctx``'s job in a child, killed after ``limit`` seconds; its value, or
        raise what it raised (:class:`ChildError`), :class:`HardTimeout` or :class:`ChildDied`."""
        job = ctx.job
        child = self._take()
        answered = False
        self.running[job.id] = child.pid or 0
        try:
            call = Call(fn.fn.__module__, fn.fn.__qualname__, job, self.worker_id, ctx.queue.name)
            child.conn.send(call)
            with anyio.move_on_after(START_LIMIT) as starting:
                first = await self._next(child, ctx)
            if starting.cancelled_caught:
                raise ChildDied(f"the job's process (pid {child.pid}) did not start it within {START_LIMIT:.0f} s")
            if first[0] != "started":
                answered = True
                return self._answer(first)
            with anyio.move_on_after(limit if limit is not None else float("inf")) as deadline:
                reply = await self._next(child, ctx)
            if deadline.cancelled_caught:
                raise HardTimeout(f"{job.type} ran longer than its timeout of {limit} s: its process was killed")
            answered = True
            return self._answer(reply)
        finally:
            self.running.pop(job.id, None)
            if answered:
                self._idle.append(child)
            else:
                await child.kill()

    async def _next(self, child: Child, ctx: JobContext) -> tuple[Any, ...]:
        """The child's next answer, relaying its progress and comments meanwhile."""
        while True:
            msg = await child.receive()
            if msg is None:
                raise child.died()
            kind = msg[0]
            if kind not in ("progress", "comment"):
                return tuple(msg)
            try:
                if kind == "progress":
                    await ctx.progress(msg[1], msg[2])
                else:
                    await ctx.comment(msg[1])
            except LeaseLost:
                raise
            except Exception as exc:
                log.warning("job %s: %s from its process not recorded (%s)", ctx.job.id, kind, exc)

    @staticmethod
    def _answer(reply: tuple[Any, ...]) -> Any:
        if reply[0] == "ok":
            return reply[1]
        _, code, message, tb, retryable, retry_after = reply
        raise ChildError(code, message, tb, retryable, retry_after)

    async def aclose(self) -> None:
        """Stop the idle children (closing their pipe ends them; killed if they linger)."""
        idle, self._idle = self._idle, []
        for child in idle:
            child.conn.close()
        with anyio.CancelScope(shield=True), anyio.move_on_after(KILL_GRACE):
            for child in idle:
                while child.process.is_alive():
                    await _readable((child.process.sentinel,))
        for child in idle:
            if child.process.is_alive():
                child.process.kill()
            child.process.join(1.0)
