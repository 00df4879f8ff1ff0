"""Running one claimed job: find its function, validate params, call it under the job's cancel
scope (and timeout), turn what happened into one fenced move, and write those moves in batches.

Target states always come from the queue's machine roles. Automatic retry needs an edge from the
last leased state to the delayed state (backoff honoured) or to the ready state (retried at once);
a machine with neither — like TASK, whose ``in_progress`` only leads to completed, failed, review
or cancelled — cannot retry automatically, so such a job fails with its error (the message says
so) and ``Queue.retry`` sends it back by hand.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import msgspec

from rjobs import tracing
from rjobs.client.operations import to_job_error
from rjobs.errors import RjobsError, ValidationError
from rjobs.models import ClaimedJob, JobError, Undecodable
from rjobs.statemachine import StateMachine
from rjobs.store import codec
from rjobs.store.scripts import MoveRequest
from rjobs.worker.clock import ServerClock
from rjobs.worker.context import JobContext
from rjobs.worker.functions import JobFunction, Partial, Retry, describe_error, retry_after, retryable
from rjobs.worker.hooks import Hooks, WorkerState, outcome_of
from rjobs.worker.inflight import Held, HeldState
from rjobs.worker.isolation import ChildPool
from rjobs.worker.retry import RetryPolicy

if TYPE_CHECKING:
    from rjobs.client.queue import Queue

__all__ = ["JobRunner", "Moves", "short_text"]

log = logging.getLogger("rjobs.worker")
#: One line per job outcome: ERROR when it failed (with its traceback), WARNING when an attempt
#: failed and it will be retried, INFO when it succeeded, DEBUG when it started. Each record
#: carries job_id, job_type, queue and worker (for ``rjobs worker --log-format json``).
job_log = logging.getLogger("rjobs.job")
TRACEBACK_LIMIT = 8000  # characters of traceback kept (the end: the raising frame matters most)


def short_text(text: str, limit: int = 1000) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (the scripts' limit for event messages)."""
    data = text.encode()
    return text if len(data) <= limit else data[:limit].decode(errors="ignore")


class Moves:
    """The moves a worker makes from a queue's last leased state, resolved once from its roles."""

    def __init__(self, machine: StateMachine) -> None:
        m = machine
        self.machine = m
        self.at = at = m.leased[-1]
        self.success = m.success
        self.failure = m.failure if m.allows(at, m.failure) else m.cancelled
        self.partial = m.partial if m.partial is not None and m.allows(at, m.partial) else None
        self.delayed = m.delayed if m.delayed is not None and m.allows(at, m.delayed) else None
        self.ready = m.ready if m.allows(at, m.ready) else None

    def succeed(self, job: ClaimedJob, result: bytes) -> MoveRequest:
        """To the success state with an encoded result."""
        return MoveRequest(job.id, self.success, token=job.token, result=result)

    def fail(self, job: ClaimedJob, error: JobError, result: bytes = b"") -> MoveRequest:
        """To the failure state (or cancelled, when the table has no failure edge)."""
        msg = short_text(f"{error.code}: {error.message}", 200)
        return MoveRequest(
            job.id, self.failure, token=job.token, error=codec.encode_json(error), result=result, msg=msg
        )

    def retry(self, job: ClaimedJob, delay: float, error: JobError) -> MoveRequest | None:
        """To the delayed state due in ``delay`` s, or to ready at once; None when neither edge exists.
        The due time is relative (a negative run_at_ms): the script adds it to the server's clock."""
        delay_ms = max(0, int(delay * 1000))
        error = msgspec.structs.replace(error, retry_after_ms=delay_ms)
        msg = short_text(f"retry in {delay:.3f} s after {error.code}: {error.message}", 200)
        encoded = codec.encode_json(error)
        if self.delayed is not None and (delay_ms > 0 or self.ready is None):
            run_at = -max(delay_ms, 1)
            return MoveRequest(job.id, self.delayed, token=job.token, error=encoded, run_at_ms=run_at, msg=msg)
        if self.ready is not None:
            return MoveRequest(job.id, self.ready, token=job.token, error=encoded, msg=msg)
        return None

    def handback(self, job: ClaimedJob) -> MoveRequest | None:
        """Back to ready without spending the attempt (graceful shutdown); None without that edge."""
        if self.ready is None:
            return None
        return MoveRequest(job.id, self.ready, token=job.token, msg="handed back: worker shutting down", refund=True)


