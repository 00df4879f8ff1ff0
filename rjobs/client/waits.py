"""Waiting for jobs without polling. On asyncio (:class:`Waits`) one blocking reader per queue and
event loop serves every waiter; a blocking caller (:class:`SyncWaits`) reads the stream itself.

A wait does not block a connection of its own. :meth:`Waits.wait` registers the waiter, then reads
the job's status (HMGET over the queue's shared link); a job already final returns at once. Else
the waiter sleeps on a future that the queue's reader resolves. The reader is one task with a
dedicated connection (a :class:`~rjobs.store.connection.Link`, or a single-connection redis-py client where
no link can be used) doing ``XREAD BLOCK`` (at most 1 s) on the queue-wide stream
``rjobs:{Q}:events``, and hands each entry that moves a waited job into a final state (field
``to``; every final move writes one) to that job's waiters, after one pipelined HMGET of the jobs
concerned, so a waiter gets the same :class:`~rjobs.models.JobOutcome` as before.

No wake-up is lost: the reader reads from a position taken before the statuses it relies on. A
waiter registered before the reader had its position is re-checked by the reader once it has it;
one registered after reads its own status after that position, so a final move is either in its
status or in an entry the reader has still to read. About once a second the reader re-checks
every job still waited on with one pipelined batch of HMGETs, which catches what the stream cannot
tell: entries trimmed by ``MAXLEN ~`` (or a queue with the stream turned off), jobs deleted or
purged (:class:`~rjobs.errors.JobNotFound`).

Lifecycle: the reader starts with the first waiter of an event loop whose job is not final yet,
stops (closing its connection) after :attr:`Waits.idle_stop` seconds without waiters, and starts
again on demand. A connection error costs the waiters nothing: the reader reconnects with a
back-off, continues from its position and re-checks every waited job. Each waiter has its own timeout
(:class:`~rjobs.errors.WaitTimeout`); a cancelled waiter unregisters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import hiredis
import redis.asyncio as aredis
import redis.exceptions
from redis.exceptions import ResponseError

from rjobs.client.queries import WAIT_BLOCK_MS, WAIT_COUNT, WAIT_RECHECK, ReadPlans, stream_entries
from rjobs.errors import JobNotFound, RjobsError, WaitTimeout
from rjobs.store.cluster import redirect_of
from rjobs.store.connection import LinkSettings, LoopLinks
from rjobs.store.scripts import Cmd
from rjobs.store.sync_transport import Runner as SyncRunner
from rjobs.store.sync_transport import drive_sync
from rjobs.store.wire import parse_reply

if TYPE_CHECKING:
    from rjobs.models import JobOutcome
    from rjobs.store.transport import Runner

__all__ = ["SyncWaits", "Waits"]

log = logging.getLogger("rjobs")
_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class _Waiter:
    """One caller of :meth:`Waits.wait`: its job, the future the reader resolves, the last status."""

    __slots__ = ("future", "jid", "status")

    def __init__(self, jid: str, future: asyncio.Future[JobOutcome]) -> None:
        self.jid = jid
        self.future = future
        self.status: str | None = None


class _Line:
    """The reader's dedicated connection for its blocking reads: a lean :class:`Link` where the
    client allows one, else a single-connection client on the redis-py client's pool (rjobs.testing's
    fakeredis blocks on XREAD too, without holding up the event loop)."""

    def __init__(self, client: aredis.Redis) -> None:
        self._client = client
        settings = LinkSettings.of(client)
        block_s = WAIT_BLOCK_MS / 1000
        # A blocking read answers after its block time: the link may wait that long on top of the
        # client's socket_timeout before it calls the connection dead.
        self._links = LoopLinks(
            None if settings is None else settings.with_timeout((settings.timeout or 5.0) + block_s)
        )
        self._single: aredis.Redis | None = None
        timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        # redis-py does not extend socket_timeout for blocking commands: block for less than it.
        self.block_ms = WAIT_BLOCK_MS if not timeout else max(1, min(WAIT_BLOCK_MS, int(timeout * 500)))

    async def read(self, cmd: Cmd) -> list[tuple[Any, Any]]:
        """The entries an XREAD returned (empty when it timed out)."""
        link = self._links.here()
        if link is None:
            if self._single is None:
                self._single = self._client.client()
            return stream_entries(await self._single.execute_command(*cmd.args))  # type: ignore[no-untyped-call]
        raw = (await link.exchange(hiredis.pack_command(cmd.args), 1))[0]  # type: ignore[arg-type]
        if isinstance(raw, ResponseError):
            raise raw
        return stream_entries(parse_reply(cmd, raw))

    async def reset(self) -> None:
        """Drop the connection (the next read opens a new one)."""
        self._links.close()
        if self._single is not None:
            single, self._single = self._single, None
            with contextlib.suppress(*_DOWN):
                await single.aclose()


class _Reader:
    """The waiters of one event loop and the task that reads the queue stream for them."""

    def __init__(self, owner: Waits) -> None:
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        self.waiters: dict[str, set[_Waiter]] = {}
        self.task: asyncio.Task[None] | None = None
        self.line = _Line(owner.runner.client)
        self._added = asyncio.Event()
        self._last: Any = None  # the stream id read up to; None: no position yet

    def add(self, jid: str) -> _Waiter:
        """Register a waiter for ``jid``, before its status is read."""
        waiter = _Waiter(jid, self.loop.create_future())
        self.waiters.setdefault(jid, set()).add(waiter)
        return waiter

    def serve(self) -> None:
        """Make sure the task runs: a registered waiter's job was not final. Starting only now is
        safe: a new task re-checks every waiter registered before it took its position."""
        if self.task is None:
            self.task = self.loop.create_task(self._run(), name="rjobs-wait-reader")
        self._added.set()

    def remove(self, waiter: _Waiter) -> None:
        """Unregister a waiter (resolved, timed out or cancelled)."""
        group = self.waiters.get(waiter.jid)
        if group is not None:
            group.discard(waiter)
            if not group:
                del self.waiters[waiter.jid]

    def fail_all(self, exc: BaseException) -> None:
        """Fail every pending waiter with ``exc``."""
        for group in self.waiters.values():
            for waiter in group:
                if not waiter.future.done():
                    waiter.future.set_exception(exc)

    async def _run(self) -> None:
        plans, runner = self.owner.plans, self.owner.runner
        failures, next_check = 0, 0.0
        try:
            while True:
                if not self.waiters:
                    self._last = None  # nobody to serve: take a new position when someone comes
                    self._added.clear()
                    try:
                        await asyncio.wait_for(self._added.wait(), self.owner.idle_stop)
                    except asyncio.TimeoutError:
                        if not self.waiters:
                            return
                    continue
                try:
                    if self._last is None:
                        newest = await runner.command(plans.wait_position())
                        self._last = newest[0][0] if newest else b"0-0"
                        next_check = 0.0  # waiters registered before the position: re-check them now
                    now = self.loop.time()
                    if now >= next_check:
                        await self._settle(list(self.waiters))
                        next_check = self.loop.time() + WAIT_RECHECK
                        continue
                    block = min(self.line.block_ms, max(1, int((next_check - now) * 1000)))
                    entries = await self.line.read(plans.wait_read(self._last, block))
                    failures = 0
                    if entries:
                        self._last = entries[-1][0]
                        done = [jid for jid in plans.wait_finals(entries) if jid in self.waiters]
                        if done:
                            await self._settle(done)
                except ResponseError as exc:
                    if redirect_of(exc) is None:
                        raise
                    # The queue's slot moved (a failover, a migration): a read through the runner
                    # follows the cluster to the new owner, then the reader blocks there.
                    await self.line.reset()
                    await runner.command(plans.wait_position())
                    self.line = _Line(runner.client)
                    next_check = 0.0
                except _DOWN as exc:
                    failures += 1
                    log.warning("wait reader: %s: %s (reconnecting)", type(exc).__name__, exc)
                    await self.line.reset()
                    self.line = _Line(runner.client)  # on a cluster: the slot's owner as now known
                    next_check = 0.0  # whatever happened meanwhile: re-check every waited job
                    await asyncio.sleep(min(1.0, 0.05 * 2 ** min(failures, 5)))
        except Exception as exc:  # a reply the reader cannot use: fail the waiters, not silently hang
            log.exception("wait reader stopped")
            self.fail_all(exc)
        finally:
            self.task = None
            self._last = None
            await self.line.reset()

    async def _settle(self, jids: list[str]) -> None:
        """Read the jobs' status (pipelined, in chunks) and resolve the waiters of final ones."""
        plans = self.owner.plans
        for i in range(0, len(jids), WAIT_COUNT):
            chunk = jids[i : i + WAIT_COUNT]
            replies = await self.owner.runner.run_many([plans.wait_check(jid) for jid in chunk])
            for jid, fields in zip(chunk, replies):
                group = self.waiters.get(jid)
                if not group:
                    continue
                outcome: JobOutcome | BaseException | None
                try:
                    if isinstance(fields, BaseException):
                        raise fields
                    outcome = plans.wait_settle(jid, fields)
                except (JobNotFound, ResponseError) as exc:
                    outcome = exc
                for waiter in group:
                    if waiter.future.done():
                        continue
                    if outcome is None:
                        waiter.status = plans.wait_status(fields)
                    elif isinstance(outcome, BaseException):
                        waiter.future.set_exception(outcome)
                    else:
                        waiter.future.set_result(outcome)


