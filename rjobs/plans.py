"""Every client operation, written once as a *plan*: a generator that yields Redis operations
(a script Call, a plain Cmd, or a list of them for one pipelined round trip) and returns the
result. :class:`rjobs.Queue` drives plans on asyncio, :class:`rjobs.SyncQueue` on a blocking
client, so both have exactly the same semantics."""

from __future__ import annotations

import datetime as dt
import logging
import time
import secrets
from collections.abc import Generator, Iterable, Sequence
from typing import Any, TypeVar

from rjobs import codec
from rjobs.config import QueueConfig, parse_priority
from rjobs.errors import (
    JobNotFound,
    RjobsError,
    Unauthorized,
    ValidationError,
    WaitTimeout,
)
from rjobs.keys import QueueKeys, validate_dedupe_key, validate_name
from rjobs.machine import StateMachine
from rjobs.models import Asset, EnqueueOutcome, Event, Job, JobError, JobOutcome, JobRequest, Progress
from rjobs.scripts import (
    AsyncRunner,
    Call,
    Cmd,
    EnqueueSpec,
    MoveRequest,
    Op,
    Scripts,
    SyncRunner,
    outcome_error,
)

__all__ = ["Plan", "QueuePlans", "drive_async", "drive_sync", "to_job_error"]

log = logging.getLogger("rjobs")
T = TypeVar("T")
Plan = Generator[Op | list[Op], Any, T]
_UNSET: Any = object()
BULK_CHUNK = 500


def to_job_error(error: str | BaseException | JobError | dict[str, Any]) -> JobError:
    """Normalise what a caller passes as an error into the structured form."""
    if isinstance(error, JobError):
        return error
    if isinstance(error, BaseException):
        return JobError(code=type(error).__name__, message=str(error)[:2000])
    if isinstance(error, dict):
        try:
            return JobError(**error)
        except TypeError as exc:
            raise ValidationError(f"error dict needs code and message: {exc}") from None
    if isinstance(error, str):
        return JobError(code="error", message=error[:2000])
    raise ValidationError(f"error must be a str, exception, dict or JobError, not {type(error).__name__}")


def _to_ms(value: float | dt.timedelta | dt.datetime | None, *, absolute: bool, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, dt.datetime):
        if not absolute:
            raise ValidationError(f"{what} must be seconds or a timedelta")
        if value.tzinfo is None:
            raise ValidationError(f"{what} must be timezone-aware")
        return int(value.timestamp() * 1000)
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValidationError(f"{what} must be a non-negative number of seconds")
    return int(value * 1000)


