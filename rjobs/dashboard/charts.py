"""Charts as inline SVG, drawn here from the per-minute series (no chart library, nothing fetched
from elsewhere): a chart is a few polylines in a fixed view box, coloured by CSS classes from the
package's stylesheet, so the page needs no script and no inline style to show them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import msgspec

__all__ = ["HEIGHT", "WIDTH", "Chart", "Line", "line_chart", "short_number"]

WIDTH = 600
HEIGHT = 160
PAD = 4


class Line(msgspec.Struct, frozen=True):
    """One series: its label, CSS class, SVG point lists (one per run of minutes with a value) and
    its latest value as text."""

    label: str
    css: str
    segments: list[str]
    last: str


class Chart(msgspec.Struct, frozen=True):
    """A chart ready for the template: title, lines, the top of the y axis as text, the first and
    last minute as text, and whether any minute had a value."""

    title: str
    lines: list[Line]
    top: str
    first: str
    last: str
    empty: bool
    width: int = WIDTH
    height: int = HEIGHT


def short_number(value: float | None, unit: str = "") -> str:
    """``1234`` -> ``1.2k``, ``0.25`` with unit ``%`` -> ``25%``, milliseconds as ms or s; ``-``
    for None."""
    if value is None:
        return "-"
    if unit == "%":
        return f"{value * 100:.0f}%"
    if unit == "ms":
        return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _minute(ms: float | None) -> str:
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%H:%M UTC")


def line_chart(
    title: str,
    start_ms: Sequence[float | None],
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    unit: str = "",
) -> Chart:
    """A chart of ``series`` ((label, css class, one value or None per minute)) over the minutes
    of ``start_ms``; the y axis runs from 0 to the largest value (1 for a rate)."""
    values = [v for _, _, vals in series for v in vals if v is not None]
    top = 1.0 if unit == "%" else max([*values, 0.0])
    scale = top or 1.0
    n = max((len(vals) for _, _, vals in series), default=0)
    step = (WIDTH - 2 * PAD) / max(n - 1, 1)
    lines = []
    for label, css, vals in series:
        segments: list[str] = []
        run: list[str] = []
        for i, v in enumerate(vals):
            if v is None:
                if run:
                    segments.append(" ".join(run))
                run = []
                continue
            x = PAD + i * step
            y = HEIGHT - PAD - (v / scale) * (HEIGHT - 2 * PAD)
            run.append(f"{x:.1f},{y:.1f}")
        if run:
            segments.append(" ".join(run if len(run) > 1 else [run[0], run[0]]))
        last = next((v for v in reversed(vals) if v is not None), None)
        lines.append(Line(label=label, css=css, segments=segments, last=short_number(last, unit)))
    return Chart(
        title=title,
        lines=lines,
        top=short_number(top, unit),
        first=_minute(start_ms[0] if start_ms else None),
        last=_minute(start_ms[-1] if start_ms else None),
        empty=not values,
    )
