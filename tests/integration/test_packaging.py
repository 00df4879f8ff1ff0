"""The Lua scripts ship inside the wheel: build one, install it into a throwaway venv-less target
dir, and load every script from there."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rjobs.store.scripts import script_names

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_contains_and_loads_every_script(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(out.glob("rjobs-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for script in script_names():
        assert f"rjobs/lua/{script}.lua" in names
    assert {"rjobs/lua/lib/core.lua", "rjobs/lua/lib/apply.lua", "rjobs/py.typed"} <= names
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = (
        f"import rjobs, rjobs.store.scripts as s; assert rjobs.__file__.startswith({str(target)!r}); "
        "print(len([s.load_script(n) for n in s.script_names()]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(script_names())
