"""Liveness for supervisors (systemd, Docker, Kubernetes): a worker that heartbeats says so.

- ``health_file``: the file's modification time is set (the file created if needed) after every
  heartbeat round that every queue answered, the first one right after the server answered at
  start. A probe checks its age: older than a few heartbeat intervals means the worker's event
  loop is stuck or Redis is out of reach.
- ``health_port``: a tiny HTTP endpoint on ``health_host`` (127.0.0.1 by default): ``GET /health``
  answers 200 with a small JSON body while the last good heartbeat round is younger than two
  heartbeat intervals, 503 before the first one, when it is older, and once the worker is
  shutting down. Served on the worker's own event loop, like the heartbeat: a wedged loop does
  not answer, which a probe's timeout reads as failure.

docs/deploy.md shows both in a systemd unit, a Dockerfile and a Kubernetes Deployment."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.abc
import msgspec

__all__ = ["Health", "HealthPath"]

#: What ``health_file`` may be given as.
HealthPath = str | os.PathLike[str]

log = logging.getLogger("rjobs.worker")
_encode = msgspec.json.Encoder().encode
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class Health:
    """A worker's liveness signals: the health file and the HTTP endpoint (each optional).
    ``beat(ok)`` is told the outcome of every heartbeat round; ``stopping()`` says whether the
    worker is shutting down."""

    def __init__(
        self,
        worker_id: str,
        interval: float,
        file: HealthPath | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.worker_id = worker_id
        self.stopping = stopping
        self.interval = interval
        self.file: Path | None = None
        self.port: int | None = None
        self.host = "127.0.0.1"
        self.configure(file, port, host)
        #: The port the endpoint listens on once serving (``port=0`` picks a free one).
        self.bound_port: int | None = None
        self.last_ok: float | None = None  # monotonic time of the last good heartbeat round

    def configure(self, file: HealthPath | None = None, port: int | None = None, host: str | None = None) -> None:
        """Set the health file, the port (0: any free one) and the host it listens on; None keeps
        the current one. ValueError for a port or host that cannot be."""
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
            raise ValueError("health_port must be a TCP port 0-65535 (0: any free one)")
        if host is not None and (not isinstance(host, str) or not host):
            raise ValueError("health_host must be a host name or address")
        self.file = Path(file) if file is not None else self.file
        self.port = port if port is not None else self.port
        self.host = host if host is not None else self.host

    def beat(self, ok: bool) -> None:
        """A heartbeat round ended; ``ok``: every queue answered."""
        if not ok:
            return
        self.last_ok = time.monotonic()
        if self.file is not None:
            try:
                self.file.touch()
            except OSError as exc:
                log.warning("cannot touch the health file %s: %s", self.file, exc)

    def status(self) -> tuple[int, dict[str, object]]:
        """The endpoint's answer now: (HTTP status, JSON body)."""
        age = None if self.last_ok is None else time.monotonic() - self.last_ok
        if self.stopping():
            state = "stopping"
        elif age is None:
            state = "starting"
        else:
            state = "ok" if age < 2 * self.interval else "stale"
        body: dict[str, object] = {
            "status": state,
            "worker": self.worker_id,
            "last_heartbeat_age_s": None if age is None else round(age, 3),
        }
        return (200 if state == "ok" else 503), body

    async def serve(self) -> None:
        """Serve the endpoint until cancelled (returns at once without ``port``)."""
        if self.port is None:
            return
        try:
            listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        except OSError as exc:  # the worker stops: a supervisor probing this port would see it dead anyway
            raise OSError(
                exc.errno, f"health endpoint cannot listen on {self.host}:{self.port}: {exc.strerror}"
            ) from exc
        try:
            async with listener:
                self.bound_port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
                log.info("worker %s: health on http://%s:%d/health", self.worker_id, self.host, self.bound_port)
                await listener.serve(self._answer)
        finally:
            self.bound_port = self.last_ok = None  # a later run starts afresh

    async def _answer(self, stream: anyio.abc.SocketStream) -> None:
        try:
            async with stream:
                await self._exchange(stream)
        except Exception as exc:  # a client's misstep never ends the worker
            log.debug("health endpoint: %s: %s", type(exc).__name__, exc)

    async def _exchange(self, stream: anyio.abc.SocketStream) -> None:
        request = b""
        with anyio.move_on_after(5):
            while b"\r\n\r\n" not in request and len(request) < 8192:
                try:
                    request += await stream.receive(4096)
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    break
        words = request.split(b"\r\n", 1)[0].split()
        method, path = (words[0], words[1].split(b"?")[0]) if len(words) >= 2 else (b"", b"")
        body: dict[str, object]
        if method not in (b"GET", b"HEAD"):
            code, body = 405, {"error": "use GET"}
        elif path != b"/health":
            code, body = 404, {"error": "try GET /health"}
        else:
            code, body = self.status()
        payload = _encode(body) + b"\n"
        head = (
            f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(anyio.BrokenResourceError, OSError):
            await stream.send(head + (payload if method != b"HEAD" else b""))
