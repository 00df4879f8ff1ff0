"""The only encoders and decoders: payloads are msgspec JSON (readable with redis-cli), job
hashes and stream entries are decoded into the models here. No pickle anywhere."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from itertools import accumulate
from typing import Any

import msgspec

from rjobs.errors import ValidationError
from rjobs.models import Asset, Event, Job, JobError, Progress, Undecodable

__all__ = [
    "MAX_DEPTH",
    "check_text",
    "decode_json",
    "decode_stored",
    "encode_json",
    "event_from_entry",
    "job_from_hash",
    "json_depth",
]

#: How deeply a payload (params, result, error, asset meta) may nest lists and objects.
MAX_DEPTH = 64

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()
_error_decoder = msgspec.json.Decoder(JobError)
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')  # JSON strings may hold brackets: not nesting
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = [1 if c in b"[{" else -1 for c in range(256)]


def encode_json(value: Any, *, limit: int | None = None, what: str = "payload") -> bytes:
    """Encode ``value`` as JSON; raise ValidationError if it cannot be, is over ``limit`` bytes,
    nests deeper than :data:`MAX_DEPTH`, holds NaN or infinity (msgspec would write ``null``) or
    text that is not valid Unicode (a lone surrogate)."""
    try:
        data = _encoder.encode(value)
    except (TypeError, msgspec.EncodeError, OverflowError) as exc:
        raise ValidationError(f"{what} is not JSON-encodable: {exc}") from None
    except UnicodeEncodeError:
        raise ValidationError(f"{what} holds text that is not valid Unicode (a lone surrogate)") from None
    except RecursionError:
        raise ValidationError(f"{what} is nested deeper than {MAX_DEPTH} levels") from None
    if limit is not None and len(data) > limit:
        raise ValidationError(f"{what} is {len(data)} bytes, over the limit of {limit}")
    # Both checks below look at the value only when the cheap test on the bytes says they must.
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and json_depth(data) > MAX_DEPTH:
        raise ValidationError(f"{what} is nested deeper than {MAX_DEPTH} levels")
    if value is not None and b"null" in data and _has_non_finite(msgspec.to_builtins(value)):
        raise ValidationError(f"{what} holds NaN or infinity, which JSON cannot carry")
    return data


def check_text(text: str, what: str) -> str:
    """``text``, or ValidationError when it cannot be sent as UTF-8 (a lone surrogate)."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise ValidationError(f"{what} holds text that is not valid Unicode (a lone surrogate)") from None
    return text


def json_depth(data: bytes) -> int:
    """How deeply the JSON text ``data`` nests lists and objects (brackets inside strings aside)."""
    brackets = _STRINGS.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


def decode_stored(data: bytes | str | None) -> Any:
    """Decode a stored payload (params, result) that someone may have written around the client:
    what is not JSON or nests deeper than :data:`MAX_DEPTH` comes back as :class:`Undecodable`
    (never a RecursionError), so one bad job cannot break a claim or a read of many."""
    if isinstance(data, str):
        data = data.encode()
    if data and data.count(b"[") + data.count(b"{") > MAX_DEPTH and json_depth(data) > MAX_DEPTH:
        return Undecodable(reason=f"nested deeper than {MAX_DEPTH} levels")
    try:
        return decode_json(data)
    except Exception as exc:  # whatever it is, it is this payload's alone
        return Undecodable(reason=f"not valid JSON ({type(exc).__name__}: {exc})"[:500])


def decode_json(data: bytes | str | None) -> Any:
    """Decode a stored JSON payload (None / empty -> None)."""
    if not data:
        return None
    return _decoder.decode(data)


def decode_error(data: bytes | str | None) -> JobError | None:
    """Decode a stored structured error."""
    if not data:
        return None
    try:
        return _error_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):  # not a structured error: its text
        return JobError(code="error", message=str(decode_stored(data))[:2000])


def _int(v: bytes | None) -> int | None:
    if v is None or v == b"":
        return None
    try:
        n = float(v)
        return int(n) if math.isfinite(n) else None
    except ValueError:  # written by hand: not a number
        return None


def _float(v: bytes) -> float:
    try:
        n = float(v)
    except ValueError:
        return 0.0
    return n if math.isfinite(n) else 0.0


def _str(v: bytes | None) -> str | None:
    return v.decode() if v else None


