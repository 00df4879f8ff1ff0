"""What the two runners (rjobs.store.transport and its blocking twin) share, free of I/O: how a
reply is decoded into a result or an error, how a batch of ops is exchanged over a link (NOSCRIPT
reloads included), and which batches may use a link at all."""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator, Sequence
from typing import Any, TypeVar

import hiredis
from redis.exceptions import BusyLoadingError, NoScriptError, ResponseError

from rjobs.errors import RjobsError, ServerRefused, error_from_reply, reply_text, server_refusal
from rjobs.store.connection import Each
from rjobs.store.messages import Arg
from rjobs.store.scripts import Call, Cmd, Op
from rjobs.store.wire import blocks, pack, parse_reply, wire

__all__ = [
    "NOT_RUN",
    "REPLY_ERRORS",
    "Dialect",
    "Exchange",
    "Plan",
    "decode_one",
    "is_noscript",
    "linkable",
    "load_failed",
    "over_link",
    "parse_callback",
    "reads_only",
    "refused_read",
    "rerun",
    "script_error",
    "shebang_refused",
]

T = TypeVar("T")
#: A plan yields an op (or a list of ops for one round trip), receives its result, returns a value.
Plan = Generator[Op | list[Op], Any, T]

#: Error replies, read as one op's result (redis-py raises LOADING as BusyLoadingError, a
#: ConnectionError; read with disconnect_on_error=False the connection stays usable).
REPLY_ERRORS = (ResponseError, BusyLoadingError)


#: How Redis before 7 words a refusal met by ``redis.call`` inside a script: the script's error
#: wraps the server's reply (with its ``-`` prefix), or an ACL refusal's own sentence.
_IN_SCRIPT = re.compile(
    r"Error running script \(call to f_[0-9a-f]+\): @user_script:\d+: @user_script: \d+: (.*)",
    re.S,
)
_ACL_IN_SCRIPT = "The user executing the script can't"


def script_error(reply: BaseException | str) -> RjobsError:
    """A script call's error reply as its exception (:func:`rjobs.errors.error_from_reply`).

    Without the shebang's flags (Redis 6.2) the server does not refuse a script up front on a
    replica, at ``maxmemory`` or when it cannot persist: the script runs until its first write is
    refused (a later write is never refused for memory once one went through) and the refusal comes
    wrapped in a script error. The scripts read and decide before they write, so nothing was
    written: unwrapped, it is the typed refusal (ReadOnly, OutOfMemory, PermissionDenied)."""
    found = _IN_SCRIPT.search(reply_text(reply))
    if found is not None:
        inner = found.group(1)
        if inner.startswith("-"):
            refused = server_refusal(inner[1:])
        else:
            refused = server_refusal(f"NOPERM {inner}") if inner.startswith(_ACL_IN_SCRIPT) else None
        if refused is not None:
            return refused
    return error_from_reply(reply)


def decode_one(op: Op, raw: Any) -> Any:
    """One raw reply as its op's result: the decoded value, a script error as its typed
    exception, a plain read refused by the server's state as its typed refusal (not raised)."""
    if isinstance(raw, NoScriptError):
        return raw
    if isinstance(raw, REPLY_ERRORS):
        if isinstance(op, Call):
            return script_error(raw)
        return server_refusal(raw) or raw  # a read refused by the server's state: typed
    return op.decode(raw) if isinstance(op, Call) else raw


class Dialect:
    """Which form of the scripts a server takes: with the ``#!lua`` shebang (Redis 7+, Valkey),
    or without it (``legacy``: Redis 6.2, whose compiler refuses the shebang; fakeredis). A runner
    starts with the shebang and turns legacy the first time a server refuses to compile it."""

    __slots__ = ("legacy",)

    def __init__(self, legacy: bool) -> None:
        self.legacy = legacy

    def turn(self, used_legacy: bool, refused: BaseException) -> None:
        """After ``SCRIPT LOAD`` of the form ``used_legacy`` was refused: turn legacy when the
        server could not read the shebang (another call may have turned it already), else raise."""
        if used_legacy or not shebang_refused(refused):
            raise load_failed(refused)
        self.legacy = True  # Redis 6.2: the scripts without their shebang, from now on


def shebang_refused(reply: BaseException) -> bool:
    """``SCRIPT LOAD`` failed because the server cannot read the shebang (before Redis 7)."""
    text = str(reply)
    return "Error compiling script" in text and "near '#'" in text


