"""Retry backoff policy: pure arithmetic, no I/O, no clock.

A failed attempt ``n`` (1-based, the attempt that just failed) waits a *ceiling* of
``min(max_delay, base * factor ** (n - 1))`` seconds, spread by jitter so that many jobs failing
together (an outage) do not come back together:

- ``"full"``: uniform in ``[0, ceiling]`` — the best spread, but a retry may come almost at once;
- ``"equal"`` (default): uniform in ``[ceiling / 2, ceiling]`` — always waits at least half;
- ``"none"``: exactly the ceiling.

An error that says when to come back (an exception with ``retry_after`` seconds, e.g. an HTTP 429's
``Retry-After``) is honoured exactly: the server asked for that time, so no jitter is applied.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["Jitter", "RetryPolicy"]

Jitter = Literal["full", "equal", "none"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter. All times are seconds.

    ``base`` is the ceiling after the first failed attempt, multiplied by ``factor`` per further
    attempt and capped at ``max_delay``.
    """

    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 300.0
    jitter: Jitter = "equal"

    def __post_init__(self) -> None:
        for name in ("base", "factor", "max_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"RetryPolicy.{name} must be a finite number, not {value!r}")
        if self.base < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy.base and max_delay must be >= 0 seconds")
        if self.factor < 1:
            raise ValueError("RetryPolicy.factor must be >= 1 (backoff never shrinks)")
        if self.jitter not in ("full", "equal", "none"):
            raise ValueError(f"RetryPolicy.jitter must be 'full', 'equal' or 'none', not {self.jitter!r}")

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay after failed attempt ``attempt`` (1-based), capped at max_delay."""
        n = max(1, attempt) - 1
        if self.base == 0 or self.max_delay == 0:
            return 0.0
        # Compare in log space: factor ** n overflows a float long before attempt 1000.
        exponent = math.log(self.base) + n * math.log(self.factor)
        if exponent >= math.log(self.max_delay):
            return float(self.max_delay)
        try:
            return float(min(self.max_delay, self.base * self.factor**n))
        except OverflowError:  # a tiny base times a huge power: the product itself is small
            return float(min(self.max_delay, math.exp(exponent)))

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        *,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before the next attempt after failed attempt ``attempt``.

        ``retry_after`` (when finite and >= 0) wins outright. ``rand`` returns a float in [0, 1)
        and exists so tests can pin the jitter.
        """
        if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0:
            return float(retry_after)
        cap = self.ceiling(attempt)
        if self.jitter == "none":
            return cap
        r = min(max(rand(), 0.0), 1.0)
        if self.jitter == "full":
            return cap * r
        return cap / 2 + (cap / 2) * r
