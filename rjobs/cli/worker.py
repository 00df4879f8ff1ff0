"""`rjobs worker module:attr`: load a Worker from an import path, apply the command line's
overrides, run it with signal handling, and turn the outcome into an exit code."""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import redis

from rjobs.cli.prefork import Prefork
from rjobs.client.partitioned import PartitionedQueue
from rjobs.client.queue import Queue
from rjobs.errors import RjobsError
from rjobs.store.keys import validate_name
from rjobs.worker.functions import JobFunction
from rjobs.worker.hooks import StartupFailed
from rjobs.worker.loop import Worker
from rjobs.worker.settings import parse_weights

__all__ = ["USAGE", "TargetError", "load_target", "run_from_cli"]

log = logging.getLogger("rjobs.worker")
USAGE = 2  # docs/cli.md: a target that cannot be loaded is a usage error, like a bad option


class TargetError(Exception):
    """A worker target that cannot be loaded; the message says what was expected and how to fix it."""


def load_target(target: str) -> Worker:
    """Import ``module:attr``: a Worker, or a zero-argument callable returning one; TargetError
    (one line: what was wrong, what to do) for anything else."""
    module_name, sep, attr = target.partition(":")
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        file = Path(module_name)
        folder = str(file.parent) if str(file.parent) not in ("", ".") else "the current directory"
        raise TargetError(
            f"{target!r} is a file path, but rjobs worker takes a module path: use "
            f"{file.stem}:{attr or 'worker'} and run it from the directory that holds {file.name} ({folder}), "
            "or add that directory to PYTHONPATH"
        )
    if not sep or not module_name or not attr:
        raise TargetError(
            f"worker target must look like module:attr, e.g. {module_name or 'myjobs'}:worker for "
            f"`worker = rjobs.Worker(...)` in {module_name or 'myjobs'}.py, not {target!r}"
        )
    if os.getcwd() not in sys.path:  # like `python -m`: the current directory is importable
        sys.path.insert(0, os.getcwd())
    module = _import(module_name)
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            where = module_name if i == 0 else f"{module_name}:{'.'.join(attr.split('.')[:i])}"
            raise TargetError(f"{where} has no attribute {part!r}; {_workers_hint(module, module_name)}")
        obj = getattr(obj, part)
    if isinstance(obj, Worker):
        return obj
    what = _not_a_factory(obj)
    if what is not None:
        raise TargetError(f"{target} is {what}, not an rjobs.Worker: {_workers_hint(module, module_name)}")
    try:
        made = obj()
    except Exception as exc:
        raise TargetError(f"calling {target}() to make the worker failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(made, Worker):
        raise TargetError(f"{target}() returned {type(made).__name__}, not an rjobs.Worker")
    return made


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            first = exc.name.split(".")[-1]
            raise TargetError(
                f"no module named {exc.name!r} (looked in {os.getcwd()} and on PYTHONPATH): run from the "
                f"directory that holds {first}.py (or its package), or add that directory to PYTHONPATH"
            ) from exc
        raise TargetError(f"importing {module_name} failed{_at(exc)}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # the module itself raised: show its error, not "not found"
        raise TargetError(f"importing {module_name} failed{_at(exc)}: {type(exc).__name__}: {exc}") from exc


def _at(exc: BaseException) -> str:
    """Where in the user's code an import failed (`` at path:line``), '' when unknown."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" at {exc.filename}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _not_a_factory(obj: Any) -> str | None:
    """What ``obj`` is when it cannot make a Worker by being called with no arguments, else None."""
    if isinstance(obj, JobFunction):
        return f"the job function {obj.name!r}"
    if isinstance(obj, (Queue, PartitionedQueue)):
        return "a queue"
    if not callable(obj) or isinstance(obj, type):
        return f"a {type(obj).__name__}" if not isinstance(obj, type) else f"the class {obj.__name__}"
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind()
    except TypeError:
        return "a job function" if len(sig.parameters) >= 2 else "a function that takes arguments"
    return None


def _workers_hint(module: ModuleType, module_name: str) -> str:
    found = [name for name, value in vars(module).items() if isinstance(value, Worker)]
    if found:
        return "the Worker it defines is " + " or ".join(f"{module_name}:{name}" for name in found)
    return (
        f"define one in {module_name} (worker = rjobs.Worker(queue, [your_job_functions])) and run "
        f"rjobs worker {module_name}:worker"
    )


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
    processes: int = 1,
    worker_id: str | None = None,
    ready_fd: int | None = None,
    health: tuple[str | None, int | None, str | None] = (None, None, None),
    order: tuple[str | None, list[str] | None] = (None, None),
    metrics: tuple[int | None, str | None] = (None, None),
) -> int:
    """Run the worker of ``target`` ("module:attr") with signal handling; returns an exit code.

    The worker serves its queues on the servers they name (``Queue(url=...)``, else REDIS_URL,
    else localhost:6379). ``url`` / ``queues`` / ``concurrency`` override the worker's own settings
    when given: ``url`` moves every queue to that server; queues not defined by the worker take
    the first queue's machine, config and server. ``burst`` turns burst mode on. ``health``: the
    health file, port and host (rjobs.worker.health), each None to keep the worker's own; ``order``:
    ``--order`` and the ``--weight QUEUE=W`` items (rjobs.worker.settings.QueueOrder); ``metrics``:
    the Prometheus port and host (rjobs.observe.prometheus; with ``processes`` N, child i serves
    port + i - 1). 0 = stopped normally, 1 = could not start (on_startup failed, the metrics port
    is taken) or crashed, 2 = the target cannot be loaded (one line on stderr saying why and what
    to do), 130 = interrupted at start-up.

    ``processes`` > 1 runs that many worker processes under this one (:mod:`rjobs.cli.prefork`),
    each a run of this function with ``worker_id`` ``<id>-<i>`` that writes a byte to ``ready_fd``
    once it started.
    """
    setup_logging(log_level, log_format)
    try:
        worker = load_target(target)
        worker.configure(url=url, queues=queues, concurrency=concurrency, burst=True if burst else None)
        worker.health.configure(*health)
        worker.order = worker.order.configured(order[0], parse_weights(order[1]))
        worker.order.check(worker.queues)
        if isinstance(processes, bool) or not isinstance(processes, int) or not 1 <= processes <= 256:
            raise ValueError(f"--processes must be 1-256, not {processes}")
        if worker_id is not None:
            worker.worker_id = validate_name("worker id", worker_id)
        if metrics[0] is not None and not 0 <= metrics[0] <= metrics[0] + processes - 1 <= 65535:
            raise ValueError(f"--metrics-port must be a TCP port 0-{65536 - processes} with {processes} process(es)")
    except (TargetError, ValueError, TypeError, RjobsError) as exc:  # one line; the cause's traceback with DEBUG
        if log.isEnabledFor(logging.DEBUG) and exc.__cause__ is not None:
            log.debug("loading %s", target, exc_info=exc.__cause__)
        sys.stderr.write(f"rjobs: error: cannot load worker {target}: {exc}\n")
        return USAGE
    if processes > 1:
        if health[1] is not None:  # one port cannot be bound by every process
            sys.stderr.write("rjobs: error: --health-port serves one process: with --processes use --health-file\n")
            return USAGE
        options: dict[str, Any] = {"target": target, "url": url, "queues": queues, "concurrency": concurrency}
        options.update(burst=burst, log_level=log_level, log_format=log_format, order=order)
        options.update(health=health, metrics=metrics)  # one health file for all; a metrics port each
        return Prefork(options, processes, worker.worker_id, worker.burst).run()
    failed = _serve_metrics(worker, metrics[0], metrics[1] or "0.0.0.0") if metrics[0] is not None else None
    if failed is not None:
        return failed
    if ready_fd is not None:
        worker.hooks.when_ready(functools.partial(_tell_ready, ready_fd))
    code = 0
    try:
        anyio.run(functools.partial(worker.run, install_signal_handlers=True), backend="asyncio")
    except KeyboardInterrupt:
        code = 130
    except StartupFailed as exc:  # one line; the traceback with --log-level DEBUG
        debug = log.isEnabledFor(logging.DEBUG)
        log.error("worker %s could not start: %s", worker.worker_id, exc, exc_info=exc if debug else None)
        code = 1
    except (RjobsError, redis.ConnectionError, redis.TimeoutError) as exc:  # expected: one line, no traceback
        log.error("worker %s stopped: %s: %s", worker.worker_id, type(exc).__name__, exc)
        code = 1
    except Exception as exc:
        cause = _alone(exc)  # an error of one task arrives wrapped in its task group's ExceptionGroup
        if isinstance(cause, (RjobsError, redis.ConnectionError, redis.TimeoutError, OSError)):
            log.error("worker %s stopped: %s: %s", worker.worker_id, type(cause).__name__, cause)
        else:
            log.exception("worker %s crashed", worker.worker_id)
        code = 1
    _exit_if_threads_linger(worker, code)
    return code


def _serve_metrics(worker: Worker, port: int, host: str) -> int | None:
    """Start ``--metrics-port`` (rjobs.observe.prometheus, imported only then); None when it
    serves, else the exit code after one line on stderr: 2 without prometheus_client, 1 when the
    port cannot be bound."""
    try:
        from rjobs.observe.prometheus import serve_worker_metrics

        serve_worker_metrics(worker, port, host)
    except (ImportError, OSError) as exc:
        sys.stderr.write(f"rjobs: error: --metrics-port: {exc}\n")
        return USAGE if isinstance(exc, ImportError) else 1
    return None


def _alone(exc: BaseException) -> BaseException:
    """The one error inside nested exception groups of one error each, else ``exc`` itself."""
    inner = getattr(exc, "exceptions", None)  # an exception group (the built-in one needs 3.11)
    while isinstance(inner, tuple) and len(inner) == 1 and isinstance(inner[0], BaseException):
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return exc


def _tell_ready(fd: int) -> None:
    """Tell a prefork parent that this child started (once: the fd is closed after)."""
    with contextlib.suppress(OSError):
        os.write(fd, b"r")
        os.close(fd)


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
