"""Plumbing shared by the rjobs benchmarks: the throw-away server, environment facts, INFO
snapshots, CPU accounting and statistics. Nothing here measures anything by itself."""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

# Measure this checkout, installed or not (the system python may not have rjobs installed), frozen:
# rjobs/ is copied to a temp dir once, at start, and everything (this process and every worker it
# spawns) imports that copy, so commits landing during a run cannot mix versions.
# RJOBS_SRC=/path/to/a/copy measures that copy instead (A/B of a prototype).


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def describe_checkout() -> str:
    """Commit of the checkout plus how its rjobs/ differs from it."""
    desc = _git("rev-parse", "--short", "HEAD") or "?"
    modified = _git("status", "--porcelain", "--untracked-files=no", "--", "rjobs")
    untracked = _git("status", "--porcelain", "--", "rjobs").count("?? ")
    if modified:
        desc += f" + {len(modified.splitlines())} modified file(s) in rjobs/"
    if untracked:
        desc += f" + {untracked} untracked path(s) in rjobs/"
    return desc


if os.environ.get("RJOBS_SRC"):
    RJOBS_SRC = os.environ["RJOBS_SRC"]
    SOURCE = f"copy at {RJOBS_SRC}"
    with contextlib.suppress(OSError):
        SOURCE = (Path(RJOBS_SRC) / "SOURCE").read_text().strip()
else:
    _snap = Path(tempfile.mkdtemp(prefix="rjobs-bench-src-"))
    SOURCE = describe_checkout() + f" (snapshot taken {time.strftime('%H:%M:%S')})"
    shutil.copytree(REPO / "rjobs", _snap / "rjobs", ignore=shutil.ignore_patterns("__pycache__"))
    (_snap / "SOURCE").write_text(SOURCE + "\n")
    atexit.register(shutil.rmtree, _snap, True)
    os.environ["RJOBS_SRC"] = RJOBS_SRC = str(_snap)
sys.path.insert(0, RJOBS_SRC)

import redis  # noqa: E402

try:  # the layout after the redesign; A/B runs may load an older snapshot
    from rjobs.cli.server import LocalServer, find_redis_server
except ImportError:  # pragma: no cover
    from rjobs.server import LocalServer, find_redis_server  # type: ignore[no-redef]

QUEUE = "bench"


