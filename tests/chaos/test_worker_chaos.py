"""Workers as real processes, killed, frozen and stopped mid-job: every job still ends exactly once.

Each worker is ``python -c 'run_from_cli("tests.workerapp:make_worker", ...)'`` against the test's
server, shaped by RJOBS_TEST_* variables (see tests/workerapp.py). Leases are short (1 s) so a
lost worker's jobs come back quickly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from rjobs import JobRequest
from rjobs.cli.server import LocalServer, find_valkey_binary
from rjobs.client.sync_queue import SyncQueue
from rjobs.machines import JOB
from tests.helpers import job_history, keyspace_fingerprint, lease_number
from tests.invariants import assert_indexes_consistent
from tests.workerapp import QUEUE

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
RUN = (
    "import sys; from rjobs.cli.worker import run_from_cli; "
    "sys.exit(run_from_cli('tests.workerapp:make_worker', url=sys.argv[1], queues=None, concurrency=None, "
    "burst=False))"
)


class Workers:
    """Starts worker subprocesses and always kills them at the end."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, **settings: Any) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.update({f"RJOBS_TEST_{k.upper()}": str(v) for k, v in settings.items()})
        log = open(self.tmp / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, "-c", RUN, self.url], cwd=ROOT, env=env, stdout=log, stderr=log)
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.tmp / f"worker-{self.procs.index(proc)}.log").read_text(errors="replace")

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a stopped process would not die of SIGTERM
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def workers(url: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(url, tmp_path)
    try:
        yield w
    finally:
        w.kill_all()


@pytest.fixture
def queue(url: str) -> Iterator[SyncQueue]:
    with SyncQueue(QUEUE, url=url) as q:
        yield q


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Callable[[], str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = f"; the worker's log ends:\n{log()[-3000:]}" if log is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{tail}")
        time.sleep(0.02)


def held_by_a_worker(queue: SyncQueue, job_id: str) -> bool:
    job = queue.get(job_id)
    return job.status == JOB.leased[-1] and job.token >= 1


def successes(r: redis.Redis, queue: SyncQueue, job_id: str) -> list[dict[str, str]]:
    return [e for e in job_history(r, queue.backend.keys.prefix, job_id) if e.get("to") == JOB.success]


def test_sigkill_mid_job_is_rerun_after_the_lease(workers: Workers, queue: SyncQueue, redis_sync: redis.Redis) -> None:
    a = workers.spawn(lease=1)
    job = queue.enqueue("sleepy", {"first": 30, "then": 0.2}, max_attempts=3)
    wait_until(lambda: held_by_a_worker(queue, job.id), 10, "worker A to claim the job")
    a.kill()
    a.wait(timeout=5)
    b = workers.spawn(lease=1)
    out = queue.wait(job.id, timeout=15)
    assert out.success and out.output is not None and lease_number(out.output["token"]) == 2
    final = queue.get(job.id)
    assert (final.attempt, final.executions, final.lease_losses) == (2, 2, 1)
    assert len(successes(redis_sync, queue, job.id)) == 1
    assert b.poll() is None  # the survivor keeps running


def test_sigstop_past_the_lease_every_stale_write_is_rejected(
    workers: Workers, queue: SyncQueue, redis_sync: redis.Redis
) -> None:
    a = workers.spawn(lease=1)
    job = queue.enqueue("sleepy", {"first": 1.5, "then": 0.2}, max_attempts=3)
    # Frozen only once its first progress is written: A then surely runs the job. (Frozen between
    # the claim and its reply, A would never learn it held the job: nothing to fence.)
    running = lambda: held_by_a_worker(queue, job.id) and queue.get(job.id).progress.percent > 0  # noqa: E731
    wait_until(running, 10, "worker A to run the job", lambda: workers.log(a))
    a.send_signal(signal.SIGSTOP)
    workers.spawn(lease=1)
    out = queue.wait(job.id, timeout=15)
    assert out.success and out.output is not None and lease_number(out.output["token"]) == 2
    pattern = f"rjobs:{{{QUEUE}}}:job:*"
    before = keyspace_fingerprint(redis_sync, pattern)

    a.send_signal(signal.SIGCONT)  # A wakes up believing it still holds the job
    # A notices from its heartbeat's reply ("lease lost") or, on a loaded machine, from that reply
    # coming later than its lapsed lease allows ("lease could not be renewed"): it stops either way.
    gave_up = ("lease lost", "lease could not be renewed")
    log_a = lambda: workers.log(a)  # noqa: E731
    wait_until(lambda: any(m in log_a() for m in gave_up), 10, "worker A to give the job up", log_a)
    time.sleep(0.5)  # its heartbeat, progress loop and finish have all had their chance by now
    assert keyspace_fingerprint(redis_sync, pattern) == before  # every write of A was rejected
    final = queue.get(job.id)
    assert (final.status, lease_number(final.token), final.worker) == (JOB.success, 2, out.output["worker"])
    assert len(successes(redis_sync, queue, job.id)) == 1
    assert a.poll() is None  # A itself carries on


def test_sigterm_hands_jobs_back_at_once(workers: Workers, queue: SyncQueue, redis_sync: redis.Redis) -> None:
    a = workers.spawn(lease=10, grace=0.3)
    job = queue.enqueue("sleepy", {"first": 60, "then": 0.2}, max_attempts=3)
    wait_until(lambda: held_by_a_worker(queue, job.id), 10, "worker A to claim the job")
    workers.spawn(lease=10)
    wait_until(lambda: redis_sync.zcard(queue.backend.keys.workers) == 2, 10, "worker B to start")

    t0 = time.monotonic()
    a.send_signal(signal.SIGTERM)
    out = queue.wait(job.id, timeout=8)
    took = time.monotonic() - t0
    assert a.wait(timeout=5) == 0
    assert out.success and out.output is not None and lease_number(out.output["token"]) == 2
    assert took < 5  # far sooner than A's 10 s lease could have expired
    final = queue.get(job.id)
    # The hand-back refunded A's attempt and is not a lease loss.
    assert (final.attempt, final.executions, final.lease_losses) == (1, 2, 0)
    moves = [
        (e["to"], e.get("msg", "")) for e in job_history(redis_sync, queue.backend.keys.prefix, job.id) if "to" in e
    ]
    assert (JOB.ready, "handed back: worker shutting down") in moves


def test_poison_pill_fails_after_max_lease_losses(workers: Workers, queue: SyncQueue) -> None:
    job = queue.enqueue("suicide", None, max_attempts=10)
    deadline = time.monotonic() + 30
    current = workers.spawn(lease=1, max_lease_losses=3)
    while not JOB.is_final(queue.get(job.id).status):
        assert time.monotonic() < deadline, "the poison pill never ended"
        if current.poll() is not None:  # the pill killed it: a supervisor would restart it
            current = workers.spawn(lease=1, max_lease_losses=3)
        time.sleep(0.05)
    final = queue.get(job.id)
    assert final.status == JOB.failure and final.error is not None and final.error.code == "poison_pill"
    assert final.lease_losses == 3 and final.executions == 3


def test_second_sigterm_skips_the_grace_period(workers: Workers, queue: SyncQueue) -> None:
    a = workers.spawn(lease=10, grace=30)
    job = queue.enqueue("sleepy", {"first": 60}, max_attempts=3)
    wait_until(lambda: held_by_a_worker(queue, job.id), 10, "worker A to claim the job")
    a.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert a.poll() is None  # still inside its 30 s grace period
    t0 = time.monotonic()
    a.send_signal(signal.SIGTERM)
    assert a.wait(timeout=5) == 0
    assert time.monotonic() - t0 < 3
    back = queue.get(job.id)
    assert (back.status, back.attempt) == (JOB.ready, 0)  # handed back, attempt refunded


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_a_server_restart_under_a_busy_worker_loses_no_job_and_ends_each_once(tmp_path: Path, how: str) -> None:
    """The server goes away while one worker runs 8 jobs at a time: a graceful restart, or SIGKILL
    with ``appendfsync always`` (every acknowledged write is on disk). The worker's links
    reconnect, the outcomes it could not write are written afterwards (a claim whose reply was
    lost comes back after its lease), and every job ends successfully exactly once, with
    consistent indexes."""
    server = LocalServer(find_valkey_binary(), data_dir=tmp_path / "valkey", appendonly=True,
                         extra_args=["--appendfsync", "always"])  # fmt: skip
    server.start()
    workers = Workers(server.url, tmp_path)
    try:
        with SyncQueue(QUEUE, server.url) as queue, redis.Redis.from_url(server.url) as r:
            n = 150
            jobs = queue.enqueue_many([JobRequest(type="quick", params={"seconds": 0.05}) for _ in range(n)])
            a = workers.spawn(lease=2, concurrency=8)
            log_a = lambda: workers.log(a)  # noqa: E731
            wait_until(lambda: queue.counts()[JOB.success] >= 40, 20, "the worker to finish 40 jobs", log_a)
            wait_until(lambda: r.zcard(queue.backend.keys.leases) > 0, 5, "the worker to hold jobs", log_a)
            if how == "kill":
                server.kill()
                server.start()
            else:
                server.restart()
            assert r.zcard(queue.backend.keys.state(JOB.success)) < n, "the server went away while jobs were running"
            wait_until(lambda: queue.counts()[JOB.success] == n, 40, "every job to end after the restart", log_a)
            for job in jobs:
                assert len(successes(r, queue, job.id)) == 1, f"{job.id} ended exactly once"
            assert_indexes_consistent(r, QUEUE, JOB)
            assert r.zcard(queue.backend.keys.leases) == 0
            assert a.poll() is None, "the worker carried on"
    finally:
        workers.kill_all()
        server.stop()
