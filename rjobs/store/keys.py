"""Every Redis key rjobs uses, and the validation that keeps user input from forging one.

This is the only module that builds key names. All keys of queue ``Q`` share the prefix
``rjobs:{Q}:`` — the braces are a Redis Cluster hash tag, so one queue lives in one slot and every
Lua script can touch all of its keys atomically.
"""

from __future__ import annotations

import re

from rjobs.errors import ValidationError

__all__ = ["MACHINE_PATTERN", "QueueKeys", "queue_of_machine_key", "validate_name"]

#: SCAN pattern that finds every queue (each declared queue has its machine hash).
MACHINE_PATTERN = "rjobs:{*}:machine"

# Names that become part of a key: no braces (hash tags), no colons (key separators), no glob
# characters, no whitespace. 128 chars bounds key size.
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
# A queue name, or one partition of a partitioned queue: ``<name>#<i>`` (rjobs.client.partitioned).
_QUEUE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}(#[0-9]{1,4})?$")
# Dedupe keys are user-facing identifiers ("thumbnail:user42"), so ':' and '/' are allowed; they
# live at the end of the key, and the dedupe result cache lives under another prefix, so they still
# cannot reach another key.
_DEDUPE = re.compile(r"^[A-Za-z0-9_.\-:/@=+]{1,200}$")


def validate_name(kind: str, value: object, *, pattern: re.Pattern[str] = _NAME) -> str:
    """Return ``value`` if it is a safe name for ``kind`` (queue, job id, user id...), else raise."""
    if not isinstance(value, str) or not pattern.match(value):
        shown = repr(value)[:60]
        raise ValidationError(
            f"invalid {kind} {shown}: use 1-{128 if pattern is _NAME else 200} characters from "
            f"{'A-Z a-z 0-9 _ . -' if pattern is _NAME else 'A-Z a-z 0-9 _ . - : / @ = +'}"
        )
    return value


def validate_dedupe_key(value: object) -> str:
    """Return a valid dedupe key or raise ValidationError."""
    return validate_name("dedupe key", value, pattern=_DEDUPE)


class QueueKeys:
    """Key names of one queue. Scripts receive ``prefix`` and the fixed keys below; per-job keys are
    built inside Lua from the same prefix (documented in each script's contract block)."""

    __slots__ = (
        "actors",
        "backoff",
        "delayed",
        "events",
        "lanes",
        "leases",
        "limits",
        "machine",
        "name",
        "prefix",
        "running",
        "schedules",
        "seq",
        "totals",
        "workers",
        "workers_info",
    )

    def __init__(self, queue: str) -> None:
        if not isinstance(queue, str) or not _QUEUE.match(queue):
            validate_name("queue name", queue)  # raises, with the rule
        self.name = queue
        self.prefix = f"rjobs:{{{queue}}}:"
        p = self.prefix
        self.machine = p + "machine"  # hash: the state machine table and roles
        self.lanes = p + "lanes"  # zset: job type -> when a worker that runs it last claimed (ms; 0 = never)
        self.delayed = p + "delayed"  # zset: jobs waiting for a time, score = due epoch ms
        self.leases = p + "leases"  # zset: leased jobs, score = lease deadline epoch ms
        self.events = p + "events"  # stream: the queue's events (all, or only final moves), capped
        self.schedules = p + "schedules"  # hash: schedule name -> its spec as JSON (rjobs.client.schedules)
        self.seq = p + "seq"  # string counter: FIFO order and id uniqueness
        self.workers = p + "workers"  # zset: worker id -> last heartbeat epoch ms
        self.workers_info = p + "workers:info"  # hash: worker id -> its details as JSON (rjobs.worker.presence)
        self.limits = p + "limits"  # hash: 't:<type>' / 'g:<group>' -> "cap,rate,per_ms" (set_limit.lua)
        self.running = p + "running"  # hash: limited name -> its leased jobs holding a slot
        self.backoff = p + "backoff"  # hash: limited name -> end of its back-off, epoch ms
        self.actors = p + "actors"  # hash: 'type:id' -> a structured actor as JSON (name_actors.lua)
        self.totals = p + "totals"  # hash: the counters since the queue began (metrics() names the fields)

    def lane(self, job_type: str) -> str:
        """Zset of the claimable jobs of one type (score = priority band, then FIFO sequence)."""
        return f"{self.prefix}ready:{job_type}"

    def group_lane(self, job_type: str, group: str) -> str:
        """Zset of the claimable jobs of one type and group (enqueued with ``group=``)."""
        return f"{self.prefix}ready:{job_type}:{group}"

    def groups(self, job_type: str) -> str:
        """Zset of a type's group lanes by turn (priority band, then the sequence at its last claim)."""
        return f"{self.prefix}groups:{job_type}"

    def assigned(self, actor: str) -> str:
        """Zset of the jobs ``actor`` holds by hand (assigned or started) while they stay leased."""
        return f"{self.prefix}assigned:{actor}"

    def wake(self, job_type: str) -> str:
        """List with at most one token that wakes a worker idle on the lane of ``job_type``."""
        return f"{self.prefix}wake:{job_type}"

    def metrics(self, minute: int) -> str:
        """Hash of the counters of one minute of server time (``minute`` = epoch ms // 60000),
        expiring a day after its last write (rjobs.store.layout.METRICS_TTL_S)."""
        return f"{self.prefix}metrics:{minute}"

    def job(self, job_id: str) -> str:
        """Hash with the job's flat fields."""
        return f"{self.prefix}job:{job_id}"

    def job_history(self, job_id: str) -> str:
        """List with the job's history: one JSON entry per event, oldest first."""
        return f"{self.prefix}job:{job_id}:history"

    def job_assets(self, job_id: str) -> str:
        """Hash asset id -> asset JSON."""
        return f"{self.prefix}job:{job_id}:assets"

    def job_dependents(self, job_id: str) -> str:
        """Set of job ids waiting for this job."""
        return f"{self.prefix}job:{job_id}:dependents"

    def state(self, state: str) -> str:
        """Zset index of the jobs in ``state`` (score = time they entered it; retention purges the
        final states' indexes from the oldest)."""
        return f"{self.prefix}state:{state}"

    def owner(self, user_id: str) -> str:
        """Zset of a user's jobs (score = created epoch ms)."""
        return f"{self.prefix}owner:{user_id}"

    def dedupe(self, dedupe_key: str) -> str:
        """String: id of the job currently holding ``dedupe_key``."""
        return f"{self.prefix}dedupe:{dedupe_key}"

    def dedupe_result(self, dedupe_key: str) -> str:
        """String with TTL: the cached result of the last successful job of ``dedupe_key``."""
        return f"{self.prefix}cache:{dedupe_key}"


def queue_of_machine_key(key: str) -> str | None:
    """The queue name in a ``rjobs:{Q}:machine`` key (as found by MACHINE_PATTERN), else None."""
    prefix, suffix = "rjobs:{", "}:machine"
    if key.startswith(prefix) and key.endswith(suffix) and len(key) > len(prefix) + len(suffix):
        return key[len(prefix) : -len(suffix)]
    return None
