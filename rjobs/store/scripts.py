"""The Lua bridge: loads ``lua/`` (expanding ``--!include``) and has one typed method per script
that builds the call and decodes its reply. Sending calls is rjobs.store.transport' job; Lua error codes
become exceptions through rjobs.errors."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Generic, TypeVar

import msgspec

from rjobs.errors import RjobsError, error_from_reply
from rjobs.models import ClaimedJob, EnqueueOutcome
from rjobs.statemachine import StateMachine
from rjobs.store.codec import decode_stored
from rjobs.store.keys import QueueKeys
from rjobs.store.layout import COMPILED_OPTIONS, COMPILED_ROLES, compile_machine

__all__ = [
    "COMPILED_OPTIONS",
    "COMPILED_ROLES",
    "Call",
    "ClaimResult",
    "Cmd",
    "EnqueueSpec",
    "LuaScript",
    "MoveRequest",
    "Op",
    "Scripts",
    "compile_machine",
    "load_script",
    "outcome_error",
    "script_names",
]

T = TypeVar("T")
Arg = str | bytes | int | float
_INCLUDE = re.compile(r"^--!include (\S+)$", re.MULTILINE)


#: First line of every script sent to a real server: a script with a shebang is refused up front
#: (READONLY, OOM) where it could not write, instead of running its reads and failing at its first
#: write (on a replica that is a misleading answer; redis-py's Sentinel client turns READONLY into a
#: reconnect to the new master).
SHEBANG = "#!lua\n"


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A script with its includes expanded, and the SHA1 Redis knows it by; ``legacy_*`` is the
    same script without the shebang, for servers that cannot read one (fakeredis)."""

    name: str
    source: str
    sha: str
    legacy_source: str
    legacy_sha: str

    def for_server(self, legacy: bool) -> tuple[str, str]:
        """(source, sha) to send."""
        return (self.legacy_source, self.legacy_sha) if legacy else (self.source, self.sha)


@cache
def load_script(name: str) -> LuaScript:
    """Load ``lua/<name>.lua`` from the installed package (wheel or editable alike)."""
    root = resources.files("rjobs") / "lua"

    def expand(match: re.Match[str]) -> str:
        return (root / match.group(1)).read_text(encoding="utf-8")

    legacy = _INCLUDE.sub(expand, (root / f"{name}.lua").read_text(encoding="utf-8"))
    source = SHEBANG + legacy
    return LuaScript(name, source, _sha(source), legacy, _sha(legacy))


def _sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


def script_names() -> list[str]:
    """Every script shipped in ``lua/`` (not the included helpers)."""
    root = resources.files("rjobs") / "lua"
    return sorted(p.name[:-4] for p in root.iterdir() if p.name.endswith(".lua"))


class Call(msgspec.Struct, Generic[T], frozen=True):
    """One script invocation, ready to send; ``decode`` turns the raw reply into the result."""

    script: LuaScript
    keys: tuple[str, ...]
    args: list[Arg]
    decode: Callable[[Any], T]


class Cmd(msgspec.Struct, frozen=True):
    """A plain Redis command (reads, blocking reads); the reply is parsed by redis-py."""

    args: tuple[Arg, ...]


Op = Call[Any] | Cmd


class EnqueueSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One job for enqueue.lua, already validated and encoded by the client. The fields are in
    ARGV order: :meth:`args` sends them as declared (``depends_on`` as its count, then the ids),
    and enqueue.lua names the same offsets at its top (a unit test holds the three together)."""

    job_id: str = ""
    type: str
    params: bytes
    priority: int
    user_id: str = ""
    run_at_ms: int = 0
    delay_ms: int = 0
    max_attempts: int = 1
    dedupe_key: str = ""
    dedupe_policy: str = "keep"
    cancel_running: bool = False
    on_dep_failure: str = "fail"
    hold: bool = False
    depends_on: tuple[str, ...] = ()

    def args(self) -> list[Arg]:
        """The record's ARGV fields, in declaration order."""
        return [
            self.job_id,
            self.type,
            self.params,
            self.priority,
            self.user_id,
            self.run_at_ms,
            self.delay_ms,
            self.max_attempts,
            self.dedupe_key,
            self.dedupe_policy,
            int(self.cancel_running),
            self.on_dep_failure,
            int(self.hold),
            len(self.depends_on),
            *self.depends_on,
        ]


class MoveRequest(msgspec.Struct, frozen=True):
    """One move for transition.lua / finish.lua (see lua/lib/apply.lua for what each field means)."""

    job_id: str
    target: str
    token: str = ""
    result: bytes = b""
    error: bytes = b""
    run_at_ms: int = 0
    msg: str = ""
    refund: bool = False
    lease_ms: int = 0
    operator: bool = False

    def args(self) -> list[Arg]:
        """The request's 10 ARGV fields, in lua/lib/apply.lua's order."""
        return [
            self.job_id,
            self.token,
            self.target,
            self.result,
            self.error,
            self.run_at_ms,
            self.msg,
            int(self.refund),
            self.lease_ms,
            int(self.operator),
        ]


