"""The one error tree of rjobs, and the one place that maps error replies to it: the Lua
scripts' ``RJ_<CODE>`` replies and the server's own refusals (LOADING, OOM, NOPERM, ...)."""

from __future__ import annotations

__all__ = [
    "DedupeConflict",
    "DependencyError",
    "HasDependents",
    "InvalidTransition",
    "JobExists",
    "JobNotFound",
    "JobRunning",
    "LeaseLost",
    "LeaseRequired",
    "MachineConflict",
    "MachineError",
    "MachineNotDeclared",
    "OutOfMemory",
    "PermissionDenied",
    "ReadOnly",
    "RjobsError",
    "ScriptError",
    "ServerBusy",
    "ServerRefused",
    "StateConflict",
    "Unauthorized",
    "ValidationError",
    "WaitTimeout",
    "error_from_reply",
    "reply_text",
    "server_refusal",
]


class RjobsError(Exception):
    """Base of every error rjobs raises on purpose.

    ``retryable`` tells whether the very same call may succeed if simply made again later (a
    transient server state, a timeout); the worker retries a job function that raised an rjobs
    error only when it is true."""

    code = "rjobs_error"
    retryable = False


class ValidationError(RjobsError, ValueError):
    """Bad input, rejected before anything was written."""

    code = "invalid"


class MachineError(ValidationError):
    """A state machine declaration is not valid (unknown role state, unreachable final state...)."""

    code = "invalid_machine"


class MachineConflict(RjobsError):
    """The queue already has a different state machine stored in Redis."""

    code = "machine_conflict"


class MachineNotDeclared(RjobsError):
    """The queue has no state machine the scripts can read: none was declared for it, or the
    stored one was declared or compiled by another rjobs version. Declaring the queue (connecting
    a Queue) stores or recompiles it; nothing was written."""

    code = "no_machine"


class JobNotFound(RjobsError, LookupError):
    """No such job in this queue (never existed, or purged after retention)."""

    code = "not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found")
        self.job_id = job_id


class JobExists(RjobsError):
    """A job with the requested id already exists."""

    code = "exists"


class Unauthorized(RjobsError, PermissionError):
    """The job belongs to another user."""

    code = "unauthorized"


class InvalidTransition(RjobsError):
    """The queue's machine has no edge from the job's current state to the target."""

    code = "invalid_transition"

    def __init__(self, current: str, target: str, job_id: str | None = None) -> None:
        where = f"job {job_id!r}: " if job_id else ""
        super().__init__(f"{where}cannot transition from {current!r} to {target!r}")
        self.current = current
        self.target = target
        self.job_id = job_id


class LeaseLost(RjobsError):
    """The caller's lease token is no longer the job's current one; nothing was written."""

    code = "lease_lost"


class LeaseRequired(RjobsError):
    """The job is held under a lease: a write to it needs the lease token, or ``operator=True``
    (recorded in the job's history). Nothing was written."""

    code = "lease_required"


class StateConflict(RjobsError):
    """The job's current state does not allow the operation (e.g. changing the priority of a job
    that is already running). Nothing was written."""

    code = "state_conflict"


class JobRunning(StateConflict):
    """The job is running (held under a lease): deleting it needs ``force=True``, or cancel it
    first. For a whole queue: some of its jobs are. Nothing was written."""

    code = "running"


class DedupeConflict(JobExists):
    """A live job holds the dedupe key and the policy keeps it (e.g. retrying a job whose key was
    taken meanwhile). ``holder`` is that job's id."""

    code = "dedupe_conflict"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.holder = message.split(" ", 1)[0]


class DependencyError(RjobsError):
    """A dependency is missing, or already ended in a way its dependents cannot follow."""

    code = "dependency"


class HasDependents(DependencyError):
    """Other jobs wait for this one: deleting it needs a ``dependents`` policy (fail, cancel or
    delete them). Nothing was written."""

    code = "has_dependents"


class WaitTimeout(RjobsError, TimeoutError):
    """wait() gave up before the job reached a final state."""

    code = "timeout"
    retryable = True


class ServerRefused(RjobsError):
    """The server refused the command because of its own state or settings; the command did not
    run, so nothing was written. ``reply`` is the server's error reply as it came."""

    code = "server_refused"

    def __init__(self, reply: str, summary: str = "") -> None:
        super().__init__(f"{summary}: {reply}" if summary else reply)
        self.reply = reply


class ServerBusy(ServerRefused):
    """The server cannot serve commands for now: loading its dataset after a restart (LOADING),
    running a long script (BUSY), a replica without its master (MASTERDOWN), TRYAGAIN."""

    code = "server_busy"
    retryable = True


