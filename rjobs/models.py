"""The data rjobs hands out: msgspec Structs, immutable, cheap to build and to encode."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "ACTOR_TYPES",
    "Actor",
    "Asset",
    "ClaimedJob",
    "DependencyResults",
    "EnqueueOutcome",
    "Event",
    "Job",
    "JobError",
    "JobOutcome",
    "JobRequest",
    "MetricsBucket",
    "Progress",
    "QueueTotals",
    "Undecodable",
    "Who",
]


class JobError(msgspec.Struct, frozen=True, omit_defaults=True):
    """A structured error: a machine-readable code, a message for people, optionally
    when to try again (ms) and the traceback of the exception that caused it."""

    code: str
    message: str
    retry_after_ms: int | None = None
    traceback: str | None = None


class Progress(msgspec.Struct, frozen=True):
    """How far a running job is: percent 0-100, the named step, estimated ms left (None = unknown)."""

    percent: float = 0.0
    step: str | None = None
    eta_ms: int | None = None


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """A job as stored in its hash ``rjobs:{Q}:job:<id>``. Times are Redis server epoch ms;
    ``duration_ms`` is ``completed_ms - started_ms`` (not stored), ``lease_deadline_ms`` is set
    while the job is leased only. ``trace`` is the W3C trace context (``traceparent``, then
    ``;tracestate`` if any) of the span that enqueued it, None when none was recorded
    (docs/tracing.md)."""

    id: str
    queue: str
    type: str
    status: str
    priority: int
    params: Any = None
    result: Any = None
    error: JobError | None = None
    progress: Progress = Progress()
    user_id: str | None = None
    attempt: int = 0
    executions: int = 0
    max_attempts: int = 1
    retry_count: int = 0
    lease_losses: int = 0
    worker: str | None = None
    token: int = 0
    created_ms: int = 0
    updated_ms: int | None = None
    scheduled_ms: int | None = None
    started_ms: int | None = None
    completed_ms: int | None = None
    duration_ms: int | None = None
    lease_deadline_ms: int | None = None
    expire_ms: int | None = None
    dedupe_key: str | None = None
    depends_on: tuple[str, ...] = ()
    deps_pending: int = 0
    group: str | None = None
    trace: str | None = None


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a job's history (``rjobs:{Q}:job:<id>:history``) or of the queue's stream.
    ``id`` is ``<server ms>-<n>``: for a history entry ``n`` is its position in the history, for a
    queue stream entry the stream id. ``operator`` is true when the actor wrote to a leased job
    without its lease token (``operator=True``)."""

    id: str
    job_id: str
    event: str
    from_state: str | None = None
    to_state: str | None = None
    actor: str | None = None
    message: str | None = None
    attempt: int | None = None
    token: int | None = None
    data: str | None = None
    operator: bool = False

    @property
    def ts_ms(self) -> int:
        """Server time of the event, epoch ms."""
        return int(self.id.split("-", 1)[0])


class EnqueueOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What enqueue did with one request: ``created`` a new job, ``kept`` the live job of the same
    dedupe key, ``cached`` (policy ``reuse``): answered with the key's fresh cached result, in
    ``cached_result``, and created nothing (``id`` is the job that holds the key, empty when it was
    purged), or (only in an ``enqueue_many`` that took several script calls) ``refused`` it:
    then ``error`` says why and nothing of that request was written (``id`` is its explicit
    ``job_id`` or empty). Also: the id previously holding the dedupe key, whether that stale job
    was cancelled and whether its cached result was invalidated."""

    id: str
    outcome: str
    status: str
    previous_id: str | None = None
    stale_cancelled: bool = False
    cache_invalidated: bool = False
    error: str | None = None
    cached_result: Any = None

    @property
    def created(self) -> bool:
        """True when a new job was created."""
        return self.outcome == "created"


class ClaimedJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job as a worker receives it from claim: enough to run it and to fence every write, and
    the trace context it was enqueued in (``trace``, see :class:`Job`)."""

    id: str
    type: str
    params: Any
    attempt: int
    max_attempts: int
    token: str
    user_id: str | None
    priority: int
    retry_count: int
    created_ms: int
    lease_deadline_ms: int
    group: str | None = None
    trace: str | None = None


