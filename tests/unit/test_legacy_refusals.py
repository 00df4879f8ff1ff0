"""Redis 6.2 runs a script without the shebang's flags: a replica, maxmemory, a failed save or an ACL
refuse its first write inside the script, and the refusal comes wrapped in the script's error. The
scripts write nothing before it, so it is the same typed refusal as Redis 7's up-front one (the
wordings below are 6.2.14's; tests/integration/test_server_states.py meets them on a real 6.2)."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from rjobs.errors import OutOfMemory, PermissionDenied, ReadOnly, ScriptError, ServerRefused
from rjobs.store.exchange import script_error

WRAP = (
    "Error running script (call to f_a89560b0f647941db62afd5e9537e975d3cab926): @user_script:347: @user_script: 347: "
)
WRAPPED = {
    "-READONLY You can't write against a read only replica.": ReadOnly,
    "-OOM command not allowed when used memory > 'maxmemory'.": OutOfMemory,
    "-MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.": ReadOnly,
    "The user executing the script can't run this command or subcommand": PermissionDenied,
    "The user executing the script can't access at least one of the keys mentioned in the command": PermissionDenied,
}


@pytest.mark.parametrize("inner", sorted(WRAPPED))
def test_a_refusal_inside_a_62_script_is_typed(inner: str) -> None:
    for reply in (ResponseError(WRAP + inner), "ERR " + WRAP + inner):
        refused = script_error(reply)
        assert type(refused) is WRAPPED[inner]
        assert isinstance(refused, ServerRefused) and inner.lstrip("-") in refused.reply


def test_other_script_errors_keep_their_meaning() -> None:
    assert type(script_error(ResponseError(WRAP + "attempt to compare nil with number"))) is ScriptError
    wrong_type = WRAP + "-WRONGTYPE Operation against a key holding the wrong kind of value"
    assert type(script_error(wrong_type)) is ScriptError
    assert type(script_error("READONLY You can't write against a read only replica.")) is ReadOnly  # Redis 7