def job_from_hash(h: Mapping[bytes, bytes]) -> Job:
    """Build a Job from ``HGETALL rjobs:{Q}:job:<id>``."""
    g = h.get
    percent = g(b"progress")
    eta = _int(g(b"eta_ms"))
    deps = g(b"depends_on")
    started, completed = _int(g(b"started_ms")), _int(g(b"completed_ms"))
    return Job(
        id=h[b"id"].decode(),
        queue=(g(b"queue") or b"").decode(),
        type=(g(b"type") or b"").decode(),
        status=(g(b"status") or b"").decode(),
        priority=_int(g(b"priority")) or 0,
        params=decode_stored(g(b"params")),
        result=decode_stored(g(b"result")),
        error=decode_error(g(b"error")),
        progress=Progress(
            percent=_float(percent) if percent else 0.0,
            step=_str(g(b"step")),
            eta_ms=eta if eta is not None and eta >= 0 else None,
        ),
        user_id=_str(g(b"user_id")),
        attempt=_int(g(b"attempt")) or 0,
        executions=_int(g(b"executions")) or 0,
        max_attempts=_int(g(b"max_attempts")) or 1,
        retry_count=_int(g(b"retry_count")) or 0,
        lease_losses=_int(g(b"lease_losses")) or 0,
        worker=_str(g(b"worker")),
        token=_int(g(b"token")) or 0,
        created_ms=_int(g(b"created_ms")) or 0,
        updated_ms=_int(g(b"updated_ms")),
        scheduled_ms=_int(g(b"scheduled_ms")) or None,
        started_ms=started,
        completed_ms=completed,
        duration_ms=completed - started if completed is not None and started is not None else None,
        lease_deadline_ms=_int(g(b"lease_deadline_ms")),
        expire_ms=_int(g(b"expire_ms")),
        dedupe_key=_str(g(b"dedupe_key")),
        depends_on=tuple(deps.decode().split(",")) if deps else (),
        deps_pending=_int(g(b"deps_pending")) or 0,
        group=_str(g(b"group")),
        trace=_str(g(b"trace")),
    )


def event_from_entry(entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> Event:
    """Build an Event from one queue stream entry (XRANGE / XREAD)."""
    g = fields.get
    return Event(
        id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        job_id=(g(b"job") or b"").decode(),
        event=(g(b"event") or b"").decode(),
        from_state=_str(g(b"from")),
        to_state=_str(g(b"to")),
        actor=_str(g(b"actor")),
        message=_str(g(b"msg")),
        attempt=_int(g(b"attempt")),
        token=_int(g(b"token")),
        data=_str(g(b"data")),
        operator=g(b"op") == b"1",
    )


class _HistoryEntry(msgspec.Struct, frozen=True):
    """One history entry as stored (see docs/design.md, decision 1); no ``ev`` = the event is ``to``."""

    t: int = 0
    ev: str = ""
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    by: str | None = None
    op: int = 0
    n: int | None = None
    tok: str | None = None
    msg: str | None = None
    data: str | None = None


_history_decoder = msgspec.json.Decoder(_HistoryEntry)


def events_from_history(job_id: str, entries: Sequence[bytes], first: int = 0) -> list[Event]:
    """Decode a job's history (``LRANGE rjobs:{Q}:job:<id>:history``); ``first`` is the position
    of the first entry. An entry that is not valid JSON (written by hand) becomes an event
    ``unreadable`` carrying its raw text, so one bad entry never hides the others."""
    out = []
    for i, raw in enumerate(entries, first):
        try:
            e = _history_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            out.append(Event(id=f"0-{i}", job_id=job_id, event="unreadable", message=raw.decode(errors="replace")))
            continue
        out.append(
            Event(
                id=f"{e.t}-{i}",
                job_id=job_id,
                event=e.ev or e.to or "",  # a plain move's entry has no "ev": the event is its target
                from_state=e.from_,
                to_state=e.to,
                actor=e.by,
                message=e.msg,
                attempt=e.n,
                token=int(e.tok) if e.tok and e.tok.isdigit() else None,
                data=e.data,
                operator=bool(e.op),
            )
        )
    return out


def events_from_entries(entries: Sequence[tuple[bytes, Mapping[bytes, bytes]]]) -> list[Event]:
    """Decode a list of stream entries."""
    return [event_from_entry(eid, f) for eid, f in entries]


_asset_decoder = msgspec.json.Decoder(Asset)


def decode_asset(data: bytes) -> Asset:
    """Decode one stored asset."""
    return _asset_decoder.decode(data)
