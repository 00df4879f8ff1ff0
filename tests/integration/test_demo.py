"""``rjobs demo`` end to end, as a newcomer runs it: against the suite's server and on the embedded
server it starts from nothing. Every demo job's final state is checked in Redis, not in the output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from rjobs.cli.embedded import stop_embedded
from rjobs.cli.server import free_port
from tests.helpers import job_history

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {
    "render_video": "completed",
    "send_invoice": "completed",
    "import_contacts": "partial",
    "charge_card": "failed",
    "export_archive": "cancelled",
}


def run_rjobs(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``rjobs ARGS`` with a private RJOBS_HOME whose embedded server gets a free port, no REDIS_URL."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["RJOBS_HOME"] = str(home)
    env["RJOBS_SERVER_PORT"] = str(free_port())
    return subprocess.run(
        [sys.executable, "-m", "rjobs", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def check_in_redis(client: redis.Redis, queue: str) -> dict[str, str]:
    """The demo queue's jobs as Redis has them: type -> status, plus the per-job checks."""
    prefix = f"rjobs:{{{queue}}}:"
    seen: dict[str, str] = {}
    for key in client.scan_iter(match=prefix + "job:*", count=1000):
        name = key.decode()
        if name.count(":") != 3:  # job:<id>:history / :assets
            continue
        job: Any = client.hgetall(key)
        kind, status = job[b"type"].decode(), job[b"status"].decode()
        seen[kind] = status
        if kind == "send_invoice":  # failed once, then succeeded on the retry
            assert job[b"attempt"] == b"2"
            events = [e["event"] for e in job_history(client, prefix, name.rsplit(":", 1)[1])]
            assert events.count("processing") == 2 and events[-1] == "completed"
        if kind == "render_video":
            assert client.hlen(name + ":assets") == 2 and job[b"progress"] == b"100"
        if kind == "export_archive":  # it was running when the demo cancelled it
            moves = [(e.get("from"), e.get("to")) for e in job_history(client, prefix, name.rsplit(":", 1)[1])]
            assert ("processing", "cancelled") in moves
    return seen


def test_demo_against_a_given_server(tmp_path: Path, url: str, redis_sync: redis.Redis) -> None:
    started = time.monotonic()
    done = run_rjobs(tmp_path / "home", "demo", "--url", url, "--json")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)  # --json: one document and nothing else on stdout
    assert report["ok"] is True and report["url"] == url and took < 25
    assert {j["type"]: j["status"] for j in report["jobs"]} == EXPECTED
    assert all(j["ok"] for j in report["jobs"])
    assert check_in_redis(redis_sync, report["queue"]) == EXPECTED
    port = url.rsplit(":", 1)[1].split("/")[0]
    invoice = next(j["id"] for j in report["jobs"] if j["type"] == "send_invoice")
    queue = report["queue"]
    assert report["commands"] == [  # given with --url, so the suggested commands repeat it
        f"rjobs show {invoice} -q {queue} --url {url}",
        f"rjobs events {queue} --url {url}",
        f"rjobs stats {queue} --url {url}",
    ]
    assert report["redis_cli"][0] == f"redis-cli -p {port} HGETALL 'rjobs:{{{queue}}}:job:{invoice}'"
    assert not (tmp_path / "home").exists()  # with --url nothing embedded was started


def test_demo_on_the_embedded_server_from_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    try:
        done = run_rjobs(home, "demo")
        assert done.returncode == 0, done.stdout + done.stderr
        url = re.search(r"started the embedded valkey at (redis://\S+)", done.stderr)
        assert url is not None, done.stderr
        out = done.stdout
        queue = re.search(r"on queue (demo-[\w-]+)", out)
        assert queue is not None, out
        for kind, state in EXPECTED.items():  # the outcome table (rich draws it without a terminal too)
            assert re.search(rf"{kind}\W+{state}\b", out), (kind, out)
        port = url.group(1).rsplit(":", 1)[1].split("/")[0]
        # The hint works without redis-cli: rjobs commands, which find the embedded server on their own.
        show = re.search(rf"^  (rjobs show (\S+) -q {queue.group(1)})$", out, re.MULTILINE)
        assert show is not None, out
        assert f"  rjobs events {queue.group(1)}\n" in out and f"  rjobs stats {queue.group(1)}\n" in out
        assert f"redis-cli -p {port} HGETALL 'rjobs:{{{queue.group(1)}}}:job:" in out
        assert "demo passed" in out
        with redis.Redis.from_url(url.group(1)) as client:
            assert check_in_redis(client, queue.group(1)) == EXPECTED
        again = run_rjobs(home, *show.group(1).split()[1:])  # the hint, as printed
        assert again.returncode == 0 and again.stderr == "", again.stderr  # the server is reused, silently
        assert "send_invoice" in again.stdout and "completed" in again.stdout
    finally:
        stop_embedded(home)
