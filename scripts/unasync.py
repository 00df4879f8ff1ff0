"""Generate the blocking twins of rjobs' async modules, so that each method, signature and
docstring is written once (as httpcore does with its own unasync step).

    python scripts/unasync.py           # rewrite the generated files
    python scripts/unasync.py --check   # exit 1 when a generated file is stale (run by the tests)

The rewrite is textual and deliberately small: ``async``/``await`` are dropped, names in
:data:`NAMES` are swapped as whole words (classes, functions, modules), and a few phrases in
:data:`PHRASES` are swapped where a docstring has to say "blocking" instead of "async". Anything
else that differs between the twins is kept out of the sources behind an interface with two
implementations (for example ``LoopLinks`` and ``ThreadLinks``, ``PoolGate`` and
``SyncPoolGate``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: async source -> generated blocking twin
FILES = {
    "rjobs/store/transport.py": "rjobs/store/sync_transport.py",
    "rjobs/store/backend.py": "rjobs/store/sync_backend.py",
    "rjobs/client/queue.py": "rjobs/client/sync_queue.py",
    "rjobs/client/hold.py": "rjobs/client/sync_hold.py",
    "rjobs/store/cluster.py": "rjobs/store/sync_cluster.py",
    "rjobs/client/partitioned.py": "rjobs/client/sync_partitioned.py",
    "rjobs/client/control.py": "rjobs/client/sync_control.py",
    "rjobs/client/results.py": "rjobs/client/sync_results.py",
    "rjobs/client/counters.py": "rjobs/client/sync_counters.py",
    "rjobs/client/scheduling.py": "rjobs/client/sync_scheduling.py",
}

#: whole-word swaps (identifiers and dotted module paths)
NAMES = {
    "rjobs.store.transport": "rjobs.store.sync_transport",
    "rjobs.store.backend": "rjobs.store.sync_backend",
    "rjobs.client.queue": "rjobs.client.sync_queue",
    "rjobs.client.hold": "rjobs.client.sync_hold",
    "rjobs.store.cluster": "rjobs.store.sync_cluster",
    "rjobs.client.partitioned": "rjobs.client.sync_partitioned",
    "rjobs.client.control": "rjobs.client.sync_control",
    "rjobs.client.results": "rjobs.client.sync_results",
    "JobResults": "SyncJobResults",
    "QueueCounters": "SyncQueueCounters",
    "rjobs.client.counters": "rjobs.client.sync_counters",
    "rjobs.client.scheduling": "rjobs.client.sync_scheduling",
    "QueueControl": "SyncQueueControl",
    "QueueSchedules": "SyncQueueSchedules",
    "PartitionedQueue": "SyncPartitionedQueue",
    "ClusterRunner": "SyncClusterRunner",
    "node_client_async": "node_client_sync",
    "nap_async": "nap_sync",
    "AsyncRunner": "SyncRunner",
    "Backend": "SyncBackend",
    "Queue": "SyncQueue",
    "Hold": "SyncHold",
    "Waits": "SyncWaits",
    "Renewal": "SyncRenewal",
    "Link": "SyncLink",
    "LoopLinks": "ThreadLinks",
    "PoolGate": "SyncPoolGate",
    "drive_async": "drive_sync",
    "async_client": "sync_client",
    "close_async": "close_sync",
    "fresh_async": "fresh_sync",
    "settled_async": "settled_sync",
    "aclose": "close",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "aredis": "redis",
}

#: phrase swaps, applied before the names (docstrings and the one import that differs)
PHRASES = {
    "import redis.asyncio as aredis": "import redis",
    "The async client": "The blocking client",
    "An async handle": "A blocking handle",
    "An async hold": "A blocking hold",
    "(a shared redis.asyncio client)": "(a shared redis.Redis client)",
    "one event loop": "one thread",
    "this event loop": "this thread",
}

#: The last paragraph of a source's module docstring, and what it becomes in the twin.
SOURCE_NOTE = re.compile(
    r"This module is the async source of :mod:`[\w.]+`, generated from it by\n"
    r"``scripts/unasync.py``: edit this file, then run the script\."
)
TWIN_NOTE = (
    "This module is the blocking twin of :mod:`{module}`, generated from it by\n"
    "``scripts/unasync.py``: edit that file, then run the script."
)

_KEYWORDS = [
    (re.compile(r"\bawait "), ""),
    (re.compile(r"\basync def\b"), "def"),
    (re.compile(r"\basync with\b"), "with"),
    (re.compile(r"\basync for\b"), "for"),
]
_NAMES = re.compile(r"(?<!\w)(" + "|".join(re.escape(k) for k in sorted(NAMES, key=len, reverse=True)) + r")\b")

HEADER = "# Generated from {source} by scripts/unasync.py: edit the source, then run the script.\n"


def unasync(source: str, text: str) -> str:
    """The blocking twin of one async module's text, formatted as the project formats code."""
    if not SOURCE_NOTE.search(text):
        raise SystemExit(f"{source}: its docstring must end with the async-source note")
    for old, new in PHRASES.items():
        text = text.replace(old, new)
    for pattern, new in _KEYWORDS:
        text = pattern.sub(new, text)
    text = _NAMES.sub(lambda m: NAMES[m.group(1)], text)
    module = source.removesuffix(".py").replace("/", ".")
    text = SOURCE_NOTE.sub(lambda _: TWIN_NOTE.format(module=module), text)
    return _formatted(FILES[source], HEADER.format(source=source) + text)


def _formatted(name: str, text: str) -> str:
    """The text through ruff (imports sorted, then formatted), so the twin passes the style gates."""
    for cmd in (["check", "--fix", "--select", "I,RUF022", "--quiet"], ["format", "--quiet"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *cmd, "--stdin-filename", name, "-"],
            input=text,
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"ruff failed on {name}: {done.stderr}")
        text = done.stdout
    return text


def generated() -> dict[Path, str]:
    """Every generated file's path and the text it should hold."""
    return {ROOT / dst: unasync(src, (ROOT / src).read_text()) for src, dst in FILES.items()}


def main(argv: list[str]) -> int:
    """Rewrite the twins, or with ``--check`` list the stale ones (exit 1)."""
    stale = [path for path, text in generated().items() if not path.exists() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale: run python scripts/unasync.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in generated().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
