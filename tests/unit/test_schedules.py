"""Schedules without a server: the checks of rjobs.Cron, the ticks cronsim computes (DST
included), and the cron shape rule that Python and lua/lib/schedule.lua both hold."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rjobs import Cron, ValidationError
from rjobs.client.schedules import check_cron, next_after

PARIS = ZoneInfo("Europe/Paris")


def ms(*args: int, tz: Any = PARIS) -> int:
    return int(dt.datetime(*args, tzinfo=tz).timestamp() * 1000)  # type: ignore[misc]


def local(t: int) -> str:
    return dt.datetime.fromtimestamp(t / 1000, PARIS).isoformat()


def ticks(expr: str, start: int, n: int, tz: str = "Europe/Paris") -> list[str]:
    out, t = [], start
    for _ in range(n):
        t = next_after(t, cron=expr, tz=tz)
        out.append(local(t))
    return out


def test_every_ticks_on_multiples_of_its_period_since_the_epoch() -> None:
    assert next_after(1_000, every=30) == 30_000
    assert next_after(29_999, every=30) == 30_000
    assert next_after(30_000, every=30) == 60_000  # strictly after


def test_cron_ticks_are_strictly_after_and_in_the_timezone() -> None:
    start = ms(2026, 6, 1, 3, 0)
    assert ticks("0 3 * * *", start, 2) == ["2026-06-02T03:00:00+02:00", "2026-06-03T03:00:00+02:00"]
    assert ticks("0 3 * * *", start - 1, 1) == ["2026-06-01T03:00:00+02:00"]
    assert next_after(ms(2026, 6, 1, 0, 0, tz=dt.timezone.utc), cron="0 3 * * *") == ms(
        2026, 6, 1, 3, 0, tz=dt.timezone.utc
    )


def test_a_time_in_the_skipped_hour_runs_when_the_gap_ends() -> None:
    # 2026-03-29: Paris clocks go from 02:00 to 03:00; 02:30 does not exist that day
    assert ticks("30 2 * * *", ms(2026, 3, 28, 12, 0), 3) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_a_fixed_time_in_the_repeated_hour_runs_once_and_a_wildcard_hour_twice() -> None:
    # 2026-10-25: Paris clocks go from 03:00 back to 02:00; 02:00-02:59 happens twice
    assert ticks("30 2 * * *", ms(2026, 10, 24, 12, 0), 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    assert ticks("*/30 * * * *", ms(2026, 10, 25, 1, 50), 5) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


BAD: list[dict[str, Any]] = [
    {"cron": "61 * * * *"},
    {"cron": "* * * *"},
    {"cron": "* * * * * *"},
    {"cron": "L * * * *"},
    {"cron": "0 0 31 2 *"},
    {"cron": 5},
    {"every": 0},
    {"every": -1},
    {"every": 2.5},
    {"every": True},
    {"every": 10**9},
    {"every": 5, "cron": "* * * * *"},
    {},
    {"every": 5, "tz": "Nowhere/City"},
    {"every": 5, "tz": "../../etc/passwd"},
    {"every": 5, "missed": "twice"},
    {"every": 5, "grace": -1},
    {"every": 5, "priority": 11},
    {"every": 5, "max_attempts": 0},
    {"every": 5, "params": "text"},
    {"every": 5, "params": {"x": float("nan")}},
]


@pytest.mark.parametrize("bad", BAD, ids=[repr(b) for b in BAD])
def test_bad_definitions_raise_validation_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Cron("s", "t", **bad)


@pytest.mark.parametrize("name", ["", "a b", "x" * 101, "a:b", "{q}", "é"])
def test_bad_names_raise_validation_error(name: str) -> None:
    with pytest.raises(ValidationError):
        Cron(name, "t", every=5)


def test_an_expression_is_normalised_to_single_spaces() -> None:
    assert check_cron("  0   3 * *  mon-fri ") == "0 3 * * mon-fri"


SHAPES = [
    "* * * * *", "0 3 * * *", "*/5 * * * *", "5/15 * * * *", "0-59/10 0-23 1-31 1-12 0-7", "0 0 * jan-mar MON-fri",
    "1,2,3 * * * *", "0 0 1 * 7", "61 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8", "5-1 * * * *",
    "*/0 * * * *", "*/60 * * * *", "1,,2 * * * *", ",1 * * * *", "1, * * * *", "L * * * *", "0 0 * * 5L",
    "0 0 * * 1#2", "0 0 ? * *", "* * * *", "* * * * * *", "*  * * * *", "a-b * * * *", "1/2/3 * * * *",
    "* * * foo *", "0 0 * * sun-sat", "001 * * * *", "-1 * * * *", "1- * * * *", "/5 * * * *",
]  # fmt: skip


def test_python_and_lua_agree_on_the_shape_of_a_cron_expression() -> None:
    lupa = pytest.importorskip("lupa.lua51")  # the Lua of Redis and Valkey (lupa's newest one crashed here)
    root = resources.files("rjobs") / "lua"
    source = "redis = {call = function() end}\n" + (root / "lib" / "core.lua").read_text()
    lua_valid = lupa.LuaRuntime().execute(source + (root / "lib" / "schedule.lua").read_text() + "\nreturn valid_cron")
    for expr in SHAPES:
        assert bool(lua_valid(expr)) == _python_valid(expr), expr


def _python_valid(expr: str) -> bool:
    try:
        return check_cron(expr) == expr  # the client sends the expression with single spaces
    except ValidationError:
        return False
