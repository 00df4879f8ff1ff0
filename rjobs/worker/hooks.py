"""Lifecycle hooks of a worker and the state its jobs share.

``Worker(on_startup=..., on_shutdown=..., before_job=..., after_job=...)``; each hook may be a plain
function (run in a worker thread, so it never blocks the event loop) or an ``async def``:

- ``on_startup(state)`` runs once per :meth:`rjobs.Worker.run`, before anything touches Redis. It
  puts shared resources (a database pool, an HTTP client) on ``state``, the worker's
  :class:`WorkerState`, which every job sees as ``ctx.state``. If it raises, or is cancelled
  (``stop()``, a signal) before it returns, the run ends with :class:`StartupFailed` and nothing is
  claimed; ``on_shutdown`` is then not called.
- ``on_shutdown(state)`` runs once the jobs have finished or were handed back and their outcomes
  written, also when the run failed later on; shielded from cancellation and bounded by
  ``shutdown_timeout`` seconds.
- ``before_job(ctx)`` runs before each attempt's function: if it raises, the attempt fails as if
  the function had raised (retried by the same policy, its error recorded).
- ``after_job(ctx, outcome)`` runs after each attempt with its :class:`Outcome`, before the outcome
  is written; it cannot change it, and an exception in it is logged on ``rjobs.worker`` and ignored.

``Hooks.observers`` are the library's own listeners (metrics: rjobs.observe): each is called with
the queue, the job and the :class:`Outcome` of every attempt, on the event loop, before
``after_job``; they must be quick and never block.
"""

from __future__ import annotations

import inspect
import logging
import threading
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.to_thread
import msgspec

from rjobs.models import JobError
from rjobs.store import codec
from rjobs.worker.inflight import Held, HeldState

if TYPE_CHECKING:
    from rjobs.client.queue import Queue
    from rjobs.models import ClaimedJob
    from rjobs.store.scripts import MoveRequest
    from rjobs.worker.context import JobContext
    from rjobs.worker.execution import Moves

__all__ = ["Hooks", "Observer", "Outcome", "OutcomeKind", "StartupFailed", "WorkerState", "outcome_of"]

log = logging.getLogger("rjobs.worker")

#: How an attempt ended, as ``after_job`` sees it.
OutcomeKind = Literal[
    "succeeded", "partial", "failed", "retrying", "timed_out", "cancelled", "lease_lost", "handed_back", "review"
]
Hook = Callable[..., Any]
#: A listener of every attempt's outcome (see ``Hooks.observers``).
Observer = Callable[["Queue", "ClaimedJob", "Outcome"], None]


class WorkerState(types.SimpleNamespace):
    """The worker's shared, mutable namespace: ``on_startup`` sets attributes on it, every job reads
    them as ``ctx.state.<name>``, ``on_shutdown`` closes them. One object per worker."""


class StartupFailed(Exception):
    """``on_startup`` raised or was cancelled: the worker stopped without claiming anything."""

    code = "startup_failed"


class Outcome(msgspec.Struct, frozen=True):
    """How one attempt ended, handed to ``after_job``.

    ``kind``: succeeded, partial, failed, retrying (it failed and runs again later), timed_out (it
    ran past its ``timeout``: ``state`` says whether it is retried or failed), cancelled (by an
    operator), lease_lost, handed_back (the worker is shutting down), review (the function sent it
    there). ``state`` is the state the outcome moves the job to (None when nothing is written),
    ``result`` the result as stored (decoded JSON), ``error`` the structured error, ``duration``
    the attempt's length in seconds."""

    kind: OutcomeKind
    state: str | None
    attempt: int
    duration: float
    result: Any = None
    error: JobError | None = None


def outcome_of(request: MoveRequest | None, moves: Moves, held: Held, duration: float) -> Outcome:
    """The :class:`Outcome` that ``request`` (the move an attempt ended with, or None) records."""
    attempt = held.job.attempt
    if request is None:
        ended: dict[HeldState, OutcomeKind] = {
            HeldState.LOST: "lease_lost",
            HeldState.CANCELLED: "cancelled",
            HeldState.RELEASED: "review",
        }
        kind: OutcomeKind = ended.get(held.state, "handed_back")
        return Outcome(kind, None, attempt, duration)
    result = _decoded(request.result)
    error = _job_error(_decoded(request.error))
    target = request.target
    if request.refund:
        kind = "handed_back"
    elif error is not None and error.code == "timeout" and target != moves.partial:
        kind = "timed_out"
    elif target == moves.success:
        kind = "succeeded"
    elif target == moves.partial:
        kind = "partial"
    elif target in (moves.ready, moves.delayed):
        kind = "retrying"
    else:
        kind = "failed"
    return Outcome(kind, target, attempt, duration, result, error)


def _decoded(data: bytes) -> Any:
    try:
        return codec.decode_json(data)
    except Exception:  # never let reporting break the worker
        return None


