"""The server's error replies map to typed errors in one place (rjobs.errors), whether they come as
text (a script's reply over a link, fakeredis) or as redis-py exceptions (which keep the reply's
first word in ``status_code``)."""

from __future__ import annotations

import pytest
from redis._parsers.base import BaseParser

import rjobs
from rjobs.errors import (
    SERVER_STATES,
    InvalidTransition,
    JobNotFound,
    OutOfMemory,
    PermissionDenied,
    ReadOnly,
    ScriptError,
    ServerBusy,
    ServerRefused,
    error_from_reply,
    server_refusal,
)
from rjobs.testing import memory_sync_queue

REPLIES = {
    "LOADING Redis is loading the dataset in memory": (ServerBusy, True),
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.": (ServerBusy, True),
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.": (ServerBusy, True),
    "TRYAGAIN Multiple keys request during rehashing of slot": (ServerBusy, True),
    "OOM command not allowed when used memory > 'maxmemory'.": (OutOfMemory, True),
    "READONLY You can't write against a read only replica.": (ReadOnly, True),
    "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk": (ReadOnly, True),
    "NOPERM No permissions to access a key": (PermissionDenied, False),
    "NOAUTH Authentication required.": (PermissionDenied, False),
}


@pytest.mark.parametrize("reply", sorted(REPLIES))
def test_server_replies_are_typed_as_text_and_as_redis_py_errors(reply: str) -> None:
    cls, retryable = REPLIES[reply]
    parsed = BaseParser.parse_error(reply)  # what redis-py raises: the first word moved to status_code
    for form in (reply, parsed):
        for err in (error_from_reply(form), server_refusal(form)):
            assert type(err) is cls and isinstance(err, ServerRefused)
            assert err.retryable is retryable and err.reply == reply and reply in str(err)


def test_script_codes_and_unknown_replies_keep_their_meaning() -> None:
    assert isinstance(error_from_reply("RJ_NOT_FOUND j1"), JobNotFound)
    assert isinstance(error_from_reply("RJ_TRANSITION a b j1"), InvalidTransition)
    unknown = error_from_reply("ERR Error running script: attempt to index a nil value")
    assert type(unknown) is ScriptError and not unknown.retryable
    assert server_refusal("ERR unknown command 'CONFIG'") is None and server_refusal("WRONGTYPE x") is None


def test_every_state_is_exported_and_says_if_it_passes() -> None:
    for cls, _ in SERVER_STATES.values():
        assert getattr(rjobs, cls.__name__) is cls and cls.__doc__
    assert rjobs.ServerRefused is ServerRefused and issubclass(PermissionDenied, PermissionError)
    assert not rjobs.ValidationError("x").retryable and rjobs.WaitTimeout("x").retryable


def test_fakeredis_without_config_or_info_gives_no_warnings() -> None:
    q = memory_sync_queue("w")
    q.enqueue("t")
    # no server warning; only that no live worker runs the ready job's type
    assert q.stats()["warnings"] == ["queue w: 1 ready job(s) of type 't', which no live worker runs"]