class OutOfMemory(ServerRefused):
    """The server reached ``maxmemory`` (with ``noeviction``) and refuses writes (OOM); reads work."""

    code = "out_of_memory"
    retryable = True


class ReadOnly(ServerRefused):
    """The server takes no writes: a replica or a demoted master (READONLY), or a master that
    cannot persist to disk (MISCONF)."""

    code = "read_only"
    retryable = True


class PermissionDenied(ServerRefused, PermissionError):
    """The server's ACL refuses this user the command or the queue's keys (NOPERM), or it requires
    authentication (NOAUTH). Trying again does not help: the user's permissions must change."""

    code = "permission_denied"


class ScriptError(RjobsError):
    """A Lua script failed in a way that is not a known error code (a bug; please report)."""

    code = "script"


#: The server's error reply prefixes that are a state of the server, not a bug: the class and
#: what the reply means, for people.
SERVER_STATES: dict[str, tuple[type[ServerRefused], str]] = {
    "LOADING": (ServerBusy, "Redis is loading its dataset (after a restart)"),
    "BUSY": (ServerBusy, "Redis is busy running a long script"),
    "MASTERDOWN": (ServerBusy, "the replica has lost its master"),
    "TRYAGAIN": (ServerBusy, "Redis asks to try again"),
    "CLUSTERDOWN": (ServerBusy, "the cluster is down"),
    "OOM": (OutOfMemory, "Redis is out of memory (maxmemory reached): writes are refused, nothing was written"),
    "READONLY": (ReadOnly, "Redis takes no writes (a read-only replica)"),
    "MISCONF": (ReadOnly, "Redis cannot persist to disk and refuses writes"),
    "NOPERM": (PermissionDenied, "the Redis user lacks a permission (ACL)"),
    "NOAUTH": (PermissionDenied, "Redis requires authentication"),
}


def reply_text(error: BaseException | str) -> str:
    """An error reply as the server sent it: redis-py's exceptions keep its first word apart, in
    ``status_code``, for the codes it knows (LOADING, OOM, NOPERM, ...)."""
    text = str(error)
    status = getattr(error, "status_code", None)
    return f"{status} {text}" if isinstance(status, str) and status and not text.startswith(status) else text


def server_refusal(error: BaseException | str) -> ServerRefused | None:
    """The typed error of a server refusal (an error reply, as text or as a redis-py exception),
    or None when the reply is not one."""
    text = reply_text(error)
    found = SERVER_STATES.get(text.split(" ", 1)[0])
    return found[0](text, found[1]) if found is not None else None


def error_from_reply(reply: BaseException | str) -> RjobsError:
    """Map an error reply of a script to the matching exception: the scripts' own ``"RJ_<CODE>
    <detail>"``, a server refusal (:data:`SERVER_STATES`), else :class:`ScriptError`.

    The scripts' convention (lua/lib/core.lua): every refusal is ``RJ_<CODE> <detail>``, one of
    the codes below, built by core.lua's ``fail`` (a whole call) or returned as the text of one
    request's outcome (batch scripts, see :func:`rjobs.store.scripts.outcome_error`). The detail is
    for people; for RJ_NOT_FOUND, RJ_TRANSITION and RJ_DEDUPE its first words are the exception's
    arguments (the id; from, to and id; the holder). Each script's contract block lists the codes
    it can return."""
    message = reply_text(reply)
    parts = message.split(" ")
    code = parts[0]
    args = parts[1:]
    if code == "RJ_NOT_FOUND":
        return JobNotFound(args[0] if args else "?")
    if code == "RJ_TRANSITION" and len(args) >= 2:
        return InvalidTransition(args[0], args[1], args[2] if len(args) > 2 else None)
    simple: dict[str, type[RjobsError]] = {
        "RJ_LEASE_LOST": LeaseLost,
        "RJ_INVALID": ValidationError,
        "RJ_MACHINE_CONFLICT": MachineConflict,
        "RJ_NO_MACHINE": MachineNotDeclared,
        "RJ_EXISTS": JobExists,
        "RJ_UNAUTHORIZED": Unauthorized,
        "RJ_DEPENDENCY": DependencyError,
        "RJ_FENCED": LeaseRequired,
        "RJ_STATE": StateConflict,
        "RJ_DEDUPE": DedupeConflict,
        "RJ_RUNNING": JobRunning,
        "RJ_DEPENDENTS": HasDependents,
    }
    cls = simple.get(code)
    if cls is not None:
        return cls(" ".join(args))
    return server_refusal(message) or ScriptError(message)