def _job_error(raw: Any) -> JobError | None:
    try:
        return msgspec.convert(raw, JobError) if isinstance(raw, dict) else None
    except msgspec.ValidationError:
        return None


def _name(hook: Hook) -> str:
    return str(getattr(hook, "__qualname__", None) or getattr(hook, "__name__", None) or repr(hook))


class Hooks:
    """A worker's hooks (see the module docstring); each may be None."""

    def __init__(
        self,
        on_startup: Hook | None = None,
        on_shutdown: Hook | None = None,
        before_job: Hook | None = None,
        after_job: Hook | None = None,
        *,
        shutdown_timeout: float = 30.0,
    ) -> None:
        for what, hook in (
            ("on_startup", on_startup),
            ("on_shutdown", on_shutdown),
            ("before_job", before_job),
            ("after_job", after_job),
        ):
            if hook is not None and not callable(hook):
                raise TypeError(f"{what} must be callable, not {type(hook).__name__}")
        if isinstance(shutdown_timeout, bool) or not 0 < shutdown_timeout < float("inf"):
            raise ValueError("shutdown_timeout must be a positive number of seconds")
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self.before_job = before_job
        self.after_job = after_job
        self.shutdown_timeout = float(shutdown_timeout)
        self._scope: anyio.CancelScope | None = None  # set while on_startup runs
        self.threads_busy = 0  # sync hooks running in threads, abandoned ones included
        self._lock = threading.Lock()
        self._ready: list[Callable[[], None]] = []
        #: Called with (queue, job, outcome) after every attempt (see the module docstring).
        self.observers: list[Observer] = []

    async def _call(self, hook: Hook, *args: Any) -> None:
        if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(getattr(hook, "__call__", None)):  # noqa: B004
            await hook(*args)
            return

        def in_thread() -> Any:
            with self._lock:
                self.threads_busy += 1
            try:
                return hook(*args)
            finally:
                with self._lock:
                    self.threads_busy -= 1

        # Abandoned on cancel (a stuck on_startup must not hold up stop()); the CLI exits without it.
        value = await anyio.to_thread.run_sync(in_thread, abandon_on_cancel=True)
        if inspect.isawaitable(value):
            await value

    def interrupt(self) -> None:
        """Cancel a running ``on_startup`` (the worker is stopping)."""
        if self._scope is not None:
            self._scope.cancel()

    def when_ready(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once a run has started (startup done, server reached), before the first
        claim (``rjobs worker --processes`` learns this way that a child started)."""
        self._ready.append(callback)

    def ready(self) -> None:
        """Tell the :meth:`when_ready` callbacks that the run started."""
        for callback in self._ready:
            callback()

    async def startup(self, state: WorkerState, stopping: Callable[[], bool]) -> None:
        """Run ``on_startup``; :class:`StartupFailed` when it raises or is cancelled, or when the
        worker was stopped before it could start."""
        hook = self.on_startup
        if hook is None:
            return
        if stopping():
            raise StartupFailed(f"on_startup hook {_name(hook)} did not run: the worker was stopped first")
        error: BaseException | None = None
        with anyio.CancelScope() as self._scope:
            try:
                await self._call(hook, state)
            except Exception as exc:
                error = exc
        self._scope = None
        if error is not None:
            raise StartupFailed(f"on_startup hook {_name(hook)} failed: {type(error).__name__}: {error}") from error
        if stopping():
            raise StartupFailed(f"on_startup hook {_name(hook)} was cancelled: the worker was stopped before it ended")

    async def shutdown(self, state: WorkerState) -> None:
        """Run ``on_shutdown``, shielded and bounded; an error is logged, never raised."""
        hook = self.on_shutdown
        if hook is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                with anyio.fail_after(self.shutdown_timeout):
                    await self._call(hook, state)
            except TimeoutError:
                log.error("on_shutdown hook %s did not end within %.1f s", _name(hook), self.shutdown_timeout)
            except Exception:
                log.exception("on_shutdown hook %s failed", _name(hook))

    async def before(self, ctx: JobContext) -> None:
        """Run ``before_job`` (its exception propagates: the attempt fails with it)."""
        if self.before_job is not None:
            await self._call(self.before_job, ctx)

    def observe(self, queue: Queue, job: ClaimedJob, outcome: Outcome) -> None:
        """Tell every observer how an attempt ended; an exception is logged and ignored."""
        for observer in self.observers:
            try:
                observer(queue, job, outcome)
            except Exception:
                log.exception("observer %s failed for job %s (ignored)", _name(observer), job.id)

    async def after(self, ctx: JobContext, outcome: Outcome) -> None:
        """Run ``after_job``; an exception is logged and ignored."""
        hook = self.after_job
        if hook is None:
            return
        try:
            await self._call(hook, ctx, outcome)
        except Exception:
            log.exception("after_job hook %s failed for job %s (ignored)", _name(hook), ctx.job.id)
