"""The ``rjobs`` command: parsing and commands (main), output for people and scripts (render), the
worker command (worker), the guided tour (demo), server processes (server) and the embedded server
of an rjobs home (embedded).

``main`` is the entry point of the ``rjobs`` script. It loads the command line lazily, so that on
a platform rjobs' command line does not support it prints one line and exits 2 (no traceback)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

#: Said (and exit 2) where the command line cannot work: it needs POSIX signals and file locks.
UNSUPPORTED = (
    "rjobs: error: the rjobs command line needs Linux or macOS (POSIX signals and file locks); "
    "on Windows use the library (rjobs.Queue, rjobs.SyncQueue) or run rjobs under WSL"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rjobs`` command (rjobs.cli.main); returns the exit code."""
    try:
        import fcntl  # noqa: F401  (the embedded server's lock; its absence means no POSIX)
    except ImportError:
        print(UNSUPPORTED, file=sys.stderr)
        return 2
    from rjobs.cli.main import main as run

    return run(argv)
