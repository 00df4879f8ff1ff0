"""OpenTelemetry traces of rjobs (the ``otel`` extra; docs/tracing.md).

Three spans: ``rjobs.enqueue`` (PRODUCER) around an enqueue call, ``rjobs.run`` (CONSUMER) around
one attempt of a job on a worker, and ``rjobs.finish`` (CLIENT) for the write that records the
attempt's outcome. The enqueue span's W3C trace context is stored with each job it creates (job
field ``trace``), and the run span continues it: the trace goes from the request that enqueued a
job to the worker that ran it, whichever process that is.

Tracing is on when ``opentelemetry-api`` is installed and a tracer provider is configured (the
global one, or one given to :func:`configure`). Otherwise this module costs a cached check per
call: ``opentelemetry`` is imported on first use only, once found missing it is never looked for
again, a missing provider is looked for again at most every :data:`RECHECK` seconds (the lookup
costs more than the rest of the check), and until a provider is found no span, context or carrier
is made.

The stored context is the ``traceparent`` header, then ``;`` and the ``tracestate`` header when
it has entries, at most :data:`MAX_TRACE` bytes (tracestate entries are dropped from its end, as
the W3C recommends, to fit). enqueue.lua refuses anything else.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgspec

from rjobs.about import VERSION
from rjobs.models import ClaimedJob, EnqueueOutcome, JobError, JobRequest

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = [
    "FAILED_OUTCOMES",
    "MAX_IDS",
    "MAX_TRACE",
    "RECHECK",
    "TRACE_CONTEXT",
    "RunSpan",
    "configure",
    "enabled",
    "end_finish",
    "record_error",
    "run_span",
    "start_finish",
    "trace_of",
    "traced_enqueue",
    "with_trace",
]

#: The longest trace context stored with a job, in bytes (enqueue.lua holds the same bound).
MAX_TRACE = 512
#: While no tracer provider is configured, look for one again after this many seconds.
RECHECK = 1.0
#: At most this many job ids are recorded on a span (``rjobs.job.ids``); the count is always.
MAX_IDS = 100
#: The attempt outcomes (:class:`rjobs.worker.hooks.Outcome` kinds) that set a run span's status to error.
FAILED_OUTCOMES = frozenset({"failed", "retrying", "timed_out", "lease_lost"})
#: The trace context the enqueue being planned stores with its jobs ('' = none). Set by
#: :func:`traced_enqueue` while the plan builds its requests, read by ``QueuePlans.spec``.
TRACE_CONTEXT: contextvars.ContextVar[str] = contextvars.ContextVar("rjobs_trace_context", default="")
F = TypeVar("F", bound=Callable[..., Generator[Any, Any, Any]])
S = TypeVar("S", bound=msgspec.Struct)


class _Tracing:
    """What is known so far: the API module (False: not installed), the propagator, the tracer
    once a provider is configured, a provider given to :func:`configure`, and when to look for a
    provider again (monotonic clock)."""

    api: Any = None
    propagator: Any = None
    tracer: Tracer | None = None
    provider: TracerProvider | None = None
    recheck_at = 0.0


_on = _Tracing()


def configure(tracer_provider: TracerProvider | None = None) -> None:
    """Trace with ``tracer_provider`` instead of the global provider; None: the global one again.
    A ``NoOpTracerProvider`` turns rjobs' spans off. The global provider needs no call: set it
    before the first enqueue (until one is set, rjobs looks again every :data:`RECHECK` s)."""
    _on.provider = tracer_provider
    _on.tracer = None
    _on.recheck_at = 0.0


def enabled() -> bool:
    """True when spans are made: the API is installed and a tracer provider is configured. Once
    true it stays true (a global provider is set once); while false, a call costs two attribute
    reads when the API is not installed, and a clock read until :data:`RECHECK` s have passed
    since the last look for a provider."""
    if _on.tracer is not None:
        return True
    if _on.api is False or time.monotonic() < _on.recheck_at:
        return False
    return _resolve()


def _load() -> Any:
    """The API module (imported on first use), or False when it is not installed."""
    if _on.api is None:
        try:
            import opentelemetry.trace as api
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            _on.api = False
        else:
            _on.api, _on.propagator = api, TraceContextTextMapPropagator()
    return _on.api


def _resolve() -> bool:
    api = _load()
    if api is False:
        return False
    provider = _on.provider or api.get_tracer_provider()
    if isinstance(provider, (api.ProxyTracerProvider, api.NoOpTracerProvider)):
        _on.recheck_at = time.monotonic() + RECHECK
        return False
    _on.tracer = provider.get_tracer("rjobs", VERSION)
    return True


def trace_of(span: Span) -> str:
    """The trace context to store for ``span`` (module docstring); '' for an invalid span."""
    _load()
    carrier: dict[str, str] = {}
    _on.propagator.inject(carrier, context=_on.api.set_span_in_context(span))
    parent = carrier.get("traceparent", "")
    state = carrier.get("tracestate", "")
    if not parent or len(parent) > MAX_TRACE:
        return ""
    members = [m for m in state.split(",") if m.strip()]
    while members:
        text = parent + ";" + ",".join(members)
        if len(text.encode()) <= MAX_TRACE and text.isascii():
            return text
        members.pop()
    return parent


def _context_of(trace: str | None) -> Context:
    """The context a stored trace continues; an empty one (a new trace) without a valid one."""
    from opentelemetry.context import Context

    if not trace:
        return Context()
    parent, _, state = trace.partition(";")
    carrier = {"traceparent": parent, "tracestate": state} if state else {"traceparent": parent}
    return cast("Context", _on.propagator.extract(carrier, context=Context()))


# -- enqueue --------------------------------------------------------------------------------------
def traced_enqueue(method: F) -> F:
    """Decorate a plan of ``QueuePlans`` taking one :class:`JobRequest` or an iterable of them, and
    the actor: while tracing is on, the plan runs inside an ``rjobs.enqueue`` span and stores the
    span's context with the jobs it creates (:data:`TRACE_CONTEXT`); otherwise the plan is
    returned untouched."""

    @functools.wraps(method)
    def plan(self: Any, requests: Any, actor: Any = None) -> Generator[Any, Any, Any]:
        if _on.tracer is None and not enabled():
            return method(self, requests, actor)
        if not isinstance(requests, (JobRequest, list, tuple)):
            requests = list(requests)  # read once: the span's attributes and the plan share it
        return _traced(method(self, requests, actor), str(self.keys.name), requests)

    return cast(F, plan)


def with_trace(spec: S) -> S:
    """``spec`` (an ``EnqueueSpec``) with the trace context of the enqueue being planned, if any.
    Given apart from the other fields: a call passing a 16th keyword argument makes CPython hand
    them all over in a dict, which every enqueue would pay for a field that is empty while tracing
    is off."""
    trace = TRACE_CONTEXT.get()
    return msgspec.structs.replace(spec, trace=trace) if trace else spec


def _traced(plan: Generator[Any, Any, Any], queue: str, requests: Any) -> Generator[Any, Any, Any]:
    """Relay ``plan`` inside an enqueue span; its first step (which builds the requests) sees the
    span's context in :data:`TRACE_CONTEXT`."""
    api, tracer = _on.api, cast("Tracer", _on.tracer)
    reqs: Sequence[Any] = [requests] if isinstance(requests, JobRequest) else requests
    attributes = _base("send", "enqueue", queue)
    types = sorted({str(getattr(r, "type", "")) for r in reqs})
    attributes["rjobs.job.type"] = types[0] if len(types) == 1 else types[:MAX_IDS]
    if not isinstance(requests, JobRequest):
        attributes["messaging.batch.message_count"] = len(reqs)
    span = tracer.start_span("rjobs.enqueue", kind=api.SpanKind.PRODUCER, attributes=attributes)
    token = TRACE_CONTEXT.set(trace_of(span))
    try:
        try:
            op = next(plan)
        finally:
            TRACE_CONTEXT.reset(token)
        while True:
            try:
                reply = yield op
            except GeneratorExit:
                raise
            except BaseException as exc:  # an error reply the driver hands the plan
                op = plan.throw(exc)
            else:
                op = plan.send(reply)
    except StopIteration as stop:
        _enqueued(span, stop.value)
        span.end()
        return stop.value
    except GeneratorExit:  # the driver gave up on the plan (a connection error): no reply came
        plan.close()
        span.set_status(_on.api.Status(_on.api.StatusCode.ERROR, "no reply: the call was abandoned"))
        span.end()
        raise
    except BaseException as exc:
        _errored(span, exc)
        span.end()
        raise