class QueuePlans:
    """Validation, call building and decoding for one queue; no I/O of its own."""

    def __init__(self, name: str, machine: StateMachine, config: QueueConfig, actor: str) -> None:
        self.keys = QueueKeys(name)
        self.scripts = Scripts(self.keys)
        self.machine = machine
        self.config = config.validate()
        self.actor = validate_name("actor", actor, pattern=_ACTOR) if actor else actor

    # -- helpers ----------------------------------------------------------------------------------
    def _actor(self, actor: str | None) -> str:
        return self.actor if actor is None else validate_name("actor", actor, pattern=_ACTOR)

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
        return job

    def declare(self) -> Plan[str]:
        """Store the machine and options, or check they match what Redis has."""
        result: str = yield self.scripts.declare_machine(self.machine, self.config.redis_options())
        return result

    # -- enqueue ----------------------------------------------------------------------------------
    def spec(self, req: JobRequest) -> EnqueueSpec:
        """Validate one request and encode it for enqueue.lua."""
        if req.dedupe not in ("keep", "replace"):
            raise ValidationError("dedupe policy must be 'keep' or 'replace'")
        if req.on_dependency_failure not in ("fail", "cancel"):
            raise ValidationError("on_dependency_failure must be 'fail' or 'cancel'")
        if (
            isinstance(req.max_attempts, bool)
            or not isinstance(req.max_attempts, int)
            or not 1 <= req.max_attempts <= 1000
        ):
            raise ValidationError("max_attempts must be an integer 1-1000")
        if req.delay is not None and req.run_at is not None:
            raise ValidationError("give delay or run_at, not both")
        return EnqueueSpec(
            type=validate_name("job type", req.type),
            params=self._payload(req.params, "params"),
            priority=parse_priority(req.priority),
            job_id=self._id(req.job_id) if req.job_id is not None else "",
            user_id=validate_name("user id", req.user_id) if req.user_id is not None else "",
            run_at_ms=_to_ms(req.run_at, absolute=True, what="run_at"),
            delay_ms=_to_ms(req.delay, absolute=False, what="delay"),
            max_attempts=req.max_attempts,
            dedupe_key=validate_dedupe_key(req.dedupe_key) if req.dedupe_key is not None else "",
            dedupe_policy=req.dedupe,
            cancel_running=bool(req.cancel_running),
            on_dep_failure=req.on_dependency_failure,
            hold=bool(req.hold),
            depends_on=tuple(self._id(d) for d in req.depends_on),
        )

    def enqueue(self, req: JobRequest, actor: str | None = None) -> Plan[EnqueueOutcome]:
        """Create one job (or keep/replace by dedupe key)."""
        outcomes: list[EnqueueOutcome] = yield self.scripts.enqueue(self._actor(actor), [self.spec(req)])
        return outcomes[0]

    def enqueue_many(self, reqs: Iterable[JobRequest], actor: str | None = None) -> Plan[list[EnqueueOutcome]]:
        """Create many jobs in one round trip (atomic per chunk of 500)."""
        specs = [self.spec(r) for r in reqs]
        who = self._actor(actor)
        if not specs:
            return []
        calls: list[Op] = [
            self.scripts.enqueue(who, specs[i : i + BULK_CHUNK]) for i in range(0, len(specs), BULK_CHUNK)
        ]
        replies: list[Any] = yield calls
        out: list[EnqueueOutcome] = []
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
            out += reply
        return out

    # -- reads ------------------------------------------------------------------------------------
    def get(self, job_id: str, user_id: str | None = None) -> Plan[Job]:
        """The job, with the seed's ownership check when ``user_id`` is given."""
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
        """The job's history, oldest first (XRANGE of its stream)."""
        jid = self._id(job_id)
        args: tuple[Any, ...] = ("XRANGE", self.keys.job_events(jid), after, "+")
        if count is not None:
            args += ("COUNT", count)
        exists, entries = yield [Cmd(("EXISTS", self.keys.job(jid))), Cmd(args)]
        if not exists and not entries:
            raise JobNotFound(jid)
        return codec.events_from_entries(entries)

    def queue_events(self, after: str = "-", count: int = 100, block_ms: int | None = None) -> Plan[list[Event]]:
        """Queue-wide events after ``after``; with ``block_ms``, wait for new ones (XREAD BLOCK)."""
        if block_ms is None:
            entries = yield Cmd(
                ("XRANGE", self.keys.events, "(" + after if after not in ("-", "$") else "-", "+", "COUNT", count)
            )
            return codec.events_from_entries(entries)
        reply = yield Cmd(("XREAD", "COUNT", count, "BLOCK", max(1, block_ms), "STREAMS", self.keys.events, after))
        if not reply:
            return []
        streams = reply.values() if isinstance(reply, dict) else [r[1] for r in reply]
        return [e for entries in streams for e in codec.events_from_entries(_flatten(entries))]

    def assets(self, job_id: str, user_id: str | None = None) -> Plan[list[Asset]]:
        """Assets linked to the job, with the ownership check (seed 000 getJobAssets)."""
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

    def wait(self, job_id: str, timeout: float | None) -> Plan[JobOutcome]:
        """Block on the job's stream (XREAD BLOCK, no polling) until it reaches a final state."""
        jid = self._id(job_id)
        if timeout is not None and timeout < 0:
            raise ValidationError("timeout must be >= 0 seconds")
        deadline = None if timeout is None else time.monotonic() + timeout
        jkey, skey = self.keys.job(jid), self.keys.job_events(jid)
        last, fields = yield [
            Cmd(("XREVRANGE", skey, "+", "-", "COUNT", 1)),
            Cmd(("HMGET", jkey, "status", "result", "error")),
        ]
        after = last[0][0] if last else b"0-0"
        while True:
            if fields[0] is None:
                raise JobNotFound(jid)
            status = fields[0].decode()
            if self.machine.is_final(status):
                return self._outcome(jid, status, fields)
            block = 1000 if deadline is None else int((deadline - time.monotonic()) * 1000)
            if block <= 0:
                raise WaitTimeout(f"job {jid!r} still {status} after {timeout} s")
            reply = yield Cmd(("XREAD", "BLOCK", max(1, min(block, 1000)), "STREAMS", skey, after))
            if reply:
                entries = _flatten(next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1])
                after = entries[-1][0]
            fields = yield Cmd(("HMGET", jkey, "status", "result", "error"))

    def _outcome(self, jid: str, status: str, fields: list[Any]) -> JobOutcome:
        return JobOutcome(
            job_id=jid,
            status=status,
            success=status == self.machine.success,
            output=codec.decode_json(fields[1]),
            error=codec.decode_error(fields[2]),
        )

    # -- moves ------------------------------------------------------------------------------------
    def move(
        self,
        job_id: str,
        target: str,
        *,
        actor: str | None = None,
        token: str | None = None,
        result: Any = _UNSET,
        error: Any = None,
        run_at_ms: int = 0,
        reason: str = "",
    ) -> Plan[Job]:
        """One validated move and the job after it, in one round trip."""
        jid = self._id(job_id)
        req = MoveRequest(
            jid,
            self._state(target),
            token=_token(token),
            result=b"" if result is _UNSET else self._payload(result, "result"),
            error=b"" if error is None else codec.encode_json(to_job_error(error)),
            run_at_ms=run_at_ms,
            msg=_reason(reason),
        )
        outcomes, raw = yield [self.scripts.transition(self._actor(actor), [req]), Cmd(("HGETALL", self.keys.job(jid)))]
        if isinstance(outcomes, BaseException):
            raise outcomes
        err = outcome_error(outcomes[0])
        if err is not None:
            raise err
        return self._job(raw, jid)

    def transition(
        self,
        job_id: str,
        target: str,
        *,
        actor: str | None = None,
        reason: str = "",
        run_at: float | dt.datetime | None = None,
        delay: float | None = None,
        token: str | None = None,
    ) -> Plan[Job]:
        """Move a job along the table; a delayed target needs ``run_at`` or ``delay``."""
        run_at_ms = _to_ms(run_at, absolute=True, what="run_at")
        if delay is not None:
            run_at_ms = int(time.time() * 1000) + _to_ms(delay, absolute=False, what="delay")
        return (yield from self.move(job_id, target, actor=actor, reason=reason, run_at_ms=run_at_ms, token=token))

    def finish_as(
        self,
        role: str,
        job_id: str,
        *,
        result: Any = _UNSET,
        error: Any = None,
        token: str | None = None,
        actor: str | None = None,
        reason: str = "",
    ) -> Plan[Job]:
        """Move to the state of a final role (success, partial, failure, cancelled)."""
        target = self._role_state(role)
        return (
            yield from self.move(job_id, target, actor=actor, token=token, result=result, error=error, reason=reason)
        )

    def bulk_move(
        self, job_ids: Sequence[str], target: str, *, actor: str | None = None, error: Any = None, reason: str = ""
    ) -> Plan[dict[str, str]]:
        """Move many jobs; per id 'done', 'not_found', 'invalid_transition', ... (chunked)."""
        ids = [self._id(i) for i in job_ids]
        self._state(target)
        err = b"" if error is None else codec.encode_json(to_job_error(error))
        reqs = [MoveRequest(i, target, error=err, msg=_reason(reason)) for i in ids]
        who = self._actor(actor)
        calls: list[Op] = [
            self.scripts.transition(who, reqs[i : i + BULK_CHUNK]) for i in range(0, len(reqs), BULK_CHUNK)
        ]
        if not calls:
            return {}
        replies: list[Any] = yield calls
        out: dict[str, str] = {}
        for chunk_start, reply in zip(range(0, len(reqs), BULK_CHUNK), replies):
            if isinstance(reply, BaseException):
                raise reply
            for jid, outcome in zip(ids[chunk_start : chunk_start + BULK_CHUNK], reply):
                e = outcome_error(outcome)
                out[jid] = "done" if e is None else e.code
        return out

    def retry(self, job_id: str, params: Any = _UNSET, actor: str | None = None) -> Plan[Job]:
        """Failed/cancelled -> ready (seed 003 retryTask), optionally with new params."""
        jid = self._id(job_id)
        encoded = b"" if params is _UNSET else self._payload(params, "params")
        status, raw = yield [self.scripts.retry(self._actor(actor), jid, encoded), Cmd(("HGETALL", self.keys.job(jid)))]
        if isinstance(status, BaseException):
            raise status
        return self._job(raw, jid)

    def progress(
        self,
        job_id: str,
        percent: float,
        step: str | None = None,
        *,
        token: str | None = None,
        actor: str | None = None,
    ) -> Plan[Progress | None]:
        """Record progress; None (and a warning) when the job is no longer in a leased state."""
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
            raise ValidationError("percent must be a number 0-100")
        if step is not None and (not isinstance(step, str) or len(step) > 200):
            raise ValidationError("step must be text of at most 200 characters")
        jid = self._id(job_id)
        kind, eta = yield self.scripts.progress(self._actor(actor), jid, _token(token), percent, step or "")
        if kind != "ok":
            log.warning("ignoring progress update for job %s in state %s", jid, kind.split(":", 1)[1])
            return None
        return Progress(percent=float(percent), step=step, eta_ms=eta if eta >= 0 else None)

    def comment(self, job_id: str, text: str, *, actor: str | None = None, token: str | None = None) -> Plan[None]:
        """Add a comment by ``actor`` to the job's history (seed 003 addComment)."""
        if not isinstance(text, str) or not 1 <= len(text) <= 1000:
            raise ValidationError("comment must be 1-1000 characters")
        yield self.scripts.comment(self._actor(actor), self._id(job_id), _token(token), text)
        return None

    def add_asset(
        self,
        job_id: str,
        asset_type: str,
        url: str,
        *,
        storage_path: str | None = None,
        file_size: int | None = None,
        meta: dict[str, Any] | None = None,
        user_id: str | None = None,
        token: str | None = None,
        actor: str | None = None,
    ) -> Plan[Asset]:
        """Link an asset to the job (by the lease holder or the owner)."""
        jid = self._id(job_id)
        validate_name("asset type", asset_type)
        if not isinstance(url, str) or not 1 <= len(url) <= 4096:
            raise ValidationError("asset url must be 1-4096 characters")
        if file_size is not None and (isinstance(file_size, bool) or not isinstance(file_size, int) or file_size < 0):
            raise ValidationError("file_size must be a non-negative integer")
        asset = Asset(
            id=f"{time.time_ns():016x}{secrets.token_hex(4)}",  # time-sortable within a process
            job_id=jid,
            asset_type=asset_type,
            url=url,
            storage_path=storage_path,
            file_size=file_size,
            user_id=user_id,
            created_ms=int(time.time() * 1000),
            meta=meta or {},
        )
        data = codec.encode_json(asset, limit=65536, what="asset")
        owner = validate_name("user id", user_id) if user_id is not None else ""
        yield self.scripts.add_asset(self._actor(actor), jid, _token(token), owner, asset.id, data, asset_type)
        return asset

    def set_priority(self, job_id: str, priority: str | int, actor: str | None = None) -> Plan[int]:
        """Change the priority of a job not yet running; returns the previous priority."""
        previous: int = yield self.scripts.set_priority(self._actor(actor), self._id(job_id), parse_priority(priority))
        return previous


