"""Every Lua script opens with a contract block, and its Python wrapper matches it (no server)."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources
from typing import Any

import pytest

from rjobs.errors import ScriptError, error_from_reply
from rjobs.machines import JOB
from rjobs.store.keys import QueueKeys
from rjobs.store.scripts import Call, EnqueueSpec, MoveRequest, Scripts, load_script, script_names

S = Scripts(QueueKeys("q"))

#: One sample call per script, built by its typed wrapper.
SAMPLES: dict[str, Callable[[], Call[Any]]] = {
    "declare_machine": lambda: S.declare_machine(JOB, {}),
    "enqueue": lambda: S.enqueue("me", [EnqueueSpec(type="t", params=b"{}", priority=5)]),
    "claim": lambda: S.claim("w", 1, 1000, ["t", "u"]),
    "heartbeat": lambda: S.heartbeat("w", 1000, [("j", "1")], info=b'{"id":"w"}'),
    "transition": lambda: S.transition("me", [MoveRequest("j", "queued")]),
    "finish": lambda: S.finish("me", [MoveRequest("j", "completed", token="1")]),
    "retry": lambda: S.retry("me", "j"),
    "progress": lambda: S.progress("me", "j", "", 5, "step"),
    "reap": lambda: S.reap(10, 3, 10, 60_000),
    "add_asset": lambda: S.add_asset("me", "j", "", "", "a1", b"{}", "image"),
    "comment": lambda: S.comment("me", "j", "", "hi"),
    "set_priority": lambda: S.set_priority("me", "j", 5),
    "invalidate": lambda: S.invalidate("k"),
    "pause": lambda: S.pause("me", True, "why"),
    "set_limit": lambda: S.set_limit("g:tenant", 2, 10, 1000),
    "backoff": lambda: S.backoff("g:tenant", 5000),
    "name_actors": lambda: S.name_actors([("human", "alice", "Alice")]),
    "delete": lambda: S.delete("me", ["j", "k"], "u1", True, "cancel"),
    "drain": lambda: S.drain("me", 100),
    "obliterate": lambda: S.obliterate("me", False, 100),
    "set_schedule": lambda: S.set_schedule(
        "me", "nightly", ["report", "0 3 * * *", "", "Europe/Paris", b"{}", 5, 3, "skip", 60, 1_800_000_000_000]
    ),
    "remove_schedule": lambda: S.remove_schedule("nightly"),
    "cron_tick": lambda: S.cron_tick("w1", "nightly", 1_800_000_000_000, 1_800_086_400_000),
}


def contract(name: str) -> dict[str, Any]:
    text = (resources.files("rjobs") / "lua" / f"{name}.lua").read_text()
    header = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        header.append(line[2:].strip())
    argv = [re.match(r"ARGV\[(\d+)(\.\.)?\]", h) for h in header]
    return {
        "header": header,
        "title": header[0] if header else "",
        "keys": [h for h in header if h.startswith("KEYS[")],
        "fixed_argv": max((int(m.group(1)) for m in argv if m and not m.group(2)), default=0),
        "variadic": any(m and m.group(2) for m in argv),
        "returns": any(h.startswith("Returns") for h in header),
        "errors": next((h for h in header if h.startswith("Errors")), ""),
        "body": text[len("\n".join("--" + h for h in header)) :],
    }


def test_every_script_has_a_sample() -> None:
    assert sorted(SAMPLES) == script_names()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_contract_block_is_complete(name: str) -> None:
    c = contract(name)
    assert c["title"].startswith(f"{name}.lua"), "the block opens with the script's own name"
    assert c["keys"][0].split()[:2] == ["KEYS[1]", "machine"] and c["keys"][1].split()[:2] == ["KEYS[2]", "events"]
    assert c["returns"] and c["errors"], "contract names its return value and error codes"
    assert any(h.startswith("Called by") for h in c["header"]), "contract names its Python caller"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_wrapper_matches_contract(name: str) -> None:
    c = contract(name)
    call = SAMPLES[name]()
    assert call.script.name == name
    assert call.keys == (S.keys.machine, S.keys.events)
    if c["variadic"]:
        assert len(call.args) >= c["fixed_argv"]
    else:
        assert len(call.args) == c["fixed_argv"], (
            f"{name}: wrapper sends {len(call.args)} ARGV, contract says {c['fixed_argv']}"
        )


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_error_codes_are_declared_and_mapped(name: str) -> None:
    c = contract(name)
    used = set(re.findall(r"RJ_[A-Z_]+", c["body"])) - {"RJ_"}
    declared = set(re.findall(r"RJ_[A-Z_]+", c["errors"]))
    assert used <= declared, f"{name} returns undeclared codes {used - declared}"
    for code in declared:
        assert not isinstance(error_from_reply(f"{code} a b c"), ScriptError), f"{code} has no exception"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_scripts_never_scan_the_keyspace(name: str) -> None:
    source = load_script(name).source
    assert "'KEYS'" not in source and "'SCAN'" not in source
    assert "--!include" not in source, "includes are expanded by the loader"


def test_time_comes_from_redis() -> None:
    core = (resources.files("rjobs") / "lua" / "lib" / "core.lua").read_text()
    assert "call('TIME')" in core
    for name in SAMPLES:
        if name != "declare_machine":
            assert re.search(r"\binit\(KEYS, ARGV\[1\](, true)?\)", load_script(name).source)


def test_compiled_machine_options_agree_between_python_and_lua() -> None:
    """declare_machine.lua builds compiled:head from the layout rjobs.store.layout defines (through
    the generated lib/layout.lua); COMPILED_OPTIONS covers every stored option, and the head
    compile_machine builds follows the same layout."""
    from rjobs.config import QueueConfig
    from rjobs.store.scripts import COMPILED_OPTIONS, COMPILED_ROLES, compile_machine

    assert {n for n, _ in COMPILED_OPTIONS} == set(QueueConfig().redis_options())
    head = compile_machine(JOB, {})["compiled:head"]
    d = [str(v) for _, v in COMPILED_OPTIONS]
    roles = ",".join(JOB.role(r) or "" for r in COMPILED_ROLES)
    assert head == f"rj4|{','.join(d[:2])}|{','.join(d[2:])}|{roles}|{','.join(JOB.leased)}|"


def test_generated_layout_is_fresh_and_read_by_name() -> None:
    """lua/lib/layout.lua is generated from rjobs/store/layout.py (python -m rjobs.store.layout):
    a change to the Python definition that was not regenerated fails here. The scripts spell no
    part of the layout themselves, and where they unpack a pattern's captures into named locals
    (lib/core.lua's init, lib/move.lua's opt) the names follow the generated order."""
    from rjobs.store import layout

    lua = resources.files("rjobs") / "lua"
    assert (lua / "lib" / "layout.lua").read_text(encoding="utf-8") == layout.render_lua(), (
        "lua/lib/layout.lua is stale: run python -m rjobs.store.layout"
    )
    assert set(layout.OPTION_RANGES) == {n for n, _ in layout.COMPILED_OPTIONS}
    for path in ("lib/core.lua", "lib/move.lua", "declare_machine.lua"):
        source = (lua / path).read_text()
        assert layout.HEAD_VERSION not in source and "'initial'" not in source, f"{path} spells the layout itself"
    for path, pattern, fields in (
        ("lib/core.lua", "head, LAYOUT_HEAD", layout.HEAD_FIELDS),
        ("lib/move.lua", "M.more, LAYOUT_MORE", layout.MORE_FIELDS),
        ("lib/purge.lua", "M.more, LAYOUT_COUNTS", layout.COUNT_FIELDS),
    ):
        source = (lua / path).read_text()
        found = re.search(r"local ([\w,\s]+?) =\s+string\.match\(" + re.escape(pattern) + r"\)", source)
        assert found, f"{path} does not unpack {pattern}"
        assert [n.strip() for n in found.group(1).split(",")] == list(fields), f"{path} names the captures wrongly"


def test_every_script_includes_what_it_calls() -> None:
    """Helpers are split across lib/*.lua so a script defines only the closures it uses; a call
    into a helper whose file is not included would fail only at run time."""
    defined: dict[str, str] = {}
    lib = resources.files("rjobs") / "lua" / "lib"
    for p in lib.iterdir():
        for fn in re.findall(r"^(?:local )?function (\w+)\(", p.read_text(), re.MULTILINE):
            defined[fn] = p.name
    for name in script_names():
        source = re.sub(r"--[^\n]*", "", load_script(name).source)
        have = set(re.findall(r"^(?:local )?function (\w+)\(", source, re.MULTILINE))
        used = set(re.findall(r"(?<![.:\w])(\w+)\(", source))
        missing = {f for f in used - have if f in defined}
        assert not missing, f"{name}.lua calls {missing} without including {[defined[f] for f in missing]}"


def test_no_script_shadows_a_shared_local() -> None:
    """The shared helpers and state are locals of the script (lib/core.lua says why); a script's
    own local of the same name would hide one (reap's `purge` count once hid purge())."""
    lib = resources.files("rjobs") / "lua" / "lib"
    shared: set[str] = set()
    for p in lib.iterdir():
        text = p.read_text()
        shared |= set(re.findall(r"^(?:local )?function (\w+)\(", text, re.MULTILINE))
        for names in re.findall(r"^local ([\w, ]+?)\s*=", text, re.MULTILINE):
            shared |= {n.strip() for n in names.split(",")}
    for name in script_names():
        text = (resources.files("rjobs") / "lua" / f"{name}.lua").read_text()
        declared = re.findall(r"^\s*local ([\w, ]+?)\s*=", text, re.MULTILINE) + re.findall(r"\bfor ([\w, ]+) in", text)
        clashes = {n.strip() for names in declared for n in names.split(",")} & shared
        assert not clashes, f"{name}.lua declares locals that hide shared ones: {clashes}"


#: enqueue.lua's offset names for the fields of rjobs.store.scripts.EnqueueSpec
_ENQUEUE_OFFSETS = {
    "ID": "job_id",
    "TYPE": "type",
    "PARAMS": "params",
    "PRIORITY": "priority",
    "USER": "user_id",
    "RUN_AT": "run_at_ms",
    "DELAY": "delay_ms",
    "MAX_ATTEMPTS": "max_attempts",
    "DEDUPE_KEY": "dedupe_key",
    "DEDUPE": "dedupe_policy",
    "CANCEL_RUNNING": "cancel_running",
    "ON_DEP_FAILURE": "on_dep_failure",
    "HOLD": "hold",
    "GROUP": "group",
    "TRACE": "trace",
    "NDEPS": "depends_on",
}


def test_enqueue_record_is_one_definition() -> None:
    """EnqueueSpec's declaration order is the ARGV order: args() sends the fields as declared,
    and enqueue.lua's named offsets point at the same fields."""
    fields = EnqueueSpec.__struct_fields__
    spec = EnqueueSpec(
        job_id="j",
        type="t",
        params=b"p",
        priority=7,
        user_id="u",
        run_at_ms=11,
        delay_ms=12,
        max_attempts=13,
        dedupe_key="k",
        dedupe_policy="replace",
        cancel_running=True,
        on_dep_failure="cancel",
        hold=True,
        group="g",
        trace="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        depends_on=("d1", "d2"),
    )
    sent = spec.args()
    expected = [
        int(v) if isinstance(v, bool) else len(v) if isinstance(v, tuple) else v
        for v in (getattr(spec, f) for f in fields)
    ]
    assert sent == [*expected, "d1", "d2"]
    text = (resources.files("rjobs") / "lua" / "enqueue.lua").read_text()
    names, values = re.search(r"^local (ID, [\w,\s]+?) = ([\d,\s]+)$", text, re.MULTILINE).groups()  # type: ignore[union-attr]
    offsets = dict(zip((n.strip() for n in names.split(",")), (int(v) for v in values.split(","))))
    assert {_ENQUEUE_OFFSETS[n]: i for n, i in offsets.items()} == {f: i for i, f in enumerate(fields)}
    assert f"local FIELDS = {len(fields)}" in text