def _enqueued(span: Span, value: Any) -> None:
    if isinstance(value, EnqueueOutcome):
        span.set_attribute("rjobs.enqueue.outcome", value.outcome)
        if value.id:
            span.set_attribute("messaging.message.id", value.id)
            span.set_attribute("rjobs.job.id", value.id)
        return
    outcomes = cast("list[EnqueueOutcome]", value)
    span.set_attribute("rjobs.job.ids", [o.id for o in outcomes[:MAX_IDS] if o.id])
    span.set_attribute("rjobs.enqueue.created", sum(o.outcome == "created" for o in outcomes))
    refused = sum(o.outcome == "refused" for o in outcomes)
    if refused:
        span.set_attribute("rjobs.enqueue.refused", refused)
        span.set_status(_on.api.Status(_on.api.StatusCode.ERROR, f"{refused} request(s) refused"))


def _errored(span: Span, exc: BaseException) -> None:
    if isinstance(exc, Exception):
        span.record_exception(exc)
        span.set_status(_on.api.Status(_on.api.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _base(operation_type: str, operation: str, queue: str) -> dict[str, Any]:
    return {
        "messaging.system": "rjobs",
        "messaging.operation.type": operation_type,
        "messaging.operation.name": operation,
        "messaging.destination.name": queue,
    }


# -- run ------------------------------------------------------------------------------------------
class RunSpan:
    """The run span of one attempt (``span`` None while tracing is off)."""

    __slots__ = ("span",)

    def __init__(self, span: Span | None) -> None:
        self.span = span

    def ended(self, outcome: str, error: JobError | None) -> None:
        """Record how the attempt ended (an Outcome kind); a failed one sets the error status."""
        span = self.span
        if span is None:
            return
        span.set_attribute("rjobs.outcome", outcome)
        if error is not None:
            span.set_attribute("rjobs.error.code", error.code)
        if outcome in FAILED_OUTCOMES:
            why = f"{error.code}: {error.message}" if error is not None else outcome
            span.set_status(_on.api.Status(_on.api.StatusCode.ERROR, why[:1000]))


_OFF = RunSpan(None)


@contextlib.contextmanager
def run_span(queue: str, job: ClaimedJob, worker: str) -> Iterator[RunSpan]:
    """An ``rjobs.run`` span around one attempt of ``job``, current while the block runs (so the
    spans the job's function opens are its children), continuing the trace stored with the job
    (a new trace when there is none). An exception escaping the block is recorded."""
    if not enabled():
        yield _OFF
        return
    api, tracer = _on.api, cast("Tracer", _on.tracer)
    attributes = _base("process", "run", queue)
    attributes.update({
        "messaging.message.id": job.id,
        "rjobs.job.id": job.id,
        "rjobs.job.type": job.type,
        "rjobs.job.attempt": job.attempt,
        "rjobs.job.max_attempts": job.max_attempts,
        "rjobs.worker": worker,
    })  # fmt: skip
    if job.group:
        attributes["rjobs.job.group"] = job.group
    span = tracer.start_span(
        "rjobs.run", context=_context_of(job.trace), kind=api.SpanKind.CONSUMER, attributes=attributes
    )
    with api.use_span(span, end_on_exit=True):
        yield RunSpan(span)


def record_error(error: BaseException) -> None:
    """Record ``error`` (what failed an attempt) on the current span, when tracing is on."""
    if _on.tracer is None:
        return
    span = _on.api.get_current_span()
    if span.is_recording():
        span.record_exception(error)


# -- finish ---------------------------------------------------------------------------------------
def start_finish(queue: str, items: Sequence[tuple[Any, Any]]) -> list[Span | None]:
    """The write of a batch of outcomes, given as the worker's ``(held job, move request)`` pairs:
    one ``rjobs.finish`` span per job that has a run span (``held.span``), a child of it, and None
    in place of the others."""
    api, tracer = _on.api, cast("Tracer", _on.tracer)
    spans: list[Span | None] = []
    for held, request in items:
        run, job_id, target = held.span, request.job_id, request.target
        if run is None:
            spans.append(None)
            continue
        attributes = _base("settle", "finish", queue)
        attributes.update({
            "messaging.message.id": job_id,
            "rjobs.job.id": job_id,
            "rjobs.target": target,
            "messaging.batch.message_count": len(items),
        })  # fmt: skip
        context = api.set_span_in_context(run)
        spans.append(
            tracer.start_span("rjobs.finish", context=context, kind=api.SpanKind.CLIENT, attributes=attributes)
        )
    return spans


def end_finish(spans: Sequence[Span | None], outcomes: Sequence[Any] | None) -> None:
    """End the spans of :func:`start_finish` with the script's per-job outcomes (``ok``,
    ``already`` or an ``RJ_<CODE>`` text; None: the write did not get through)."""
    api = _on.api
    for i, span in enumerate(spans):
        if span is None:
            continue
        raw = outcomes[i] if outcomes is not None else None
        text = raw.decode() if isinstance(raw, bytes) else raw
        if text is None:
            span.set_status(api.Status(api.StatusCode.ERROR, "not recorded: no answer from Redis"))
        else:
            span.set_attribute("rjobs.finish.outcome", text.split(" ", 1)[0])
            if text not in ("ok", "already"):
                span.set_status(api.Status(api.StatusCode.ERROR, text[:1000]))
        span.end()
