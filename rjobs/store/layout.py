"""The compiled machine's layout, defined once: the version tag of ``compiled:head``, the roles and
the options in it, in order. ``lua/lib/layout.lua`` is generated from this module, so the Lua
scripts (declare_machine.lua writes the head, lib/core.lua and lib/move.lua read it) and
:func:`compile_machine` cannot disagree:

    python -m rjobs.store.layout           # rewrite lua/lib/layout.lua
    python -m rjobs.store.layout --check   # exit 1 when it is stale (a unit test checks the same)

``compiled:head`` is ``<HEAD_VERSION>|<event options>|<other options>|<role states>|<leased chain>|``:
the first :data:`EVENT_OPTIONS` options (what every event needs) are read with the head; the
others are parsed only by the calls that use them. A change here that changes the head's meaning
needs a new :data:`HEAD_VERSION`: a stored head of another version is refused (RJ_NO_MACHINE) until
the queue is declared again, which recompiles it."""

from __future__ import annotations

import sys
from pathlib import Path

from rjobs.statemachine import StateMachine

__all__ = [
    "COMPILED_OPTIONS",
    "COMPILED_ROLES",
    "COUNT_FIELDS",
    "COUNT_OPTIONS",
    "EVENT_OPTIONS",
    "HEAD_FIELDS",
    "HEAD_VERSION",
    "MORE_FIELDS",
    "OPTION_RANGES",
    "compile_machine",
    "compiled_head",
    "render_lua",
]

#: The head's version tag (its first field).
HEAD_VERSION = "rj4"
#: The roles in the compiled machine, in order ('' in the head = a role the machine lacks).
COMPILED_ROLES = ("initial", "ready", "delayed", "waiting", "review", "success", "partial", "failure", "cancelled")
#: The options in the compiled machine, in order, with the default used when one is not stored
#: (declare_machine.lua builds this part from the stored ``opt:<name>`` fields).
COMPILED_OPTIONS = (
    ("queue_events", 1),
    ("stream_maxlen", 10_000),
    ("max_payload", 1024 * 1024),
    ("cache_ttl_ms", 0),
    ("keep_success_ms", -1),
    ("keep_partial_ms", -1),
    ("keep_failure_ms", -1),
    ("keep_cancelled_ms", -1),
    ("keep_success_count", -1),
    ("keep_partial_count", -1),
    ("keep_failure_count", -1),
    ("keep_cancelled_count", -1),
)
#: How many of the options come first in the head, read by every call (the stream options).
EVENT_OPTIONS = 2
#: The range declare_machine.lua accepts for each stored option (a value outside it would fail a
#: later script half-way: XADD refuses a negative MAXLEN); out of range, the default is compiled.
OPTION_RANGES = {
    "queue_events": (0, 1),
    "stream_maxlen": (1, 1_000_000_000),
    "max_payload": (1, 512 * 1024 * 1024),
    "cache_ttl_ms": (-1, 3_153_600_000_000),
    "keep_success_ms": (-1, 3_153_600_000_000),
    "keep_partial_ms": (-1, 3_153_600_000_000),
    "keep_failure_ms": (-1, 3_153_600_000_000),
    "keep_cancelled_ms": (-1, 3_153_600_000_000),
    "keep_success_count": (-1, 1_000_000_000),
    "keep_partial_count": (-1, 1_000_000_000),
    "keep_failure_count": (-1, 1_000_000_000),
    "keep_cancelled_count": (-1, 1_000_000_000),
}
#: The last options of the head, read only by the purge (lib/purge.lua, LAYOUT_COUNTS): how many
#: finished jobs of each final role to keep at most (-1 = no cap).
COUNT_OPTIONS = 4

#: The queue's counters (docs/design.md, "Counters"): one hash per minute of server time,
#: ``metrics:<minute>``, kept this long after its last write (a day of charts, and a margin), and
#: ``totals`` kept for good (bounded by job types x final states).
METRICS_BUCKET_MS = 60_000
METRICS_TTL_S = 25 * 3600

LUA_PATH = Path(__file__).resolve().parent.parent / "lua" / "lib" / "layout.lua"


def compiled_head(options: dict[str, int], roles: str, leased: str) -> str:
    """The head for stored ``options`` (defaults where absent), ``roles`` (the role states joined
    by ',', in :data:`COMPILED_ROLES` order) and the ``leased`` chain (joined by ',')."""
    v = [str(int(options.get(name, default))) for name, default in COMPILED_OPTIONS]
    return f"{HEAD_VERSION}|{','.join(v[:EVENT_OPTIONS])}|{','.join(v[EVENT_OPTIONS:])}|{roles}|{leased}|"


#: The head's parts in the order LAYOUT_HEAD captures them (lib/core.lua's init names them so; a
#: unit test holds the names to this list), and the other options in LAYOUT_MORE's order (opt() in
#: lib/move.lua).
HEAD_FIELDS = (*(n for n, _ in COMPILED_OPTIONS[:EVENT_OPTIONS]), "more", *COMPILED_ROLES, "leased")
MORE_FIELDS = tuple(n for n, _ in COMPILED_OPTIONS[EVENT_OPTIONS:-COUNT_OPTIONS])
#: The count options in LAYOUT_COUNTS's order (keep_counts() in lib/purge.lua).
COUNT_FIELDS = tuple(n for n, _ in COMPILED_OPTIONS[-COUNT_OPTIONS:])


