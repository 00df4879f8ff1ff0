"""Every client operation, written once as a *plan*: a generator that yields Redis operations
(a script Call, a plain Cmd, or a list of them for one pipelined round trip) and returns the
result. :class:`rjobs.Queue` drives plans on asyncio, :class:`rjobs.SyncQueue` on a blocking
client, so both have exactly the same semantics."""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from rjobs.client.arguments import (
    BULK_OUTCOMES,
    UNSET,
    dedupe_policy,
    due_ms,
    flag,
    lease_ms,
    reason_text,
    to_job_error,
    to_ms,
    token_text,
)
from rjobs.client.queries import ReadPlans, server_warnings
from rjobs.config import QueueConfig, parse_priority
from rjobs.errors import JobExists, ValidationError
from rjobs.models import Asset, EnqueueOutcome, Job, JobRequest, Progress, Who
from rjobs.store import codec
from rjobs.store.keys import validate_dedupe_key, validate_name
from rjobs.store.scripts import Cmd, EnqueueSpec, MoveRequest, Op, outcome_error
from rjobs.store.transport import Plan
from rjobs.tracing import traced_enqueue, with_trace

__all__ = ["BULK_OUTCOMES", "QueuePlans", "to_job_error"]

log = logging.getLogger("rjobs")
BULK_CHUNK = 500
T = TypeVar("T")