class JobRunner:
    """Runs claimed jobs for a worker (see the module docstring)."""

    def __init__(
        self,
        functions: Mapping[str, JobFunction[Any]],
        *,
        worker_id: str,
        retry: RetryPolicy,
        limiter: anyio.CapacityLimiter,
        clock: ServerClock,
        hooks: Hooks | None = None,
        state: WorkerState | None = None,
    ) -> None:
        self.functions = functions
        self.hooks = hooks or Hooks()
        self.state = state if state is not None else WorkerState()
        self.children = ChildPool(worker_id)  # for isolated functions; no process until one runs
        self.worker_id = worker_id
        self.retry = retry
        self.limiter = limiter
        self.clock = clock
        self.threads_busy = 0  # sync functions running right now, abandoned ones included
        self._lock = threading.Lock()

    async def execute(self, queue: Queue, moves: Moves, held: Held) -> MoveRequest | None:
        """Run the job; the move that records its outcome, or None when nothing may be written."""
        state = held.state
        if state is not HeldState.RUNNING:  # stopped before its slot started it (shutdown)
            return moves.handback(held.job) if state is HeldState.HANDBACK else None
        ctx = JobContext(held, queue, self.worker_id, self.state)
        if self.hooks.after_job is None and not self.hooks.observers and not tracing.enabled():
            return await self._attempt(queue, moves, held, ctx)
        with tracing.run_span(queue.name, held.job, self.worker_id) as run:  # off: a no-op
            held.span = run.span
            started = time.monotonic()
            request = await self._attempt(queue, moves, held, ctx)
            outcome = outcome_of(request, moves, held, time.monotonic() - started)
            run.ended(outcome.kind, outcome.error)
            self.hooks.observe(queue, held.job, outcome)  # metrics (rjobs.observe), before after_job
            await self.hooks.after(ctx, outcome)
        return request

    async def _attempt(self, queue: Queue, moves: Moves, held: Held, ctx: JobContext) -> MoveRequest | None:
        job = held.job
        fn = self.functions.get(job.type)
        if fn is None:
            known = ", ".join(sorted(self.functions)) or "none"
            msg = f"no function registered for job type {job.type!r} on worker {self.worker_id} (known: {known})"
            log.error("job %s: %s", job.id, msg)
            return moves.fail(job, JobError(code="unknown_function", message=msg))
        if isinstance(job.params, Undecodable):
            msg = f"params of {job.type!r} cannot be decoded: {job.params.reason}"
            log.warning("job %s: %s", job.id, msg)
            return moves.fail(job, JobError(code="invalid_params", message=msg))
        try:
            params = fn.convert_params(job.params)
        except msgspec.ValidationError as exc:
            msg = f"params of {job.type!r} do not match {_type_name(fn.params_type)}: {exc}"
            log.warning("job %s: %s", job.id, msg)
            return moves.fail(job, JobError(code="invalid_params", message=msg))
        if job_log.isEnabledFor(logging.DEBUG):
            facts = self._facts(queue, job)
            job_log.debug("job %s (%s) attempt %d started", job.id, job.type, job.attempt, extra=facts)
        started = time.monotonic()
        value: Any = None
        error: BaseException | None = None
        timed_out = False
        with held.scope:
            try:
                if self.hooks.before_job is not None:
                    await self.hooks.before(ctx)
                if fn.isolate:  # in a child process, killed at the timeout (rjobs.worker.isolation)
                    value = await self.children.run(fn, ctx, fn.timeout)
                elif fn.timeout is not None:
                    with anyio.move_on_after(fn.timeout) as deadline:
                        value = await self._call(fn, ctx, params)
                    timed_out = deadline.cancelled_caught
                elif fn.is_async:
                    value = await fn.fn(ctx, params)  # the common case, without the extra coroutine
                else:
                    value = await self._call(fn, ctx, params)
            except Exception as exc:  # every exception of user code is an outcome, never a crash
                error = exc
        if held.state is HeldState.HANDBACK:
            return moves.handback(job)
        if held.state is not HeldState.RUNNING:
            return None  # lost, cancelled or moved on: this attempt writes nothing more
        if timed_out:
            error = TimeoutError(f"{job.type} ran longer than its timeout of {fn.timeout} s")
            return self._logged(self._failed(moves, fn, job, error, code="timeout"), moves, error, queue, job, started)
        if error is not None:
            if isinstance(error, Retry) and error.group:
                await self._push_back(queue, job, error.after or 0)
            return self._logged(self._failed(moves, fn, job, error), moves, error, queue, job, started)
        request = self._returned(queue, moves, job, value)
        if request.target == moves.success and not job_log.isEnabledFor(logging.INFO):
            return request  # the common case: nothing to log
        return self._logged(request, moves, None, queue, job, started)

    async def _push_back(self, queue: Queue, job: ClaimedJob, seconds: float) -> None:
        """Retry(group=True): the job's group (else its type) waits too; a name without limits is
        only logged (the job itself is retried as asked)."""
        name = f"g:{job.group}" if job.group else f"t:{job.type}"
        try:
            await queue.backend.backoff(name, max(1, round(seconds * 1000)))
        except (RjobsError, OSError) as exc:
            log.warning("job %s: cannot push %s back: %s", job.id, name, exc)

    def _facts(self, queue: Queue, job: ClaimedJob) -> dict[str, Any]:
        return {"job_id": job.id, "job_type": job.type, "queue": queue.name, "worker": self.worker_id}

    def _logged(
        self,
        request: MoveRequest,
        moves: Moves,
        error: BaseException | None,
        queue: Queue,
        job: ClaimedJob,
        started: float,
    ) -> MoveRequest:
        """Log the outcome the request records (see :data:`job_log`), and return it."""
        seconds = time.monotonic() - started
        if error is not None:
            tracing.record_error(error)
        facts = self._facts(queue, job)
        jid, jtype = job.id, job.type
        if request.target == moves.success:
            job_log.info("job %s (%s) succeeded in %.3f s", jid, jtype, seconds, extra=facts)
        elif request.target == moves.partial:
            job_log.warning("job %s (%s) ended partial after %.3f s", jid, jtype, seconds, extra=facts)
        elif request.target in (moves.ready, moves.delayed):
            delay = max(0.0, request.run_at_ms / 1000 - time.time()) if request.run_at_ms else 0.0
            job_log.warning(
                "job %s (%s) failed (%s: %s); retrying in %.1f s", jid, jtype, type(error).__name__, error, delay,
                extra=facts,
            )  # fmt: skip
        else:
            why = f"{type(error).__name__}: {error}" if error is not None else "see its error"
            job_log.error(
                "job %s (%s) ended %s after %.3f s: %s", jid, jtype, request.target, seconds, why, extra=facts,
                exc_info=(type(error), error, error.__traceback__) if error is not None else None,
            )  # fmt: skip
        return request

    async def _call(self, fn: JobFunction[Any], ctx: JobContext, params: Any) -> Any:
        if fn.is_async:
            return await fn.fn(ctx, params)

        def in_thread() -> Any:
            with self._lock:
                self.threads_busy += 1
            try:
                return fn.fn(ctx, params)
            finally:
                with self._lock:
                    self.threads_busy -= 1

        # Abandon on cancel: a sync function cannot be interrupted, but the worker must not wait
        # for it to hand the job back or give up a lost lease; ctx.cancelled tells it to stop.
        value = await anyio.to_thread.run_sync(in_thread, limiter=self.limiter, abandon_on_cancel=True)
        if inspect.isawaitable(value):  # e.g. a lambda returning a coroutine
            value = await value
        return value

    def _returned(self, queue: Queue, moves: Moves, job: ClaimedJob, value: Any) -> MoveRequest:
        limit = queue.config.max_payload
        try:
            if isinstance(value, Partial):
                result = codec.encode_json(value.result, limit=limit, what="partial result")
                if moves.partial is None:
                    err = to_job_error(value.error)
                    msg = f"machine {moves.machine.name!r} has no partial state; failing instead. {err.message}"
                    return moves.fail(job, JobError(code="partial_unsupported", message=msg), result)
                error = codec.encode_json(to_job_error(value.error))
                return MoveRequest(job.id, moves.partial, token=job.token, result=result, error=error)
            return moves.succeed(job, codec.encode_json(value, limit=limit, what="result"))
        except ValidationError as exc:
            return moves.fail(job, JobError(code="invalid_result", message=str(exc)))

    def _failed(
        self, moves: Moves, fn: JobFunction[Any], job: ClaimedJob, exc: BaseException, code: str | None = None
    ) -> MoveRequest:
        tb = (getattr(exc, "child_traceback", None) or "".join(traceback.format_exception(exc)))[-TRACEBACK_LIMIT:]
        error = describe_error(exc, code=code, traceback=tb)
        if not retryable(exc):
            return moves.fail(job, error)
        if job.attempt >= job.max_attempts:
            note = f" (attempt {job.attempt} of {job.max_attempts}, no retries left)"
            return moves.fail(job, msgspec.structs.replace(error, message=error.message + note))
        delay = (fn.retry or self.retry).delay(job.attempt, retry_after(exc))
        request = moves.retry(job, delay, error)
        if request is None:
            note = (
                f" (not retried: machine {moves.machine.name!r} has no edge from {moves.at!r}"
                " to a ready or delayed state)"
            )
            return moves.fail(job, msgspec.structs.replace(error, message=error.message + note))
        return request


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)
