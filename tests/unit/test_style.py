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


def test_the_project_names_things_by_what_they_are() -> None:
    """Users have the project, not the requirement documents it was built from: no "seed 000"
    or "seed's" in the package, the docs or the tests; the JOB machine, the TASK lifecycle."""
    import re

    pattern = re.compile(r"\bseed[\s_-]*0\d\d|\bseeds?'s?\b", re.IGNORECASE)
    files = [ROOT / "README.md"] + [
        path
        for tree in ("rjobs", "docs", "tests")
        for path in sorted((ROOT / tree).rglob("*"))
        if path.suffix in (".py", ".md", ".lua") and path.name != "test_style.py"
    ]
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in files
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, f"refer to the JOB machine / the TASK lifecycle instead: {found}"


def test_microsecond_figures_stay_in_benchmarks() -> None:
    """Measured figures belong in benchmarks/README.md, not in the package, its docs or README."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += [p for p in sorted((ROOT / "rjobs").rglob("*")) if p.suffix in (".py", ".lua")]
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in files
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "µs" in line
    ]
    assert not found, f"move these figures to benchmarks/README.md: {found}"
