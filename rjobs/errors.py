"""The one error tree of rjobs, and the table that maps Lua error codes to it."""

from __future__ import annotations

__all__ = [
    "DedupeConflict",
    "DependencyError",
    "InvalidTransition",
    "JobExists",
    "JobNotFound",
    "LeaseLost",
    "LeaseRequired",
    "MachineConflict",
    "MachineError",
    "RjobsError",
    "ScriptError",
    "StateConflict",
    "Unauthorized",
    "ValidationError",
    "WaitTimeout",
    "error_from_reply",
]


class RjobsError(Exception):
    """Base of every error rjobs raises on purpose."""

    code = "rjobs_error"


class ValidationError(RjobsError, ValueError):
    """Bad input, rejected before anything was written."""

    code = "invalid"


class MachineError(ValidationError):
    """A state machine declaration is not valid (unknown role state, unreachable final state...)."""

    code = "invalid_machine"


class MachineConflict(RjobsError):
    """The queue already has a different state machine stored in Redis."""

    code = "machine_conflict"


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


class WaitTimeout(RjobsError, TimeoutError):
    """wait() gave up before the job reached a final state."""

    code = "timeout"


class ScriptError(RjobsError):
    """A Lua script failed in a way that is not a known error code (a bug; please report)."""

    code = "script"


def error_from_reply(message: str) -> RjobsError:
    """Map a Lua error reply ``"RJ_<CODE> arg1 arg2..."`` to the matching exception."""
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
        "RJ_NO_MACHINE": MachineConflict,
        "RJ_EXISTS": JobExists,
        "RJ_UNAUTHORIZED": Unauthorized,
        "RJ_DEPENDENCY": DependencyError,
        "RJ_FENCED": LeaseRequired,
        "RJ_STATE": StateConflict,
        "RJ_DEDUPE": DedupeConflict,
    }
    cls = simple.get(code, ScriptError)
    return cls(" ".join(args) if cls is not ScriptError else message)