def load_failed(reply: BaseException) -> RjobsError:
    """The error to raise when ``SCRIPT LOAD`` was refused."""
    return server_refusal(reply) or RjobsError(f"script could not be loaded: {reply}")


def parse_callback(client: Any, op: Cmd, raw: Any) -> Any:
    """What ``client.parse_response`` makes of a plain command's reply (its response callback)."""
    callback = client.response_callbacks.get(str(op.args[0]))
    return raw if callback is None else callback(raw)


def is_noscript(reply: ResponseError) -> bool:
    """The server had no script for the call: it did not run."""
    return str(reply).startswith("NOSCRIPT")


def rerun(ops: Sequence[Op], missing: list[int]) -> list[int]:
    """After NOSCRIPT: the scripts that did not run, plus every plain read queued after the first
    of them (it ran before the script it was meant to observe). Scripts that ran are never re-sent."""
    first = missing[0]
    reads = [i for i in range(first + 1, len(ops)) if isinstance(ops[i], Cmd)]
    return sorted(set(missing) | set(reads))


#: One exchange over a link: packed commands, how many, what to apply to each reply as it arrives.
Exchange = tuple[bytes | Iterator[bytes], int, Each | None]
NOT_RUN = object()  # a NOSCRIPT reply: the call did not run


def packed_each(ops: Sequence[Op], todo: list[int], legacy: bool = False) -> Iterator[bytes]:
    """Each call packed only when the link is ready to write it: the server runs the first script
    of a batch while the next one is being packed."""
    for i in todo:
        yield hiredis.pack_command(wire(ops[i], legacy))  # type: ignore[arg-type]


def decoder(ops: Sequence[Op], sent: list[int]) -> Each:
    """Decode the j-th raw reply of an exchange that sent ops[sent[j]]: a script's NOSCRIPT is
    NOT_RUN, a plain command's reply is parsed as redis-py would, errors are values."""

    def decode(j: int, raw: Any) -> Any:
        op = ops[sent[j]]
        if isinstance(op, Cmd):
            return (server_refusal(raw) or raw) if isinstance(raw, ResponseError) else parse_reply(op, raw)
        if isinstance(raw, ResponseError):
            return NOT_RUN if is_noscript(raw) else script_error(raw)
        return op.decode(raw)

    return decode


def over_link(ops: Sequence[Op], dialect: Dialect) -> Generator[Exchange, list[Any], list[Any]]:
    """Ops over a link, as a plan of (packed commands, count, per-reply decoder) exchanges: calls
    the server had no script for (NOSCRIPT: they did not run) are sent again after their scripts
    are loaded, with every plain read queued after the first of them (:func:`rerun`); calls that
    ran are never re-sent. Each reply is decoded as it arrives, so a batch's first replies are
    decoded while the server still runs the later calls."""
    results: list[Any] = [None] * len(ops)
    todo = list(range(len(ops)))
    for _ in range(3):
        outs = yield packed_each(ops, todo, dialect.legacy), len(todo), decoder(ops, todo)
        missing = []
        for i, out in zip(todo, outs):
            if out is NOT_RUN:
                missing.append(i)
            else:
                results[i] = out
        if not missing:
            return results
        scripts = list({op.script for i in missing if isinstance(op := ops[i], Call)})
        for _ in range(2):
            legacy = dialect.legacy  # another batch may turn it while this one waits
            loads: list[tuple[Arg, ...]] = [("SCRIPT", "LOAD", s.for_server(legacy)[0]) for s in scripts]
            loaded = yield pack(loads), len(scripts), None
            refused = next((r for r in loaded if isinstance(r, ResponseError)), None)
            if refused is None:
                break
            dialect.turn(legacy, refused)
        todo = rerun(ops, missing)
    raise RjobsError("scripts could not be loaded")


def reads_only(ops: Sequence[Op]) -> bool:
    """Plain reads only: safe to send again after a connection error."""
    return all(isinstance(op, Cmd) for op in ops)


def linkable(ops: Sequence[Op]) -> bool:
    """No blocking command: it would hold up every call queued behind it on a shared link."""
    return not any(isinstance(op, Cmd) and blocks(op) for op in ops)


def refused_read(ops: Sequence[Op], results: list[Any]) -> None:
    """Raise a plain read's refusal (a script call's error is a result: plans check it)."""
    for op, result in zip(ops, results):
        if isinstance(result, ServerRefused) and isinstance(op, Cmd):
            raise result
