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

from rjobs.models import EnqueueOutcome
from rjobs.statemachine import StateMachine
from rjobs.store.keys import QueueKeys
from rjobs.store.layout import COMPILED_OPTIONS, COMPILED_ROLES, compile_machine
from rjobs.store.messages import (
    Arg,
    ClaimResult,
    EnqueueSpec,
    MoveRequest,
    decode_claim,
    decode_declared,
    decode_enqueue,
    decode_strings,
    decode_text,
    outcome_error,
)

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
            decode_declared,
        )

    def enqueue(self, actor: str, specs: Sequence[EnqueueSpec]) -> Call[list[EnqueueOutcome]]:
        """Create jobs (all or nothing)."""
        args: list[Arg] = [actor, len(specs)]
        for spec in specs:
            args += spec.args()
        if not self.cluster:
            return self._call("enqueue", args, decode_enqueue)
        jobs = {j: None for spec in specs for j in (spec.job_id, *spec.depends_on) if j}
        more = {x: None for spec in specs if spec.dedupe_key for x in self._dedupe_keys(spec.dedupe_key)}
        more.update((x, None) for spec in specs for x in self._lane_keys(spec.type))
        return self._call("enqueue", args, decode_enqueue, jobs, more)

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
            return self._call("claim", [worker, max_jobs, lease_ms, promote, 0, "*"], decode_claim)
        lanes = [x for t in types for x in self._lane_keys(t)] if self.cluster else ()
        args: list[Arg] = [worker, max_jobs, lease_ms, promote, int(seen), len(types), *types]
        return self._call("claim", args, decode_claim, (), lanes)

    def heartbeat(
        self, holder: str, lease_ms: int, held: Iterable[tuple[str, str]], register: int = 1, info: bytes = b""
    ) -> Call[list[str]]:
        """Renew leases; per job 'ok' | 'cancel' | 'lost'. ``register``: 1 lists the holder as a live
        worker (a worker does, a manual holder passes 0), with ``info`` (a JSON object) as its
        details; 2 drops a leaving worker and its details (no pairs)."""
        pairs = list(held)
        flat: list[Arg] = [x for pair in pairs for x in pair]
        args: list[Arg] = [holder, lease_ms, int(register), len(pairs), *flat, *([info] if info else [])]
        return self._call("heartbeat", args, decode_strings, (job for job, _ in pairs), (self.keys.workers_info,))

    def transition(self, actor: str, requests: Sequence[MoveRequest]) -> Call[list[str]]:
        """Client-side moves; one outcome string per request (see :func:`outcome_error`)."""
        return self._call("transition", self._requests(actor, requests), decode_strings, (r.job_id for r in requests))

    def finish(self, actor: str, requests: Sequence[MoveRequest]) -> Call[list[str]]:
        """Fenced worker moves; one outcome string per request."""
        return self._call("finish", self._requests(actor, requests), decode_strings, (r.job_id for r in requests))

    @staticmethod
    def _requests(actor: str, requests: Sequence[MoveRequest]) -> list[Arg]:
        args: list[Arg] = [actor, len(requests)]
        for req in requests:
            args += req.args()
        return args

    def retry(self, actor: str, job_id: str, params: bytes = b"") -> Call[str]:
        """Failed/cancelled -> ready, same id, retry_count + 1; -> the new status."""
        return self._call("retry", [actor, job_id, params], decode_text, (job_id,))

    def progress(
        self, actor: str, job_id: str, token: str, percent: float, step: str, operator: bool = False
    ) -> Call[tuple[str, int]]:
        """-> ('ok', eta_ms) or ('ignored:<status>', -1)."""

        def decode(raw: list[Any]) -> tuple[str, int]:
            kind = decode_text(raw[0])
            return (kind, int(raw[1])) if kind == "ok" else (f"ignored:{decode_text(raw[1])}", -1)

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
        return self._call("add_asset", args, decode_text, (job_id,), (self.keys.job_assets(job_id),))

    def comment(self, actor: str, job_id: str, token: str, text: str) -> Call[str]:
        """Append a comment event."""
        return self._call("comment", [actor, job_id, token, text], decode_text, (job_id,))

    def set_priority(self, actor: str, job_id: str, priority: int) -> Call[int]:
        """Change a waiting job's priority -> the previous one."""
        return self._call("set_priority", [actor, job_id, priority], int, (job_id,))

    def set_limit(self, name: str, cap: int, rate: int, per_ms: int) -> Call[str]:
        """Set (or with cap and rate 0, clear) the limits of ``t:<type>`` / ``g:<group>`` -> the
        previous ones ("cap,rate,per_ms", or '')."""
        return self._call("set_limit", [name, cap, rate, per_ms], decode_text)

    def backoff(self, name: str, ms: int) -> Call[int]:
        """Claim no job of a limited name for ``ms`` -> the back-off's end (server epoch ms)."""
        return self._call("backoff", [name, ms], int)

    def name_actors(self, actors: Sequence[tuple[str, str, str]]) -> Call[int]:
        """Keep (type, id, name) in the actor directory ('' name: forget it) -> entries changed."""
        return self._call("name_actors", [len(actors), *(x for a in actors for x in a)], int)

    def pause(self, actor: str, paused: bool, reason: str = "") -> Call[bool]:
        """Pause (``paused``) or resume the queue -> whether that changed it."""
        return self._call("pause", [actor, int(paused), reason], lambda r: bool(int(r)))

    def delete(
        self, actor: str, job_ids: Sequence[str], user_id: str = "", force: bool = False, dependents: str = "refuse"
    ) -> Call[tuple[int, int, list[str]]]:
        """Delete jobs with everything they own -> (deleted, dependents moved, one outcome per id)."""
        args: list[Arg] = [actor, user_id, int(force), dependents, len(job_ids), *job_ids]
        return self._call("delete", args, _decode_removal, job_ids)

    def drain(self, actor: str, limit: int = 500) -> Call[int]:
        """Delete a batch of the jobs waiting to run -> how many went (0: none left)."""
        return self._call("drain", [actor, limit], int)

    def obliterate(self, actor: str, force: bool = False, limit: int = 500) -> Call[tuple[int, bool]]:
        """Delete a batch of the queue's jobs, or once none is left its own keys -> (jobs deleted, gone)."""
        return self._call("obliterate", [actor, int(force), limit], lambda r: (int(r[0]), bool(int(r[1]))))

    def invalidate(self, dedupe_key: str) -> Call[bool]:
        """Drop a dedupe key's cached result -> whether one existed."""
        return self._call("invalidate", [dedupe_key], lambda r: bool(int(r)), (), self._dedupe_keys(dedupe_key))

    def set_schedule(self, actor: str, name: str, fields: Sequence[Arg]) -> Call[tuple[str, int, int]]:
        """Store a schedule of periodic jobs; ``fields`` are the script's ARGV from the job type on
        (rjobs.client.schedules builds them) -> (created | updated | same | retry, next tick ms, server ms)."""
        return self._call("set_schedule", [actor, name, *fields], _schedule_reply, (), (self.keys.schedules,))

    def remove_schedule(self, name: str) -> Call[bool]:
        """Remove a schedule -> whether it existed."""
        return self._call("remove_schedule", [name], lambda r: bool(int(r)), (), (self.keys.schedules,))

    def cron_tick(
        self, actor: str, name: str, expected: int, proposed: int | None, job_type: str = ""
    ) -> Call[tuple[str, str, int, int]]:
        """Claim a schedule's due tick ``expected`` and enqueue its job; ``proposed`` is the next
        tick of a cron schedule (None for every) -> (outcome, job id or '', next tick ms, server ms);
        see lua/cron_tick.lua. ``job_type`` (the schedule's) names its lane's keys on a cluster."""
        job = f"cron-{name}-{expected}"
        more = (self.keys.schedules, *(self._lane_keys(job_type) if job_type and self.cluster else ()))
        args: list[Arg] = [actor, name, expected, "" if proposed is None else proposed]
        return self._call("cron_tick", args, _tick_reply, (job,), more)


def _decode_removal(raw: list[Any]) -> tuple[int, int, list[str]]:
    return int(raw[0]), int(raw[1]), decode_strings(raw[2:])


def _schedule_reply(raw: list[Any]) -> tuple[str, int, int]:
    return decode_text(raw[0]), int(raw[1] or 0), int(raw[2])


def _tick_reply(raw: list[Any]) -> tuple[str, str, int, int]:
    return decode_text(raw[0]), decode_text(raw[1]), int(raw[2]), int(raw[3])
