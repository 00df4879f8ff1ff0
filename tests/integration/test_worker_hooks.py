"""Worker lifecycle hooks (on_startup, on_shutdown, before_job, after_job) and ``ctx.state``, on
real servers: the order and arguments of each call, sync and async, the outcome after_job sees,
and a start-up that fails without claiming anything."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import redis

from rjobs.client.queue import Queue
from rjobs.models import JobRequest
from rjobs.worker.context import JobContext
from rjobs.worker.functions import Fail, Partial, job
from rjobs.worker.hooks import Outcome, StartupFailed, WorkerState
from rjobs.worker.loop import Worker
from rjobs.worker.retry import RetryPolicy
from tests.helpers import keyspace_fingerprint

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
NOW = RetryPolicy(base=0, jitter="none")  # retried at once: burst mode waits for no delayed job


class Recorder:
    """Hooks that record each call (sync or async ones), and the thread each ran in."""

    def __init__(self, kind: str) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.threads: set[int] = set()
        self.outcomes: dict[str, Outcome] = {}
        self.kind = kind

    def _note(self, *call: Any) -> None:
        self.calls.append(call)
        self.threads.add(threading.get_ident())

    def hooks(self) -> dict[str, Any]:
        if self.kind == "sync":

            def on_startup(state: WorkerState) -> None:
                self._note("startup", state)
                state.pool = {"connections": 3}

            def on_shutdown(state: WorkerState) -> None:
                self._note("shutdown", state)

            def before_job(ctx: JobContext) -> None:
                self._note("before", ctx.job.id, ctx.state)

            def after_job(ctx: JobContext, outcome: Outcome) -> None:
                self._note("after", ctx.job.id, outcome.kind)
                self.outcomes[ctx.job.id] = outcome

            return locals() | {}

        async def on_startup(state: WorkerState) -> None:  # type: ignore[no-redef]
            await anyio.lowlevel.checkpoint()
            self._note("startup", state)
            state.pool = {"connections": 3}

        async def on_shutdown(state: WorkerState) -> None:  # type: ignore[no-redef]
            self._note("shutdown", state)

        async def before_job(ctx: JobContext) -> None:  # type: ignore[no-redef]
            self._note("before", ctx.job.id, ctx.state)

        async def after_job(ctx: JobContext, outcome: Outcome) -> None:  # type: ignore[no-redef]
            self._note("after", ctx.job.id, outcome.kind)
            self.outcomes[ctx.job.id] = outcome

        return {"on_startup": on_startup, "on_shutdown": on_shutdown, "before_job": before_job, "after_job": after_job}


def hooks_of(rec: Recorder) -> dict[str, Any]:
    return {k: v for k, v in rec.hooks().items() if k in ("on_startup", "on_shutdown", "before_job", "after_job")}


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_hooks_run_in_order_with_their_arguments(queue: Queue, kind: str) -> None:
    rec = Recorder(kind)
    seen: list[Any] = []

    async def work(ctx: JobContext, params: dict[str, Any]) -> int:
        seen.append(ctx.state.pool)
        rec.calls.append(("run", ctx.job.id))
        return 7

    a = (await queue.enqueue("work")).id
    w = Worker(queue, [work], concurrency=1, burst=True, lease=5, **hooks_of(rec))
    loop_thread = threading.get_ident()
    await w.run()
    assert rec.calls == [
        ("startup", w.state),
        ("before", a, w.state),
        ("run", a),
        ("after", a, "succeeded"),
        ("shutdown", w.state),
    ]
    assert seen == [{"connections": 3}]
    out = rec.outcomes[a]
    assert (out.kind, out.state, out.result, out.error, out.attempt) == ("succeeded", "completed", 7, None, 1)
    assert out.duration >= 0
    if kind == "sync":  # plain functions run in worker threads, never on the loop
        assert loop_thread not in rec.threads
    else:
        assert rec.threads == {loop_thread}
    assert (await queue.get(a)).result == 7


async def test_state_is_one_object_across_jobs_and_slots(queue: Queue) -> None:
    states: list[Any] = []
    both_running = anyio.Event()
    running = 0

    async def startup(state: WorkerState) -> None:
        state.hits = 0

    async def slow(ctx: JobContext, params: Any) -> None:
        nonlocal running
        states.append(ctx.state)
        ctx.state.hits += 1
        running += 1
        if running >= 2:
            both_running.set()
        with anyio.fail_after(10):
            await both_running.wait()  # two slots hold the same state at the same time

    def plain(ctx: JobContext, params: Any) -> None:
        states.append(ctx.state)

    await queue.enqueue_many([JobRequest(type=t) for t in ("slow", "slow", "plain", "plain")])
    w = Worker(queue, [slow, plain], concurrency=4, burst=True, lease=5, on_startup=startup)
    await w.run()
    assert len(states) == 4 and all(s is w.state for s in states)
    assert w.state.hits == 2


async def test_failing_startup_claims_nothing(queue: Queue, redis_sync: redis.Redis) -> None:
    ran: list[str] = []

    def open_pool(state: WorkerState) -> None:
        raise ConnectionRefusedError("database at db:5432 refused the connection")

    def shutdown(state: WorkerState) -> None:
        ran.append("shutdown")

    async def work(ctx: JobContext, params: Any) -> None:
        ran.append("work")

    jid = (await queue.enqueue("work")).id
    before = keyspace_fingerprint(redis_sync)
    w = Worker(queue, [work], burst=True, lease=5, on_startup=open_pool, on_shutdown=shutdown)
    with pytest.raises(StartupFailed) as info:
        await w.run()
    assert "on_startup hook" in str(info.value) and "open_pool" in str(info.value)
    assert "ConnectionRefusedError: database at db:5432 refused" in str(info.value)
    assert ran == []  # neither a job nor on_shutdown (startup never completed)
    assert keyspace_fingerprint(redis_sync) == before  # still ready, attempts unchanged
    got = await queue.get(jid)
    assert (got.status, got.attempt) == ("queued", 0)


async def test_hanging_startup_is_cancelled_by_stop(queue: Queue, redis_sync: redis.Redis) -> None:
    entered = anyio.Event()

    async def connect(state: WorkerState) -> None:
        entered.set()
        await anyio.sleep(1000)

    await queue.enqueue("work")
    before = keyspace_fingerprint(redis_sync)
    w = Worker(queue, {"work": lambda ctx, p: None}, lease=5, on_startup=connect)
    failed: list[BaseException] = []

    async def run() -> None:
        try:
            await w.run()
        except StartupFailed as exc:
            failed.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(10):
            await entered.wait()
        w.stop()
    assert len(failed) == 1 and "connect was cancelled" in str(failed[0])
    assert keyspace_fingerprint(redis_sync) == before


async def test_before_job_raising_fails_the_attempt(queue: Queue) -> None:
    calls: list[str] = []

    def before(ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("no database connection for this attempt")

    async def work(ctx: JobContext, params: Any) -> str:
        calls.append("work")
        return "ok"

    jid = (await queue.enqueue("work", max_attempts=2)).id
    once = (await queue.enqueue("work", max_attempts=1)).id
    w = Worker(queue, [work], burst=True, lease=5, retry=NOW, before_job=before)
    await w.run()
    retried, failed = await queue.get(jid), await queue.get(once)
    assert (retried.status, retried.attempt, retried.result) == ("completed", 2, "ok")
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "RuntimeError" and "no database connection" in failed.error.message
    assert calls == ["work"]


async def test_after_job_sees_each_outcome_kind(queue: Queue) -> None:
    seen: dict[str, list[Outcome]] = {}
    requeued: list[str] = []

    async def after(ctx: JobContext, outcome: Outcome) -> None:
        seen.setdefault(ctx.job.type, []).append(outcome)

    async def ok(ctx: JobContext, params: Any) -> dict[str, int]:
        return {"n": 1}

    async def half(ctx: JobContext, params: Any) -> Partial:
        return Partial({"done": 1}, "one of two")

    async def broken(ctx: JobContext, params: Any) -> None:
        raise Fail("card declined", code="declined")

    async def flaky(ctx: JobContext, params: Any) -> str:
        if ctx.attempt == 1:
            raise ValueError("first try")
        return "second"

    @job(timeout=0.2)
    async def slow(ctx: JobContext, params: Any) -> None:
        await anyio.sleep(30)

    async def cancelled(ctx: JobContext, params: Any) -> None:
        await ctx.queue.cancel(ctx.job.id, "operator said no")
        await anyio.sleep(30)  # the next heartbeat answers 'cancel'

    async def lost(ctx: JobContext, params: Any) -> str:
        if requeued:
            return "second lease"
        requeued.append(ctx.token)
        await ctx.queue.transition(ctx.job.id, "queued", operator=True)
        await ctx.progress(50)  # the token is no longer current: LeaseLost
        return "never"

    fns = [ok, half, broken, flaky, slow, cancelled, lost]
    names = ["ok", "half", "broken", "flaky", "slow", "cancelled", "lost"]
    await queue.enqueue_many([JobRequest(type=n, max_attempts=2 if n == "flaky" else 1) for n in names])
    w = Worker(queue, fns, concurrency=8, burst=True, lease=1.0, retry=NOW, after_job=after)
    with anyio.fail_after(30):
        await w.run()
    kinds = {t: [(o.kind, o.state) for o in outs] for t, outs in seen.items()}
    assert kinds["ok"] == [("succeeded", "completed")] and seen["ok"][0].result == {"n": 1}
    assert kinds["half"] == [("partial", "partial")] and seen["half"][0].result == {"done": 1}
    assert kinds["broken"] == [("failed", "failed")]
    broken_error = seen["broken"][0].error
    assert broken_error is not None and broken_error.code == "declined"
    assert kinds["flaky"] == [("retrying", "queued"), ("succeeded", "completed")]
    assert [o.attempt for o in seen["flaky"]] == [1, 2]
    assert kinds["slow"] == [("timed_out", "failed")]
    slow_error = seen["slow"][0].error
    assert slow_error is not None and slow_error.code == "timeout"
    assert kinds["cancelled"] == [("cancelled", None)]
    assert sorted(kinds["lost"], key=str) == [("lease_lost", None), ("succeeded", "completed")]  # either order


async def test_after_job_sees_a_review(url: str) -> None:
    from rjobs.machines import TASK

    seen: list[Outcome] = []

    async def check(ctx: JobContext, params: Any) -> None:
        await ctx.review("please check", result={"draft": 1})

    async with Queue("tasks", url=url, machine=TASK) as tasks:
        await tasks.enqueue("check")
        w = Worker(tasks, [check], burst=True, lease=5, after_job=lambda ctx, o: seen.append(o))
        await w.run()
    assert [(o.kind, o.state) for o in seen] == [("review", None)]


async def test_after_job_sees_a_hand_back_at_shutdown(queue: Queue) -> None:
    started = anyio.Event()
    seen: list[Outcome] = []

    async def long(ctx: JobContext, params: Any) -> None:
        started.set()
        await anyio.sleep(30)

    jid = (await queue.enqueue("long")).id
    w = Worker(queue, [long], lease=5, grace=0, after_job=lambda ctx, o: seen.append(o))
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.run)
        with anyio.fail_after(10):
            await started.wait()
        w.stop()
    assert [(o.kind, o.state) for o in seen] == [("handed_back", "queued")]
    got = await queue.get(jid)
    assert (got.status, got.attempt) == ("queued", 0)


async def test_after_job_raising_leaves_the_outcome_intact(queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    def after(ctx: JobContext, outcome: Outcome) -> None:
        raise RuntimeError("metrics backend down")

    async def work(ctx: JobContext, params: Any) -> str:
        return "done"

    jid = (await queue.enqueue("work")).id
    w = Worker(queue, [work], burst=True, lease=5, after_job=after)
    with caplog.at_level(logging.ERROR, logger="rjobs.worker"):
        await w.run()
    got = await queue.get(jid)
    assert (got.status, got.result, got.attempt) == ("completed", "done", 1)
    records = [r for r in caplog.records if r.name == "rjobs.worker" and "after_job hook" in r.getMessage()]
    assert len(records) == 1 and records[0].exc_info is not None


async def test_on_shutdown_runs_when_the_run_is_cancelled(queue: Queue) -> None:
    calls: list[str] = []
    started = anyio.Event()

    async def startup(state: WorkerState) -> None:
        calls.append("startup")

    async def shutdown(state: WorkerState) -> None:
        await anyio.lowlevel.checkpoint()  # shielded: it may await although the run was cancelled
        calls.append("shutdown")

    async def long(ctx: JobContext, params: Any) -> None:
        started.set()
        await anyio.sleep(30)

    await queue.enqueue("long")
    w = Worker(queue, [long], lease=5, on_startup=startup, on_shutdown=shutdown)
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.run)
        with anyio.fail_after(10):
            await started.wait()
        tg.cancel_scope.cancel()
    assert calls == ["startup", "shutdown"]


# -- through `rjobs worker` -----------------------------------------------------------------------
HOOKED_MODULE = """
import os, pathlib
from rjobs import Worker

