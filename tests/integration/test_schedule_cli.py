"""``rjobs schedule ls|add|rm`` as users run it: a subprocess against a real server, with the
keyspace checked after each action (bad input: exit 2 and nothing written)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.helpers import keyspace_fingerprint

ROOT = Path(__file__).resolve().parents[2]
KEY = "rjobs:{cq}:schedules"
pytestmark = pytest.mark.parametrize("server", ["valkey"], indirect=True)


def rjobs(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["RJOBS_HOME"] = str(tmp_path / "home")
    cmd = [sys.executable, "-m", "rjobs", *args, "--url", url]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)


def test_add_ls_rm(tmp_path: Path, url: str, redis_sync: redis.Redis) -> None:
    done = rjobs(tmp_path, url, "schedule", "add", "cq", "nightly", "report", "--cron", "0 3 * * *",
                 "--tz", "Europe/Paris", "-p", '{"kind": "daily"}', "--missed", "once")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("created nightly: next run ")
    doc = json.loads(redis_sync.hget(KEY, "nightly") or "")
    assert doc["cron"] == "0 3 * * *" and doc["tz"] == "Europe/Paris" and doc["missed"] == "once"
    assert json.loads(doc["params"]) == {"kind": "daily"}
    assert rjobs(tmp_path, url, "schedule", "add", "cq", "poll", "poll", "--every", "30").returncode == 0
    assert redis_sync.hlen(KEY) == 2

    done = rjobs(tmp_path, url, "schedule", "ls", "cq", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [s["name"] for s in listed] == ["nightly", "poll"]
    assert listed[1]["every"] == 30 and listed[1]["next_ms"] % 30_000 == 0 and listed[1]["last_ms"] is None
    human = rjobs(tmp_path, url, "schedule", "ls", "cq").stdout
    assert "nightly" in human and "0 3 * * * (Europe/Paris)" in human and "every 30 s" in human

    stats = json.loads(rjobs(tmp_path, url, "stats", "cq", "--json").stdout)
    assert stats["schedules"]["poll"] == {"next_ms": listed[1]["next_ms"], "last_ms": None}
    assert "schedule nightly: next run " in rjobs(tmp_path, url, "stats", "cq").stdout

    assert rjobs(tmp_path, url, "schedule", "rm", "cq", "poll").returncode == 0
    assert redis_sync.hkeys(KEY) == [b"nightly"]
    gone = rjobs(tmp_path, url, "schedule", "rm", "cq", "poll")
    assert gone.returncode == 3 and "no schedule 'poll'" in gone.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--cron", "61 * * * *"],
        ["--cron", "* * * *"],
        ["--every", "0"],
        ["--every", "-5"],
        ["--every", "5", "--tz", "Mars/Olympus_Mons"],
        ["--every", "5", "-p", "{not json"],
        ["--every", "5", "--grace", "-1"],
        [],
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, url: str, redis_sync: redis.Redis, args: list[str]
) -> None:
    rjobs(tmp_path, url, "schedule", "add", "cq", "keep", "t", "--every", "60")
    before = keyspace_fingerprint(redis_sync)
    done = rjobs(tmp_path, url, "schedule", "add", "cq", "bad", "t", *args)
    assert done.returncode == 2, done.stderr
    assert "error" in done.stderr
    assert keyspace_fingerprint(redis_sync) == before
    assert rjobs(tmp_path, url, "schedule", "add", "cq", "bad name!", "t", "--every", "5").returncode == 2
    assert keyspace_fingerprint(redis_sync) == before
