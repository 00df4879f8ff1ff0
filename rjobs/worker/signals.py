"""The cheap signals of the worker's hot path: Pulse wakes tasks in the loop, Flag is polled by job threads."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import anyio

__all__ = ["Flag", "Pulse", "scope_factory", "watch_signals"]


def scope_factory() -> Callable[[], anyio.CancelScope]:
    """The running backend's cancel scope class, to make one per job without ``anyio.CancelScope()``
    looking the backend up on every call (most of its cost). Call it inside the event loop."""
    return type(anyio.CancelScope())


class Pulse:
    """Wakes every task currently waiting on it; waiters re-check their condition in a loop.

    The event is made by the first waiter and dropped by ``notify()``, so a notify nobody waits
    for (the usual case: once or twice per finished job) costs one attribute check."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        """Wake the current waiters."""
        event = self._event
        if event is not None:
            self._event = None
            event.set()

    async def wait(self) -> None:
        """Wait for the next notify()."""
        event = self._event
        if event is None:
            event = self._event = asyncio.Event()
        await event.wait()


class Flag:
    """A set-once flag that threads may poll: one bool attribute (reads and writes of it are
    atomic under the GIL), without ``threading.Event``'s lock and condition."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        """Raise the flag (for good)."""
        self._set = True

    def is_set(self) -> bool:
        """True once :meth:`set` was called."""
        return self._set


def watch_signals(on_signal: Callable[[int], None]) -> Callable[[], None]:
    """Call ``on_signal(signum)`` in the running loop on SIGTERM and SIGINT (main thread only);
    returns the function that removes the handlers."""
    loop = asyncio.get_running_loop()
    signums = (signal.SIGTERM, signal.SIGINT)
    for signum in signums:
        loop.add_signal_handler(signum, on_signal, signum)

    def restore() -> None:
        for signum in signums:
            loop.remove_signal_handler(signum)

    return restore
