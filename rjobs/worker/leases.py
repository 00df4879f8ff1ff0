"""Lease bookkeeping of one worker: which jobs it holds under which fencing token, and the heartbeat
that keeps those leases alive (the reaper that recovers the leases dead workers left behind is
rjobs.worker.reaper).

Heartbeat under load — the decision
-----------------------------------
The heartbeat runs **in the event loop**, as one task, never in a thread of its own. A heartbeat
thread would keep renewing the leases of a worker whose loop is wedged, so its jobs would never
be recovered; a heartbeat from the loop proves that the thing which will finish the job is alive.
What keeps it on time:

- sync job functions run in worker threads (``anyio.to_thread``): pure-Python CPU work there
  releases the GIL every ``sys.getswitchinterval()`` (5 ms), so the loop still runs the heartbeat;
- the heartbeat is one script call per queue per interval (``lease / 3`` by default) for every
  held job, so its cost does not grow with the number of jobs;
- **loop-lag detection**: every wake-up measures how late it is and warns (an ``async def``
  function that blocks, or a C extension holding the GIL). Each held job carries ``safe_until``,
  the local monotonic time its lease is known to last (send time of the last renewal + lease,
  conservative because the server's deadline is computed after the send). When a heartbeat cannot
  get an answer (Redis unreachable, a partition), every running job whose lease would expire
  before the next attempt could renew it is cancelled and treated as lost: another worker may
  already run it, and fencing would reject our writes anyway. When Redis *can* answer — even
  after a long stall — its reply is authoritative: 'ok' renews the lease (nobody took the job),
  'lost' cancels the job, 'cancel' cancels it without writing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import redis.exceptions

from rjobs.errors import RjobsError
from rjobs.worker.inflight import Held, HeldState
from rjobs.worker.signals import Pulse
from rjobs.worker.stats import WorkerStats

if TYPE_CHECKING:
    from rjobs.client.queue import Queue

__all__ = ["FINAL_WRITE_TIMEOUT", "REDIS_DOWN", "REFRESH_ROUNDS", "RETRYABLE", "LeaseBook", "LeaseKeeper", "transient"]

log = logging.getLogger("rjobs.worker")

#: Errors that mean "Redis could not be reached or did not answer in time" (retry later).
REDIS_DOWN: tuple[type[BaseException], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
#: REDIS_DOWN or a script refusing the call: log, wait, try again.
RETRYABLE: tuple[type[BaseException], ...] = (*REDIS_DOWN, RjobsError)
#: Final writes (finish, hand-back) are shielded from cancellation and wait at least this long;
#: while Redis is down or refuses for now, the worker keeps trying until the jobs' leases run out.
FINAL_WRITE_TIMEOUT = 5.0

#: A worker's details (rjobs.worker.presence) go with a heartbeat when they changed, and unchanged
#: every this many rounds: a server that lost them (a restart without persistence, a failover)
#: has them back within that many heartbeats.
REFRESH_ROUNDS = 10


def transient(exc: BaseException) -> bool:
    """True when the same call may succeed later: Redis unreachable, or refusing for now (loading,
    busy, out of memory, read-only: :class:`rjobs.ServerRefused` with ``retryable``)."""
    return isinstance(exc, REDIS_DOWN) or (isinstance(exc, RjobsError) and exc.retryable)


class LeaseBook:
    """Every job the worker holds, by (queue slot, job id, token); notifies ``changed`` on removal and
    counts how held jobs ended (lost leases, cancellations) in ``stats``."""

    def __init__(self, stats: WorkerStats, on_empty: Callable[[], None] | None = None) -> None:
        # Keyed by token too: a worker may hold a job again while its lost attempt still winds down.
        self._held: dict[tuple[int, str, str], Held] = {}
        self.changed = Pulse()
        self.stats = stats
        self._on_empty = on_empty

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self) -> Iterator[Held]:
        return iter(list(self._held.values()))

    def add(self, held: Held) -> None:
        """Start tracking a freshly claimed job."""
        self._held[held.slot, held.job.id, held.job.token] = held

    def remove(self, held: Held) -> None:
        """Forget a job (its outcome is written, or nothing will be)."""
        job = held.job
        key = (held.slot, job.id, job.token)
        if self._held.get(key) is held:
            del self._held[key]
            if held.state is HeldState.LOST:
                self.stats.lease_lost += 1
            elif held.state is HeldState.CANCELLED:
                self.stats.cancelled += 1
            self.changed.notify()
            if not self._held and self._on_empty is not None:
                self._on_empty()

    def live(self, slot: int) -> list[Held]:
        """The jobs of a queue whose leases need renewing."""
        return [h for h in self._held.values() if h.slot == slot and h.live]


class LeaseKeeper:
    """The heartbeat task: one ``heartbeat`` call per queue per interval for all held jobs, which
    also lists the worker as live with its ``details`` (a JSON object: rjobs.worker.presence);
    ``on_round`` is told whether every queue answered (rjobs.worker.health)."""

    def __init__(
        self,
        book: LeaseBook,
        queues: Sequence[Queue],
        worker_id: str,
        *,
        lease: float,
        interval: float,
        details: Callable[[], bytes] | None = None,
        on_round: Callable[[bool], None] | None = None,
    ) -> None:
        self.book = book
        self.queues = queues
        self.worker_id = worker_id
        self.lease = lease
        self.lease_ms = int(lease * 1000)
        self.interval = interval
        self.retry_delay = min(interval / 4, 0.5)
        # Cancel a little before the lease could expire: a reaper elsewhere may act right at expiry.
        self.margin = min(lease * 0.1, 2.0)
        self.stats = book.stats
        self.details = details
        self.on_round = on_round
        self.info = b""  # the details of this round
        # what each queue stored of them, as far as this worker knows: unchanged details are sent
        # again only every REFRESH_ROUNDS rounds (in case the server lost them), not every beat
        self._stored = [b""] * len(queues)
        self._round = 0

    async def run(self) -> None:
        """Beat at once (the worker is listed as soon as it runs), then forever (until cancelled),
        warning when the event loop lags."""
        due = anyio.current_time()
        while True:
            await anyio.sleep(max(0.0, due - anyio.current_time()))
            lag = anyio.current_time() - due
            if lag > max(0.1, self.interval / 2):
                log.warning(
                    "event loop was blocked for %.2f s (heartbeat every %.2f s, lease %.2f s): leases are at "
                    "risk. Run blocking code in plain `def` job functions (threads), not in `async def` ones",
                    lag,
                    self.interval,
                    self.lease,
                )
            ok = await self.beat()
            due = anyio.current_time() + (self.interval if ok else self.retry_delay)

    async def beat(self) -> bool:
        """Renew every live lease once; True when every queue answered."""
        results: list[bool] = [True] * len(self.queues)
        self.info = self.details() if self.details is not None else b""
        self._round += 1
        if self._round % REFRESH_ROUNDS == 0:
            self._stored = [b""] * len(self.queues)

        async def one(slot: int) -> None:
            results[slot] = await self._beat_slot(slot)

        if len(self.queues) == 1:
            await one(0)
        else:
            async with anyio.create_task_group() as tg:
                for slot in range(len(self.queues)):
                    tg.start_soon(one, slot)
        if self.on_round is not None:
            self.on_round(all(results))
        return all(results)

    async def renew(self, slot: int, pairs: list[tuple[str, str]]) -> list[str]:
        """The one Redis call of a beat for one queue (chunked by the script's limit), with the
        worker's details of this round."""
        info = self.info if self.info != self._stored[slot] else b""
        self._stored[slot] = b""  # until this call answers
        replies = await self.queues[slot].backend.heartbeat(self.worker_id, self.lease_ms, pairs, info=info)
        self._stored[slot] = self.info
        return replies

    async def leave(self) -> None:
        """At a clean shutdown: drop the worker from every queue's live workers and details at once
        (else the reaper does, a few leases later). Best effort, within two seconds."""
        with anyio.move_on_after(2.0):
            for queue in self.queues:
                try:
                    await queue.backend.leave(self.worker_id, self.lease_ms)
                except RETRYABLE as exc:
                    log.info("worker %s: could not unlist it from %s (%s)", self.worker_id, queue.name, exc)

    async def _beat_slot(self, slot: int) -> bool:
        held = self.book.live(slot)
        sent = anyio.current_time()
        timeout = self.interval
        if held:
            # A late answer still renews (the deadline is set from server time when it runs), so
            # wait for one as long as the leases are safe — not a moment longer.
            timeout = max(0.05, min(h.safe_until for h in held) - self.margin - sent)
        error: BaseException | None = None
        replies: list[str] | None = None
        try:
            with anyio.move_on_after(timeout):
                replies = await self.renew(slot, [(h.job.id, h.job.token) for h in held])
        except RETRYABLE as exc:
            error = exc
        self.stats.heartbeats += 1
        if replies is None:
            self.stats.heartbeat_failures += 1
            why = f"{type(error).__name__}: {error}" if error is not None else f"no answer within {timeout:.2f} s"
            log.warning("heartbeat of %d job(s) failed (%s)", len(held), why)
            self._cancel_at_risk(held, why)
            return False
        for h, reply in zip(held, replies):
            if reply == "ok":
                h.safe_until = max(h.safe_until, sent + self.lease)
            elif reply == "cancel":
                if h.state is HeldState.RUNNING:
                    log.info("job %s was cancelled: stopping it", h.job.id)
                h.stop(HeldState.CANCELLED, "the job was cancelled")
            else:
                if h.state is HeldState.RUNNING:
                    log.warning(
                        "job %s: lease lost (token %s is no longer current): stopping it", h.job.id, h.job.token
                    )
                h.stop(HeldState.LOST, "the lease was lost")
        return True

    def _cancel_at_risk(self, held: list[Held], why: str) -> None:
        horizon = anyio.current_time() + self.retry_delay + self.margin
        for h in held:
            if h.state is HeldState.RUNNING and h.safe_until <= horizon:
                log.warning("job %s: lease could not be renewed before it expires (%s): stopping it", h.job.id, why)
                h.stop(HeldState.LOST, f"lease could not be renewed ({why})")