# ---------------------------------------------------------------- server
@contextlib.contextmanager
def redis_server() -> Iterator[LocalServer]:
    """Debian's redis-server on a free loopback port, no persistence (--save '' --appendonly no)."""
    binary = find_redis_server()
    if binary is None:
        raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
    server = LocalServer(binary, appendonly=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def server_pid(r: redis.Redis) -> int:
    return int(r.info("server")["process_id"])


# ---------------------------------------------------------------- environment
def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (other test suites share these 2 cores)."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def busy_pct(seconds: float = 1.0) -> float:
    """Percent of all cores busy over the next ``seconds`` (between measurements our own processes
    are idle, so this is other people's work; the load average would still show ours)."""

    def sample() -> tuple[int, int]:
        v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        idle = v[3] + v[4]
        return sum(v) - idle, sum(v)

    b0, t0 = sample()
    time.sleep(seconds)
    b1, t1 = sample()
    return round(100.0 * (b1 - b0) / max(t1 - t0, 1), 1)


def wait_for_quiet(limit_pct: float = 25.0, max_wait: float = 0.0) -> float:
    """Wait up to ``max_wait`` s until under ``limit_pct`` % of the cores are busy; return the last
    busy % measured."""
    deadline = time.monotonic() + max_wait
    busy = busy_pct()
    while busy >= limit_pct and time.monotonic() < deadline:
        time.sleep(4)
        busy = busy_pct()
    return busy


def _pkg(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment(r: redis.Redis | None = None) -> dict[str, Any]:
    """Machine, versions and date, recorded with every result file."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem_gib = round(kb / 1024 / 1024, 1)
    import rjobs

    env: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} vCPU ({cpu}), {mem_gib} GiB, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "rjobs": f"{rjobs.__version__} @ {SOURCE}",
        "redis-py": _pkg("redis"),
        "hiredis": _pkg("hiredis"),
        "msgspec": _pkg("msgspec"),
        "anyio": _pkg("anyio"),
        "uvloop": _pkg("uvloop"),
        "load_at_start": loadavg(),
    }
    if r is not None:
        info = r.info("server")
        env["server"] = f"redis-server {info['redis_version']} (loopback, --save '' --appendonly no)"
    return env


# ---------------------------------------------------------------- INFO snapshots
def commandstats(r: redis.Redis) -> dict[str, dict[str, float]]:
    """``INFO commandstats`` as {command: {calls, usec}}."""
    out = {}
    for key, v in r.info("commandstats").items():
        out[key.removeprefix("cmdstat_")] = {"calls": v["calls"], "usec": v["usec"]}
    return out


def stats_delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Calls and server µs per command between two snapshots (INFO itself is dropped)."""
    out = {}
    for cmd, v in after.items():
        b = before.get(cmd, {"calls": 0, "usec": 0})
        calls, usec = v["calls"] - b["calls"], v["usec"] - b["usec"]
        if calls and cmd != "info":
            out[cmd] = {"calls": calls, "usec": usec}
    return out


#: Commands a client sends itself; everything else in a delta ran inside a script (Redis counts
#: redis.call() in commandstats too).
CLIENT_ONLY = {
    "evalsha",
    "eval",
    "script|load",
    "blpop",
    "brpop",
    "bzpopmin",
    "xread",
    "client|setinfo",
    "hello",
    "ping",
    "select",
    "info",
    "flushall",
    "config|resetstat",
}


def split_commands(delta: dict[str, dict[str, float]], client_extra: dict[str, int] | None = None) -> dict[str, Any]:
    """Separate client round trips (EVALSHA and friends) from the commands scripts ran.
    ``client_extra`` lists plain commands the harness itself sent (e.g. its polling), which are
    subtracted from the script side."""
    client_extra = dict(client_extra or {})
    # Every rjobs script reads TIME once (RJ.init): TIME calls beyond the scripts' are the client's.
    scripts = delta.get("evalsha", {}).get("calls", 0) + delta.get("eval", {}).get("calls", 0)
    time_calls = delta.get("time", {}).get("calls", 0)
    client_cmds, script_cmds = {}, {}
    if time_calls > scripts:
        client_cmds["time"] = time_calls - scripts
        client_extra["time"] = client_extra.get("time", 0) + time_calls - scripts
    for cmd, v in delta.items():
        calls = v["calls"]
        own = min(calls, client_extra.get(cmd, 0))
        if cmd in CLIENT_ONLY:
            client_cmds[cmd] = calls
        elif calls - own > 0:
            script_cmds[cmd] = calls - own
    return {"client": client_cmds, "in_scripts": script_cmds}


def memory_used(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


# ---------------------------------------------------------------- CPU
def cpu_seconds(pid: int, *, group: bool = False) -> float:
    """user+sys CPU seconds of a process (or of its whole process group), reaped children included."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    pids = [d for d in os.listdir("/proc") if d.isdigit()] if group else [str(pid)]
    for d in pids:
        try:
            rest = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if not group or int(rest[2]) == pid:
            total += sum(int(x) for x in rest[11:15])
    return total / tick


# ---------------------------------------------------------------- statistics
def median(xs: list[float]) -> float:
    return statistics.median(xs)


def percentile(xs: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (the same rule as peerbench's _common)."""
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


#: (busy % limit, max seconds) to wait for before every repetition; run.py --wait-quiet sets it.
WAIT_QUIET: tuple[float, float] = (25.0, 0.0)


def repeat(fn: Callable[[], dict[str, Any]], reps: int, label: str) -> dict[str, Any]:
    """Run ``fn`` ``reps`` times; numeric fields become medians, with every run kept under 'runs'."""
    runs = []
    for i in range(reps):
        busy = wait_for_quiet(*WAIT_QUIET)
        load = loadavg()
        row = fn()
        row["busy_pct_before"] = busy
        row["load_1m"] = load[0]
        runs.append(row)
        print(f"  {label} rep {i + 1}/{reps}: {short(row)}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        values = [r.get(key) for r in runs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = round(median(values), 3)
            if len(runs) > 1:
                out[key + "_range"] = [round(min(values), 3), round(max(values), 3)]
        else:
            out[key] = value
    out["reps"] = reps
    out["runs"] = runs
    return out


def short(row: dict[str, Any]) -> str:
    keep = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return ", ".join(f"{k}={v:g}" for k, v in list(keep.items())[:6])


def fresh(r: redis.Redis) -> None:
    """Empty the server and reset its counters."""
    r.flushall()
    r.config_resetstat()
