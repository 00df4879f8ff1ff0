"""Jobs in child processes with a hard time limit (``@job(timeout=..., isolate=True)``), and
``rjobs worker --processes N`` (prefork), with real processes and a real server."""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from rjobs.client.queue import Queue
from rjobs.models import JobRequest
from rjobs.worker.functions import job
from rjobs.worker.loop import Worker
from rjobs.worker.retry import RetryPolicy
from tests import processjobs
from tests.helpers import job_history

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]
#: Process handling is not server-specific: one server kind keeps these tests short.
valkey_only = pytest.mark.parametrize("server", ["valkey"], indirect=True)
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
