"""A worker's Prometheus metrics (rjobs.observe): a real ``rjobs worker --metrics-port`` against a
real server runs jobs that succeed, fail, are retried and lose their lease, and its /metrics says
so; two workers in one process keep their own series; without the flag nothing is imported."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from rjobs.about import VERSION
from rjobs.cli.main import main
from rjobs.client.queue import Queue
from rjobs.client.sync_queue import SyncQueue
from rjobs.models import JobRequest
from rjobs.observe.prometheus import serve_worker_metrics
from rjobs.worker.loop import Worker
from tests.invariants import assert_indexes_consistent
from tests.observe import jobs
from tests.observe.jobs import QUEUE
from tests.observe.scrape import free_port, free_ports, samples, scrape, value

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
        return (
            value(samples(scrape(port)), "rjobs_worker_jobs_total", queue=QUEUE, type="lost", outcome="succeeded") == 1
        )

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


@pytest.mark.anyio
async def test_two_workers_in_one_process_keep_their_own_series(url: str, redis_sync: redis.Redis) -> None:

    async with Queue("one", url=url) as one, Queue("two", url=url) as two:
        await one.enqueue_many([JobRequest(type="ok")] * 2)
        await two.enqueue_many([JobRequest(type="broken")])
        w1 = Worker(one, [jobs.ok], burst=True, worker_id="w-one")
        w2 = Worker(two, [jobs.broken], burst=True, worker_id="w-two")
        served = [serve_worker_metrics(w, 0, "127.0.0.1") for w in (w1, w2)]
        try:
            await w1.run()
            await w2.run()
            first, second = (samples(scrape(s.port)) for s in served)
        finally:
            for s in served:
                s.close()
        counts = [await q.counts() for q in (one, two)]
    assert value(first, "rjobs_worker_jobs_total", queue="one", type="ok", outcome="succeeded") == 2
    assert not [k for k in first if dict(k[1]).get("queue") == "two"]
    assert value(second, "rjobs_worker_jobs_total", queue="two", type="broken", outcome="failed") == 1
    assert not [k for k in second if dict(k[1]).get("queue") == "one"]
    assert value(first, "rjobs_worker_info", worker_id="w-one", version=VERSION) == 1
    assert value(second, "rjobs_worker_info", worker_id="w-two", version=VERSION) == 1
    assert (counts[0]["completed"], counts[1]["failed"]) == (2, 1)
    assert not w1.hooks.observers and not w2.hooks.observers, "close() stops the recording"
    assert_indexes_consistent(redis_sync, "one", w1.queues[0].machine)
    with pytest.raises(OSError):
        scrape(served[0].port)


def test_serve_worker_metrics_refuses_a_bad_or_taken_port() -> None:
    worker = Worker("q", [], url="redis://127.0.0.1:9")  # never reached
    for bad in (-1, 65536, True, "9108"):
        with pytest.raises(ValueError, match="TCP port"):
            serve_worker_metrics(worker, bad, "127.0.0.1")  # type: ignore[arg-type]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"metrics endpoint cannot listen on 127.0.0.1:{port}"):
            serve_worker_metrics(worker, port, "127.0.0.1")
    assert not worker.hooks.observers


def test_without_the_flag_nothing_of_prometheus_is_imported() -> None:
    code = (
        "import sys, rjobs, rjobs.observe, rjobs.cli.worker, rjobs.cli.main; "
        "assert 'prometheus_client' not in sys.modules, 'imported'; "
        "assert 'rjobs.observe.prometheus' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_flag_without_prometheus_client_is_one_clear_line(url: str, tmp_path: Path) -> None:
    # prometheus_client hidden: an import of it fails as if it were not installed
    code = (
        "import sys; sys.modules['prometheus_client'] = None; from rjobs.cli.main import main; "
        f"sys.exit(main(['worker', {TARGET!r}, '--url', {url!r}, '--metrics-port', '0']))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("rjobs: error: --metrics-port: ")
    assert "pip install 'rjobs[metrics]'" in done.stderr
    with redis.Redis.from_url(url) as client:
        assert client.keys("rjobs:*") == [], "it stopped before touching Redis"


def test_a_taken_port_or_one_out_of_range_stops_the_command(url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["worker", TARGET, "--url", url, "--metrics-port", str(port), "--metrics-host", "127.0.0.1"]) == 1
    assert main(["worker", TARGET, "--url", url, "--metrics-port", "65535", "--processes", "2"]) == 2
    assert main(["worker", TARGET, "--url", url, "--metrics-port", "70000"]) == 2
    with redis.Redis.from_url(url) as client:
        assert client.keys("rjobs:*") == []


def test_each_process_of_a_prefork_serves_its_own_port(
    url: str, redis_sync: redis.Redis, worker_process: Callable[..., Running]
) -> None:
    port = free_ports(2)
    run = worker_process("--processes", "2", "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    ids: list[str] = []
    for p in (port, port + 1):
        run.until(lambda p=p: "rjobs_worker_info" in scrape(p), f"port {p} answers")
        info = [dict(labels) for name, labels in samples(scrape(p)) if name == "rjobs_worker_info"]
        ids.append(info[0]["worker_id"])
    assert [i.rsplit("-", 1)[1] for i in ids] == ["1", "2"], ids
    with SyncQueue(QUEUE, url=url) as q:
        created = [o.id for o in q.enqueue_many([JobRequest(type="ok")] * 6)]
        run.until(lambda: all(q.get(i).status == "completed" for i in created), "every job done")

    def done() -> float:
        return sum(
            value(samples(scrape(p)), "rjobs_worker_jobs_total", queue=QUEUE, type="ok", outcome="succeeded") or 0
            for p in (port, port + 1)
        )

    run.until(lambda: done() == 6, "the two processes counted every job once")
    assert run.stop() == 0
    assert redis_sync.zcard(f"rjobs:{{{QUEUE}}}:workers") == 0


@pytest.mark.anyio
async def test_an_observer_that_raises_changes_no_outcome(
    url: str, redis_sync: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_observer(queue: object, job: object, outcome: object) -> None:
        raise RuntimeError("observer bug")

    async with Queue("obs", url=url) as q:
        created = await q.enqueue("ok")
        worker = Worker(q, [jobs.ok], burst=True)
        worker.hooks.observers.append(broken_observer)
        await worker.run()
        assert (await q.get(created.id)).status == "completed"
    assert "observer" in caplog.text and "observer bug" in caplog.text
    assert assert_indexes_consistent(redis_sync, "obs", q.machine)["completed"] == 1
