"""`rjobs worker MODULE:ATTR` serves the queues its module defines, on the servers they name; `--url`
replaces them, `REDIS_URL` only fills in for queues that name none; the start line says which server,
without its password. Real subprocesses, as users run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rjobs import SyncQueue
from rjobs.cli.server import LocalServer
from tests.helpers import server_binary
from tests.integration.test_cli import ROOT, cli_env

PASSWORD = "s3cret-pw"

MODULE = """
from rjobs import Queue, Worker


def double(ctx, params):
    return params["n"] * 2


worker = Worker(Queue("wq", url={url!r}), functions={{"double": double}}, lease=5.0)
"""


@pytest.fixture
def guarded(server: LocalServer, tmp_path: Path) -> Iterator[str]:
    """A second server of the test's kind, with a password; yields its URL (password included)."""
    other = LocalServer(server_binary(server.name), data_dir=tmp_path / "guarded")
    other.start()
    try:
        with redis.Redis(port=other.port) as admin:
            admin.config_set("requirepass", PASSWORD)
        yield f"redis://:{PASSWORD}@127.0.0.1:{other.port}/0"
    finally:
        other.stop()


def run_worker(tmp_path: Path, module_url: str | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "urljobs.py").write_text(MODULE.format(url=module_url))
    environ = cli_env(tmp_path / "home", **env)
    environ["PYTHONPATH"] = os.pathsep.join([str(tmp_path), environ["PYTHONPATH"]])
    return subprocess.run(
        [sys.executable, "-m", "rjobs", "worker", "urljobs:worker", "--burst", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=ROOT,
    )


def start_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stderr + done.stdout
    found = re.search(r"worker \S+: server (\S+), queues", done.stderr)
    assert found, done.stderr
    return found.group(1)


def enqueue(url: str, n: int) -> tuple[SyncQueue, str]:
    q = SyncQueue("wq", url)
    return q, q.enqueue("double", {"n": n}).id


def test_worker_serves_the_servers_its_module_names(tmp_path: Path, url: str, guarded: str) -> None:
    port = guarded.rsplit(":", 1)[1].split("/")[0]
    module_q, in_module = enqueue(guarded, 1)
    cli_q, on_cli = enqueue(url, 2)

    # No --url, no REDIS_URL: the module's Queue(url=...) (once this served an embedded server).
    assert start_line(run_worker(tmp_path, guarded)) == f"redis://127.0.0.1:{port}/0"
    assert module_q.get(in_module).result == 2 and cli_q.get(on_cli).status == "queued"

    # REDIS_URL does not override an explicit url= in code.
    module_q, in_module = enqueue(guarded, 3)
    assert start_line(run_worker(tmp_path, guarded, REDIS_URL=url)) == f"redis://127.0.0.1:{port}/0"
    assert module_q.get(in_module).result == 6 and cli_q.get(on_cli).status == "queued"

    # --url wins over both.
    assert start_line(run_worker(tmp_path, guarded, "--url", url, REDIS_URL=guarded)) == url
    assert cli_q.get(on_cli).result == 4

    # A queue that names no server takes REDIS_URL.
    cli_q, on_cli = enqueue(url, 5)
    assert start_line(run_worker(tmp_path, None, REDIS_URL=url)) == url
    assert cli_q.get(on_cli).result == 10
    module_q.close()
    cli_q.close()
