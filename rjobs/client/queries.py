"""Read plans and the validation helpers every plan shares (see rjobs.client.operations): get, counts,
listing, events, assets, the dedupe cache, wait and stats. Reads never change Redis."""

from __future__ import annotations

import math
import re
import time
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from rjobs.client.arguments import actor_text
from rjobs.config import QueueConfig
from rjobs.errors import JobNotFound, RjobsError, Unauthorized, ValidationError, WaitTimeout
from rjobs.models import Actor, Asset, Event, Job, JobOutcome
from rjobs.statemachine import StateMachine
from rjobs.store import codec
from rjobs.store.keys import QueueKeys, validate_dedupe_key, validate_name
from rjobs.store.scripts import Cmd, Op, Scripts
from rjobs.store.transport import Plan

__all__ = [
    "WAIT_BLOCK_MS",
    "WAIT_COUNT",
    "WAIT_RECHECK",
    "ReadPlans",
    "server_warnings",
    "stats_plan",
    "stream_entries",
]

#: A wait blocks at most this long per read, so it looks at its deadline and re-checks on time.
WAIT_BLOCK_MS = 1000
#: A waited job's status is read again at least this often (seconds), whatever the stream says.
WAIT_RECHECK = 1.0
#: Entries per read of the queue stream (a busy stream is read in batches of this many).
WAIT_COUNT = 1000


