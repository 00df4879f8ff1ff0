"""`rjobs worker module:attr`: load a Worker from an import path, apply the command line's
overrides, run it with signal handling, and turn the outcome into an exit code."""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import sys
import time
from typing import Any

import anyio
import redis

from rjobs.errors import RjobsError
from rjobs.worker.loop import Worker

__all__ = ["load_target", "run_from_cli"]

log = logging.getLogger("rjobs.worker")


def load_target(target: str) -> Worker:
    """Import ``module:attr``: a Worker, or a zero-argument callable returning one."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"worker target must look like 'module:attr', not {target!r}")
    if os.getcwd() not in sys.path:  # like `python -m`: the current directory is importable
        sys.path.insert(0, os.getcwd())
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, Worker) and callable(obj):
        obj = obj()
    if not isinstance(obj, Worker):
        raise TypeError(f"{target} is not an rjobs.Worker (nor a callable returning one)")
    return obj


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the job's fields when the
    record has them (job_id, job_type, queue, worker), the traceback as ``exc``."""

    FIELDS = ("job_id", "job_type", "queue", "worker")

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update({k: getattr(record, k) for k in self.FIELDS if hasattr(record, k)})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(level: str, form: str) -> None:
    """The worker command's logging: ``level`` (DEBUG, INFO, WARNING, ERROR) and ``form`` (text or
    json lines) on stderr, unless the application configured logging itself."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    if form == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())


def run_from_cli(
    target: str,
    *,
    url: str | None,
    queues: list[str] | None,
    concurrency: int | None,
    burst: bool,
    log_level: str = "INFO",
    log_format: str = "text",
    health: tuple[str | None, int | None, str | None] = (None, None, None),
) -> int:
    """Run the worker of ``target`` ("module:attr") with signal handling; returns an exit code.

    The worker serves its queues on the servers they name (``Queue(url=...)``, else REDIS_URL,
    else localhost:6379). ``url`` / ``queues`` / ``concurrency`` override the worker's own settings
    when given: ``url`` moves every queue to that server; queues not defined by the worker take
    the first queue's machine, config and server. ``burst`` turns burst mode on. ``health``: the
    health file, port and host (rjobs.worker.health), each None to keep the worker's own. 0 = stopped
    normally, 1 = could not start or crashed, 130 = interrupted at start-up.
    """
    setup_logging(log_level, log_format)
    try:
        worker = load_target(target)
        worker.configure(url=url, queues=queues, concurrency=concurrency, burst=True if burst else None)
        worker.health.configure(*health)
    except Exception as exc:
        log.error("cannot load worker %s: %s: %s", target, type(exc).__name__, exc)
        return 1
    code = 0
    try:
        anyio.run(functools.partial(worker.run, install_signal_handlers=True), backend="asyncio")
    except KeyboardInterrupt:
        code = 130
    except (RjobsError, redis.ConnectionError, redis.TimeoutError) as exc:  # expected: one line, no traceback
        log.error("worker %s stopped: %s: %s", worker.worker_id, type(exc).__name__, exc)
        code = 1
    except Exception:
        log.exception("worker %s crashed", worker.worker_id)
        code = 1
    _exit_if_threads_linger(worker, code)
    return code


def _exit_if_threads_linger(worker: Worker, code: int) -> None:
    # Sync jobs abandoned at shutdown keep running in their threads and would hold the interpreter
    # open; their jobs were already handed back, so after a short grace the process ends anyway.
    deadline = time.monotonic() + 1.0
    while worker.busy_threads and time.monotonic() < deadline:
        time.sleep(0.05)
    if worker.busy_threads:
        log.warning("%d job thread(s) still running after shutdown: exiting without them", worker.busy_threads)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