class ClaimResult(msgspec.Struct, frozen=True):
    """What claim.lua returns: the leased jobs, how many remain ready, the next delayed due time,
    and whether the queue is paused (then no job)."""

    jobs: list[ClaimedJob]
    ready_left: int
    next_due_ms: int | None
    paused: bool = False


def outcome_error(outcome: bytes | str) -> RjobsError | None:
    """Per-request outcome of a batch script -> None for 'ok'/'already', else the exception."""
    text = outcome.decode() if isinstance(outcome, bytes) else outcome
    if text in ("ok", "already"):
        return None
    return error_from_reply(text)


def _s(v: bytes | str | None) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "")


def _decode_enqueue(raw: list[Any]) -> list[EnqueueOutcome]:
    # enqueue.lua replies one flat array, 6 entries per job (no table per job in Lua)
    return [
        EnqueueOutcome(
            id=_s(raw[i]),
            outcome=_s(raw[i + 1]),
            status=_s(raw[i + 2]),
            previous_id=_s(raw[i + 3]) or None,
            stale_cancelled=bool(raw[i + 4]),
            cache_invalidated=bool(raw[i + 5]),
        )
        for i in range(0, len(raw), 6)
    ]


def _decode_claim(raw: list[Any]) -> ClaimResult:
    jobs = [
        ClaimedJob(
            id=_s(j[0]),
            type=_s(j[1]),
            params=decode_stored(j[2]),  # Undecodable: that job fails alone (invalid_params)
            attempt=int(j[3]),
            max_attempts=int(j[4]),
            token=_s(j[5]),
            user_id=_s(j[6]) or None,
            priority=int(j[7]),
            retry_count=int(j[8]),
            created_ms=int(j[9]),
            lease_deadline_ms=int(j[10]),
        )
        for j in raw[2:]
    ]
    due, left = int(raw[0]), int(raw[1])
    return ClaimResult(jobs, max(left, 0), None if due < 0 else due, left < 0)


def _decode_declared(raw: list[Any]) -> tuple[str, dict[str, int]]:
    return _s(raw[0]), {_s(raw[i]): int(raw[i + 1]) for i in range(1, len(raw), 2)}


def _strings(raw: list[Any]) -> list[str]:
    return [_s(x) for x in raw]