class QueuePlans(ReadPlans):
    """Every client operation of one queue: the reads of ReadPlans plus enqueue and moves."""

    def declare(self, write_options: bool) -> Plan[str]:
        """Store the machine, or check it matches what Redis has. Options are written for a new
        queue or when ``write_options``; otherwise this client adopts the stored ones, so a
        process using defaults never resets another's retention or limits."""
        status, stored = yield self.scripts.declare_machine(self.machine, self.config.redis_options(), write_options)
        self.config = QueueConfig.from_redis_options(stored).validate()
        self.warnings = yield from server_warnings()
        for warning in self.warnings:
            log.warning("queue %s: %s", self.keys.name, warning)
        return str(status)

    # -- enqueue ----------------------------------------------------------------------------------
    def spec(self, req: JobRequest) -> EnqueueSpec:
        """Validate one request and encode it for enqueue.lua. Per request of enqueue_many, so the
        defaults (no delay, user, dedupe key or dependencies) take the short branches."""
        if not isinstance(req, JobRequest):
            raise ValidationError(f"a request must be an rjobs.JobRequest, not {type(req).__name__}")
        if req.dedupe != "keep":
            dedupe_policy(req.dedupe)
        if req.on_dependency_failure != "fail" and req.on_dependency_failure != "cancel":
            raise ValidationError("on_dependency_failure must be 'fail' or 'cancel'")
        attempts = req.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 1000:
            raise ValidationError("max_attempts must be an integer 1-1000")
        delay, run_at, deps = req.delay, req.run_at, req.depends_on
        if delay is not None and run_at is not None:
            raise ValidationError("give delay or run_at, not both")
        if req.hold is not False and (req.hold is not True or self.machine.initial == self.machine.ready):
            raise ValidationError(
                f"hold=True needs a machine whose initial state is not its ready state "
                f"({self.machine.name!r} starts jobs in {self.machine.initial!r})"
                if req.hold is True
                else "hold must be True or False"
            )
        if deps and isinstance(deps, str):
            raise ValidationError("depends_on must be a sequence of job ids, not a string")
        spec = EnqueueSpec(
            type=validate_name("job type", req.type),
            params=self._payload(req.params, "params"),
            priority=parse_priority(req.priority),
            job_id=self._id(req.job_id) if req.job_id is not None else "",
            user_id=validate_name("user id", req.user_id) if req.user_id is not None else "",
            run_at_ms=to_ms(run_at, absolute=True, what="run_at") if run_at is not None else 0,
            delay_ms=to_ms(delay, absolute=False, what="delay") if delay is not None else 0,
            max_attempts=attempts,
            dedupe_key=validate_dedupe_key(req.dedupe_key) if req.dedupe_key is not None else "",
            dedupe_policy=req.dedupe,
            cancel_running=flag(req.cancel_running, "cancel_running"),
            on_dep_failure=req.on_dependency_failure,
            hold=req.hold,
            group=validate_name("group", req.group) if req.group is not None else "",
            # a set of ids: a dependency listed twice counts once
            depends_on=tuple(dict.fromkeys(self._id(d) for d in deps)) if deps else (),
        )
        return with_trace(spec)  # the trace context, if any, apart: with_trace says why

    @traced_enqueue
    def enqueue(self, req: JobRequest, actor: Who | None = None) -> Plan[EnqueueOutcome]:
        """Create one job (or keep/replace/reuse by dedupe key)."""
        outcomes: list[EnqueueOutcome] = yield self.scripts.enqueue(self._actor(actor), [self.spec(req)])
        return outcomes[0]

    @traced_enqueue
    def enqueue_many(self, reqs: Iterable[JobRequest], actor: Who | None = None) -> Plan[list[EnqueueOutcome]]:
        """Create many jobs in one round trip. Every request is validated before anything is sent.
        Up to BULK_CHUNK requests are one script call, all or nothing: an error is raised and
        nothing was written. More take one call per chunk, which cannot be atomic together, so the
        call never raises once a chunk was written: it returns one outcome per request, ``refused``
        (with its reason) for every request of a chunk the server refused. When every chunk was
        refused, nothing was written and the first refusal is raised."""
        specs = [self.spec(r) for r in reqs]
        seen: set[str] = set()
        for spec in specs:
            if spec.job_id:
                if spec.job_id in seen:
                    raise JobExists(f"job id {spec.job_id!r} appears twice in one enqueue_many call")
                seen.add(spec.job_id)
        who = self._actor(actor)
        if len(specs) <= BULK_CHUNK:
            if not specs:
                return []
            outcomes: list[EnqueueOutcome] = yield self.scripts.enqueue(who, specs)
            return outcomes
        starts = range(0, len(specs), BULK_CHUNK)
        replies: list[Any] = yield [self.scripts.enqueue(who, specs[i : i + BULK_CHUNK]) for i in starts]
        if all(isinstance(reply, BaseException) for reply in replies):
            raise replies[0]  # nothing was written: the call fails as one
        out: list[EnqueueOutcome] = []
        for start, reply in zip(starts, replies):
            chunk = specs[start : start + BULK_CHUNK]
            if not isinstance(reply, BaseException):
                out += reply
                continue
            culprit = _request_index(reply)
            code = getattr(reply, "code", type(reply).__name__)
            for j, spec in enumerate(chunk):
                if j == culprit:
                    why = f"{code}: {reply}"
                elif culprit is not None:
                    why = f"not written: request {start + culprit} of this call refused its chunk ({code})"
                else:
                    why = f"not written: its chunk was refused ({code}: {reply})"
                out.append(EnqueueOutcome(id=spec.job_id, outcome="refused", status="", error=why))
        return out

    # -- moves ------------------------------------------------------------------------------------
    def move(
        self,
        job_id: str,
        target: str,
        *,
        actor: Who | None = None,
        token: str | None = None,
        result: Any = UNSET,
        error: Any = None,
        run_at_ms: int = 0,
        reason: str = "",
        lease: float | None = None,
        operator: bool = False,
    ) -> Plan[Job]:
        """One validated move and the job after it, in one round trip. ``run_at_ms`` < 0 is a delay
        from the server's clock; ``lease`` (seconds) is the lease a move into a leased state from
        outside takes (default :data:`MANUAL_LEASE`)."""
        jid = self._id(job_id)
        req = MoveRequest(
            jid,
            self._state(target),
            token=token_text(token),
            result=b"" if result is UNSET else self._payload(result, "result"),
            error=b"" if error is None else self._payload(to_job_error(error), "error"),
            run_at_ms=run_at_ms,
            msg=reason_text(reason),
            lease_ms=lease_ms(lease),
            operator=flag(operator, "operator"),
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
        actor: Who | None = None,
        reason: str = "",
        run_at: float | dt.datetime | None = None,
        delay: float | dt.timedelta | None = None,
        token: str | None = None,
        lease: float | None = None,
        operator: bool = False,
    ) -> Plan[Job]:
        """Move a job along the table; a delayed target needs ``run_at`` or ``delay`` (the delay
        counts from the server's clock). A leased job needs its ``token`` or ``operator=True``."""
        return (
            yield from self.move(
                job_id,
                target,
                actor=actor,
                reason=reason,
                run_at_ms=due_ms(run_at, delay),
                token=token,
                lease=lease,
                operator=operator,
            )
        )

    def finish_as(
        self,
        role: str,
        job_id: str,
        *,
        result: Any = UNSET,
        error: Any = None,
        token: str | None = None,
        actor: Who | None = None,
        reason: str = "",
        operator: bool = False,
    ) -> Plan[Job]:
        """Move to the state of a final role (success, partial, failure, cancelled); ``result``
        left out keeps the stored one (a job approved from review keeps its draft)."""
        target = self._role_state(role)
        return (
            yield from self.move(
                job_id, target, actor=actor, token=token, result=result, error=error, reason=reason, operator=operator
            )
        )

    def release(self, job_id: str, *, token: str, actor: Who | None = None, reason: str = "") -> Plan[Job]:
        """Hand a held job back to the ready state without spending its attempt (fenced)."""
        jid = self._id(job_id)
        req = MoveRequest(
            jid, self.machine.ready, token=token_text(token), msg=reason_text(reason or "released"), refund=True
        )
        outcomes, raw = yield [self.scripts.finish(self._actor(actor), [req]), Cmd(("HGETALL", self.keys.job(jid)))]
        if isinstance(outcomes, BaseException):
            raise outcomes
        err = outcome_error(outcomes[0])
        if err is not None:
            raise err
        return self._job(raw, jid)

    def bulk_move(
        self,
        job_ids: Sequence[str],
        target: str,
        *,
        actor: Who | None = None,
        error: Any = None,
        reason: str = "",
        run_at: float | dt.datetime | None = None,
        delay: float | dt.timedelta | None = None,
        operator: bool = False,
    ) -> Plan[dict[str, str]]:
        """Move many jobs (chunked, one round trip); one outcome per distinct id, see
        :data:`BULK_OUTCOMES`. An id listed twice is moved once."""
        if isinstance(job_ids, str):
            raise ValidationError("job_ids must be a sequence of job ids, not a string")
        ids = list(dict.fromkeys(self._id(i) for i in job_ids))
        self._state(target)
        err = b"" if error is None else self._payload(to_job_error(error), "error")
        due, op, msg = due_ms(run_at, delay), flag(operator, "operator"), reason_text(reason)
        reqs = [MoveRequest(i, target, error=err, msg=msg, run_at_ms=due, operator=op) for i in ids]
        who = self._actor(actor)
        replies = yield from _in_chunks(reqs, lambda chunk: self.scripts.transition(who, chunk))
        outcomes = [outcome for reply in replies for outcome in reply]
        out: dict[str, str] = {}
        for jid, outcome in zip(ids, outcomes):
            e = outcome_error(outcome)
            out[jid] = "done" if e is None else e.code
        return out

    def retry(self, job_id: str, params: Any = UNSET, actor: Who | None = None) -> Plan[Job]:
        """Failed/cancelled -> ready, optionally with new params."""
        jid = self._id(job_id)
        encoded = b"" if params is UNSET else self._payload(params, "params")
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
        actor: Who | None = None,
        operator: bool = False,
    ) -> Plan[Progress | None]:
        """Record progress; None (and a warning) when the job is no longer in a leased state."""
        if (
            isinstance(percent, bool)
            or not isinstance(percent, (int, float))
            or not math.isfinite(percent)
            or not 0 <= percent <= 100
        ):
            raise ValidationError("percent must be a number 0-100")
        if step is not None and (not isinstance(step, str) or len(codec.check_text(step, "step").encode()) > 200):
            raise ValidationError("step must be text of at most 200 bytes")
        jid = self._id(job_id)
        kind, eta = yield self.scripts.progress(
            self._actor(actor),
            jid,
            token_text(token),
            float(percent),
            codec.check_text(step or "", "step"),
            flag(operator, "operator"),
        )
        if kind != "ok":
            log.warning("ignoring progress update for job %s in state %s", jid, kind.split(":", 1)[1])
            return None
        return Progress(percent=float(percent), step=step, eta_ms=eta if eta >= 0 else None)

    def comment(self, job_id: str, text: str, *, actor: Who | None = None, token: str | None = None) -> Plan[None]:
        """Add a comment by ``actor`` to the job's history (never trimmed)."""
        if not isinstance(text, str) or not 1 <= len(codec.check_text(text, "comment").encode()) <= 1000:
            raise ValidationError("comment must be 1-1000 bytes")
        yield self.scripts.comment(self._actor(actor), self._id(job_id), token_text(token), text)
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
        actor: Who | None = None,
        operator: bool = False,
    ) -> Plan[Asset]:
        """Link an asset to the job: by the lease holder (``token``), the owner (``user_id``) or
        an operator (``operator=True``, recorded)."""
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
        op = flag(operator, "operator")
        yield self.scripts.add_asset(self._actor(actor), jid, token_text(token), owner, asset.id, data, asset_type, op)
        return asset

    def pause(self, paused: bool, reason: str = "", actor: Who | None = None) -> Plan[bool]:
        """Pause (``paused``) or resume the queue; whether that changed it."""
        changed: bool = yield self.scripts.pause(self._actor(actor), paused, reason_text(reason))
        return changed

    def set_priority(self, job_id: str, priority: str | int, actor: Who | None = None) -> Plan[int]:
        """Change the priority of a job not yet running; returns the previous priority."""
        previous: int = yield self.scripts.set_priority(self._actor(actor), self._id(job_id), parse_priority(priority))
        return previous


def _request_index(exc: BaseException) -> int | None:
    """The 0-based request an enqueue error names ("... (request <n>)", n from 1), else None."""
    match = re.search(r"\(request (\d+)\)$", str(exc))
    return int(match.group(1)) - 1 if match else None


def _in_chunks(items: Sequence[T], call: Callable[[Sequence[T]], Op]) -> Plan[list[Any]]:
    """One script call per BULK_CHUNK items, all in one round trip (no single script runs long);
    the replies in order, raising the first failed call's error."""
    if not items:
        return []
    replies: list[Any] = yield [call(items[i : i + BULK_CHUNK]) for i in range(0, len(items), BULK_CHUNK)]
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
    return replies
