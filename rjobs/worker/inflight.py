"""One job a worker holds (:class:`Held`) and where it is in its life on the worker
(:class:`HeldState`); its cancel flag is a :class:`rjobs.worker.signals.Flag`.

One is made per job, so it is a plain ``__slots__`` class: a dataclass holding an event object
was a measurable share of a no-op job's worker CPU (benchmarks/README.md, "What limits the
rest").
"""

from __future__ import annotations

import enum

import anyio

from rjobs.models import ClaimedJob
from rjobs.worker.signals import Flag

__all__ = ["Held", "HeldState"]


class HeldState(enum.Enum):
    """Where a held job is in its life on this worker."""

    RUNNING = "running"  # the function runs (or is about to); the lease is ours
    DONE = "done"  # the function ended; its outcome waits to be written
    HANDBACK = "handback"  # stopped by shutdown; to be handed back to the ready state
    LOST = "lost"  # the lease is gone: never write for this job again
    CANCELLED = "cancelled"  # cancelled in Redis: nothing to write
    RELEASED = "released"  # moved on by the function itself (review): nothing to write

    @property
    def live(self) -> bool:
        """True while the lease is ours to renew and to write with."""
        return self in _LIVE


# A tuple: containment tests identity first, which beats hashing an enum member (a Python-level
# __hash__) for a frozenset lookup.
_LIVE = (HeldState.RUNNING, HeldState.DONE, HeldState.HANDBACK)


class Held:
    """One job this worker holds: its queue's index (``slot``), lease token, cancel scope and how
    long the lease is safe (``safe_until``, loop clock). ``flag`` is raised with the scope's
    cancel so sync functions running in threads can poll ``ctx.cancelled``; ``span`` is its run span
    when tracing is on, the parent of its finish span. Compared by identity."""

    __slots__ = ("flag", "job", "reason", "safe_until", "scope", "slot", "span", "state")

    def __init__(
        self,
        slot: int,
        job: ClaimedJob,
        safe_until: float,
        scope: anyio.CancelScope | None = None,
        state: HeldState = HeldState.RUNNING,
        reason: str = "",
    ) -> None:
        self.slot = slot
        self.job = job
        self.safe_until = safe_until
        self.scope = scope if scope is not None else anyio.CancelScope()
        self.state = state
        self.reason = reason
        self.flag = Flag()
        self.span: object | None = None  # the run span, while tracing is on (rjobs.tracing)

    def __repr__(self) -> str:
        return f"Held(slot={self.slot}, job={self.job.id!r}, token={self.job.token!r}, state={self.state.value})"

    @property
    def live(self) -> bool:
        """True while this worker may still write for the job."""
        return self.state in _LIVE

    def stop(self, state: HeldState, reason: str) -> None:
        """Move to ``state`` and cancel the function (if it still runs)."""
        running = self.state is HeldState.RUNNING
        if running and state is HeldState.RELEASED:
            # The function moved the job on itself (review) and may still tidy up: no cancel.
            self.state = state
            return
        # A finished job may still learn its lease was lost or cancelled (the finish is then
        # skipped); nothing else may overwrite a state that is already final for this worker.
        if running or (self.live and state in (HeldState.LOST, HeldState.CANCELLED)):
            self.state = state
            self.reason = reason
            self.flag.set()
            if running:
                self.scope.cancel()