class ReadPlans:
    """Validation, call building and decoding for one queue; no I/O of its own."""

    def __init__(self, name: str, machine: StateMachine, config: QueueConfig, actor: str | Actor) -> None:
        self.keys = QueueKeys(name)
        self.scripts = Scripts(self.keys, machine.states)
        self.machine = machine
        self.config = config.validate()
        self.actor: str = actor_text(actor)
        #: the named structured actor this client acts as by default (registered at declare)
        self.named = actor if isinstance(actor, Actor) and actor.name else None
        self.warnings: list[str] = []  # about the server's settings, found by the last declare

    # -- helpers ----------------------------------------------------------------------------------
    def _actor(self, actor: str | Actor | None) -> str:
        return self.actor if actor is None else actor_text(actor)

    def _id(self, job_id: str) -> str:
        return validate_name("job id", job_id)

    def _state(self, state: str) -> str:
        if state not in self.machine.edges:
            raise ValidationError(
                f"unknown state {state!r} for machine {self.machine.name!r}: {list(self.machine.edges)}"
            )
        return state

    def _role_state(self, role: str) -> str:
        state = self.machine.role(role)
        if state is None:
            raise ValidationError(f"machine {self.machine.name!r} has no {role} state")
        return state

    def _payload(self, value: Any, what: str) -> bytes:
        return codec.encode_json(value, limit=self.config.max_payload, what=what)

    def _job(self, raw: dict[bytes, bytes], job_id: str, user_id: str | None = None) -> Job:
        if not raw:
            raise JobNotFound(job_id)
        job = codec.job_from_hash(raw)
        if user_id is not None and job.user_id != user_id:
            raise Unauthorized(f"job {job_id!r} belongs to another user")
        return self._with_expiry(job)

    def _with_expiry(self, job: Job) -> Job:
        """The job with ``expire_ms``: when retention will purge it (finished jobs only)."""
        role = self.machine.final_role(job.status)
        if role is None or job.completed_ms is None:
            return job
        keep = getattr(self.config.retention, role)
        if keep is None:
            return job
        return msgspec.structs.replace(job, expire_ms=job.completed_ms + int(keep * 1000))

    # -- reads ------------------------------------------------------------------------------------
    def get(self, job_id: str, user_id: str | None = None) -> Plan[Job]:
        """The job, with the ownership check when ``user_id`` is given."""
        raw = yield Cmd(("HGETALL", self.keys.job(self._id(job_id))))
        return self._job(raw, job_id, user_id)

    def counts(self) -> Plan[dict[str, int]]:
        """Jobs per state, O(1) each (ZCARD of the state indexes)."""
        states = self.machine.states
        raw: list[Any] = yield [Cmd(("ZCARD", self.keys.state(s))) for s in states]
        return {s: int(n) for s, n in zip(states, raw)}

    def list_jobs(self, state: str | None = None, user_id: str | None = None, limit: int = 50) -> Plan[list[Job]]:
        """Newest first: by state, by owner, or both (the owner index filtered by state)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise ValidationError("limit must be an integer 1-10000")
        if state is not None:
            self._state(state)
        if user_id is not None:
            validate_name("user id", user_id)
        if user_id is None and state is not None:
            ids = yield Cmd(("ZREVRANGE", self.keys.state(state), 0, limit - 1))
        elif user_id is None:
            per_state: list[Any] = yield [
                Cmd(("ZREVRANGE", self.keys.state(s), 0, limit - 1, "WITHSCORES")) for s in self.machine.states
            ]
            merged = sorted((pair for rows in per_state for pair in rows), key=lambda p: -p[1])
            ids = [i for i, _ in merged[:limit]]
        else:
            ids = yield from self._owner_ids(user_id, state, limit)
        if not ids:
            return []
        raws: list[Any] = yield [Cmd(("HGETALL", self.keys.job(i.decode()))) for i in ids]
        return [codec.job_from_hash(r) for r in raws if r]

    def _owner_ids(self, user_id: str, state: str | None, limit: int) -> Plan[list[bytes]]:
        key = self.keys.owner(user_id)
        found: list[bytes] = []
        start, page = 0, max(limit, 200)
        while len(found) < limit and start < 100_000:  # bounded scan of the owner index
            ids: list[bytes] = yield Cmd(("ZREVRANGE", key, start, start + page - 1))
            if not ids:
                break
            if state is None:
                found += ids
            else:
                statuses: list[Any] = yield [Cmd(("HGET", self.keys.job(i.decode()), "status")) for i in ids]
                found += [i for i, s in zip(ids, statuses) if s is not None and s.decode() == state]
            start += page
        return found[:limit]

    def events(self, job_id: str, after: str = "-", count: int | None = None) -> Plan[list[Event]]:
        """The job's history, oldest first (``LRANGE`` of its list); ``after`` is an event id
        (``<ms>-<n>``) to start after, ``count`` the most to return."""
        jid = self._id(job_id)
        first = 0
        if after != "-":
            match = re.fullmatch(r"\d+-(\d+)", after)
            if match is None:
                raise ValidationError(f"after must be an event id like '1764530000123-4', not {after!r}")
            first = int(match.group(1)) + 1
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValidationError("count must be a positive integer")
        last = -1 if count is None else first + count - 1
        exists, entries = yield [
            Cmd(("EXISTS", self.keys.job(jid))),
            Cmd(("LRANGE", self.keys.job_history(jid), first, last)),
        ]
        if not exists and not entries:
            raise JobNotFound(jid)
        return codec.events_from_history(jid, entries, first)

    def queue_events(self, after: str = "-", count: int = 100, block_ms: int | None = None) -> Plan[list[Event]]:
        """Queue-wide events after ``after``; with ``block_ms``, wait for new ones (XREAD BLOCK)."""
        if block_ms is None:
            entries = yield Cmd(
                ("XRANGE", self.keys.events, "(" + after if after not in ("-", "$") else "-", "+", "COUNT", count)
            )
            return codec.events_from_entries(entries)
        reply = yield Cmd(("XREAD", "COUNT", count, "BLOCK", max(1, block_ms), "STREAMS", self.keys.events, after))
        return codec.events_from_entries(stream_entries(reply))

    def assets(self, job_id: str, user_id: str | None = None) -> Plan[list[Asset]]:
        """Assets linked to the job, with the ownership check."""
        jid = self._id(job_id)
        owner, raw = yield [
            Cmd(("HMGET", self.keys.job(jid), "status", "user_id")),
            Cmd(("HGETALL", self.keys.job_assets(jid))),
        ]
        if owner[0] is None:
            raise JobNotFound(jid)
        if user_id is not None and (owner[1] or b"").decode() != user_id:
            raise Unauthorized(f"job {jid!r} belongs to another user")
        assets = [codec.decode_asset(v) for v in raw.values()]
        return sorted(assets, key=lambda a: a.id)

    def cached_result(self, dedupe_key: str) -> Plan[Any]:
        """The cached result of the last successful job of ``dedupe_key`` (None when absent)."""
        raw = yield Cmd(("GET", self.keys.dedupe_result(validate_dedupe_key(dedupe_key))))
        return codec.decode_json(raw)

    def dedupe_holder(self, dedupe_key: str) -> Plan[str | None]:
        """Id of the job currently holding ``dedupe_key``."""
        raw = yield Cmd(("GET", self.keys.dedupe(validate_dedupe_key(dedupe_key))))
        return raw.decode() if raw else None

    def invalidate(self, dedupe_key: str) -> Plan[bool]:
        """Drop the cached result of ``dedupe_key``."""
        dropped: bool = yield self.scripts.invalidate(validate_dedupe_key(dedupe_key))
        return dropped

    # -- wait -------------------------------------------------------------------------------------
    # What a wait reads and how it decides, shared by SyncQueue.wait (the plan below) and the async
    # Queue's reader (rjobs.client.waits), which serves every waiter of an event loop with one XREAD.
    def wait_id(self, job_id: str, timeout: float | None) -> str:
        """The validated job id of a wait (whose timeout must be None or >= 0 seconds)."""
        jid = self._id(job_id)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout < math.inf
        ):
            raise ValidationError("timeout must be a finite number of seconds >= 0, or None")
        return jid

    @staticmethod
    def wait_status(fields: list[Any]) -> str | None:
        """The status in :meth:`wait_check`'s fields (None: no such job)."""
        return _text(fields[0])

    def wait_check(self, jid: str) -> Cmd:
        """The job's status and outcome fields."""
        return Cmd(("HMGET", self.keys.job(jid), "status", "result", "error"))

    def wait_settle(self, jid: str, fields: list[Any]) -> JobOutcome | None:
        """The outcome when :meth:`wait_check`'s ``fields`` show a final state, None while the job
        is not final; JobNotFound when it is gone (deleted, purged)."""
        status = _text(fields[0])
        if status is None:
            raise JobNotFound(jid)
        return self._outcome(jid, status, fields) if self.machine.is_final(status) else None

    def wait_position(self) -> Cmd:
        """The queue stream's newest entry: where a wait starts reading, taken before any status."""
        return Cmd(("XREVRANGE", self.keys.events, "+", "-", "COUNT", 1))

    def wait_read(self, after: Any, block_ms: int) -> Cmd:
        """Entries of the queue stream after ``after``, blocking up to ``block_ms`` (>= 1) for one."""
        return Cmd(("XREAD", "COUNT", WAIT_COUNT, "BLOCK", max(1, block_ms), "STREAMS", self.keys.events, after))

    def wait_finals(self, entries: list[tuple[Any, Any]]) -> set[str]:
        """Jobs that an entry moved into a final state (field ``to``; every final move writes one)."""
        done = set()
        for _, fields in entries:
            to = _text(_field(fields, "to"))
            if to is not None and self.machine.is_final(to):
                job = _text(_field(fields, "job"))
                if job is not None:
                    done.add(job)
        return done

    def wait(self, job_id: str, timeout: float | None) -> Plan[JobOutcome]:
        """Block until the job is final (SyncQueue): XREAD BLOCK on the queue stream from a position
        read before the job's status, so no final move is missed; the status is read again when an
        entry moves the job into a final state, and at least every :data:`WAIT_RECHECK` s (entries
        trimmed by MAXLEN, the queue stream turned off, the job deleted or purged)."""
        jid = self.wait_id(job_id, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        last, fields = yield [self.wait_position(), self.wait_check(jid)]
        after = last[0][0] if last else b"0-0"
        checked = time.monotonic()
        while (outcome := self.wait_settle(jid, fields)) is None:
            now = time.monotonic()
            block = WAIT_BLOCK_MS if deadline is None else int((deadline - now) * 1000)
            if block <= 0:
                if now - checked > 0.05:  # the status may be up to a second old: look once more
                    fields = yield self.wait_check(jid)
                    if (outcome := self.wait_settle(jid, fields)) is not None:
                        return outcome
                raise WaitTimeout(f"job {jid!r} still {_text(fields[0])} after {timeout} s")
            recheck = int((checked + WAIT_RECHECK - now) * 1000)
            entries = stream_entries((yield self.wait_read(after, min(block, WAIT_BLOCK_MS, max(1, recheck)))))
            if entries:
                after = entries[-1][0]
            if jid in self.wait_finals(entries) or time.monotonic() - checked >= WAIT_RECHECK:
                fields = yield self.wait_check(jid)
                checked = time.monotonic()
        return outcome

    def _outcome(self, jid: str, status: str, fields: list[Any]) -> JobOutcome:
        return JobOutcome(
            job_id=jid,
            status=status,
            success=status == self.machine.success,
            output=codec.decode_json(fields[1]),
            error=codec.decode_error(fields[2]),
        )


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _field(fields: Any, name: str) -> Any:
    """A field of a parsed stream entry (bytes keys; str keys from a decode_responses client)."""
    value = fields.get(name.encode())
    return fields.get(name) if value is None else value


def stream_entries(reply: Any) -> list[tuple[Any, Any]]:
    """The ``(id, fields)`` entries of an XREAD reply in any of redis-py's parsed forms (a list of
    ``[stream, entries]``, or a dict by stream with RESP3), empty when it timed out."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else [r[1] for r in reply]
    return [(e[0], e[1]) for entries in streams for e in entries]


def server_warnings() -> Plan[list[str]]:
    """What in the server's settings puts the queues at risk: a ``maxmemory-policy`` that evicts
    keys (acknowledged jobs, a queue's machine), or memory full. Nothing when the server does not
    tell (CONFIG and INFO refused by an ACL, or renamed on a managed server)."""
    try:
        config, info = yield [Cmd(("CONFIG", "GET", "maxmemory-policy")), Cmd(("INFO", "memory"))]
    except (RjobsError, ResponseError):
        return []
    out: list[str] = []
    if not isinstance(config, BaseException):
        pairs = list(config.items()) if isinstance(config, dict) else list(zip(config[::2], config[1::2]))
        policy = next((_as_str(v) for k, v in pairs if _as_str(k) == "maxmemory-policy"), "noeviction")
        if policy != "noeviction":
            out.append(
                f"maxmemory-policy is {policy}: at maxmemory Redis evicts keys, acknowledged jobs and queue "
                "machines among them; set it to noeviction"
            )
    if not isinstance(info, BaseException):
        fields = info if isinstance(info, dict) else dict(
            line.split(":", 1) for line in _as_str(info).splitlines() if ":" in line
        )  # fmt: skip
        used, limit = int(fields.get("used_memory", 0)), int(fields.get("maxmemory", 0))
        if limit and used >= limit:
            out.append(f"Redis is out of memory ({used} of maxmemory {limit} bytes): writes are refused")
    return out


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def paused_plan(keys: QueueKeys) -> Plan[dict[str, Any] | None]:
    """Whether the queue is paused: ``{"by": actor, "t": epoch ms, "msg": reason}``, or None."""
    raw = yield Cmd(("HGET", keys.machine, "paused"))
    return None if raw is None else _paused(raw)


def _paused(raw: bytes | str) -> dict[str, Any]:
    info: dict[str, Any] = msgspec.json.decode(raw)
    return info


def stats_plan(plans: ReadPlans, alive_window_ms: int = 30_000) -> Plan[dict[str, Any]]:
    """Counts per state, workers seen within the window, the oldest ready job's age, the ready jobs
    per job type with whether a live worker runs that type (``lanes``), and warnings: about the
    server's settings (:func:`server_warnings`) and about ready jobs no live worker runs."""
    k = plans.keys
    states = plans.machine.states
    ops: list[Op] = [Cmd(("ZCARD", k.state(s))) for s in states]
    ops += [
        Cmd(("TIME",)),
        Cmd(("ZRANGE", k.workers, 0, -1, "WITHSCORES")),
        Cmd(("ZRANGE", k.state(plans.machine.ready), 0, 0, "WITHSCORES")),
        Cmd(("ZRANGE", k.lanes, 0, 999, "WITHSCORES")),
        Cmd(("HGET", k.machine, "paused")),
    ]
    raw: list[Any] = yield ops
    counts = {s: int(n) for s, n in zip(states, raw)}
    now_s, now_us = raw[len(states)]
    now = int(now_s) * 1000 + int(now_us) // 1000
    workers = [w.decode() for w, seen in raw[len(states) + 1] if now - seen <= alive_window_ms]
    oldest = raw[len(states) + 2]
    listed = [(_as_str(t), now - seen <= alive_window_ms) for t, seen in raw[len(states) + 3]]
    ready: list[Any] = (yield [Cmd(("ZCARD", k.lane(t))) for t, _ in listed]) if listed else []
    lanes = {t: {"ready": int(n), "served": served} for (t, served), n in sorted(zip(listed, ready))}
    plans.warnings = yield from server_warnings()
    unserved = [
        f"queue {k.name}: {v['ready']} ready job(s) of type {t!r}, which no live worker runs"
        for t, v in lanes.items()
        if v["ready"] and not v["served"]
    ]
    return {
        "queue": k.name,
        "machine": plans.machine.name,
        "counts": counts,
        "workers": workers,
        "oldest_ready_age_ms": now - int(oldest[0][1]) if oldest else None,
        "lanes": lanes,
        "paused": None if raw[len(states) + 4] is None else _paused(raw[len(states) + 4]),
        "server_time_ms": now,
        "warnings": [*plans.warnings, *unserved],
    }
