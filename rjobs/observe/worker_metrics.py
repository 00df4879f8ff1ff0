"""The metrics of one worker, kept in its own registry (two workers in one process never share a
series): counters and a histogram updated as each attempt ends (an observer of the worker's hooks,
:mod:`rjobs.worker.hooks`), and the jobs in flight and the worker's identity read at scrape time.

Labels are bounded: ``queue`` by the queues the worker serves, ``type`` by the functions it has (it
claims no other type), ``outcome`` by :data:`rjobs.worker.hooks.OutcomeKind`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from rjobs.about import VERSION
from rjobs.worker.hooks import Outcome

if TYPE_CHECKING:
    from rjobs.client.queue import Queue
    from rjobs.models import ClaimedJob
    from rjobs.worker.loop import Worker

__all__ = ["DURATION_BUCKETS", "WorkerMetrics"]

#: Bucket bounds (seconds) of ``rjobs_worker_job_duration_seconds``: from quick jobs to an hour.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class WorkerMetrics:
    """One worker's metrics in ``registry`` (a fresh ``CollectorRegistry``, not the global one).
    :meth:`attach` makes the worker report every attempt to :meth:`observe`."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.registry = registry = CollectorRegistry()
        self.jobs = Counter(
            "rjobs_worker_jobs",
            "Attempts this worker ended, by how they ended (succeeded, failed, retrying, lease_lost...)",
            ["queue", "type", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "rjobs_worker_job_duration_seconds",
            "How long each attempt ran, from its start to its outcome",
            ["queue", "type"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "rjobs_worker_retries",
            "Attempts that failed and will run again (retrying, or timed out with attempts left)",
            ["queue", "type"],
            registry=registry,
        )
        self.lease_losses = Counter(
            "rjobs_worker_lease_losses",
            "Attempts whose lease was lost while they ran (their outcome was not written)",
            ["queue", "type"],
            registry=registry,
        )
        registry.register(_Live(worker))
        # The series one attempt updates, by (queue, type, outcome kind, state): one dict lookup per
        # attempt rather than labels()' checks and a lookup per series.
        self._series: dict[tuple[str, str, str, str | None], tuple[Any, Any, Any]] = {}

    def attach(self) -> None:
        """Report the worker's attempts to these metrics (once; calling again changes nothing)."""
        if self.observe not in self.worker.hooks.observers:
            self.worker.hooks.observers.append(self.observe)

    def detach(self) -> None:
        """Stop reporting the worker's attempts."""
        if self.observe in self.worker.hooks.observers:
            self.worker.hooks.observers.remove(self.observe)

    def observe(self, queue: Queue, job: ClaimedJob, outcome: Outcome) -> None:
        """Count one attempt's outcome and time it (called on the worker's event loop)."""
        key = (queue.name, job.type, outcome.kind, outcome.state)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._series_of(queue, job.type, outcome)
        counted, timed, also = series
        counted.inc()
        timed.observe(outcome.duration)
        if also is not None:
            also.inc()

    def _series_of(self, queue: Queue, jtype: str, outcome: Outcome) -> tuple[Any, Any, Any]:
        """The attempts counter, the run-time histogram and the lease-loss or retry counter (or
        None) that an outcome of this kind updates."""
        also = None
        if outcome.kind == "lease_lost":
            also = self.lease_losses.labels(queue.name, jtype)
        elif outcome.kind == "retrying" or (outcome.kind == "timed_out" and _runs_again(queue, outcome)):
            also = self.retries.labels(queue.name, jtype)
        counted = self.jobs.labels(queue.name, jtype, outcome.kind)
        return counted, self.duration.labels(queue.name, jtype), also


def _runs_again(queue: Queue, outcome: Outcome) -> bool:
    m = queue.machine
    return outcome.state is not None and outcome.state in (m.ready, m.delayed)


class _Live(Collector):
    """What is read when scraped: the jobs in flight per queue and the worker's identity."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        worker = self.worker
        names = [q.name for q in worker.queues]
        counts = dict.fromkeys(names, 0)
        for held in worker.held:  # a copy, taken atomically: this runs in the server's thread
            if 0 <= held.slot < len(names):
                counts[names[held.slot]] += 1
        in_flight = GaugeMetricFamily(
            "rjobs_worker_jobs_in_flight", "Jobs this worker holds now (running, or their outcome being written)",
            labels=["queue"],
        )  # fmt: skip
        for name, n in counts.items():
            in_flight.add_metric([name], n)
        yield in_flight
        yield InfoMetricFamily(
            "rjobs_worker",
            "The worker's id and rjobs version",
            value={"worker_id": worker.worker_id, "version": VERSION},
        )
