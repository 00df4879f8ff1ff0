"""``rjobs worker TARGET`` when TARGET is not a Worker: a job function, a file path, a module that
does not exist or fails to import, a missing attribute. Each is one line on stderr saying what was
expected and how to fix it, exit code 2 (usage), and nothing written to Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.helpers import keyspace_fingerprint

ROOT = Path(__file__).resolve().parents[2]

MODULE = """
from rjobs import Worker, job

def double(ctx, params):
    return params["n"] * 2

@job
def triple(ctx, params):
    return params["n"] * 3

def make(size):
    return Worker("tq", [double])

worker = Worker("tq", [double, triple], lease=5.0)
"""

CASES = [
    # (target, what stderr must say)
    ("myjobs:double", ["myjobs:double is a job function, not an rjobs.Worker", "myjobs:worker"]),
    ("myjobs:triple", ["the job function 'triple', not an rjobs.Worker", "myjobs:worker"]),
    ("myjobs:make", ["a function that takes arguments", "myjobs:worker"]),
    ("myjobs.py:worker", ["is a file path", "use myjobs:worker", "directory that holds myjobs.py"]),
    ("./myjobs.py", ["is a file path", "use myjobs:worker", "directory that holds myjobs.py"]),
    ("myjobs", ["must look like module:attr", "myjobs:worker"]),
    ("nosuchmodule:worker", ["no module named 'nosuchmodule'", "directory that holds nosuchmodule.py"]),
    ("broken:worker", ["importing broken failed at", "broken.py:2", "No module named 'numpy_not_installed_here'"]),
    ("raising:worker", ["importing raising failed at", "raising.py:3", "RuntimeError: settings missing"]),
    ("myjobs:nope", ["myjobs has no attribute 'nope'", "the Worker it defines is myjobs:worker"]),
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "myjobs.py").write_text(MODULE)
    (tmp_path / "broken.py").write_text("import os\nimport numpy_not_installed_here\n")
    (tmp_path / "raising.py").write_text('import os\n\nraise RuntimeError("settings missing")\n')
    return tmp_path


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
@pytest.mark.parametrize(("target", "says"), CASES, ids=[c[0] for c in CASES])
def test_target_that_is_not_a_worker(
    workdir: Path, url: str, redis_sync: redis.Redis, target: str, says: list[str]
) -> None:
    redis_sync.set("rjobs:{other}:marker", "1")  # something to compare: the fingerprint of a non-empty keyspace
    before = keyspace_fingerprint(redis_sync)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONPATH"] = str(ROOT)
    env["RJOBS_HOME"] = str(workdir / "home")
    done = subprocess.run(
        [sys.executable, "-m", "rjobs", "worker", target, "--url", url, "--burst"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"rjobs: error: cannot load worker {target}: ")
    for text in says:
        assert text in lines[0]
    assert "Traceback" not in done.stderr
    assert keyspace_fingerprint(redis_sync) == before
