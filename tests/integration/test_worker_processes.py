"""Jobs in child processes with a hard time limit (``@job(timeout=..., isolate=True)``), and
``rjobs worker --processes N`` (prefork), with real processes and a real server."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from rjobs.client.queue import Queue
from rjobs.client.sync_queue import SyncQueue
from rjobs.models import JobRequest
from rjobs.worker.functions import job
from rjobs.worker.loop import Worker
from rjobs.worker.retry import RetryPolicy
from tests import processjobs
from tests.helpers import job_history, keyspace_fingerprint

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]
#: Process handling is not server-specific: one server kind keeps these tests short.
valkey_only = pytest.mark.parametrize("server", ["valkey"], indirect=True)
ROOT = Path(__file__).resolve().parents[2]
NOW = RetryPolicy(base=0, jitter="none")


def gone(pid: int) -> bool:
    """True once no process has that pid (reaped, not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def pid_in(path: Path) -> int:
    return int(path.read_text())


def written(path: Path) -> bool:
    return path.exists() and bool(path.read_text())


async def until(check: Callable[[], bool], within: float = 30) -> None:
    """Poll ``check`` (a process or a file: nothing to wait on) until it holds."""
    with anyio.fail_after(within):
        while not check():  # noqa: ASYNC110 - no event to wait on
            await anyio.sleep(0.05)


@valkey_only
@pytest.mark.slow
async def test_hard_limit_kills_a_stuck_and_a_spinning_job(queue: Queue, tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.pid" for name in ("stuck", "spin")}
    ids = {
        name: (await queue.enqueue(name, {"pid_file": str(path)}, max_attempts=1)).id for name, path in files.items()
    }
    w = Worker(queue, [processjobs.stuck, processjobs.spin], concurrency=2, burst=True, lease=5)
    with anyio.fail_after(60):
        await w.run()
    for name, jid in ids.items():
        got = await queue.get(jid)
        assert got.status == "failed" and got.error is not None, name
        assert got.error.code == "timeout" and "process was killed" in got.error.message
        assert gone(pid_in(files[name])), f"the child of {name} is still there"
        assert pid_in(files[name]) != os.getpid()


@valkey_only
async def test_results_progress_and_reuse_cross_the_process_boundary(
    queue: Queue, redis_sync: redis.Redis, tmp_path: Path
) -> None:
    first = (await queue.enqueue("pid", {"n": 1})).id
    second = (await queue.enqueue("async_pid")).id
    w = Worker(queue, [processjobs.pid, processjobs.async_pid], concurrency=1, burst=True, lease=5)
    with anyio.fail_after(60):
        await w.run()
    one, two = await queue.get(first), await queue.get(second)
    assert one.status == "completed" and two.status == "completed"
    assert one.result["params"] == {"n": 1} and one.result["attempt"] == 1
    assert one.result["pid"] != os.getpid()
    assert two.result == one.result["pid"]  # one child ran both: reused, not spawned per job
    assert one.progress is not None and one.progress.step == "half"  # relayed by the worker
    events = job_history(redis_sync, queue.backend.keys.prefix, first)
    assert any(e["event"] == "comment" and "from the child" in e.get("msg", "") for e in events)
    assert gone(one.result["pid"])  # the worker stopped its idle child on the way out


@valkey_only
@pytest.mark.slow
async def test_the_lease_is_renewed_while_the_child_runs(queue: Queue, redis_sync: redis.Redis) -> None:
    jid = (await queue.enqueue("nap", {"seconds": 2.5})).id
    w = Worker(queue, [processjobs.nap], burst=True, lease=0.6)  # the job outlives four leases
    with anyio.fail_after(60):
        await w.run()
    got = await queue.get(jid)
    assert (got.status, got.attempt) == ("completed", 1)
    assert w.stats.lease_lost == 0 and w.stats.heartbeats >= 3
    assert not any(e["event"] == "lease_expired" for e in job_history(redis_sync, queue.backend.keys.prefix, jid))


@valkey_only
async def test_errors_and_deaths_in_the_child(queue: Queue, tmp_path: Path) -> None:
    declined = (await queue.enqueue("declined", max_attempts=3)).id
    exited = (await queue.enqueue("crash", {"pid_file": str(tmp_path / "a")}, max_attempts=1)).id
    segv = (await queue.enqueue("crash", {"how": "segfault"}, max_attempts=1)).id
    w = Worker(queue, [processjobs.declined, processjobs.crash], concurrency=3, burst=True, lease=5, retry=NOW)
    with anyio.fail_after(60):
        await w.run()
    got = await queue.get(declined)
    assert got.status == "failed" and got.attempt == 1 and got.error is not None  # Fail: not retried
    assert got.error.code == "declined" and got.error.traceback is not None
    assert "raise Fail" in got.error.traceback and "processjobs.py" in got.error.traceback
    got = await queue.get(exited)
    assert got.status == "failed" and got.error is not None and got.error.code == "child_died"
    assert "exited with code 3" in got.error.message
    got = await queue.get(segv)
    assert got.status == "failed" and got.error is not None and got.error.code == "child_died"
    assert "SIGSEGV" in got.error.message


@valkey_only
async def test_cancelling_an_isolated_job_kills_its_process(queue: Queue, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    jid = (await queue.enqueue("wait_long", {"pid_file": str(pid_file)})).id
    w = Worker(queue, [processjobs.wait_long], lease=1.0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.run)
        await until(lambda: written(pid_file))
        await queue.cancel(jid, "no longer needed")
        await until(lambda: gone(pid_in(pid_file)))  # the next heartbeat answers 'cancel'
        w.stop()
    assert (await queue.get(jid)).status == "cancelled"


@valkey_only
async def test_shutdown_hands_back_an_isolated_job_and_kills_its_process(queue: Queue, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    jid = (await queue.enqueue("wait_long", {"pid_file": str(pid_file)})).id
    w = Worker(queue, [processjobs.wait_long], lease=5, grace=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.run)
        await until(lambda: written(pid_file))
        w.stop()
    got = await queue.get(jid)
    assert (got.status, got.attempt) == ("queued", 0)
    assert gone(pid_in(pid_file))


def test_isolated_functions_must_be_importable_by_reference() -> None:
    with pytest.raises(TypeError, match="cannot be imported by reference"):
        job(isolate=True)(lambda ctx, params: None)

    def local(ctx: Any, params: Any) -> None:
        pass

    with pytest.raises(TypeError, match="top level of an importable module"):
        job(isolate=True)(local)
    clone = types.FunctionType(processjobs.slow.__code__, processjobs.slow.__globals__, "slow")
    clone.__module__, clone.__qualname__ = "tests.processjobs", "slow"  # that name is another function
    with pytest.raises(TypeError, match="names another object"):
        Worker("q", [job(isolate=True)(clone)])
    clone.__module__ = "no_such_module_here"
    with pytest.raises(TypeError, match=r"cannot be imported \(ModuleNotFoundError"):
        Worker("q", [job(isolate=True)(clone)])


@valkey_only
async def test_isolated_jobs_of_a_batch(queue: Queue) -> None:
    await queue.enqueue_many([JobRequest(type="pid", params={"n": n}) for n in range(4)])
    w = Worker(queue, [processjobs.pid], concurrency=2, burst=True, lease=5)
    with anyio.fail_after(60):
        await w.run()
    jobs = await queue.list(state="completed")
    assert sorted(j.result["params"]["n"] for j in jobs) == [0, 1, 2, 3]
    assert len({j.result["pid"] for j in jobs}) <= 2  # at most one child per slot


# -- rjobs worker --processes N ---------------------------------------------------------------------
PREFIX = "rjobs:{pre}:"
CHILD_LINE = re.compile(r"child (\d+) (started|ready) \(pid (\d+), worker (\S+)\)")


class Prefork:
    """A real ``rjobs worker tests.processjobs:... --processes N``, its stderr read by a thread."""

    def __init__(self, url: str, *args: str, target: str = "tests.processjobs:make_worker") -> None:
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env.update(PYTHONPATH=str(ROOT), RJOBS_TEST_QUEUE="pre", RJOBS_TEST_LEASE="1.0")
        cmd = [sys.executable, "-m", "rjobs", "worker", target, "--url", url, *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def children(self, state: str) -> dict[int, tuple[int, str]]:
        """Child index -> (pid, worker id) of its latest `started` or `ready` line."""
        out: dict[int, tuple[int, str]] = {}
        for line in list(self.lines):
            m = CHILD_LINE.search(line)
            if m and m.group(2) == state:
                out[int(m.group(1))] = (int(m.group(3)), m.group(4))
        return out

    def wait_for(self, check: Callable[[], bool], what: str, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while not check():
            assert time.monotonic() < deadline, f"never: {what}\n{''.join(self.lines)}"
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid, _ in self.children("started").values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def prefork(url: str) -> Iterator[Callable[..., Prefork]]:
    started: list[Prefork] = []

    def start(*args: str, **kwargs: str) -> Prefork:
        started.append(Prefork(url, *args, **kwargs))
        return started[-1]

    yield start
    for p in started:
        p.kill()


@valkey_only
@pytest.mark.chaos
@pytest.mark.slow
def test_processes_share_the_work_restart_a_killed_child_and_stop_on_sigterm(
    prefork: Callable[..., Prefork], url: str, redis_sync: redis.Redis
) -> None:
    p = prefork("--processes", "2")
    p.wait_for(lambda: len(p.children("ready")) == 2, "two children ready")
    (pid1, id1), (pid2, id2) = p.children("ready")[1], p.children("ready")[2]
    assert id1.endswith("-1") and id2.endswith("-2") and id1[:-2] == id2[:-2] and pid1 != pid2
    with SyncQueue("pre", url=url) as q:
        ids = [q.enqueue("slow", {"seconds": 0.3}).id for _ in range(8)]
        results = {q.wait(jid, timeout=30).output for jid in ids}
        assert results == {id1, id2}  # both children ran jobs, under their own worker ids
        claimed_by = {
            e["actor"] for jid in ids for e in job_history(redis_sync, PREFIX, jid) if e.get("to") == "processing"
        }
        assert claimed_by == {id1, id2}

        # SIGKILL the child running a long job: it is restarted, the job re-queued by a reaper.
        long = q.enqueue("slow", {"seconds": 2.0}).id
        p.wait_for(lambda: q.get(long).status == "processing", "the long job runs")
        holder = next(e["actor"] for e in job_history(redis_sync, PREFIX, long) if e.get("to") == "processing")
        index = 1 if holder == id1 else 2
        victim = p.children("ready")[index][0]
        os.kill(victim, signal.SIGKILL)
        p.wait_for(lambda: p.children("ready")[index][0] != victim, "the killed child restarted")
        assert any(f"child {index} (pid {victim}" in line and "restarting it" in line for line in p.lines)
        assert q.wait(long, timeout=30).status == "completed"
        assert q.get(long).attempt == 2
        events = job_history(redis_sync, PREFIX, long)
        assert any(e["event"] == "lease_expired" for e in events)

    pids = [pid for pid, _ in p.children("started").values()] + [victim]
    assert p.stop() == 0, "".join(p.lines)
    assert all(gone(pid) for pid in pids)


@valkey_only
def test_processes_exit_with_the_start_up_failure_of_their_children(
    prefork: Callable[..., Prefork], redis_sync: redis.Redis
) -> None:
    before = keyspace_fingerprint(redis_sync)
    p = prefork("--processes", "2", target="tests.processjobs:make_failing_worker")
    code = p.proc.wait(timeout=60)
    p._reader.join(5)
    assert code == 1, "".join(p.lines)
    text = "".join(p.lines)
    assert "on_startup hook broken_startup failed: RuntimeError: no database here" in text
    assert "before it started: stopping" in text and "Traceback" not in text
    assert keyspace_fingerprint(redis_sync) == before


@valkey_only
def test_processes_in_burst_mode_end_when_the_queue_is_empty(prefork: Callable[..., Prefork], url: str) -> None:
    with SyncQueue("pre", url=url) as q:
        ids = [q.enqueue("slow", {"seconds": 0.05}).id for _ in range(4)]
        p = prefork("--processes", "2", "--burst")
        assert p.proc.wait(timeout=60) == 0
        p._reader.join(5)
        assert all(q.get(jid).status == "completed" for jid in ids)
    assert not any("restarting" in line for line in p.lines)


@valkey_only
@pytest.mark.chaos
def test_a_second_signal_stops_the_children_at_once(prefork: Callable[..., Prefork], url: str) -> None:
    p = prefork("--processes", "2")
    p.wait_for(lambda: len(p.children("ready")) == 2, "two children ready")
    with SyncQueue("pre", url=url) as q:
        jid = q.enqueue("slow", {"seconds": 60}).id
        p.wait_for(lambda: q.get(jid).status == "processing", "the long job runs")
        p.proc.send_signal(signal.SIGTERM)  # graceful: the children wait up to their 5 s grace
        p.wait_for(lambda: any("shutting the children down" in line for line in p.lines), "the first signal seen")
        p.proc.send_signal(signal.SIGTERM)  # at once: the job is handed back
        assert p.proc.wait(timeout=30) == 0, "".join(p.lines)
        got = q.get(jid)
        assert (got.status, got.attempt) == ("queued", 0)
    assert all(gone(pid) for pid, _ in p.children("started").values())
