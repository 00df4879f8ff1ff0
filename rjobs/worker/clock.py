"""The Redis server's clock as seen from the worker."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


__all__ = ["ServerClock"]


class ServerClock:
    """Redis server time as seen from here: an offset measured with ``TIME``, so run-at and due
    times are computed on the server's clock, never on this host's."""

    def __init__(self) -> None:
        self.offset_ms = 0.0

    def observe(self, server_time: Any, sent_wall: float, received_wall: float) -> None:
        """Record a ``TIME`` reply (seconds, microseconds) sent/received at these wall times."""
        seconds, micros = int(server_time[0]), int(server_time[1])
        server_ms = seconds * 1000 + micros / 1000
        self.offset_ms = server_ms - (sent_wall + received_wall) * 500  # midpoint, in ms

    def now_ms(self) -> int:
        """Estimated server time, epoch ms."""
        return int(time.time() * 1000 + self.offset_ms)
