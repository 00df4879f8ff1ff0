"""The dashboard's parts without a server: options and their checks, the command's flags (exit 2
with one line), the per-minute series and the SVG charts drawn from them."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from rjobs import MetricsBucket
from rjobs.dashboard.charts import HEIGHT, line_chart, short_number
from rjobs.dashboard.options import DashboardOptions, is_loopback
from rjobs.dashboard.registry import minute_series
from rjobs.errors import ValidationError


def opts(**kwargs: object) -> DashboardOptions:
    kwargs.setdefault("queues", ("work",))
    return DashboardOptions(url="redis://127.0.0.1:1", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"queues": ()}, "-q QUEUE"),
        ({"queues": ("a b",)}, "queue name"),
        ({"queues": ("a", "a")}, "twice"),
        ({"host": "0.0.0.0"}, "needs --token"),
        ({"host": "10.1.2.3"}, "needs --token"),
        ({"port": 70000}, "--port"),
        ({"token": "short"}, "16 characters"),
        ({"basic_auth": ("a b", "pw")}, "--basic-auth user"),
        ({"token": "x" * 20, "basic_auth": ("a", "pw")}, "not both"),
        ({"host": "bad host"}, "--host"),
        ({"allowed_hosts": ("a/b",)}, "--allow-host"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        opts(**kwargs).validate()


def test_hosts_and_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    assert opts().validate().host_names() == {"127.0.0.1", "localhost", "[::1]", "::1"}
    assert opts(host="0.0.0.0", token="t" * 16).validate().host_names() == set(), "wildcard: any host, auth required"
    public = opts(host="10.0.0.5", basic_auth=("ops", "pw"), allowed_hosts=("Jobs.Example",)).validate()
    assert public.host_names() == {"10.0.0.5", "jobs.example"}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "name the queues"),
        (["-q", "a", "--host", "0.0.0.0"], "needs --token"),
        (["-q", "a", "--basic-auth", "nopassword"], "user:password"),
        (["-q", "a", "--port", "-1"], "--port"),
    ],
)
def test_the_command_refuses_bad_flags_with_exit_2(args: list[str], words: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rjobs", "dashboard", "--url", "redis://127.0.0.1:1", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1


def bucket(start_ms: int, *counts: dict[str, Any]) -> MetricsBucket:
    """A bucket from its counters in field order: enqueued, claimed, wait_ms, finished, runs, run_ms."""
    names = ("enqueued", "claimed", "wait_ms", "finished", "runs", "run_ms")
    return MetricsBucket(start_ms=start_ms, **dict(zip(names, counts)))


def test_minute_series_and_charts() -> None:
    buckets = [
        bucket(
            0, {"a": 3, "b": 1}, {"a": 2}, {"a": 300}, {"completed": {"a": 3}, "failed": {"a": 1}}, {"a": 4}, {"a": 800}
        ),
        bucket(60_000, {}, {}, {}, {}, {}, {}),
        bucket(120_000, {"a": 2}, {"a": 1}, {"a": 50}, {"failed": {"b": 2}}, {"b": 2}, {"b": 20}),
    ]
    s = minute_series(buckets, ["failed"])
    assert s["enqueued"] == [4, 0, 2] and s["finished"] == [4, 0, 2]
    assert s["failure_rate"] == [0.25, None, 1.0]
    assert s["wait_ms"] == [150, None, 50] and s["run_ms"] == [200, None, 10]
    chart = line_chart("Failure rate", s["start_ms"], [("rate", "c3", s["failure_rate"])], unit="%")
    assert chart.top == "100%" and chart.lines[0].last == "100%" and not chart.empty
    assert len(chart.lines[0].segments) == 2, "a minute without a value breaks the line"
    assert chart.first == "00:00 UTC" and chart.last == "00:02 UTC"
    flat = line_chart("t", [0, 1], [("x", "c1", [0, 0])])
    assert flat.lines[0].segments == [f"4.0,{HEIGHT - 4:.1f} 596.0,{HEIGHT - 4:.1f}"]
    assert line_chart("t", [], [("x", "c1", [])]).empty


def test_short_numbers() -> None:
    assert [short_number(v) for v in (None, 3, 2.5, 1234, 2_500_000)] == ["-", "3", "2.5", "1.2k", "2.5M"]
    assert (
        short_number(0.256, "%") == "26%" and short_number(1500, "ms") == "1.5 s" and short_number(20, "ms") == "20 ms"
    )


@pytest.mark.slow
def test_the_wheel_ships_the_templates_and_static_files(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    argv = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
        str(root),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    wheel = zipfile.ZipFile(next(tmp_path.glob("rjobs-*.whl")))
    names = set(wheel.namelist())
    package = root / "rjobs" / "dashboard"
    shipped = {f"rjobs/dashboard/{p.relative_to(package).as_posix()}" for p in package.glob("[ts]*/*")}
    assert shipped and shipped <= names, shipped - names
    metadata = next(wheel.read(n).decode() for n in names if n.endswith("METADATA"))
    assert "Provides-Extra: dashboard" in metadata and re.search(
        r"^Requires-Dist: starlette.*extra == .dashboard.", metadata, re.M
    )