def _compiled_parts(machine: StateMachine) -> tuple[str, str, str]:
    """The role states and the leased chain (each joined by ','), and the states and edges
    ``"|#<state>|<from>><to>|...|"`` (declare_machine.lua derives the same from the stored table)."""
    tokens: list[str] = []
    for state, targets in machine.edges.items():
        tokens.append(f"#{state}")
        tokens += [f"{state}>{t}" for t in targets]
    roles = ",".join(machine.role(r) or "" for r in COMPILED_ROLES)
    return roles, ",".join(machine.leased), f"|{'|'.join(tokens)}|"


def compile_machine(machine: StateMachine, options: dict[str, int]) -> dict[str, str]:
    """The machine as the scripts read it: the ``compiled:head`` and ``compiled:edges`` fields
    that declare_machine.lua stores in the machine hash when ``options`` are the stored options.

    ``compiled:head`` is ``rj4|<2 event options>|<10 more options>|<9 role states>|<leased>|``
    (the layout is defined once, in :mod:`rjobs.store.layout`); ``compiled:edges`` is
    ``|#<state>|<from>><to>|...|``. Every script call reads the short head with one HGET and one
    anchored ``string.match``; a call that checks an edge reads the edges once and finds the token
    ``|from>to|`` with a plain ``string.find`` (see lua/lib/core.lua). Nothing decodes or builds
    the whole table per call. The options part is built by the script from the options stored in
    Redis, so a client that keeps the stored options still writes a correct head."""
    roles, leased, edges = _compiled_parts(machine)
    return {"compiled:head": compiled_head(options, roles, leased), "compiled:edges": edges}


def render_lua() -> str:
    """The text of lua/lib/layout.lua: constants only (a string constant costs a call nothing; a
    function or a table here would be built again by every call of every script)."""
    names = [n for n, _ in COMPILED_OPTIONS]
    event, more = names[:EVENT_OPTIONS], names[EVENT_OPTIONS:]
    read = len(MORE_FIELDS)
    cap = "([^,]*)"
    head = (
        f"^{HEAD_VERSION}|{','.join([cap] * (len(event) - 1) + ['([^|]*)'])}|([^|]*)|"
        f"{','.join([cap] * (len(COMPILED_ROLES) - 1) + ['([^|]*)'])}|([^|]+)|$"
    )
    options = ",".join(f"{n}:{d}:{OPTION_RANGES[n][0]}:{OPTION_RANGES[n][1]}" for n, d in COMPILED_OPTIONS)
    out = [
        "-- lib/layout.lua — GENERATED from rjobs/store/layout.py: do not edit. Regenerate with",
        "-- `python -m rjobs.store.layout` (`--check` exits 1 when this file is stale; so does a unit test).",
        "-- The compiled machine, written by declare_machine.lua into two fields of the machine hash:",
        f"--   compiled:head   {HEAD_VERSION}|{','.join(f'<{n}>' for n in event)}|",
        f"--                   {','.join(f'<{n}>' for n in more)}|",
        f"--                   <{'>,<'.join(COMPILED_ROLES)}>|",
        "--                   <leased chain>|",
        "--   compiled:edges  |#<state>|<from>><to>|...|  (every state, then its edges)",
        "-- A role the machine lacks is ''. Included first by every script (before lib/core.lua). Only",
        "-- constants: a function or a table here would be built again by every call of every script.",
        "",
        "-- The head, for string.match; it captures, in order:",
        f"--   {', '.join(HEAD_FIELDS[: EVENT_OPTIONS + 1])} (the other options, as one text: LAYOUT_MORE),",
        f"--   {', '.join(HEAD_FIELDS[EVENT_OPTIONS + 1 :])}",
        f"local LAYOUT_HEAD = '{head}'",
        "-- The other options, for string.match on `more`; it captures, in order (the first ones only:",
        "-- the count options after them are read by LAYOUT_COUNTS):",
        f"--   {', '.join(MORE_FIELDS)}",
        f"local LAYOUT_MORE = '^{','.join([cap] * read)}'",
        "-- The count options at the end of `more` (lib/purge.lua), for string.match; it captures:",
        f"--   {', '.join(COUNT_FIELDS)}",
        f"local LAYOUT_COUNTS = '^{'[^,]*,' * read}{','.join([cap] * len(COUNT_FIELDS))}$'",
        "-- For declare_machine.lua: the head's version tag and how many options come first (the event",
        "-- options); the roles in order; the options in order, name:default:lowest:highest.",
        f"local LAYOUT_VERSION, LAYOUT_EVENT_OPTIONS = '{HEAD_VERSION}', {EVENT_OPTIONS}",
        f"local LAYOUT_ROLES = '{','.join(COMPILED_ROLES)}'",
        f"local LAYOUT_OPTIONS = '{options}'",
        "-- The counters (lib/write.lua): the length of a bucket (ms) and how long one is kept (s).",
        f"local METRICS_BUCKET_MS, METRICS_TTL_S = {METRICS_BUCKET_MS}, {METRICS_TTL_S}",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    """Rewrite lua/lib/layout.lua, or with ``--check`` say whether it is stale (exit 1)."""
    text = render_lua()
    if "--check" in argv:
        if not LUA_PATH.exists() or LUA_PATH.read_text(encoding="utf-8") != text:
            print(f"{LUA_PATH} is stale: run python -m rjobs.store.layout", file=sys.stderr)
            return 1
        return 0
    LUA_PATH.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
