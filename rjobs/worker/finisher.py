"""Writing the outcomes of a worker's jobs: fenced finish calls, batched per queue."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import anyio.to_thread

from rjobs import tracing
from rjobs.errors import LeaseLost, RjobsError
from rjobs.store.scripts import MoveRequest, outcome_error
from rjobs.worker.inflight import Held, HeldState
from rjobs.worker.leases import FINAL_WRITE_TIMEOUT, LeaseBook, transient
from rjobs.worker.pool import SlotPool
from rjobs.worker.signals import Pulse

if TYPE_CHECKING:
    from rjobs.client.queue import Queue


__all__ = ["Finisher"]

log = logging.getLogger("rjobs.worker")


class Finisher:
    """Buffers the fenced outcome writes of one queue and sends them in batches: one ``finish``
    call per batch. A write is sent at once when no call is in flight; the writes that arrive
    while one is (one round trip) form the next batch, and a second call starts early once
    ``eager`` writes are waiting — so batching never delays a write by more than a round trip.
    Batches are sent by ``max_inflight`` long-lived sender tasks (a task per batch cost more than
    the batch's own bookkeeping)."""

    def __init__(
        self,
        queue: Queue,
        worker_id: str,
        book: LeaseBook,
        *,
        max_batch: int = 500,
        eager: int = 50,
        max_inflight: int = 2,
    ) -> None:
        self.queue = queue
        self.worker_id = worker_id
        self.book = book
        self.stats = book.stats
        self.max_batch = max_batch
        self.eager = eager
        self.max_inflight = max_inflight
        self._items: list[tuple[Held, MoveRequest]] = []
        self._inflight = 0
        self._pulse = Pulse()
        self._abandon = False  # a forced stop: no more retries
        self._failure: BaseException | None = None  # why the last try failed, for the give-up line

    @property
    def idle(self) -> bool:
        """True when nothing is buffered or being sent."""
        return not self._items and self._inflight == 0

    def submit(self, held: Held, request: MoveRequest) -> None:
        """Queue one outcome write (never blocks)."""
        self._items.append((held, request))
        if self._should_send():  # else a send in flight takes it; do not wake the loop per job
            self._pulse.notify()

    def _should_send(self) -> bool:
        if not self._items:
            return False
        return self._inflight == 0 or (len(self._items) >= self.eager and self._inflight < self.max_inflight)

    def _take(self) -> list[tuple[Held, MoveRequest]]:
        batch, self._items = self._items[: self.max_batch], self._items[self.max_batch :]
        return batch

    async def run(self) -> None:
        """Send batches until cancelled (a batch in flight is shielded and completes)."""
        # At most max_inflight batches are out (_should_send), so each has an idle sender.
        senders = SlotPool(self.max_inflight, self._send_counted, name="rjobs finish sender")
        try:
            async with anyio.create_task_group() as tg:
                senders.start(tg)
                while True:
                    while not self._should_send():
                        await self._pulse.wait()
                    if self._inflight == 0:
                        # One scheduler pass lets jobs that ended in this same loop tick join the batch.
                        await anyio.lowlevel.checkpoint()
                    self._inflight += 1
                    senders.submit(self._take())
        finally:
            for batch in reversed(senders.drain()):  # cancelled before a sender took it: flush() sends it
                self._items[:0] = batch

    async def _send_counted(self, batch: list[tuple[Held, MoveRequest]]) -> None:
        try:
            await self.send(batch)
        finally:
            self._inflight -= 1
            self._pulse.notify()

    def abandon(self) -> None:
        """Stop retrying failed writes (a forced stop): what cannot be written now is left to the
        leases and the reaper."""
        self._abandon = True

    async def flush(self) -> None:
        """Send everything still buffered now (used on the way out)."""
        while self._items:
            await self.send(self._take())

    async def send(self, batch: list[tuple[Held, MoveRequest]]) -> None:
        """One fenced ``finish`` call for the batch, shielded from cancellation and bounded in time."""
        live = [(h, r) for h, r in batch if h.live]
        for h, _ in batch:
            if not h.live:
                self.book.remove(h)
        if not live:
            return
        outcomes: list[str] | None = None
        self._failure = None
        spans = tracing.start_finish(self.queue.name, live) if tracing.enabled() else None
        # one scope, shielded, with its own deadline (cheaper than shield + move_on_after); _finish
        # moves the deadline out to the leases' end while Redis is down or refuses for now
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + FINAL_WRITE_TIMEOUT) as scope:
            try:
                outcomes = await self._finish(live, scope)
            except RjobsError as exc:
                self._failure = exc
        if spans is not None:
            tracing.end_finish(spans, outcomes)
        if outcomes is None:
            failure = self._failure
            log.error(
                "could not record the outcome of %d job(s) (%s); their leases will expire and the reaper "
                "will retry or fail them",
                len(live),
                f"{type(failure).__name__}: {failure}" if failure is not None else "no answer from Redis",
            )
            for h, _ in live:
                self.book.remove(h)
            return
        for (h, req), outcome in zip(live, outcomes):
            self._settle(h, req, outcome)

    async def _finish(self, live: list[tuple[Held, MoveRequest]], scope: anyio.CancelScope) -> list[str] | None:
        requests = [r for _, r in live]
        delay = 0.05
        while True:
            try:
                self.stats.finish_calls += 1
                return await self.queue.backend.finish(self.worker_id, requests)
            except Exception as exc:
                if not transient(exc):
                    raise
                # Sent again, the fenced call writes only what it had not: worth trying while the
                # leases may hold (a refused call did not run; a broken connection may have run it).
                self._failure = exc
                if self._abandon:
                    return None
                scope.deadline = max(scope.deadline, max(h.safe_until for h, _ in live))
                log.warning("finish of %d job(s) failed (%s: %s); retrying", len(live), type(exc).__name__, exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _settle(self, held: Held, request: MoveRequest, outcome: str) -> None:
        err = outcome_error(outcome)
        if err is None:
            self.stats.finished += 1
            if held.state is HeldState.HANDBACK:
                self.stats.handed_back += 1
        elif isinstance(err, LeaseLost):
            held.state = HeldState.LOST
            log.warning(
                "job %s: lease lost before its outcome (%s) was recorded; discarded", held.job.id, request.target
            )
        else:
            log.error("job %s: could not move to %s: %s", held.job.id, request.target, err)
        self.book.remove(held)
