"""A worker's Prometheus metrics (rjobs.observe): a real ``rjobs worker --metrics-port`` against a
real server runs jobs that succeed, fail, are retried and lose their lease, and its /metrics says
so; two workers in one process keep their own series; without the flag nothing is imported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from rjobs.client.sync_queue import SyncQueue
from rjobs.models import JobRequest
from tests.invariants import assert_indexes_consistent
from tests.observe.jobs import QUEUE
from tests.observe.scrape import free_port, samples, scrape, value

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests.observe.jobs:make_worker"


class Running:
    """A real ``rjobs worker`` subprocess; its stderr kept in a file."""

    def __init__(self, url: str, log: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env["PYTHONPATH"] = str(ROOT)
        self.log = log
        with log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rjobs", "worker", TARGET, "--url", url, *args], cwd=ROOT, env=env, stderr=err
            )

    def output(self) -> str:
        return self.log.read_text()

    def until(self, check: Callable[[], bool], what: str, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while True:
            try:
                if check():
                    return
            except OSError:  # the endpoint is not up yet
                pass
            assert self.proc.poll() is None, f"the worker exited ({self.proc.returncode}): {self.output()}"
            assert time.monotonic() < deadline, f"never: {what}\n{self.output()}"
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture
def worker_process(url: str, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(*args: str) -> Running:
        started.append(Running(url, tmp_path / f"worker{len(started)}.log", *args))
        return started[-1]

    yield start
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def test_a_worker_counts_its_attempts_on_its_metrics_port(
    url: str, redis_sync: redis.Redis, worker_process: Callable[..., Running]
) -> None:
    port = free_port()
    run = worker_process("--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    run.until(lambda: "rjobs_worker_info" in scrape(port), "the metrics endpoint answers")
    before = samples(scrape(port))
    assert value(before, "rjobs_worker_jobs_in_flight", queue=QUEUE) == 0
    assert not [k for k in before if k[0] == "rjobs_worker_jobs_total"], "no attempt counted yet"

    with SyncQueue(QUEUE, url=url) as q:
        jobs = [JobRequest(type="ok")] * 3 + [JobRequest(type=t, max_attempts=3) for t in ("flaky", "broken", "lost")]
        ids = [o.id for o in q.enqueue_many(jobs)]
        run.until(lambda: all(q.get(i).status in ("completed", "failed") for i in ids), "every job finished")
        statuses = [q.get(i).status for i in ids]
        counts = assert_indexes_consistent(redis_sync, QUEUE, q.machine)
    assert statuses == ["completed"] * 3 + ["completed", "failed", "completed"]
    assert counts["completed"] == 5 and counts["failed"] == 1

    def counted() -> bool:  # the outcome of the last attempt is counted before its write: read again
        return value(samples(scrape(port)), "rjobs_worker_jobs_total", queue=QUEUE, type="lost", outcome="succeeded") == 1

    run.until(counted, "the last outcome counted")
    found = samples(scrape(port))

    def jobs_total(jtype: str, outcome: str) -> float | None:
        return value(found, "rjobs_worker_jobs_total", queue=QUEUE, type=jtype, outcome=outcome)

    assert jobs_total("ok", "succeeded") == 3
    assert (jobs_total("flaky", "retrying"), jobs_total("flaky", "succeeded")) == (1, 1)
    assert jobs_total("broken", "failed") == 1
    assert (jobs_total("lost", "lease_lost"), jobs_total("lost", "succeeded")) == (1, 1)
    assert value(found, "rjobs_worker_retries_total", queue=QUEUE, type="flaky") == 1
    assert value(found, "rjobs_worker_lease_losses_total", queue=QUEUE, type="lost") == 1
    assert value(found, "rjobs_worker_retries_total", queue=QUEUE, type="ok") is None
    assert value(found, "rjobs_worker_job_duration_seconds_count", queue=QUEUE, type="ok") == 3
    assert value(found, "rjobs_worker_job_duration_seconds_count", queue=QUEUE, type="flaky") == 2
    assert value(found, "rjobs_worker_job_duration_seconds_bucket", queue=QUEUE, type="ok", le="+Inf") == 3
    assert value(found, "rjobs_worker_jobs_in_flight", queue=QUEUE) == 0
    info = [dict(labels) for name, labels in found if name == "rjobs_worker_info"]
    assert len(info) == 1 and info[0]["worker_id"] and info[0]["version"]

    assert run.stop() == 0
    with pytest.raises(OSError):
        scrape(port)  # gone with its process
    assert redis_sync.zcard(f"rjobs:{{{QUEUE}}}:workers") == 0, "a clean stop unlists the worker"
    assert redis_sync.zcard(f"rjobs:{{{QUEUE}}}:leases") == 0
