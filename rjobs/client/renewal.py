"""Keeping a manual hold's lease alive while its block runs: :class:`Renewal` renews from a task
and cancels the block when the lease is lost; :class:`SyncRenewal`, its blocking twin, renews from
a thread and cannot cancel a blocking block (the hold reports the loss instead)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

__all__ = ["FINAL_WRITE_TIMEOUT", "Renewal", "SyncRenewal"]

#: Seconds the writes that end a hold may take once the block is over (shielded from cancellation).
FINAL_WRITE_TIMEOUT = 10.0


class Renewal:
    """Calls ``beat()`` every ``interval`` seconds from a task while the block runs; a beat that
    returns False (the lease is gone) cancels the block, which then ends at its next ``await``."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._tg: Any = None
        self._scope: anyio.CancelScope | None = None

    async def start(self, beat: Callable[[], Awaitable[bool]]) -> None:
        """Start renewing, and open the scope the block runs in (call from ``__aenter__``)."""
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._run, beat)
        self._scope = anyio.CancelScope()
        self._scope.__enter__()

    async def _run(self, beat: Callable[[], Awaitable[bool]]) -> None:
        while True:
            await anyio.sleep(self.interval)
            if not await beat():
                if self._scope is not None:
                    self._scope.cancel()
                return

    async def stop(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        """Close the block's scope and stop renewing (call from ``__aexit__``); True when the
        block's exception was the cancellation this renewal caused (swallowed)."""
        assert self._scope is not None and self._tg is not None
        swallowed = self._scope.__exit__(exc_type, exc, tb)
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        return bool(swallowed)

    @staticmethod
    def final() -> contextlib.AbstractContextManager[Any]:
        """The scope of the writes that end the hold: shielded from cancellation, time-bounded."""
        stack = contextlib.ExitStack()
        stack.enter_context(anyio.CancelScope(shield=True))
        stack.enter_context(anyio.move_on_after(FINAL_WRITE_TIMEOUT))
        return stack


class SyncRenewal:
    """The blocking twin of :class:`Renewal`: ``beat()`` every ``interval`` seconds from a daemon
    thread until it returns False or the block ends; the block itself is never interrupted."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, beat: Callable[[], bool]) -> None:
        """Start the renewing thread."""
        self._thread = threading.Thread(target=self._run, args=(beat,), name="rjobs hold", daemon=True)
        self._thread.start()

    def _run(self, beat: Callable[[], bool]) -> None:
        while not self._stop.wait(self.interval):
            if not beat():
                return

    def stop(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        """Stop renewing (waits for a beat in flight); never swallows the block's exception."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=FINAL_WRITE_TIMEOUT)
        return False

    @staticmethod
    def final() -> contextlib.AbstractContextManager[Any]:
        """Nothing to shield in blocking code."""
        return contextlib.nullcontext()
