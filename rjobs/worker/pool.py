"""The worker's job slots: ``concurrency`` long-lived tasks, started once in the worker's task
group, that take claimed jobs from a local backlog and run them one after another, each job under
its own cancel scope (:meth:`rjobs.worker.execution.JobRunner.execute`).

Why not one task per job: spawning an anyio task per claimed job was a large share of a no-op
job's worker CPU (benchmarks/README.md); a slot costs a future and one wake-up per job.

The backlog never outgrows the idle slots: the worker claims at most :attr:`JobSlots.free` jobs
(``concurrency`` minus the claimed jobs whose function has not ended), so every submitted job has an
idle slot on its way to it and starts within one scheduler pass. Jobs still in the backlog when the
slots are cancelled (the worker itself was cancelled) are handed back by
:meth:`JobSlots.hand_back_unstarted`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

import anyio.abc

from rjobs.models import ClaimedJob, JobError
from rjobs.worker.inflight import Held, HeldState
from rjobs.worker.leases import LeaseBook
from rjobs.worker.signals import Pulse, scope_factory

if TYPE_CHECKING:  # rjobs.worker.execution uses SlotPool for its finisher's senders
    from rjobs.client.queue import Queue
    from rjobs.store.scripts import MoveRequest
    from rjobs.worker.execution import JobRunner, Moves
    from rjobs.worker.finisher import Finisher

__all__ = ["JobSlots", "Served", "SlotPool"]

log = logging.getLogger("rjobs.worker")

T = TypeVar("T")


class SlotPool(Generic[T]):
    """``size`` slot tasks running ``run(item)`` for each submitted item, at most ``size`` at once.

    ``run`` must handle its own errors and cancellation (re-raising the latter): an exception out
    of it ends its slot and, through the task group, the worker."""

    def __init__(self, size: int, run: Callable[[T], Awaitable[None]], *, name: str = "rjobs slot") -> None:
        if size < 1:
            raise ValueError("a slot pool needs at least one slot")
        self.size = size
        self.name = name
        self._run = run
        self._backlog: deque[T] = deque()
        self._parked: deque[asyncio.Future[None]] = deque()  # one per idle slot, oldest first
        self.busy = 0  # slots running an item right now

    def __len__(self) -> int:
        """Items submitted and not yet taken by a slot."""
        return len(self._backlog)

    def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Start the slot tasks in ``tg`` (they run until it is cancelled)."""
        for i in range(self.size):
            tg.start_soon(self._serve, name=f"{self.name} {i}")

    def submit(self, item: T) -> None:
        """Queue one item for the next idle slot (never blocks; see the module docstring for why
        the caller must not submit more than there are idle slots)."""
        self._backlog.append(item)
        self._wake_one()

    def drain(self) -> list[T]:
        """Take every item no slot has started (used once the slots are gone)."""
        items = list(self._backlog)
        self._backlog.clear()
        return items

    def _wake_one(self) -> None:
        parked = self._parked
        while parked:
            fut = parked.popleft()
            if not fut.done():  # a slot cancelled while parked leaves its cancelled future here
                fut.set_result(None)
                return

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        backlog = self._backlog
        parked = self._parked
        run = self._run
        while True:
            # Take work before parking, with no await in between: an item submitted while this
            # slot was busy is never left waiting for a wake-up that went to another slot.
            if backlog:
                item = backlog.popleft()
                self.busy += 1
                try:
                    await run(item)
                finally:
                    self.busy -= 1
                continue
            fut: asyncio.Future[None] = loop.create_future()
            parked.append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled() and backlog:
                    self._wake_one()  # woken and cancelled in the same pass: pass the wake-up on
                raise


@dataclass
class Served:
    """One queue the worker serves, with what it needs per queue (``Held.slot`` is its index)."""

    index: int
    queue: Queue
    moves: Moves
    finisher: Finisher


class JobSlots:
    """The jobs a worker claimed and the slot tasks that run them; outcomes go to the queue's
    finisher. ``pulse`` is notified whenever at least ``claim_min`` slots are free (so also when the
    last job ends): the claim loop and the shutdown wait on it. Make it inside the event loop."""

    def __init__(
        self, concurrency: int, served: Sequence[Served], runner: JobRunner, book: LeaseBook, pulse: Pulse
    ) -> None:
        self.concurrency = concurrency
        self.claim_min = max(1, concurrency // 4)  # a busy worker claims again once this many are free
        self.served = served
        self.runner = runner
        self.book = book
        self.pulse = pulse
        self.running = 0  # claimed jobs whose function has not ended (started or not yet)
        self._pool: SlotPool[Held] = SlotPool(concurrency, self._run)
        self._new_scope = scope_factory()

    @property
    def free(self) -> int:
        """Slots with no job: how many jobs the worker may claim now."""
        return self.concurrency - self.running

    def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Start the slot tasks in ``tg``; cancel it once :attr:`running` is 0 to end them."""
        self._pool.start(tg)

    def add(self, served: Served, jobs: Sequence[ClaimedJob], safe_until: float) -> None:
        """Hold freshly claimed jobs (at most :attr:`free` of them) and start them."""
        if len(jobs) > self.free:  # never, the claim asks for at most `free`; they would wait their turn
            log.error("claimed %d job(s) with only %d free slot(s)", len(jobs), self.free)
        index, new_scope, book, submit = served.index, self._new_scope, self.book, self._pool.submit
        self.running += len(jobs)
        for job in jobs:
            held = Held(index, job, safe_until, new_scope())
            book.add(held)
            submit(held)

    async def wait_idle(self) -> None:
        """Return once no claimed job is left running (or waiting for its slot)."""
        while self.running:
            await self.pulse.wait()

    async def _run(self, held: Held) -> None:
        served = self.served[held.slot]
        request: MoveRequest | None
        try:
            request = await self.runner.execute(served.queue, served.moves, held)
        except Exception as exc:  # a bug in rjobs, not in the job: fail the job, keep the worker
            log.exception("job %s: internal error while running it", held.job.id)
            error = JobError(code="worker_error", message=f"{type(exc).__name__}: {exc}"[:2000])
            request = served.moves.fail(held.job, error) if held.live else None
        except BaseException:
            # The worker itself is being cancelled: hand the job back on the way out.
            self._hand_back(served, held, "worker cancelled")
            raise
        self._ended(served, held, request)

    def _hand_back(self, served: Served, held: Held, reason: str) -> None:
        held.stop(HeldState.HANDBACK, reason)
        self._ended(served, held, served.moves.handback(held.job) if held.state is HeldState.HANDBACK else None)

    def _ended(self, served: Served, held: Held, request: MoveRequest | None) -> None:
        self.running -= 1
        # Wake the claim loop (or the shutdown) only when it has something to do: a notify per job
        # woke it once per job at high concurrency.
        if self.concurrency - self.running >= self.claim_min:
            self.pulse.notify()
        if request is None or not held.live:
            self.book.remove(held)
            return
        if held.state is HeldState.RUNNING:
            held.state = HeldState.DONE
        served.finisher.submit(held, request)

    def hand_back_unstarted(self) -> None:
        """When the worker itself was cancelled: hand back the jobs no slot had started."""
        for held in self._pool.drain():
            self._hand_back(self.served[held.slot], held, "worker cancelled")
