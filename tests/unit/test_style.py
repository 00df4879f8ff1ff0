"""The style gates of the project run with the tests, so CI enforces them: ruff (lint and format)
over the package, tests and benchmarks, and mypy --strict over the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TREES = ["rjobs", "tests", "benchmarks", "scripts"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", [["ruff", "check", *TREES], ["ruff", "format", "--check", *TREES]])
def test_ruff(command: list[str]) -> None:
    done = _run(*command)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict() -> None:
    done = _run("mypy", "--strict", "rjobs")
    assert done.returncode == 0, done.stdout + done.stderr