LOG = pathlib.Path(os.environ["HOOK_LOG"])

def note(text):
    with LOG.open("a") as f:
        f.write(text + "\\n")

def open_pool(state):
    if os.environ.get("FAIL_STARTUP"):
        raise RuntimeError("cannot open the pool")
    if os.environ.get("HANG_STARTUP"):
        note("hanging")
        import time
        time.sleep(1000)
    state.pool = "pool"
    note("startup")

async def close_pool(state):
    note("shutdown " + state.pool)

async def work(ctx, params):
    note("job " + ctx.state.pool)
    return 1

worker = Worker("hq", [work], lease=5, on_startup=open_pool, on_shutdown=close_pool)
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    env["RJOBS_HOME"] = str(tmp_path / "home")
    env["HOOK_LOG"] = str(tmp_path / "hooks.log")
    env.update(extra)
    return env


def _wait_for(path: Path, text: str, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
@pytest.mark.slow
def test_on_shutdown_runs_on_sigterm_of_rjobs_worker(tmp_path: Path, url: str, redis_sync: redis.Redis) -> None:
    (tmp_path / "hooked.py").write_text(HOOKED_MODULE)
    log = tmp_path / "hooks.log"
    args = [sys.executable, "-m", "rjobs", "worker", "hooked:worker", "--url", url]
    proc = subprocess.Popen(args, env=_env(tmp_path), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(log, "startup", proc)
        from rjobs.client.sync_queue import SyncQueue

        with SyncQueue("hq", url=url) as q:
            jid = q.enqueue("work").id
            assert q.wait(jid, timeout=20).status == "completed"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert log.read_text().splitlines() == ["startup", "job pool", "shutdown pool"]


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_failing_startup_through_the_cli(tmp_path: Path, url: str, redis_sync: redis.Redis) -> None:
    (tmp_path / "hooked.py").write_text(HOOKED_MODULE)
    from rjobs.client.sync_queue import SyncQueue

    with SyncQueue("hq", url=url) as q:
        jid = q.enqueue("work").id
    before = keyspace_fingerprint(redis_sync)
    args = [sys.executable, "-m", "rjobs", "worker", "hooked:worker", "--url", url, "--burst"]
    done = subprocess.run(
        args, env=_env(tmp_path, FAIL_STARTUP="1"), cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, done.stderr
    assert "on_startup hook open_pool failed: RuntimeError: cannot open the pool" in errors[0]
    assert "Traceback" not in done.stderr
    assert keyspace_fingerprint(redis_sync) == before
    with SyncQueue("hq", url=url) as q:
        assert (q.get(jid).status, q.get(jid).attempt) == ("queued", 0)
    debug = subprocess.run(
        [*args, "--log-level", "DEBUG"],
        env=_env(tmp_path, FAIL_STARTUP="1"), cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert debug.returncode == 1 and "Traceback" in debug.stderr


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
@pytest.mark.slow
def test_hanging_startup_stopped_by_sigterm(tmp_path: Path, url: str, redis_sync: redis.Redis) -> None:
    (tmp_path / "hooked.py").write_text(HOOKED_MODULE)
    before = keyspace_fingerprint(redis_sync)
    args = [sys.executable, "-m", "rjobs", "worker", "hooked:worker", "--url", url]
    env = _env(tmp_path, HANG_STARTUP="1")
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(tmp_path / "hooks.log", "hanging", proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert "could not start: on_startup hook open_pool was cancelled" in err and "Traceback" not in err
    assert keyspace_fingerprint(redis_sync) == before


async def test_on_shutdown_runs_when_the_run_fails_after_start_up() -> None:
    from rjobs.cli.server import free_port

    calls: list[str] = []
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    w = Worker(
        "nowhere", {"work": lambda ctx, p: None}, url=url, start_timeout=0.3,
        on_startup=lambda state: calls.append("startup"), on_shutdown=lambda state: calls.append("shutdown"),
    )  # fmt: skip
    with pytest.raises(redis.ConnectionError):
        await w.run()
    assert calls == ["startup", "shutdown"]