_ACTOR = __import__("re").compile(r"^[A-Za-z0-9_.:@\-]{1,200}$")


def _token(token: str | int | None) -> str:
    if token is None:
        return ""
    text = str(token)
    if not text.isdigit() or len(text) > 20:
        raise ValidationError("lease token must be the integer issued by claim")
    return text


def _reason(reason: str) -> str:
    if not isinstance(reason, str) or len(reason) > 1000:
        raise ValidationError("reason must be text of at most 1000 characters")
    return reason


def _flatten(entries: Any) -> list[tuple[Any, Any]]:
    return [(e[0], e[1]) for e in entries]


# -- drivers --------------------------------------------------------------------------------------
async def drive_async(runner: AsyncRunner, plan: Plan[T]) -> T:
    """Run a plan on asyncio; a single script call's error is thrown into the plan."""
    try:
        op = next(plan)
        while True:
            try:
                if isinstance(op, list):
                    result: Any = await runner.run_many(op)
                elif isinstance(op, Call):
                    result = await runner.run(op)
                else:
                    result = await runner.command(op)
            except RjobsError as exc:
                op = plan.throw(exc)
                continue
            op = plan.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


def drive_sync(runner: SyncRunner, plan: Plan[T]) -> T:
    """Run a plan on a blocking client; same semantics as :func:`drive_async`."""
    try:
        op = next(plan)
        while True:
            try:
                if isinstance(op, list):
                    result: Any = runner.run_many(op)
                elif isinstance(op, Call):
                    result = runner.run(op)
                else:
                    result = runner.command(op)
            except RjobsError as exc:
                op = plan.throw(exc)
                continue
            op = plan.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


def stats_plan(plans: QueuePlans, alive_window_ms: int = 30_000) -> Plan[dict[str, Any]]:
    """Counts per state, workers seen within the window, and the oldest ready job's age."""
    k = plans.keys
    states = plans.machine.states
    ops: list[Op] = [Cmd(("ZCARD", k.state(s))) for s in states]
    ops += [
        Cmd(("TIME",)),
        Cmd(("ZRANGE", k.workers, 0, -1, "WITHSCORES")),
        Cmd(("ZRANGE", k.state(plans.machine.ready), 0, 0, "WITHSCORES")),
    ]
    raw: list[Any] = yield ops
    counts = {s: int(n) for s, n in zip(states, raw)}
    now_s, now_us = raw[len(states)]
    now = int(now_s) * 1000 + int(now_us) // 1000
    workers = [w.decode() for w, seen in raw[len(states) + 1] if now - seen <= alive_window_ms]
    oldest = raw[len(states) + 2]
    return {
        "queue": k.name,
        "machine": plans.machine.name,
        "counts": counts,
        "workers": workers,
        "oldest_ready_age_ms": now - int(oldest[0][1]) if oldest else None,
        "server_time_ms": now,
    }
