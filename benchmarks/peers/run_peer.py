"""Run one of peerbench's peer scripts unchanged, with its worker logs redirected here.

    python benchmarks/peers/run_peer.py /work/shared/peerbench/peers/saq.py process -c 10 --redis-url URL

peerbench's ``_common.WorkerProc`` writes worker logs to ``<peerbench>/logs``; the shared
checkout is read-only for us, so this imports ``peers._common`` first, points ``LOGDIR`` at
``benchmarks/results/logs`` and then runs the peer script as ``__main__`` (it re-imports itself as
``peers.<name>`` exactly as when run directly). Nothing else changes.
"""

from __future__ import annotations

import os
import runpy
import sys

PEERBENCH = os.environ.get("PEERBENCH_ROOT", "/work/shared/peerbench")
HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.environ.get("RJOBS_PEERBENCH_RESULTS", os.path.join(os.path.dirname(HERE), "results"))


def main() -> None:
    script = os.path.abspath(sys.argv[1])
    sys.argv = [script, *sys.argv[2:]]
    sys.path[0] = PEERBENCH  # what the peer script sets itself, too
    from peers import _common as C

    C.LOGDIR = os.path.join(RESULTS, "logs")
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