class Scripts:
    """Typed builders for every script of one queue. Nothing here talks to Redis."""

    def __init__(self, keys: QueueKeys, states: Iterable[str] = ()) -> None:
        self.keys = keys
        self._k = (keys.machine, keys.events)
        k = keys
        self._queue_keys = (*self._k, k.lanes, k.delayed, k.leases, k.seq, k.workers, *map(k.state, states))
        #: On a cluster every call declares, beyond the two keys it always names, the queue's keys
        #: and those of the jobs and dedupe keys it names (docs/design.md, decision 3): the server
        #: then answers ASK or TRYAGAIN before the script runs while the queue's slot migrates.
        self.cluster = False

    def _call(
        self, name: str, args: list[Arg], decode: Callable[[Any], T], jobs: Iterable[str] = (), more: Iterable[str] = ()
    ) -> Call[T]:
        keys: tuple[str, ...] = self._k
        if self.cluster:
            k = self.keys
            keys = (*self._queue_keys, *(x for j in jobs for x in (k.job(j), k.job_history(j))), *more)
        return Call(load_script(name), keys, [self.keys.prefix, *args], decode)

    def declare_machine(
        self, machine: StateMachine, options: dict[str, int], write_options: bool = True
    ) -> Call[tuple[str, dict[str, int]]]:
        """Store the machine or check it matches; options are written for a new queue or when
        ``write_options``. -> ('created' | 'same' | 'updated', the options stored now)."""
        fields = machine.to_redis()
        fingerprint = fields.pop("fingerprint")
        flat: list[Arg] = [x for kv in fields.items() for x in kv]
        flat += [x for k, v in options.items() for x in (f"opt:{k}", v)]
        return self._call(
            "declare_machine",
            [fingerprint, len(fields), int(write_options), *flat],
            _decode_declared,
        )

    def enqueue(self, actor: str, specs: Sequence[EnqueueSpec]) -> Call[list[EnqueueOutcome]]:
        """Create jobs (all or nothing)."""
        args: list[Arg] = [actor, len(specs)]
        for spec in specs:
            args += spec.args()
        if not self.cluster:
            return self._call("enqueue", args, _decode_enqueue)
        jobs = {j: None for spec in specs for j in (spec.job_id, *spec.depends_on) if j}
        more = {x: None for spec in specs if spec.dedupe_key for x in self._dedupe_keys(spec.dedupe_key)}
        more.update((x, None) for spec in specs for x in self._lane_keys(spec.type))
        return self._call("enqueue", args, _decode_enqueue, jobs, more)

    def _lane_keys(self, job_type: str) -> tuple[str, str]:
        return self.keys.lane(job_type), self.keys.wake(job_type)

    def _dedupe_keys(self, dedupe_key: str) -> tuple[str, str]:
        return self.keys.dedupe(dedupe_key), self.keys.dedupe_result(dedupe_key)

    def claim(
        self,
        worker: str,
        max_jobs: int,
        lease_ms: int,
        types: Sequence[str] | None = None,
        promote: int = 100,
        seen: bool = True,
    ) -> Call[ClaimResult]:
        """Promote due delayed jobs and lease up to ``max_jobs`` ready ones of the job ``types``
        (None: of every type, for a consumer that runs anything). ``seen``: record in the lanes
        index that a worker running ``types`` came (a worker does every few seconds)."""
        if types is None:
            return self._call("claim", [worker, max_jobs, lease_ms, promote, 0, "*"], _decode_claim)
        lanes = [x for t in types for x in self._lane_keys(t)] if self.cluster else ()
        args: list[Arg] = [worker, max_jobs, lease_ms, promote, int(seen), len(types), *types]
        return self._call("claim", args, _decode_claim, (), lanes)

    def heartbeat(
        self, holder: str, lease_ms: int, held: Iterable[tuple[str, str]], register: int = 1, info: bytes = b""
    ) -> Call[list[str]]:
        """Renew leases; per job 'ok' | 'cancel' | 'lost'. ``register``: 1 lists the holder as a live
        worker (a worker does, a manual holder passes 0), with ``info`` (a JSON object) as its
        details; 2 drops a leaving worker and its details (no pairs)."""
        pairs = list(held)
        flat: list[Arg] = [x for pair in pairs for x in pair]
        args: list[Arg] = [holder, lease_ms, int(register), len(pairs), *flat, *([info] if info else [])]
        return self._call("heartbeat", args, _strings, (job for job, _ in pairs), (self.keys.workers_info,))

    def transition(self, actor: str, requests: Sequence[MoveRequest]) -> Call[list[str]]:
        """Client-side moves; one outcome string per request (see :func:`outcome_error`)."""
        return self._call("transition", self._requests(actor, requests), _strings, (r.job_id for r in requests))

    def finish(self, actor: str, requests: Sequence[MoveRequest]) -> Call[list[str]]:
        """Fenced worker moves; one outcome string per request."""
        return self._call("finish", self._requests(actor, requests), _strings, (r.job_id for r in requests))

    @staticmethod
    def _requests(actor: str, requests: Sequence[MoveRequest]) -> list[Arg]:
        args: list[Arg] = [actor, len(requests)]
        for req in requests:
            args += req.args()
        return args

    def retry(self, actor: str, job_id: str, params: bytes = b"") -> Call[str]:
        """Failed/cancelled -> ready, same id, retry_count + 1; -> the new status."""
        return self._call("retry", [actor, job_id, params], _s, (job_id,))

    def progress(
        self, actor: str, job_id: str, token: str, percent: float, step: str, operator: bool = False
    ) -> Call[tuple[str, int]]:
        """-> ('ok', eta_ms) or ('ignored:<status>', -1)."""

        def decode(raw: list[Any]) -> tuple[str, int]:
            kind = _s(raw[0])
            return (kind, int(raw[1])) if kind == "ok" else (f"ignored:{_s(raw[1])}", -1)

        return self._call("progress", [actor, job_id, token, percent, step, int(operator)], decode, (job_id,))

    def reap(self, limit: int, max_lease_losses: int, purge: int, worker_ttl_ms: int) -> Call[tuple[int, int, int]]:
        """Recover expired leases and purge expired finished jobs -> (requeued, failed, purged)."""
        return self._call(
            "reap",
            [limit, max_lease_losses, purge, worker_ttl_ms],
            lambda r: (int(r[0]), int(r[1]), int(r[2])),
            more=(self.keys.workers_info,),
        )

    def add_asset(
        self,
        actor: str,
        job_id: str,
        token: str,
        user_id: str,
        asset_id: str,
        asset: bytes,
        label: str,
        operator: bool = False,
    ) -> Call[str]:
        """Link an asset to a job (the lease holder, the owner or an operator) -> asset id."""
        args: list[Arg] = [actor, job_id, token, user_id, asset_id, asset, label, int(operator)]
        return self._call("add_asset", args, _s, (job_id,), (self.keys.job_assets(job_id),))

    def comment(self, actor: str, job_id: str, token: str, text: str) -> Call[str]:
        """Append a comment event."""
        return self._call("comment", [actor, job_id, token, text], _s, (job_id,))

    def set_priority(self, actor: str, job_id: str, priority: int) -> Call[int]:
        """Change a waiting job's priority -> the previous one."""
        return self._call("set_priority", [actor, job_id, priority], int, (job_id,))

    def pause(self, actor: str, paused: bool, reason: str = "") -> Call[bool]:
        """Pause (``paused``) or resume the queue -> whether that changed it."""
        return self._call("pause", [actor, int(paused), reason], lambda r: bool(int(r)))

    def invalidate(self, dedupe_key: str) -> Call[bool]:
        """Drop a dedupe key's cached result -> whether one existed."""
        return self._call("invalidate", [dedupe_key], lambda r: bool(int(r)), (), self._dedupe_keys(dedupe_key))