class Undecodable(msgspec.Struct, frozen=True, tag=True):
    """Stands for a stored payload (params, result) that could not be decoded: written around the
    client, not JSON or nested too deep. A worker that claims a job with such params fails it with
    code ``invalid_params``; reads show the job with this in place of the payload."""

    reason: str


class JobOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What wait() returns: whether the job succeeded, its output or error."""

    job_id: str
    status: str
    success: bool
    output: Any = None
    error: JobError | None = None


class Asset(msgspec.Struct, frozen=True, kw_only=True):
    """An output linked to a job: a file or URL and where it is stored."""

    id: str
    job_id: str
    asset_type: str
    url: str
    storage_path: str | None = None
    file_size: int | None = None
    user_id: str | None = None
    created_ms: int | None = None
    meta: dict[str, Any] = {}


#: The kinds of structured actor.
ACTOR_TYPES = ("agent", "human", "worker")


class Actor(msgspec.Struct, frozen=True):
    """Who acts, structured: ``type`` (agent, human or worker), a stable ``id`` and a display
    ``name``. Anywhere an actor is taken it may be given this way; it is recorded as the text
    ``type:id`` (history, events, the job's holder) and its name is kept in the queue's actor
    directory (:meth:`rjobs.Queue.actors`) when it is named."""

    type: str
    id: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.type}:{self.id}"


#: An actor as the API takes it: the text recorded, or a structured :class:`Actor`.
Who = str | Actor


class JobRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One job for :meth:`Queue.enqueue_many`; the fields mean what enqueue's arguments mean."""

    type: str
    params: Any = None
    priority: str | int = "normal"
    user_id: str | None = None
    delay: float | None = None
    run_at: float | None = None
    dedupe_key: str | None = None
    dedupe: str = "keep"
    cancel_running: bool = False
    max_attempts: int = 3
    depends_on: tuple[str, ...] = ()
    on_dependency_failure: str = "fail"
    job_id: str | None = None
    hold: bool = False
    group: str | None = None


class DependencyResults(dict[str, Any]):
    """What a job's dependencies returned (:meth:`rjobs.Queue.dependency_results`,
    ``ctx.dependency_results()``): dependency id -> result for each dependency that succeeded, in
    the order the job lists them. Not an error, reported beside: ``missing``, the ids no longer
    stored (retention purged them, or they were deleted), and ``unfinished``, id -> status of the
    dependencies that did not succeed (still running or waiting, or moved on by hand)."""

    def __init__(
        self,
        results: dict[str, Any] | None = None,
        missing: tuple[str, ...] = (),
        unfinished: dict[str, str] | None = None,
    ) -> None:
        super().__init__(results or {})
        #: Dependency ids whose job is no longer stored (purged by retention, or deleted).
        self.missing = missing
        #: Dependency id -> status, for the stored dependencies that did not succeed.
        self.unfinished = unfinished or {}

    def __repr__(self) -> str:
        return f"DependencyResults({dict(self)!r}, missing={self.missing!r}, unfinished={self.unfinished!r})"


class MetricsBucket(msgspec.Struct, frozen=True, kw_only=True):
    """One minute of a queue's counters (:meth:`rjobs.Queue.metrics`), kept in Redis by the
    scripts that move jobs, by job type. ``start_ms``: the minute's start (server epoch ms).
    ``enqueued``: jobs created; ``claimed``: leases taken (attempts started) and ``wait_ms`` the
    time those jobs had waited ready (sum, ms); ``finished``: final state -> type -> jobs that
    reached it; ``runs``: those that reached it from a lease and ``run_ms`` their last attempt's
    run time (sum, ms). Averages: ``wait_ms[t] / claimed[t]``, ``run_ms[t] / runs[t]``."""

    start_ms: int
    enqueued: dict[str, int] = {}
    claimed: dict[str, int] = {}
    wait_ms: dict[str, int] = {}
    finished: dict[str, dict[str, int]] = {}
    runs: dict[str, int] = {}
    run_ms: dict[str, int] = {}


class QueueTotals(msgspec.Struct, frozen=True, kw_only=True):
    """A queue's counters since it began (:meth:`rjobs.Queue.totals`): jobs created and leases
    taken by job type, and final state -> job type -> jobs that reached it. They only grow
    (Prometheus counters: docs/metrics.md); deleting the queue's keys resets them."""

    enqueued: dict[str, int] = {}
    claimed: dict[str, int] = {}
    finished: dict[str, dict[str, int]] = {}
