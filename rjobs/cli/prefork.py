"""``rjobs worker TARGET --processes N``: a parent process that runs N worker processes.

Each child is ``python -c`` running :func:`rjobs.cli.worker.run_from_cli` on the same target and
options, with its own event loop and the worker id ``<id>-<i>`` (``<id>`` is the Worker's own id,
``i`` counts from 1). The parent claims nothing itself; it

- forwards SIGTERM and SIGINT to every child (the first: graceful, the second: at once, as for a
  single worker). Children run in their own session so a terminal's Ctrl-C reaches them once,
  through the parent, and they get SIGTERM if the parent dies;
- restarts a child that exited with an error or a signal after it had started, with a back-off
  (0.5 s doubling up to 30 s, reset once a child has been up for a minute), one log line each; a
  child that exits with 0 in burst mode is done, not restarted;
- exits 0 after a clean shutdown (or once every burst child is done), and, when the children fail
  at start-up before any of them started (a failing ``on_startup``, a server that refuses), stops
  the others and exits with the first failing child's code.

A child tells the parent it started (start-up done, server reached) by writing one byte on a pipe
(``ready_fd``). The parent waits on its children with a short poll (10 per second): it has no
event loop and nothing else to do.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

__all__ = ["Prefork"]

log = logging.getLogger("rjobs.worker")

#: A child: run_from_cli with the parent's options (JSON in argv[1]) plus its worker id and ready fd.
CHILD = "import json, sys; from rjobs.cli.worker import run_from_cli; sys.exit(run_from_cli(**json.loads(sys.argv[1])))"
POLL = 0.1  # seconds between looks at the children
BACKOFF_MAX = 30.0
STABLE = 60.0  # seconds up after which a child's crash streak is forgotten
PR_SET_PDEATHSIG = 1


def _in_child() -> None:
    """Runs in the child between fork and exec: get SIGTERM when the parent dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Slot:
    """One child position (``i``) and the process currently in it."""

    index: int
    worker_id: str
    proc: subprocess.Popen[bytes] | None = None
    ready_fd: int | None = None
    ready: bool = False
    started_at: float = 0.0
    streak: int = 0  # crashes in a row
    restart_at: float | None = None
    done: bool = False  # exited cleanly in burst mode (or the parent is stopping)
    codes: list[int] = field(default_factory=list)


class Prefork:
    """The parent of ``--processes N`` (see the module docstring)."""

    def __init__(self, options: dict[str, Any], processes: int, base_id: str, burst: bool) -> None:
        self.options = options  # run_from_cli's keyword arguments, the same for every child
        self.burst = burst
        self.slots = [Slot(i, f"{base_id}-{i}") for i in range(1, processes + 1)]
        self.signals = 0
        self.ever_ready = False

    def run(self) -> int:
        """Run until stopped, every burst child is done, or start-up failed; the exit code."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in self.slots:
                self._start(slot)
            return self._watch()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for slot in self.slots:
                self._close_ready(slot)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        how = "stopping the children now" if self.signals > 1 else "shutting the children down"
        log.warning("%s: %s", signal.Signals(signum).name, how)
        for slot in self.slots:
            slot.restart_at = None
            if slot.proc is not None and slot.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(signum)

    def _start(self, slot: Slot) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        spec = dict(self.options, worker_id=slot.worker_id, ready_fd=write_fd)
        port, host = spec.get("metrics") or (None, None)
        if port:  # one port per child: PORT, PORT+1, ... (0: each picks a free one)
            spec["metrics"] = (port + slot.index - 1, host)
        try:
            slot.proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, json.dumps(spec)],
                pass_fds=(write_fd,),
                start_new_session=True,  # signals reach a child once, through the parent
                preexec_fn=_in_child if sys.platform == "linux" else None,
            )
        finally:
            os.close(write_fd)
        self._close_ready(slot)
        slot.ready_fd, slot.ready, slot.started_at, slot.restart_at = read_fd, False, time.monotonic(), None
        log.info("child %d started (pid %d, worker %s)", slot.index, slot.proc.pid, slot.worker_id)

    def _close_ready(self, slot: Slot) -> None:
        if slot.ready_fd is not None:
            os.close(slot.ready_fd)
            slot.ready_fd = None

    def _check_ready(self, slot: Slot) -> None:
        if slot.ready or slot.ready_fd is None:
            return
        try:
            if os.read(slot.ready_fd, 1):
                slot.ready = self.ever_ready = True
                pid = slot.proc.pid if slot.proc is not None else 0
                log.info("child %d ready (pid %d, worker %s)", slot.index, pid, slot.worker_id)
        except BlockingIOError:
            pass

    def _watch(self) -> int:
        while True:
            now = time.monotonic()
            for slot in self.slots:
                self._check_ready(slot)
                if slot.proc is not None and slot.proc.poll() is not None:
                    self._check_ready(slot)  # it may have started and then ended in one poll
                    code = self._ended(slot, now)
                    if code is not None:
                        return self._give_up(code)
                if slot.proc is None and slot.restart_at is not None and now >= slot.restart_at and not self.signals:
                    self._start(slot)
            if all(slot.proc is None and (slot.done or self.signals) for slot in self.slots):
                # A child ended by a signal the parent forwarded (after its own handlers were gone) stopped as asked.
                failed = [c for slot in self.slots for c in slot.codes if c not in (0, -signal.SIGTERM, -signal.SIGINT)]
                return 0 if not failed else (failed[0] if failed[0] > 0 else 1)
            time.sleep(POLL)

    def _ended(self, slot: Slot, now: float) -> int | None:
        """Handle a child that exited; an exit code when the parent must give up."""
        assert slot.proc is not None
        code, pid = slot.proc.returncode, slot.proc.pid
        slot.proc = None
        if self.signals:  # shutting down: this is how children end
            slot.done = True
            slot.codes.append(code)
            return None
        if code == 0 and self.burst:
            log.info("child %d (pid %d) is done: nothing left to run", slot.index, pid)
            slot.done = True
            return None
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        if not slot.ready and not self.ever_ready:
            log.error("child %d (pid %d) %s before it started: stopping", slot.index, pid, how)
            return code if code > 0 else 1
        slot.streak = 1 if now - slot.started_at >= STABLE else slot.streak + 1
        delay = min(BACKOFF_MAX, 0.5 * 2 ** (slot.streak - 1))
        log.error(
            "child %d (pid %d, worker %s) %s; restarting it in %.1f s", slot.index, pid, slot.worker_id, how, delay
        )
        slot.restart_at = now + delay
        return None

    def _give_up(self, code: int) -> int:
        for slot in self.slots:
            slot.restart_at = None
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.terminate()
        for slot in self.slots:
            if slot.proc is not None:
                try:
                    slot.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    slot.proc.kill()
                    slot.proc.wait()
        return code
