"""Prometheus metrics of rjobs (docs/metrics.md): a worker's own, served on a port, and the queues',
rendered on each scrape for a dashboard's /metrics.

- :func:`serve_worker_metrics` (what ``rjobs worker --metrics-port`` runs): the worker's counters
  of attempts by outcome, run times, retries, lease losses, jobs in flight and its identity
  (:mod:`rjobs.observe.worker_metrics`), on an HTTP /metrics served by prometheus_client's
  server in a thread of its own (it answers even while a job hogs the event loop). No queue-level
  gauge here: every worker would report the same queue again.
- :func:`render_queue_metrics`: what Redis says about whole queues (jobs per state, the counters of
  jobs created and finished since each queue began, live workers, the oldest waiting job, the
  pause flag), read when called, in a fresh registry each time: no global state, and a scrape
  reports what Redis holds, whichever process counted it.

Both need the optional ``prometheus_client`` (``pip install 'rjobs[metrics]'``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # an optional dependency: say how to get it
    raise ImportError(
        "rjobs' Prometheus metrics need prometheus_client: pip install 'rjobs[metrics]' (or prometheus_client)"
    ) from exc

from rjobs.observe.worker_metrics import WorkerMetrics

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from rjobs.client.queue import Queue
    from rjobs.worker.loop import Worker

__all__ = ["MetricsServer", "QueueReading", "read_queue", "render_queue_metrics", "serve_worker_metrics"]

log = logging.getLogger("rjobs.worker")


class MetricsServer:
    """A worker's /metrics endpoint (see :func:`serve_worker_metrics`): ``port`` is the port it
    listens on, ``metrics`` the worker's :class:`~rjobs.observe.worker_metrics.WorkerMetrics`."""

    def __init__(self, metrics: WorkerMetrics, httpd: WSGIServer) -> None:
        self.metrics = metrics
        #: The TCP port the endpoint listens on (the one picked when asked for port 0).
        self.port = int(httpd.server_port)
        self._httpd: WSGIServer | None = httpd

    def close(self) -> None:
        """Stop serving and stop recording the worker's attempts (idempotent)."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            self.metrics.detach()
            httpd.shutdown()
            httpd.server_close()


def serve_worker_metrics(worker: Worker, port: int, host: str = "0.0.0.0") -> MetricsServer:
    """Serve ``worker``'s metrics on ``http://host:port/metrics`` (port 0: any free one; read
    ``.port``) from now until ``close()``, in a daemon thread: call it before ``worker.run()``.
    The metrics live in a registry of this worker's own. ValueError for a port out of range,
    OSError (naming the address) when it cannot listen."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"the metrics port must be a TCP port 0-65535 (0: any free one), not {port!r}")
    metrics = WorkerMetrics(worker)
    try:
        httpd, _ = start_http_server(port, host, metrics.registry)
    except OSError as exc:
        raise OSError(exc.errno, f"metrics endpoint cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    metrics.attach()
    server = MetricsServer(metrics, httpd)
    log.info("worker %s: metrics on http://%s:%d/metrics", worker.worker_id, host, server.port)
    return server


# -- queues -----------------------------------------------------------------------------------------
class QueueReading(msgspec.Struct, frozen=True):
    """What one scrape read about a queue: jobs per state, ready jobs per type, live workers, the
    age of its oldest ready job (s; None: none waits), whether it is paused, and its totals."""

    queue: str
    counts: dict[str, int]
    ready: dict[str, int]
    workers: int
    oldest_waiting_s: float | None
    paused: bool
    enqueued: dict[str, int]
    claimed: dict[str, int]
    finished: dict[str, dict[str, int]]


async def read_queue(queue: Queue) -> QueueReading:
    """Read what :func:`render_queue_metrics` reports about ``queue`` (``stats()`` and ``totals()``)."""
    stats: dict[str, Any] = await queue.stats()
    totals = await queue.totals()
    oldest = stats["oldest_ready_age_ms"]
    return QueueReading(
        queue=queue.name,
        counts=dict(stats["counts"]),
        ready={t: int(lane["ready"]) for t, lane in stats["lanes"].items()},
        workers=len(stats["workers"]),
        oldest_waiting_s=None if oldest is None else max(0, oldest) / 1000,
        paused=stats["paused"] is not None,
        enqueued=dict(totals.enqueued),
        claimed=dict(totals.claimed),
        finished={state: dict(by_type) for state, by_type in totals.finished.items()},
    )


async def render_queue_metrics(queues: Sequence[Queue]) -> tuple[bytes, str]:
    """The Prometheus text exposition of ``queues`` now, and its content type: the body and the
    ``Content-Type`` header of a /metrics answer. Each call reads Redis (a few round trips per
    queue) and builds a fresh registry: nothing is kept between scrapes. A queue named twice is
    reported once."""
    readings: dict[str, QueueReading] = {}
    for queue in queues:
        if queue.name not in readings:
            readings[queue.name] = await read_queue(queue)
    registry = CollectorRegistry()
    registry.register(_QueueCollector(list(readings.values())))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _QueueCollector(Collector):
    """The families of :func:`render_queue_metrics`, from readings already taken."""

    def __init__(self, readings: list[QueueReading]) -> None:
        self.readings = readings

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("rjobs_queue_jobs", "Jobs in each state now", labels=["queue", "state"])
        ready = GaugeMetricFamily(
            "rjobs_queue_ready", "Jobs ready to run, by job type (the lanes)", labels=["queue", "type"]
        )
        enqueued = CounterMetricFamily(
            "rjobs_queue_enqueued", "Jobs created since the queue began", labels=["queue", "type"]
        )
        claimed = CounterMetricFamily(
            "rjobs_queue_claimed",
            "Leases taken (attempts started, holds by hand) since the queue began",
            labels=["queue", "type"],
        )
        finished = CounterMetricFamily(
            "rjobs_queue_finished", "Jobs that reached a final state since the queue began",
            labels=["queue", "type", "state"],
        )  # fmt: skip
        workers = GaugeMetricFamily("rjobs_queue_workers", "Workers that heartbeat in the last 30 s", labels=["queue"])
        oldest = GaugeMetricFamily(
            "rjobs_queue_oldest_waiting_seconds", "Age of the oldest ready job (0 when none waits)", labels=["queue"]
        )
        paused = GaugeMetricFamily("rjobs_queue_paused", "1 while the queue is paused", labels=["queue"])
        for r in self.readings:
            for state, n in r.counts.items():
                jobs.add_metric([r.queue, state], n)
            for jtype, n in sorted(r.ready.items()):
                ready.add_metric([r.queue, jtype], n)
            for jtype, n in sorted(r.enqueued.items()):
                enqueued.add_metric([r.queue, jtype], n)
            for jtype, n in sorted(r.claimed.items()):
                claimed.add_metric([r.queue, jtype], n)
            for state, by_type in sorted(r.finished.items()):
                for jtype, n in sorted(by_type.items()):
                    finished.add_metric([r.queue, jtype, state], n)
            workers.add_metric([r.queue], r.workers)
            oldest.add_metric([r.queue], r.oldest_waiting_s or 0.0)
            paused.add_metric([r.queue], 1 if r.paused else 0)
        yield from (jobs, ready, enqueued, claimed, finished, workers, oldest, paused)
