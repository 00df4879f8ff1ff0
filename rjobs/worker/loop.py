"""The worker: claims jobs in batches under a lease, runs them, writes their outcomes in batches,
heartbeats, reaps expired leases, and shuts down gracefully.

Loop (one anyio task group on asyncio):

- **claim**: one ``claim`` call leases up to the free slots (it also promotes due delayed jobs).
  A busy worker claims again once ``max(1, concurrency // 4)`` slots are free, an idle one at
  once. With nothing to claim it blocks on ``BLPOP`` of the queues' wake lists over a dedicated
  connection, for at most min(time to the next delayed job, 1 s, reaper interval): enqueue and
  claim push a wake token, so an idle worker starts a new job within a round trip. No polling.
- **run**: ``concurrency`` long-lived slot tasks (:mod:`rjobs.worker.pool`) take the claimed jobs and run
  them one after another, each job under its own cancel scope (see :mod:`rjobs.worker.execution`); async
  functions run in the loop, sync ones in threads behind a ``CapacityLimiter(concurrency)``. Call
  convention: ``fn(ctx, params)``.
- **finish**: outcomes go through a :class:`rjobs.worker.execution.Finisher` per queue: one fenced ``finish``
  call per batch.
- **heartbeat**: :class:`rjobs.worker.leases.LeaseKeeper` — see :mod:`rjobs.worker.leases` for how heartbeats
  survive a busy loop or a GIL-hogging job.
- **reaper**: every worker runs ``reap`` every ``lease / 2`` (+-20% jitter) for a bounded batch;
  the script is safe to run from many workers at once.
- **shutdown** (``stop()``, SIGTERM/SIGINT): stop claiming, let running jobs finish within
  ``grace``, then cancel the rest and hand them straight back to the ready state without spending
  the attempt (when the machine has that edge — TASK's ``in_progress`` has not, so such jobs are
  left to their lease: the reaper re-queues or fails them once it expires). A second signal skips
  the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from collections.abc import Mapping, Sequence

import anyio

from rjobs.client.queue import Queue
from rjobs.client.schedules import Cron
from rjobs.store.clients import server_label
from rjobs.store.keys import validate_name
from rjobs.worker.claims import Claimer
from rjobs.worker.clock import ServerClock
from rjobs.worker.cron import CronTicker, declared_schedules
from rjobs.worker.execution import JobRunner, Moves
from rjobs.worker.finisher import Finisher
from rjobs.worker.functions import Functions, registry
from rjobs.worker.health import Health, HealthPath
from rjobs.worker.hooks import Hook, Hooks, WorkerState
from rjobs.worker.inflight import Held, HeldState
from rjobs.worker.leases import RETRYABLE, LeaseBook, LeaseKeeper
from rjobs.worker.pool import JobSlots, Served
from rjobs.worker.presence import Presence
from rjobs.worker.reaper import Reaper
from rjobs.worker.retry import RetryPolicy
from rjobs.worker.settings import (
    Given,
    QueueOrder,
    check_settings,
    make_worker_id,
    queues_of,
    reconfigured,
)
from rjobs.worker.signals import Pulse, watch_signals
from rjobs.worker.startup import reach_server
from rjobs.worker.stats import WorkerStats
from rjobs.worker.wake import Waker

__all__ = ["Worker", "WorkerStats", "make_worker_id"]

log = logging.getLogger("rjobs.worker")
IDLE_WAIT_CAP = 1.0  # seconds an idle worker blocks before claiming again (covers a lost wake token)


class Worker:
    """Runs jobs of one or more queues (served in the order given when several have work, or with
    ``order="weighted"`` shared by ``weights``: :class:`rjobs.worker.settings.QueueOrder`; the
    partitions of one queue in turn).

    ``functions``: a mapping name -> callable, or callables / :func:`rjobs.job` functions
    registered under their name. The worker only ever runs registered functions and claims only
    jobs of those types (a job of another type waits in its lane for a worker that runs it).
    ``lease`` is the lease length (s), ``heartbeat`` the renewal interval (default ``lease / 3``),
    ``grace`` how long shutdown waits for running jobs.
    A job whose lease expired ``max_lease_losses`` times (its worker died each time) is failed
    with code ``poison_pill`` by the reaper. ``burst=True`` returns from :meth:`run` once no job
    is ready, due or running. Queues may be given by name (then ``url`` applies). A server that
    cannot be reached at start is tried again with a back-off, a log line per try, for
    ``start_timeout`` seconds (None, the default: for as long as it takes). ``on_startup``,
    ``on_shutdown``, ``before_job`` and ``after_job`` are lifecycle hooks, ``state`` the namespace
    they share with every job (``ctx.state``); see :mod:`rjobs.worker.hooks`. ``health_file`` and
    ``health_port`` (on ``health_host``) tell supervisors it heartbeats (:mod:`rjobs.worker.health`).
    ``cron``: schedules of periodic jobs (:class:`rjobs.Cron`) stored at start (:mod:`rjobs.worker.cron`).
    """

    def __init__(
        self,
        queues: Given | Sequence[Given],
        functions: Functions = (),
        *,
        concurrency: int = 10,
        lease: float = 30.0,
        heartbeat: float | None = None,
        grace: float = 30.0,
        max_lease_losses: int = 3,
        worker_id: str | None = None,
        burst: bool = False,
        retry: RetryPolicy | None = None,
        url: str | None = None,
        reap_limit: int = 100,
        start_timeout: float | None = None,
        on_startup: Hook | None = None,
        on_shutdown: Hook | None = None,
        before_job: Hook | None = None,
        after_job: Hook | None = None,
        shutdown_timeout: float = 30.0,
        health_file: HealthPath | None = None,
        health_port: int | None = None,
        health_host: str = "127.0.0.1",
        order: str | None = None,
        weights: Mapping[str, float] | None = None,
        cron: Sequence[Cron] = (),
    ) -> None:
        self.hooks = Hooks(on_startup, on_shutdown, before_job, after_job, shutdown_timeout=shutdown_timeout)
        self.state = WorkerState()  # ctx.state of every job; on_startup fills it
        self.functions = registry(functions)
        self._own: list[Queue] = []
        self.queues = queues_of(queues, url, self._own)
        self.order = QueueOrder(order, weights)  # strict, or weighted by queue name (rjobs.worker.settings)
        self.cron = declared_schedules(cron, self.queues)
        self.concurrency = concurrency
        self.lease = float(lease)
        self.heartbeat = float(heartbeat) if heartbeat is not None else self.lease / 3
        self.grace = float(grace)
        self.max_lease_losses = max_lease_losses
        self.worker_id = validate_name("worker id", worker_id) if worker_id is not None else make_worker_id()
        self.burst = burst
        self.retry = retry or RetryPolicy()
        self.reap_limit = reap_limit
        self.start_timeout = start_timeout  # None: keep trying to reach the server at start
        self.stats = WorkerStats()
        self.health = Health(
            self.worker_id, self.heartbeat, health_file, health_port, health_host, lambda: self._stopping
        )
        self._validate()
        self._stopping = False
        self._force = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle_scope: anyio.CancelScope | None = None  # set while blocked waiting for work
        self._grace_scope: anyio.CancelScope | None = None
        # Per-run machinery, built by run() (_setup).
        self._clock = ServerClock()
        self._pulse = Pulse()
        self._book = LeaseBook(self.stats)
        self._served: list[Served] = []
        self._claimer = Claimer([], self.worker_id, self.lease, self.stats)
        self._runner: JobRunner | None = None
        self._jobs: JobSlots | None = None

    def configure(
        self,
        *,
        url: str | None = None,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        burst: bool | None = None,
    ) -> None:
        """Override settings before :meth:`run` (what ``rjobs worker`` options do): ``url`` moves
        every queue to that server; ``queues`` names the queues to serve, those the worker does
        not define taking the first queue's machine, config and server; ``concurrency`` and
        ``burst`` replace the worker's own. Left out: unchanged."""
        if url is not None or queues is not None:
            self.queues = reconfigured(self.queues, url, queues, self._own)
        if concurrency is not None:
            self.concurrency = concurrency
        if burst is not None:
            self.burst = burst
        self._validate()

    def _validate(self) -> None:
        check_settings(self.concurrency, self.lease, self.heartbeat, self.grace, self.max_lease_losses, self.reap_limit)
        self.order.check(self.queues)

    # -- control ------------------------------------------------------------------------------------
    def stop(self, force: bool = False) -> None:
        """Stop claiming and shut down gracefully; ``force`` skips the grace period. Safe to call
        from any thread (for signals, use ``run(install_signal_handlers=True)``)."""
        loop = self._loop
        if loop is not None and loop.is_running() and not _in_loop(loop):
            loop.call_soon_threadsafe(self._stop, force)
        else:
            self._stop(force)

    def _stop(self, force: bool) -> None:
        if not self._stopping:
            log.info(
                "worker %s stopping: no new jobs; waiting up to %.1f s for running ones", self.worker_id, self.grace
            )
        self._stopping = True
        self._force = self._force or force
        self.hooks.interrupt()
        for scope in (self._idle_scope, self._grace_scope if force else None):
            if scope is not None:
                scope.cancel()
        if force:
            for served in self._served:
                served.finisher.abandon()
        self._pulse.notify()

    @property
    def busy_threads(self) -> int:
        """Sync job functions and hooks still running in threads (including ones abandoned on cancel)."""
        return self.hooks.threads_busy + (self._runner.threads_busy if self._runner is not None else 0)

    @property
    def held(self) -> list[Held]:
        """The jobs held now (a copy; none between runs); ``Held.slot`` is the index in ``queues``."""
        return list(self._book)

    # -- run ----------------------------------------------------------------------------------------
    async def run(self, *, install_signal_handlers: bool = False) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT when ``install_signal_handlers``), or, in
        burst mode, until no job is left to do. Cancelling it hands running jobs back."""
        self._loop = asyncio.get_running_loop()
        waker = Waker(self.queues, list(self.functions))
        started = False
        restore = watch_signals(self._on_signal) if install_signal_handlers else None  # also while shutting down
        try:
            await self.hooks.startup(self.state, lambda: self._stopping)
            started = True
            if not await self._start():
                return  # stopped while waiting for the server
            jobs = self._setup()
            self.hooks.ready()
            async with anyio.create_task_group() as services:
                services.start_soon(self._keeper.run)
                services.start_soon(self._reaper.run)
                services.start_soon(self.health.serve)
                services.start_soon(CronTicker(self.cron, self.queues, self.worker_id).run)
                for served in self._served:
                    services.start_soon(served.finisher.run)
                async with anyio.create_task_group() as slots:
                    jobs.start(slots)
                    await self._claim_loop(jobs, waker)
                    await self._wind_down(jobs)
                    slots.cancel_scope.cancel()  # every job has ended: the slots are idle
                await self._drain()
                services.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if self._jobs is not None:
                    self._jobs.hand_back_unstarted()
                for served in self._served:  # outcomes still buffered when the worker itself was cancelled
                    await served.finisher.flush()
                if self._runner is not None:
                    await self._runner.children.aclose()
                if started:
                    await self.hooks.shutdown(self.state)
                if self._served:  # a clean stop: unlisted at once, not a few leases later
                    await self._keeper.leave()
                await waker.aclose()
                for q in self._own:
                    await q.close()
            self._served, self._jobs = [], None
            self._stopping = self._force = False
            log.info("worker %s stopped (%s)", self.worker_id, self.stats)
            if restore is not None:
                restore()

    async def _start(self) -> bool:
        """Declare the queues and read the server's clock, waiting for a server that cannot be
        reached yet (:mod:`rjobs.worker.startup`); False when stopped meanwhile."""
        return await reach_server(self.queues, self._clock, self.worker_id, self.start_timeout, self._backoff)

    async def _backoff(self, delay: float) -> bool:
        await self._idle(delay, None)
        return not self._stopping

    def _setup(self) -> JobSlots:
        self._pulse = Pulse()
        self._book = LeaseBook(self.stats, on_empty=self._book_emptied)
        self._served = [
            Served(i, q, Moves(q.machine), Finisher(q, self.worker_id, self._book)) for i, q in enumerate(self.queues)
        ]
        self._claimer = Claimer(self._served, self.worker_id, self.lease, self.stats, list(self.functions), self.order)
        self._runner = JobRunner(
            self.functions,
            worker_id=self.worker_id,
            retry=self.retry,
            limiter=anyio.CapacityLimiter(self.concurrency),
            clock=self._clock,
            hooks=self.hooks,
            state=self.state,
        )
        self._keeper = LeaseKeeper(
            self._book, self.queues, self.worker_id, lease=self.lease, interval=self.heartbeat,
            details=Presence(self, self._book, self._clock).info, on_round=self.health.beat,
        )  # fmt: skip
        self._reaper = Reaper(
            self.queues,
            self.stats,
            self._clock,
            lease=self.lease,
            max_lease_losses=self.max_lease_losses,
            limit=self.reap_limit,
        )
        self._jobs = jobs = JobSlots(self.concurrency, self._served, self._runner, self._book, self._pulse)
        log.info(
            "worker %s: server %s, queues %s, functions %s, concurrency %d, lease %.1f s",
            self.worker_id,
            " ".join(dict.fromkeys(server_label(q.client) for q in self.queues)),
            ",".join(q.name for q in self.queues),
            ",".join(sorted(self.functions)) or "-",
            self.concurrency,
            self.lease,
        )
        return jobs

    async def _claim_loop(self, jobs: JobSlots, waker: Waker) -> None:
        failures = 0
        while not self._stopping:
            free = jobs.free
            if jobs.running and free < jobs.claim_min:
                await self._pulse.wait()  # enough slots free up, or stop()
                continue
            try:
                claimed, more, due = await self._claimer.claim(jobs, free)
                failures = 0
            except Exception as exc:  # Redis down, or a reply that cannot be decoded: never die here
                failures += 1
                delay = min(5.0, 0.05 * 2**failures)
                if isinstance(exc, RETRYABLE):
                    log.warning("claim failed (%s: %s); retrying in %.2f s", type(exc).__name__, exc, delay)
                else:
                    log.exception("claim failed; retrying")
                await self._idle(delay, None)
                continue
            if claimed >= free or more:
                continue
            due_in = None if due is None else (due - self._clock.now_ms()) / 1000
            if self.burst and claimed == 0 and (due_in is None or due_in > 0) and not len(self._book):
                log.info("worker %s: burst done, nothing left to run", self.worker_id)
                return
            timeout = min(IDLE_WAIT_CAP, self.lease / 2, due_in if due_in is not None else math.inf)
            await self._idle(max(0.002, timeout), waker)

    async def _idle(self, block: float, waker: Waker | None) -> None:
        with anyio.CancelScope() as scope:
            self._idle_scope = scope
            try:
                if self._stopping:
                    return
                if waker is None:
                    await anyio.sleep(block)  # backoff after an error, cut short by stop()
                    return
                try:
                    await waker.wait(block)
                except RETRYABLE as exc:
                    log.warning("waiting for jobs failed (%s: %s)", type(exc).__name__, exc)
                    await anyio.sleep(min(block, 0.5))
            finally:
                self._idle_scope = None

    def _book_emptied(self) -> None:
        # Burst mode exits once nothing is held: cut the idle wait short to notice at once.
        if self.burst and self._idle_scope is not None:
            self._idle_scope.cancel()

    async def _wind_down(self, jobs: JobSlots) -> None:
        """After claiming stopped: give running jobs ``grace`` seconds, then hand the rest back."""
        if jobs.running and not self._force:
            with anyio.CancelScope() as self._grace_scope, anyio.move_on_after(self.grace):
                await jobs.wait_idle()
            self._grace_scope = None
        for held in self._book:
            if held.state is HeldState.RUNNING:
                log.info("job %s: still running at shutdown; handing it back", held.job.id)
                held.stop(HeldState.HANDBACK, "worker shutting down")
        await jobs.wait_idle()  # cancelled jobs end at their next await (a sync one is abandoned to its thread)

    async def _drain(self) -> None:
        """Wait until every outcome is written (each write is bounded, so this ends)."""
        with anyio.move_on_after(30):
            while len(self._book):
                await self._book.changed.wait()

    def _on_signal(self, signum: int) -> None:
        force = self._stopping
        log.warning("%s: %s", signal.Signals(signum).name, "stopping now" if force else "shutting down")
        self.stop(force=force)


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
