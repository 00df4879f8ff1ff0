"""A real dashboard for the tests: uvicorn serving :func:`rjobs.dashboard.create_app` in a thread
on a free loopback port, against the suite's real servers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from rjobs.dashboard import DashboardOptions, create_app
from rjobs.dashboard.security import Guard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    """One dashboard served by uvicorn in a thread: ``base`` is its URL, ``app`` the Starlette app
    (its state holds the registry and the live feeds)."""

    def __init__(self, options: DashboardOptions) -> None:
        self.guard: Guard = create_app(options)
        self.app: Any = self.guard.app
        self.base = f"http://{options.host}:{options.port}"
        config = uvicorn.Config(
            self.guard, host=options.host, port=options.port, log_level="warning", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Running:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the dashboard did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def dashboard(url: str) -> Iterator[Callable[..., Running]]:
    """Start a dashboard on the test's server: ``dashboard(queues=("work",), read_only=True, ...)``
    (any DashboardOptions field); stopped after the test."""
    started: list[Running] = []

    def start(**kwargs: Any) -> Running:
        kwargs.setdefault("queues", ("work",))
        running = Running(DashboardOptions(url=url, host="127.0.0.1", port=free_port(), **kwargs)).start()
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            running.stop()