class Waits:
    """Every ``wait()`` of one async queue: one reader per event loop (see the module's doc)."""

    #: Seconds without waiters after which the reader stops and closes its connection.
    idle_stop = 5.0

    def __init__(self, runner: Runner, plans: ReadPlans) -> None:
        self.runner = runner
        self.plans = plans
        self._reader: _Reader | None = None

    def _reader_here(self) -> _Reader:
        reader = self._reader
        if reader is None or reader.loop is not asyncio.get_running_loop():
            reader = self._reader = _Reader(self)
        return reader

    @property
    def reading(self) -> bool:
        """True while a reader task runs in the current event loop (for tests and monitoring)."""
        reader = self._reader
        return reader is not None and reader.task is not None and reader.loop is asyncio.get_running_loop()

    async def wait(self, job_id: str, timeout: float | None) -> JobOutcome:
        """The job's outcome once it is final; WaitTimeout after ``timeout`` seconds (None: no limit;
        0: only look once). The first status read is not cut short by the timeout."""
        plans = self.plans
        jid = plans.wait_id(job_id, timeout)
        started = time.monotonic()
        reader = self._reader_here()
        waiter = reader.add(jid)  # first: from now on a final move reaches the waiter (module doc)
        try:
            fields = await self.runner.command(plans.wait_check(jid))
            outcome = plans.wait_settle(jid, fields)
            if outcome is not None:
                return outcome
            if waiter.status is None:
                waiter.status = plans.wait_status(fields)
            if timeout is None:
                reader.serve()
                return await waiter.future
            remaining = timeout - (time.monotonic() - started)
            if remaining > 0:
                reader.serve()
                await asyncio.wait((waiter.future,), timeout=remaining)
            if waiter.future.done():
                return waiter.future.result()
            if remaining > 0:  # the reader re-checks once a second: look once more at the deadline
                fields = await self.runner.command(plans.wait_check(jid))
                if (outcome := plans.wait_settle(jid, fields)) is not None:
                    return outcome
                waiter.status = plans.wait_status(fields)
            raise WaitTimeout(f"job {jid!r} still {waiter.status} after {timeout} s")
        finally:
            reader.remove(waiter)

    async def aclose(self) -> None:
        """Stop this event loop's reader; waits still pending fail with RjobsError."""
        reader, self._reader = self._reader, None
        if reader is None or reader.loop is not asyncio.get_running_loop():
            return
        reader.fail_all(RjobsError("the queue was closed while waiting"))
        task = reader.task
        if task is not None:
            task.cancel()
            await asyncio.wait((task,))
        await reader.line.reset()


class SyncWaits:
    """Every ``wait()`` of one blocking queue: the calling thread blocks on the queue stream
    (``XREAD BLOCK``, at most 1 s at a time) and re-reads the job's status when the job moves into
    a final state, and at least once a second (the plan :meth:`ReadPlans.wait`)."""

    def __init__(self, runner: SyncRunner, plans: ReadPlans) -> None:
        self.runner = runner
        self.plans = plans

    def wait(self, job_id: str, timeout: float | None) -> JobOutcome:
        """The job's outcome once it is final; WaitTimeout after ``timeout`` seconds."""
        return drive_sync(self.runner, self.plans.wait(job_id, timeout))

    def close(self) -> None:
        """Nothing to stop: a blocking wait holds its connection only while it runs."""
