"""Who serves a queue, as the CLI shows it, with real ``rjobs worker`` subprocesses: ``rjobs workers``
(and its agreement with ``rjobs stats``), ``--health-file`` / ``--health-port``, the warning of
``rjobs enqueue`` when nobody serves a new queue, the notices of ``rjobs watch``, and the
keyspace after a worker stops cleanly or is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from rjobs.cli.server import free_port
from rjobs.store.keys import QueueKeys

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "cw"
K = QueueKeys(QUEUE)

pytestmark = [pytest.mark.timeout(90), pytest.mark.parametrize("server", ["valkey"], indirect=True)]


def env_for(tmp_path: Path, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["RJOBS_HOME"] = str(tmp_path / "home")
    env.update({f"RJOBS_TEST_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class Procs:
    """``rjobs`` subprocesses of one test, killed at the end; output in files."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp, self.url = tmp_path, url
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rjobs", *args, "--url", self.url],
            capture_output=True, text=True, timeout=60, env=env_for(self.tmp), cwd=ROOT,
        )  # fmt: skip

    def spawn(self, *args: str, **settings: Any) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"proc-{len(self.procs)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "rjobs", *args, "--url", self.url],
            stdout=log, stderr=subprocess.STDOUT, env=env_for(self.tmp, **settings), cwd=ROOT,
        )  # fmt: skip
        log.close()
        self.procs.append(proc)
        return proc

    def worker(self, *args: str) -> subprocess.Popen[bytes]:
        return self.spawn("worker", "tests.workerapp:make_worker", *args, queue=QUEUE, lease=1.5, grace=2)

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.tmp / f"proc-{self.procs.index(proc)}.log").read_text(errors="replace")

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def procs(tmp_path: Path, url: str) -> Iterator[Procs]:
    p = Procs(tmp_path, url)
    try:
        yield p
    finally:
        p.kill_all()


def wait_until(check: Callable[[], Any], what: str, log: Callable[[], str] = str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{log()}")


def listed(procs: Procs) -> dict[str, Any]:
    done = procs.run("workers", "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_workers_lists_a_live_worker_its_health_signals_and_a_clean_stop(
    procs: Procs, tmp_path: Path, redis_sync: redis.Redis
) -> None:
    assert listed(procs) == {"workers": [], "alive": {}}
    assert procs.run("workers").returncode == 0
    missing = procs.run("workers", "-q", "nope")
    assert missing.returncode == 3 and "not found" in missing.stderr
    path, port = tmp_path / "health", free_port()
    proc = procs.worker("--health-file", str(path), "--health-port", str(port))
    wait_until(path.exists, "the health file", lambda: procs.log(proc))
    doc = wait_until(lambda: (d := listed(procs))["workers"] and d, "the worker listed", lambda: procs.log(proc))
    (w,) = doc["workers"]
    assert w["pid"] == proc.pid and w["queues"] == [QUEUE] and w["functions"] == ["quick", "sleepy", "suicide"]
    assert w["alive"] and w["age_ms"] < 30_000 and w["in_flight"] == 0 and w["concurrency"] == 4 and w["host"]
    assert doc["alive"] == {QUEUE: 1}
    stats = json.loads(procs.run("stats", QUEUE, "--json").stdout)
    assert stats["workers"] == [w["id"]], "rjobs stats counts the same live workers"
    human = procs.run("workers", "-q", QUEUE)
    assert w["id"] in human.stdout and "workers alive per queue (last 30 s): cw 1" in human.stdout
    code, body = health(port)
    assert code == 200 and body["status"] == "ok" and body["worker"] == w["id"]
    before = path.stat().st_mtime_ns
    wait_until(lambda: path.stat().st_mtime_ns > before, "the health file touched by a later heartbeat")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, procs.log(proc)
    assert listed(procs) == {"workers": [], "alive": {QUEUE: 0}}
    assert not redis_sync.exists(K.workers_info) and not redis_sync.exists(K.workers)


@pytest.mark.chaos
@pytest.mark.slow
def test_a_killed_worker_is_unlisted_by_another_workers_reaper(procs: Procs, redis_sync: redis.Redis) -> None:
    victim = procs.worker()
    vid = wait_until(lambda: worker_id_of(redis_sync, victim), "the victim listed", lambda: procs.log(victim))
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    assert redis_sync.hexists(K.workers_info, vid), "a killed worker cannot unlist itself"
    survivor = procs.worker()
    # lease 1.5 s: the survivor's reaper forgets workers silent for max(5 s, 3 leases)
    wait_until(lambda: not redis_sync.hexists(K.workers_info, vid), "the reaper to drop the victim", timeout=30)
    assert redis_sync.zscore(K.workers, vid) is None
    (w,) = listed(procs)["workers"]
    assert w["pid"] == survivor.pid
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(timeout=30) == 0
    assert not redis_sync.exists(K.workers_info) and not redis_sync.exists(K.workers)


def worker_id_of(r: redis.Redis, proc: subprocess.Popen[bytes]) -> str:
    """The id of the worker with this pid, once it is listed ('' before)."""
    for raw in r.hvals(K.workers_info):
        doc = json.loads(raw)
        if doc.get("pid") == proc.pid:
            return str(doc["id"])
    return ""


def test_enqueue_warns_once_when_nobody_serves_a_new_queue(procs: Procs, redis_sync: redis.Redis) -> None:
    first = procs.run("enqueue", "typo", "t")
    assert first.returncode == 0 and first.stdout.strip()
    assert "warning" in first.stderr and "no worker serves it" in first.stderr
    assert redis_sync.zcard(QueueKeys("typo").state("queued")) == 1, "the job is enqueued all the same"
    again = procs.run("enqueue", "typo", "t", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["outcome"] == "created"
    assert "warning" not in again.stderr, "the queue was declared before: no warning"


def test_watch_says_when_no_worker_is_alive_and_when_one_comes(procs: Procs) -> None:
    job = procs.run("enqueue", QUEUE, "sleepy", "-p", '{"first": 1.5}')
    assert job.returncode == 0
    watch = procs.spawn("watch", job.stdout.strip(), "-q", QUEUE)
    wait_until(lambda: "no worker is alive for queue 'cw'" in procs.log(watch), "the notice", lambda: procs.log(watch))
    worker = procs.worker()
    assert watch.wait(timeout=30) == 0, procs.log(watch)
    assert "a worker is alive for queue 'cw' again" in procs.log(watch)
    assert procs.log(watch).count("no worker is alive") == 1
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


def test_a_taken_health_port_stops_the_worker_with_one_line(procs: Procs, redis_sync: redis.Redis) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = procs.worker("--health-port", str(port))
        assert proc.wait(timeout=30) == 1
    log = procs.log(proc)
    assert f"health endpoint cannot listen on 127.0.0.1:{port}" in log and "Traceback" not in log, log
    assert not redis_sync.exists(K.workers_info) and not redis_sync.exists(K.workers), "it unlisted itself"


def test_health_port_is_refused_with_processes(procs: Procs, redis_sync: redis.Redis) -> None:
    out = procs.run("worker", "tests.workerapp:make_worker", "--processes", "2", "--health-port", str(free_port()))
    assert out.returncode == 2 and "--health-port serves one process" in out.stderr
    assert not redis_sync.keys("rjobs:*")
